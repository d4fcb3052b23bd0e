"""``tf.compat.v1.layers.Conv2DTranspose`` and ``conv2d_transpose``, in JAX.

Takes TF's argument list unchanged and maps it onto the same layer logic as
``jconvt.linen.Conv2DTranspose`` (``jconvt._layer``). The object behaves like
TF's: it builds on first call (or ``build(input_shape)``), keeps its
variables (named ``<name>/kernel:0`` and ``<name>/bias:0``, TF's layout),
exposes ``losses`` after a call, and ``get_weights``/``set_weights``.

Randomness: weights are drawn from ``jax.random.key(seed)`` folded with a
per-process layer counter, where ``seed`` is set by
``jconvt.compat.v1.set_random_seed`` (default 0), so a program that builds
its layers in the same order gets the same weights; ``build(input_shape,
key=...)`` takes an explicit key instead.

For training with ``jax.grad`` and optax, use the pure handle
``layer.functional_call(params, inputs)`` with ``params = layer.params``
(``{"kernel", "bias"}``), and ``layer.regularization_loss(params, outputs)``.
"""

import collections
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jconvt import _layer
from jconvt._conv import output_shape as _output_shape

__all__ = ("Conv2DTranspose", "Conv2DTransposeV1", "Variable", "conv2d_transpose")

# Keras keyword arguments TF's class accepts through **kwargs.
_KERAS_KWARGS = ("output_padding", "dilation_rate", "dtype", "input_shape",
                 "batch_input_shape", "batch_size", "weights", "autocast")

_STATE = {"seed": 0, "count": 0}
_NAME_COUNTS: collections.Counter = collections.Counter()
_LAYERS: dict[str, "Conv2DTranspose"] = {}


def set_random_seed(seed: int) -> None:
  """Seeds the weights of the layers built from now on (as TF's
  ``tf.compat.v1.set_random_seed``), and restarts the layer counter."""
  _STATE["seed"] = int(seed)
  _STATE["count"] = 0


def reset_default_graph() -> None:
  """Forgets layer names and variables (TF's ``reset_default_graph``)."""
  _NAME_COUNTS.clear()
  _LAYERS.clear()
  _STATE["count"] = 0


def global_variables() -> list["Variable"]:
  """Every built layer's variables, in creation order (TF's
  ``tf.compat.v1.global_variables``)."""
  return [v for layer in _LAYERS.values() for v in layer.variables]


def _unique_name(base: str) -> str:
  n = _NAME_COUNTS[base]
  _NAME_COUNTS[base] += 1
  return base if n == 0 else f"{base}_{n}"


class Variable:
  """A named array, standing in for a ``tf.Variable`` of a layer."""

  def __init__(self, name: str, value, trainable: bool):
    self.name = name
    self.value = jnp.asarray(value)
    self.trainable = trainable

  @property
  def shape(self):
    return tuple(self.value.shape)

  @property
  def dtype(self):
    return self.value.dtype

  def numpy(self) -> np.ndarray:
    return np.asarray(self.value)

  def assign(self, value) -> "Variable":
    value = jnp.asarray(value, self.value.dtype)
    if value.shape != self.value.shape:
      raise ValueError(
          f"Cannot assign a value of shape {tuple(value.shape)} to variable {self.name!r} "
          f"of shape {self.shape}.")
    self.value = value
    return self

  def __array__(self, dtype=None, copy=None):
    return np.asarray(self.value, dtype=dtype)

  def __jax_array__(self):
    return self.value

  def __repr__(self):
    return f"<jconvt Variable {self.name!r} shape={self.shape} dtype={self.dtype}>"


