"""``jconvt.nnx.Conv2DTranspose``: the same layer for Flax NNX, sharing all
its logic with ``jconvt.linen`` (``jconvt._layer``)."""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jconvt import _layer


class RegularizationLoss(nnx.Variable):
  """A penalty sown by a call (TF's ``layer.losses``); see ``total_loss``."""


class NonTrainable(nnx.Variable):
  """Weights of a ``trainable=False`` layer: not an ``nnx.Param``, so
  ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never updates them."""


class Conv2DTranspose(nnx.Module):
  """TF's ``Conv2DTranspose`` as an NNX module.

  Same arguments and behaviour as ``jconvt.linen.Conv2DTranspose``, plus
  ``in_features`` (NNX creates weights eagerly) and ``rngs``.

  >>> from flax import nnx
  >>> layer = Conv2DTranspose(3, 8, 3, strides=2, padding="same", rngs=nnx.Rngs(0))
  >>> layer.kernel[...].shape
  (3, 3, 8, 3)
  """

  def __init__(self, in_features: int, features: int, kernel_size: Any, *, strides=1,
               padding="valid", output_padding=None, dilation_rate=1,
               data_format="channels_last", activation=None, use_bias=True,
               kernel_init="glorot_uniform", bias_init="zeros", kernel_regularizer=None,
               bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
               bias_constraint=None, trainable=True, dtype=None, param_dtype=jnp.float32,
               precision=None, preferred_element_type=None, algorithm="auto",
               rngs: nnx.Rngs):
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 0:
      raise ValueError(f"`in_features` must be a non-negative int, got {in_features!r}.")
    self.spec = _layer.make_spec(
        features=features, kernel_size=kernel_size, strides=strides, padding=padding,
        output_padding=output_padding, dilation_rate=dilation_rate, data_format=data_format,
        activation=activation, use_bias=use_bias, kernel_init=kernel_init,
        bias_init=bias_init, kernel_regularizer=kernel_regularizer,
        bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
        kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, dtype=dtype,
        param_dtype=param_dtype, precision=precision,
        preferred_element_type=preferred_element_type, algorithm=algorithm)
    self.in_features = in_features
    self.trainable = bool(trainable)
    kind = nnx.Param if self.trainable else NonTrainable
    spec = self.spec
    self.kernel = kind(spec.kernel_init(rngs.params(), spec.kernel_shape(in_features),
                                        spec.param_dtype))
    self.bias = kind(spec.bias_init(rngs.params(), (spec.features,), spec.param_dtype)
                     ) if spec.use_bias else None

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """``inputs``: (batch, h, w, in_features) (or NCHW) -> (batch, out_h,
    out_w, features) (or NCHW).

    Penalties are sown as ``RegularizationLoss``: run the model under
    ``nnx.capture(model, jconvt.nnx.RegularizationLoss)`` and pass what it
    captured to ``jconvt.nnx.total_loss``.
    """
    in_ch = self.spec.in_channels(inputs.shape)
    if in_ch != self.in_features:
      raise ValueError(
          f"`inputs` has {in_ch} channels but the layer was built with "
          f"in_features={self.in_features}.")
    y, penalties = _layer.forward(
        self.spec, self.kernel[...], None if self.bias is None else self.bias[...], inputs)
    for name, value in penalties.items():
      self.sow(RegularizationLoss, name, value)
    return y

  def apply_constraints(self) -> None:
    """Projects the weights onto the constraints (call after each step)."""
    params = {"kernel": self.kernel[...]}
    if self.bias is not None:
      params["bias"] = self.bias[...]
    params = _layer.project(self.spec, params)
    self.kernel[...] = params["kernel"]
    if self.bias is not None:
      self.bias[...] = params["bias"]


def total_loss(captured) -> jax.Array:
  """Sum of the penalties captured by ``nnx.capture(model,
  jconvt.nnx.RegularizationLoss)``.

  >>> from flax import nnx
  >>> import jax.numpy as jnp
  >>> layer = Conv2DTranspose(1, 2, 3, kernel_regularizer="l2", rngs=nnx.Rngs(0))
  >>> y, losses = nnx.capture(layer, RegularizationLoss)(jnp.ones((1, 3, 3, 1)))
  >>> bool(total_loss(losses) > 0)
  True
  """
  return _layer.sum_losses(captured)


def apply_constraints(model: nnx.Module) -> None:
  """Applies the constraints of every ``Conv2DTranspose`` inside ``model``."""
  for _, module in nnx.iter_graph(model):
    if isinstance(module, Conv2DTranspose) and module.trainable:
      module.apply_constraints()
