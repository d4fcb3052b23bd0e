"""What the Flax linen and NNX layers share: argument normalisation, params
shapes, dtype promotion, the call, and the regularization penalties."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jconvt import _constraints, _initializers, _regularizers
from jconvt._algorithms import channels
from jconvt._config import ConvTransposeConfig, normalize_pair
from jconvt._conv import conv2d_transpose


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """A layer's static settings, normalised and validated once."""

  features: int
  kernel_size: tuple[int, int]
  config: ConvTransposeConfig
  use_bias: bool
  kernel_init: Any
  bias_init: Any
  kernel_regularizer: Any
  bias_regularizer: Any
  activity_regularizer: Any
  kernel_constraint: Any
  bias_constraint: Any
  dtype: Any
  param_dtype: Any

  def kernel_shape(self, in_channels: int) -> tuple[int, int, int, int]:
    return (*self.kernel_size, self.features, in_channels)

  def in_channels(self, x_shape) -> int:
    if len(x_shape) != 4:
      raise ValueError(
          f"`inputs` must have rank 4 for data_format={self.config.data_format!r}, "
          f"got shape {tuple(x_shape)}.")
    return channels(x_shape, self.config)


def make_spec(*, features, kernel_size, strides=1, padding="valid", output_padding=None,
              dilation_rate=1, data_format="channels_last", activation=None, use_bias=True,
              kernel_init="glorot_uniform", bias_init="zeros", kernel_regularizer=None,
              bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
              bias_constraint=None, dtype=None, param_dtype=jnp.float32, precision=None,
              preferred_element_type=None, algorithm="auto") -> LayerSpec:
  """Validates every argument eagerly; errors name the argument."""
  if isinstance(features, bool) or not isinstance(features, int) or features < 1:
    raise ValueError(f"`features` (filters) must be a positive int, got {features!r}.")
  return LayerSpec(
      features=features,
      kernel_size=normalize_pair(kernel_size, "kernel_size", 1),
      config=ConvTransposeConfig(
          strides=strides, padding=padding, output_padding=output_padding,
          dilation_rate=dilation_rate, data_format=data_format, activation=activation,
          precision=precision, preferred_element_type=preferred_element_type,
          algorithm=algorithm),
      use_bias=bool(use_bias),
      kernel_init=_initializers.get(kernel_init, "kernel_init"),
      bias_init=_initializers.get(bias_init, "bias_init"),
      kernel_regularizer=_regularizers.get(kernel_regularizer, "kernel_regularizer"),
      bias_regularizer=_regularizers.get(bias_regularizer, "bias_regularizer"),
      activity_regularizer=_regularizers.get(activity_regularizer, "activity_regularizer"),
      kernel_constraint=_constraints.get(kernel_constraint, "kernel_constraint"),
      bias_constraint=_constraints.get(bias_constraint, "bias_constraint"),
      dtype=None if dtype is None else jnp.dtype(dtype),
      param_dtype=jnp.dtype(param_dtype),
  )


def forward(spec: LayerSpec, kernel, bias, x):
  """The layer's output and its penalties ``{name: scalar}``.

  ``x``: (batch, h, w, in_channels) or NCHW; ``kernel``: (kh, kw, features,
  in_channels); ``bias``: (features,) or None. Computes in ``spec.dtype``
  (default: the promoted dtype of input and params, as Flax does).
  """
  dtype = spec.dtype or jnp.result_type(x, kernel, *([] if bias is None else [bias]))
  params = {"kernel": jnp.asarray(kernel, dtype)}
  if bias is not None:
    params["bias"] = jnp.asarray(bias, dtype)
  y = conv2d_transpose(params, jnp.asarray(x, dtype), spec.config)
  return y, penalties(spec, kernel, bias, y)


def penalties(spec: LayerSpec, kernel, bias, y) -> dict:
  """TF's ``layer.losses``: kernel, bias, then activity (averaged over the
  batch, as Keras' base layer does)."""
  out = {}
  if spec.kernel_regularizer is not None:
    out["kernel_regularizer"] = spec.kernel_regularizer(kernel)
  if spec.bias_regularizer is not None and bias is not None:
    out["bias_regularizer"] = spec.bias_regularizer(bias)
  if spec.activity_regularizer is not None:
    penalty = spec.activity_regularizer(y)
    batch = y.shape[0]  # an empty batch has a zero penalty, not TF's 0 / 0
    out["activity_regularizer"] = penalty / jnp.asarray(batch, penalty.dtype) if batch else penalty
  return out


def project(spec: LayerSpec, params: dict) -> dict:
  """Applies the kernel and bias constraints to ``{'kernel', 'bias'}``."""
  out = dict(params)
  if spec.kernel_constraint is not None and "kernel" in out:
    out["kernel"] = spec.kernel_constraint(out["kernel"])
  if spec.bias_constraint is not None and "bias" in out:
    out["bias"] = spec.bias_constraint(out["bias"])
  return out


def sum_losses(tree) -> jax.Array:
  """Sums every array leaf (e.g. the ``'losses'`` collection)."""
  leaves = jax.tree_util.tree_leaves(tree)
  return sum((jnp.sum(leaf) for leaf in leaves), jnp.zeros(()))
