"""Keras weight and activity regularizers: penalties equal to TF's."""

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class L1L2:
  """``l1 * sum(|w|) + l2 * sum(w**2)``, as ``tf.keras.regularizers.L1L2``."""

  l1: float = 0.0
  l2: float = 0.0

  def __call__(self, w: jax.Array) -> jax.Array:
    penalty = jnp.zeros((), w.dtype)
    if self.l1:
      penalty = penalty + jnp.asarray(self.l1, w.dtype) * jnp.sum(jnp.abs(w))
    if self.l2:
      penalty = penalty + jnp.asarray(self.l2, w.dtype) * jnp.sum(jnp.square(w))
    return penalty

  def get_config(self) -> dict:
    return {"l1": self.l1, "l2": self.l2}


def l1(l1: float = 0.01) -> L1L2:  # noqa: D103  (Keras: L1(l1=0.01))
  return L1L2(l1=l1)


def l2(l2: float = 0.01) -> L1L2:  # noqa: D103  (Keras: L2(l2=0.01))
  return L1L2(l2=l2)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:  # noqa: D103
  return L1L2(l1=l1, l2=l2)


_NAMES = {"l1": l1, "l2": l2, "l1_l2": l1_l2, "l1l2": l1_l2}


def get(identifier, argument: str = "regularizer") -> Callable[[jax.Array], jax.Array] | None:
  """``None``, a Keras name (``'l1'``, ``'l2'``, ``'l1_l2'``, Keras defaults),
  a Keras spec ``{'class_name': 'L2', 'config': {'l2': 1e-4}}``, or a callable.
  """
  if identifier is None or callable(identifier):
    return identifier
  if isinstance(identifier, str):
    key = identifier.lower()
    if key in _NAMES:
      return _NAMES[key]()
  elif isinstance(identifier, Mapping) and "class_name" in identifier:
    name = identifier["class_name"].lower()
    cfg = identifier.get("config", {})
    if name in ("l1", "l2", "l1l2", "l1_l2"):
      return L1L2(l1=float(cfg.get("l1", 0.0)), l2=float(cfg.get("l2", 0.0)))
  raise ValueError(
      f"`{argument}` (={identifier!r}) is not a Keras regularizer; expected None, "
      f"a callable, 'l1', 'l2', 'l1_l2' or a {{'class_name', 'config'}} spec.")
