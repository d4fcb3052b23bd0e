"""Activations by TensorFlow (tf_keras) name, with tf_keras' definitions."""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _hard_sigmoid(x):
  # tf_keras 2.x: piecewise linear 0.2 * x + 0.5, clipped to [0, 1].
  return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


def _mish(x):
  return x * jnp.tanh(jax.nn.softplus(x))


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.2),
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "mish": _mish,
    "exponential": jnp.exp,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),  # Keras: last axis
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
}

ACTIVATION_NAMES = tuple(sorted(_ACTIVATIONS))


def normalize_activation(activation):
  """Returns ``None``, a callable, or a lower-case known name.

  Raises:
    ValueError: for an unknown name.
    TypeError: for anything that is neither a string nor a callable.
  """
  if activation is None or callable(activation):
    return activation
  if isinstance(activation, str):
    name = activation.lower()
    if name not in _ACTIVATIONS:
      raise ValueError(
          f"`activation` (={activation!r}) is not a known TensorFlow "
          f"activation; expected None, a callable or one of "
          f"{', '.join(ACTIVATION_NAMES)}.")
    return None if name == "linear" else name
  raise TypeError(
      f"`activation` must be None, a callable or a TensorFlow activation "
      f"name, got {activation!r} of type {type(activation).__name__}.")


def get_activation(activation) -> Callable[[jax.Array], jax.Array] | None:
  """Resolves a normalised activation to a callable (or ``None``)."""
  if isinstance(activation, str):
    return _ACTIVATIONS[activation]
  return activation
