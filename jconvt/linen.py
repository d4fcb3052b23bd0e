"""``jconvt.linen.Conv2DTranspose``: the transposed convolution as a Flax
linen module, with TF's parameter layout, initializers, regularizers,
constraints and ``trainable`` flag."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jconvt import _layer
from jconvt._constraints import constrained as constrained

LOSSES = "losses"
NON_TRAINABLE = "non_trainable"


class Conv2DTranspose(nn.Module):
  """TF's ``Conv2DTranspose`` as a linen module.

  Params: ``{"kernel": (kh, kw, features, in_channels), "bias": (features,)}``,
  TF's layout, so TF weights load without reordering. With
  ``trainable=False`` they live in the ``"non_trainable"`` collection
  instead of ``"params"``, so an optimizer over ``"params"`` never changes
  them (TF's ``non_trainable_variables``).

  Regularization penalties are sown into the ``"losses"`` collection
  (``apply(..., mutable=["losses"])``); ``jconvt.linen.total_loss`` sums
  them. Constraints are applied after each optimizer step by
  ``jconvt.linen.constrained(optimizer, constraint_projection(model, x))``.

  Attributes:
    features: number of output channels (TF ``filters``).
    kernel_size: int or ``(kh, kw)``.
    strides, padding, output_padding, dilation_rate, data_format,
      activation, precision, preferred_element_type, algorithm: as in
      ``jconvt.ConvTransposeConfig``.
    use_bias: add a bias.
    kernel_init, bias_init: Keras initializer names (``"glorot_uniform"``,
      ``"he_normal"``, ...) or JAX initializers. Default: TF's
      ``glorot_uniform`` (fan_in = kh*kw*features, fan_out = kh*kw*in) and
      zeros.
    kernel_regularizer, bias_regularizer, activity_regularizer: ``None``, a
      Keras name or spec (``"l2"``, ``{"class_name": "L1L2", ...}``), or a
      callable ``array -> scalar``.
    kernel_constraint, bias_constraint: ``None``, a Keras name or spec
      (``"non_neg"``, ``"max_norm"``, ...) or a callable ``array -> array``.
    trainable: ``False`` puts the params in ``"non_trainable"``.
    dtype: compute dtype (default: promoted from input and params).
    param_dtype: params dtype (default float32).

  >>> import jax, jax.numpy as jnp
  >>> layer = Conv2DTranspose(8, 3, strides=2, padding="same")
  >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 4, 4, 3)))
  >>> variables["params"]["kernel"].shape
  (3, 3, 8, 3)
  """

  features: int
  kernel_size: Any
  strides: Any = 1
  padding: Any = "valid"
  output_padding: Any = None
  dilation_rate: Any = 1
  data_format: str = "channels_last"
  activation: Any = None
  use_bias: bool = True
  kernel_init: Any = "glorot_uniform"
  bias_init: Any = "zeros"
  kernel_regularizer: Any = None
  bias_regularizer: Any = None
  activity_regularizer: Any = None
  kernel_constraint: Any = None
  bias_constraint: Any = None
  trainable: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  preferred_element_type: Any = None
  algorithm: str = "auto"

  def __post_init__(self):
    self.spec  # noqa: B018  validates every argument at construction
    super().__post_init__()

  @property
  def spec(self) -> _layer.LayerSpec:
    return _layer.make_spec(
        features=self.features, kernel_size=self.kernel_size, strides=self.strides,
        padding=self.padding, output_padding=self.output_padding,
        dilation_rate=self.dilation_rate, data_format=self.data_format,
        activation=self.activation, use_bias=self.use_bias, kernel_init=self.kernel_init,
        bias_init=self.bias_init, kernel_regularizer=self.kernel_regularizer,
        bias_regularizer=self.bias_regularizer,
        activity_regularizer=self.activity_regularizer,
        kernel_constraint=self.kernel_constraint, bias_constraint=self.bias_constraint,
        dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision,
        preferred_element_type=self.preferred_element_type, algorithm=self.algorithm)

  @nn.nowrap  # a helper of __call__, not a module method of its own (nn.tabulate
  def _weight(self, name, init, shape, spec):  # would list it, with its non-array arguments)
    if self.trainable:
      return self.param(name, init, shape, spec.param_dtype)
    return self.variable(NON_TRAINABLE, name,
                         lambda: init(self.make_rng("params"), shape, spec.param_dtype)).value

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """``inputs``: (batch, h, w, in_channels) (or NCHW) -> (batch, out_h,
    out_w, features) (or NCHW)."""
    spec = self.spec
    kernel = self._weight("kernel", spec.kernel_init, spec.kernel_shape(spec.in_channels(inputs.shape)), spec)
    bias = self._weight("bias", spec.bias_init, (spec.features,), spec) if spec.use_bias else None
    y, penalties = _layer.forward(spec, kernel, bias, inputs)
    for name, value in penalties.items():
      self.sow(LOSSES, name, value)
    return y


def total_loss(variables) -> jax.Array:
  """Sum of every regularization penalty sown into ``"losses"``.

  Args:
    variables: the mutated state returned by ``apply(..., mutable=["losses"])``
      (or just its ``"losses"`` entry). Call ``apply`` with the params (and
      ``"non_trainable"``) collections only, not with the ``"losses"`` that
      ``init`` returned, or those are counted again.

  >>> import jax, jax.numpy as jnp
  >>> layer = Conv2DTranspose(2, 3, kernel_regularizer="l2")
  >>> params = layer.init(jax.random.key(0), jnp.ones((1, 3, 3, 1)))["params"]
  >>> y, state = layer.apply({"params": params}, jnp.ones((1, 3, 3, 1)), mutable=["losses"])
  >>> bool(total_loss(state) > 0)
  True
  """
  return _layer.sum_losses(variables.get(LOSSES, {}) if LOSSES in variables else variables)


def constraint_projection(model: nn.Module, *args, **kwargs) -> Callable[[Any], Any]:
  """``params -> params`` applying every ``Conv2DTranspose``'s constraints.

  Traces ``model`` once on example ``args`` (shapes only), recording the
  path of each ``Conv2DTranspose`` inside it, so the projection works for
  any nesting. Use with ``jconvt.linen.constrained(optimizer, projection)``.
  """
  found = {}

  def interceptor(next_fun, fargs, fkwargs, context):
    module = context.module
    if isinstance(module, Conv2DTranspose) and context.method_name == "__call__":
      spec = module.spec
      if module.trainable and (spec.kernel_constraint or spec.bias_constraint):
        found[module.path] = spec
    return next_fun(*fargs, **fkwargs)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))

  def project(params):
    params = jax.tree_util.tree_map(lambda a: a, params)  # fresh (mutable) dicts
    for path, spec in found.items():
      if not path:  # the model is the layer itself
        params = _layer.project(spec, dict(params))
        continue
      node = params
      for name in path[:-1]:
        node = node[name]
      node[path[-1]] = _layer.project(spec, dict(node[path[-1]]))
    return params

  return project
