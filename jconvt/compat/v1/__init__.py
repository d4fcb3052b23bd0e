"""``jconvt.compat.v1``: the TF v1 names jconvt provides.

``from jconvt.compat import v1 as tf_v1`` then ``tf_v1.layers.Conv2DTranspose``,
or ``tf_v1.nn.conv2d_transpose`` for the op with weights of your own.
"""

from jconvt.compat.v1 import initializers as initializers
from jconvt.compat.v1 import layers as layers
from jconvt.compat.v1 import nn as nn
from jconvt.compat.v1.initializers import *  # noqa: F403  (tf.compat.v1.*_initializer names)
from jconvt.compat.v1.layers import global_variables as global_variables
from jconvt.compat.v1.layers import reset_default_graph as reset_default_graph
from jconvt.compat.v1.layers import set_random_seed as set_random_seed

__all__ = ("global_variables", "initializers", "layers", "nn", "reset_default_graph",
           "set_random_seed") + initializers.__all__
