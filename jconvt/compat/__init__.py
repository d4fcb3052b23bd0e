"""``jconvt.compat``: moving TF v1 code and weights (and torch/flax weights)
to jconvt."""

from jconvt.compat import v1 as v1
from jconvt.compat._checkpoint import CheckpointError as CheckpointError
from jconvt.compat._checkpoint import load_tf_checkpoint as load_tf_checkpoint
from jconvt.compat._weights import from_flax_conv_transpose as from_flax_conv_transpose
from jconvt.compat._weights import from_torch_conv_transpose2d as from_torch_conv_transpose2d
from jconvt.compat._weights import load_layer_weights as load_layer_weights
from jconvt.compat._weights import tf_layer_params as tf_layer_params

__all__ = ("CheckpointError", "from_flax_conv_transpose", "from_torch_conv_transpose2d",
           "load_layer_weights", "load_tf_checkpoint", "tf_layer_params", "v1")