class Conv2DTranspose:
  """TF v1's transposed convolution layer ("deconvolution"), in JAX.

  Arguments and defaults are TF's: see ``tf.compat.v1.layers.Conv2DTranspose``.
  ``kernel_initializer=None`` means TF's default, ``glorot_uniform``.
  Initializers, regularizers and constraints may be Keras names, Keras
  specs, jconvt objects or callables; activations TF names or callables.

  >>> import jax.numpy as jnp
  >>> layer = Conv2DTranspose(8, 3, strides=2, padding="same", name="dec")
  >>> layer(jnp.ones((1, 4, 4, 3))).shape
  (1, 8, 8, 8)
  >>> [v.name for v in layer.weights]
  ['dec/kernel:0', 'dec/bias:0']
  """

  def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid",
               data_format="channels_last", activation=None, use_bias=True,
               kernel_initializer=None, bias_initializer="zeros", kernel_regularizer=None,
               bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
               bias_constraint=None, trainable=True, name=None, **kwargs):
    unknown = sorted(set(kwargs) - set(_KERAS_KWARGS))
    if unknown:
      raise TypeError(
          f"Keyword argument not understood: {', '.join(map(repr, unknown))}; "
          f"Conv2DTranspose accepts TF's arguments and {', '.join(_KERAS_KWARGS)}.")
    dtype = kwargs.get("dtype") or "float32"
    self._spec = _layer.make_spec(
        features=filters, kernel_size=kernel_size, strides=strides, padding=padding,
        output_padding=kwargs.get("output_padding"),
        dilation_rate=kwargs.get("dilation_rate", 1), data_format=data_format,
        activation=activation, use_bias=use_bias,
        kernel_init="glorot_uniform" if kernel_initializer is None else kernel_initializer,
        bias_init="zeros" if bias_initializer is None else bias_initializer,
        kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
        activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
        bias_constraint=bias_constraint, dtype=dtype, param_dtype=dtype)
    self._args = dict(
        filters=filters, kernel_size=self._spec.kernel_size,
        strides=self._spec.config.strides, padding=self._spec.config.padding,
        data_format=self._spec.config.data_format, activation=activation,
        use_bias=bool(use_bias), kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
        bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
        kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
        output_padding=self._spec.config.output_padding,
        dilation_rate=self._spec.config.dilation_rate, dtype=str(jnp.dtype(dtype)))
    self.name = name or _unique_name("conv2d_transpose")
    self._trainable = bool(trainable)
    self._initial_weights = kwargs.get("weights")
    self._kernel: Variable | None = None
    self._bias: Variable | None = None
    self._losses: list = []
    self.built = False

  # ------------------------------------------------------------- building --
  def build(self, input_shape, key=None) -> None:
    """Creates the weights for inputs of ``input_shape`` (batch may be None)."""
    input_shape = tuple(input_shape)
    in_channels = self._spec.in_channels(input_shape)
    if in_channels is None:
      raise ValueError(
          f"The channel dimension of the inputs should be defined, got input_shape "
          f"{input_shape}.")
    if key is None:
      key = jax.random.fold_in(jax.random.key(_STATE["seed"]), _STATE["count"])
      _STATE["count"] += 1
    k_key, b_key = jax.random.split(key)
    spec = self._spec
    self._kernel = Variable(f"{self.name}/kernel:0",
                            spec.kernel_init(k_key, spec.kernel_shape(in_channels),
                                             spec.param_dtype), self._trainable)
    if spec.use_bias:
      self._bias = Variable(f"{self.name}/bias:0",
                            spec.bias_init(b_key, (spec.features,), spec.param_dtype),
                            self._trainable)
    self.built = True
    _LAYERS[self.name] = self
    if self._initial_weights is not None:
      self.set_weights(self._initial_weights)
      self._initial_weights = None

  def __call__(self, inputs):
    """``inputs``: (batch, h, w, in_channels) (or NCHW) -> the output."""
    inputs = jnp.asarray(inputs)
    if not self.built:
      self.build(inputs.shape)
    y = self.functional_call(self.params, inputs)
    self._losses = self._penalties(self.params, y)
    return y

  def apply(self, inputs, *args, **kwargs):
    """Deprecated alias of ``__call__``, as in TF."""
    warnings.warn("`layer.apply` is deprecated; please use `layer.__call__` instead.",
                  DeprecationWarning, stacklevel=2)
    return self.__call__(inputs, *args, **kwargs)

  # ----------------------------------------------------------- functional --
  @property
  def params(self) -> dict:
    """``{"kernel": (kh, kw, filters, in), "bias": (filters,)}`` as arrays."""
    self._check_built("params")
    out = {"kernel": self._kernel.value}
    if self._bias is not None:
      out["bias"] = self._bias.value
    return out

  def functional_call(self, params: Mapping[str, jax.Array], inputs) -> jax.Array:
    """The layer's output for explicit ``params``: pure, for ``jax.grad``."""
    y, _ = _layer.forward(self._spec, params["kernel"], params.get("bias"), inputs)
    return y

  def regularization_loss(self, params: Mapping[str, jax.Array], outputs=None) -> jax.Array:
    """Sum of what ``losses`` holds, for explicit params (and outputs, for
    the activity penalty): pure, for a training loss."""
    return sum(self._penalties(params, outputs), jnp.zeros(()))

  def _penalties(self, params, y) -> list:
    """TF's order: the activity penalty (added by the call), then kernel and
    bias penalties."""
    spec = self._spec
    pens = _layer.penalties(spec, params["kernel"], params.get("bias"),
                            y if y is not None else jnp.zeros((1,)))
    order = ["activity_regularizer"] if y is not None else []
    order += ["kernel_regularizer", "bias_regularizer"]
    return [pens[k] for k in order if k in pens]

  def apply_constraints(self) -> None:
    """Projects kernel and bias onto their constraints (TF applies them after
    each optimizer step)."""
    self._check_built("apply_constraints")
    params = _layer.project(self._spec, self.params)
    self._kernel.assign(params["kernel"])
    if self._bias is not None:
      self._bias.assign(params["bias"])

  # ------------------------------------------------------ TF's attributes --
  def _check_built(self, what):
    if not self.built:
      raise ValueError(
          f"Layer {self.name!r} has no weights yet: call it on an input or "
          f"build(input_shape) before using `{what}`.")

  @property
  def kernel(self) -> Variable:
    self._check_built("kernel")
    return self._kernel

  @property
  def bias(self) -> Variable | None:
    self._check_built("bias")
    return self._bias

  @property
  def weights(self) -> list[Variable]:
    return [v for v in (self._kernel, self._bias) if v is not None]

  @property
  def variables(self) -> list[Variable]:
    return self.weights

  @property
  def trainable_variables(self) -> list[Variable]:
    return self.weights if self._trainable else []

  trainable_weights = trainable_variables

  @property
  def non_trainable_variables(self) -> list[Variable]:
    return [] if self._trainable else self.weights

  non_trainable_weights = non_trainable_variables

  @property
  def trainable(self) -> bool:
    return self._trainable

  @trainable.setter
  def trainable(self, value: bool) -> None:
    self._trainable = bool(value)
    for v in self.weights:
      v.trainable = self._trainable

  @property
  def losses(self) -> list[jax.Array]:
    """The penalties of the last call (TF's ``layer.losses``), or the weight
    penalties alone before any call."""
    if self._losses:
      return list(self._losses)
    return self._penalties(self.params, None) if self.built else []

  @property
  def scope_name(self) -> str:
    return self.name

  @property
  def graph(self):
    """Deprecated in TF (layers no longer track their graph)."""
    warnings.warn("Layer.graph is deprecated: tf.layers layers no longer track their graph.",
                  DeprecationWarning, stacklevel=2)
    return None

  @property
  def kernel_constraint(self):
    return self._spec.kernel_constraint

  @property
  def bias_constraint(self):
    return self._spec.bias_constraint

  @property
  def dtype(self) -> str:
    return self._args["dtype"]

  def get_weights(self) -> list[np.ndarray]:
    return [v.numpy() for v in self.weights]

  def set_weights(self, weights: Sequence[Any]) -> None:
    """``[kernel, bias]`` in TF layout (``[kernel]`` without bias)."""
    self._check_built("set_weights")
    if len(weights) != len(self.weights):
      raise ValueError(
          f"You called `set_weights(weights)` on layer {self.name!r} with a weight list of "
          f"length {len(weights)}, but the layer was expecting {len(self.weights)} weights.")
    for var, value in zip(self.weights, weights):
      if tuple(np.shape(value)) != var.shape:
        raise ValueError(
            f"Layer {self.name} weight shape {var.shape} is not compatible with provided "
            f"weight shape {tuple(np.shape(value))}.")
    for var, value in zip(self.weights, weights):
      var.assign(value)

  def compute_output_shape(self, input_shape) -> tuple:
    """TF's output shape for ``input_shape`` (batch may be None)."""
    input_shape = tuple(input_shape)
    spec = self._spec
    in_channels = spec.in_channels(input_shape)
    probe = tuple(0 if d is None else d for d in input_shape)
    shape = _output_shape(probe, spec.kernel_shape(in_channels), spec.config)
    return (input_shape[0],) + tuple(shape[1:])

  def get_config(self) -> dict:
    cfg = {"name": self.name, "trainable": self._trainable, **self._args}
    act = cfg["activation"]
    cfg["activation"] = "linear" if act is None else (
        act if isinstance(act, str) else getattr(act, "__name__", act))
    return cfg

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "Conv2DTranspose":
    config = dict(config)
    if config.get("activation") == "linear":
      config["activation"] = None
    return cls(**config)

  def __repr__(self):
    return f"<jconvt.compat.v1.layers.Conv2DTranspose {self.name!r} built={self.built}>"


