"""Keras/TF initializers by name, as JAX initializers with TF's distributions.

Fans follow TF for a 4-D kernel ``(kh, kw, a, b)``: ``fan_in = kh*kw*a``,
``fan_out = kh*kw*b``. For a transposed-conv kernel ``(kh, kw, filters,
in_channels)`` that is ``fan_in = kh*kw*filters`` and
``fan_out = kh*kw*in_channels``, exactly as TF computes them (jax's
``variance_scaling`` with ``in_axis=-2, out_axis=-1``).
"""

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

Initializer = Callable[..., jax.Array]


def _variance_scaling(scale, mode, distribution):
  return jinit.variance_scaling(scale, mode, distribution, in_axis=-2, out_axis=-1)


def constant(value: float = 0.0) -> Initializer:
  return jinit.constant(value)


def random_normal(mean: float = 0.0, stddev: float = 0.05) -> Initializer:
  def init(key, shape, dtype=jnp.float32):
    return mean + stddev * jax.random.normal(key, shape, dtype)
  return init


def random_uniform(minval: float = -0.05, maxval: float = 0.05) -> Initializer:
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval, maxval)
  return init


def truncated_normal(mean: float = 0.0, stddev: float = 0.05) -> Initializer:
  """Keras' TruncatedNormal: resampled outside two standard deviations."""
  def init(key, shape, dtype=jnp.float32):
    return mean + stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
  return init


def variance_scaling(scale: float = 1.0, mode: str = "fan_in",
                     distribution: str = "truncated_normal") -> Initializer:
  """Keras' VarianceScaling (``'normal'`` means truncated normal, as Keras)."""
  if distribution == "normal":
    distribution = "truncated_normal"
  return _variance_scaling(scale, mode, distribution)


def orthogonal(gain: float = 1.0) -> Initializer:
  return jinit.orthogonal(gain, column_axis=-1)


_FACTORIES: dict[str, Callable[[], Initializer]] = {
    "zeros": lambda: jinit.zeros,
    "ones": lambda: jinit.ones,
    "constant": constant,
    "glorot_uniform": lambda: _variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": lambda: _variance_scaling(1.0, "fan_avg", "truncated_normal"),
    "he_uniform": lambda: _variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": lambda: _variance_scaling(2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": lambda: _variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": lambda: _variance_scaling(1.0, "fan_in", "truncated_normal"),
    "random_normal": random_normal,
    "random_uniform": random_uniform,
    "truncated_normal": truncated_normal,
    "variance_scaling": variance_scaling,
    "orthogonal": orthogonal,
}
_ALIASES = {"xavier_uniform": "glorot_uniform", "xavier_normal": "glorot_normal",
            "uniform": "random_uniform", "normal": "random_normal", "zero": "zeros",
            "one": "ones"}
NAMES = tuple(sorted(_FACTORIES))


def _snake(name: str) -> str:
  """'GlorotUniform' -> 'glorot_uniform' (Keras class names)."""
  return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def get(identifier, argument: str = "initializer") -> Initializer:
  """Resolves a Keras initializer name (or class name) or passes a callable.

  Raises:
    ValueError: for an unknown name.
    TypeError: for anything else.
  """
  if callable(identifier):
    return identifier
  if isinstance(identifier, str):
    key = identifier if identifier.islower() else _snake(identifier)
    key = _ALIASES.get(key, key)
    if key in _FACTORIES:
      return _FACTORIES[key]()
    raise ValueError(
        f"`{argument}` (={identifier!r}) is not a known Keras initializer; "
        f"expected a callable or one of {', '.join(NAMES)}.")
  raise TypeError(
      f"`{argument}` must be a Keras initializer name or a callable "
      f"(key, shape, dtype) -> array, got {identifier!r}.")
