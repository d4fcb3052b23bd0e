"""TF v1's initializer constructors, with TF v1's defaults, as JAX initializers.

For TF v1 code that passes ``kernel_initializer=tf.compat.v1.
truncated_normal_initializer(stddev=0.02)`` and the like: use the same call
from here. Note TF v1's defaults differ from Keras': ``random_normal`` and
``truncated_normal`` have ``stddev=1.0``, ``random_uniform`` is ``[0, 1)``.
``seed`` is accepted for signature compatibility; randomness comes from the
layer's key (see ``jconvt.compat.v1.set_random_seed``).
"""

from jconvt import _initializers as _init

__all__ = ("constant_initializer", "glorot_normal_initializer", "glorot_uniform_initializer",
           "ones_initializer", "orthogonal_initializer", "random_normal_initializer",
           "random_uniform_initializer", "truncated_normal_initializer",
           "variance_scaling_initializer", "zeros_initializer")


def zeros_initializer(dtype=None):  # noqa: ARG001  (TF's signature)
  return _init.get("zeros")


def ones_initializer(dtype=None):  # noqa: ARG001
  return _init.get("ones")


def constant_initializer(value=0, dtype=None, verify_shape=False):  # noqa: ARG001
  return _init.constant(value)


def random_normal_initializer(mean=0.0, stddev=1.0, seed=None, dtype=None):  # noqa: ARG001
  return _init.random_normal(mean, stddev)


def truncated_normal_initializer(mean=0.0, stddev=1.0, seed=None, dtype=None):  # noqa: ARG001
  return _init.truncated_normal(mean, stddev)


def random_uniform_initializer(minval=0.0, maxval=None, seed=None, dtype=None):  # noqa: ARG001
  return _init.random_uniform(minval, 1.0 if maxval is None else maxval)


def glorot_uniform_initializer(seed=None, dtype=None):  # noqa: ARG001
  return _init.get("glorot_uniform")


def glorot_normal_initializer(seed=None, dtype=None):  # noqa: ARG001
  return _init.get("glorot_normal")


def variance_scaling_initializer(scale=1.0, mode="fan_in", distribution="truncated_normal",
                                 seed=None, dtype=None):  # noqa: ARG001
  return _init.variance_scaling(scale, mode, distribution)


def orthogonal_initializer(gain=1.0, seed=None, dtype=None):  # noqa: ARG001
  return _init.orthogonal(gain)
