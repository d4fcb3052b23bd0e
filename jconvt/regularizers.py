"""Keras regularizers: ``jconvt.regularizers.l2(1e-4)``, ``L1L2``, ``get``."""

from jconvt._regularizers import L1L2 as L1L2
from jconvt._regularizers import get as get
from jconvt._regularizers import l1 as l1
from jconvt._regularizers import l1_l2 as l1_l2
from jconvt._regularizers import l2 as l2

__all__ = ("L1L2", "get", "l1", "l1_l2", "l2")
