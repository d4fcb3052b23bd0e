"""Keras weight constraints, and an optax wrapper that applies them after
each optimizer step (as Keras does after ``apply_gradients``)."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Union

import jax
import jax.numpy as jnp
import optax

_EPSILON = 1e-7  # keras.backend.epsilon()
Axis = Union[int, tuple[int, ...]]


def _axis(axis):
  return tuple(axis) if isinstance(axis, (list, tuple)) else axis


def _norms(w, axis):
  return jnp.sqrt(jnp.sum(jnp.square(w), axis=_axis(axis), keepdims=True))


@dataclasses.dataclass(frozen=True)
class NonNeg:
  """Zeroes negative weights."""

  def __call__(self, w):
    return w * (w >= 0).astype(w.dtype)


@dataclasses.dataclass(frozen=True)
class MaxNorm:
  """Caps the norm along ``axis`` at ``max_value``.

  Keras' axis semantics: for a transposed-conv kernel ``(kh, kw, filters,
  in_channels)``, ``axis=[0, 1, 2]`` constrains each input channel's filter.
  """

  max_value: float = 2.0
  axis: Axis = 0

  def __call__(self, w):
    norms = _norms(w, self.axis)
    desired = jnp.clip(norms, 0, self.max_value)
    return w * (desired / (_EPSILON + norms))


@dataclasses.dataclass(frozen=True)
class UnitNorm:
  """Unit norm along ``axis``."""

  axis: Axis = 0

  def __call__(self, w):
    return w / (_EPSILON + _norms(w, self.axis))


@dataclasses.dataclass(frozen=True)
class MinMaxNorm:
  """Norm along ``axis`` pulled into ``[min_value, max_value]`` at ``rate``."""

  min_value: float = 0.0
  max_value: float = 1.0
  rate: float = 1.0
  axis: Axis = 0

  def __call__(self, w):
    norms = _norms(w, self.axis)
    desired = self.rate * jnp.clip(norms, self.min_value, self.max_value) + (
        1 - self.rate) * norms
    return w * (desired / (_EPSILON + norms))


_NAMES = {"non_neg": NonNeg, "nonneg": NonNeg, "max_norm": MaxNorm, "maxnorm": MaxNorm,
          "unit_norm": UnitNorm, "unitnorm": UnitNorm, "min_max_norm": MinMaxNorm,
          "minmaxnorm": MinMaxNorm}


def get(identifier, argument: str = "constraint") -> Callable[[jax.Array], jax.Array] | None:
  """``None``, a Keras name (``'non_neg'``, ``'max_norm'``, ``'unit_norm'``,
  ``'min_max_norm'``, Keras defaults), a ``{'class_name', 'config'}`` spec,
  or a callable ``w -> w``."""
  if identifier is None or callable(identifier):
    return identifier
  if isinstance(identifier, str) and identifier.lower() in _NAMES:
    return _NAMES[identifier.lower()]()
  if isinstance(identifier, Mapping) and str(identifier.get("class_name", "")).lower() in _NAMES:
    return _NAMES[identifier["class_name"].lower()](**dict(identifier.get("config", {})))
  raise ValueError(
      f"`{argument}` (={identifier!r}) is not a Keras constraint; expected None, a "
      f"callable, or one of 'non_neg', 'max_norm', 'unit_norm', 'min_max_norm'.")


def constrained(optimizer: optax.GradientTransformation,
                project: Callable[[Any], Any]) -> optax.GradientTransformation:
  """Wraps an optax optimizer so ``params + updates`` is projected.

  After ``updates, state = tx.update(grads, state, params)``, applying
  ``optax.apply_updates(params, updates)`` gives ``project(params + inner)``:
  the constraint is applied after each step, as Keras does.

  Args:
    optimizer: any optax transformation.
    project: ``params -> params`` (for example from
      ``jconvt.linen.constraint_projection``).
  """

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("`params` must be passed to update() of a constrained optimizer.")
    inner, state = optimizer.update(updates, state, params)
    new_params = project(optax.apply_updates(params, inner))
    return jax.tree_util.tree_map(lambda n, p: n - p, new_params, params), state

  return optax.GradientTransformation(optimizer.init, update)
