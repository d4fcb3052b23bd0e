"""``jconvt.compat``: moving TF v1 code and weights to jconvt."""

from jconvt.compat import v1 as v1

__all__ = ("v1",)
