"""Keras constraints and the optax wrapper that applies them after a step."""

from jconvt._constraints import MaxNorm as MaxNorm
from jconvt._constraints import MinMaxNorm as MinMaxNorm
from jconvt._constraints import NonNeg as NonNeg
from jconvt._constraints import UnitNorm as UnitNorm
from jconvt._constraints import constrained as constrained
from jconvt._constraints import get as get

__all__ = ("MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "constrained", "get")