# TF's other name for the same class.
Conv2DTransposeV1 = Conv2DTranspose


def conv2d_transpose(inputs, filters, kernel_size, strides=(1, 1), padding="valid",
                     data_format="channels_last", activation=None, use_bias=True,
                     kernel_initializer=None, bias_initializer="zeros",
                     kernel_regularizer=None, bias_regularizer=None,
                     activity_regularizer=None, kernel_constraint=None,
                     bias_constraint=None, trainable=True, name=None, reuse=None):
  """Functional form of ``Conv2DTranspose`` (TF's
  ``tf.compat.v1.layers.conv2d_transpose``). With ``reuse=True`` and a
  ``name`` already built, that layer's weights are used again.
  """
  if reuse:
    if name is None or name not in _LAYERS:
      raise ValueError(
          f"Variable {name}/kernel does not exist, or was not created with "
          f"conv2d_transpose: cannot reuse it (`reuse`={reuse!r}).")
    return _LAYERS[name](inputs)
  if name is not None and name in _LAYERS:
    raise ValueError(
        f"Variable {name}/kernel already exists, disallowed. Did you mean to set "
        f"reuse=True?")
  layer = Conv2DTranspose(
      filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
      activation=activation, use_bias=use_bias, kernel_initializer=kernel_initializer,
      bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
      bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
      kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
      trainable=trainable, name=name)
  return layer(inputs)
