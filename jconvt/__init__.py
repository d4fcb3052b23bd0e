"""jconvt: TensorFlow's transposed 2-D convolution, natively in JAX."""

from importlib import metadata as _metadata

from jconvt._config import ConvTransposeConfig as ConvTransposeConfig
from jconvt._algorithms import AlgorithmPlan as AlgorithmPlan
from jconvt._conv import algorithm_plan as algorithm_plan
from jconvt._conv import conv2d_transpose as conv2d_transpose
from jconvt._conv import output_shape as output_shape
from jconvt._malloc import tune_malloc as tune_malloc
from jconvt._reference import reference_conv2d_transpose as reference_conv2d_transpose
from jconvt import compat as compat
from jconvt import constraints as constraints
from jconvt import initializers as initializers
from jconvt import linen as linen
from jconvt import nnx as nnx
from jconvt import regularizers as regularizers
from jconvt.linen import Conv2DTranspose as Conv2DTranspose

try:
  __version__ = _metadata.version("jconvt")
except _metadata.PackageNotFoundError:  # running from a source tree
  __version__ = "0.0.0+unknown"

__all__ = (
    "AlgorithmPlan",
    "Conv2DTranspose",
    "ConvTransposeConfig",
    "algorithm_plan",
    "conv2d_transpose",
    "output_shape",
    "reference_conv2d_transpose",
    "tune_malloc",
)
