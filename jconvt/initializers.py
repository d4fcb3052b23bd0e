"""Keras initializers by name, with TF's distributions and fan computation."""

from jconvt._initializers import NAMES as NAMES
from jconvt._initializers import constant as constant
from jconvt._initializers import get as get
from jconvt._initializers import orthogonal as orthogonal
from jconvt._initializers import random_normal as random_normal
from jconvt._initializers import random_uniform as random_uniform
from jconvt._initializers import truncated_normal as truncated_normal
from jconvt._initializers import variance_scaling as variance_scaling

__all__ = ("NAMES", "constant", "get", "orthogonal", "random_normal", "random_uniform",
           "truncated_normal", "variance_scaling")
