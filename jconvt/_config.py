"""The frozen, hashable configuration of a transposed convolution."""

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jconvt import _activations

IntOrPair = Union[int, tuple[int, int]]
PaddingLike = Union[str, tuple[tuple[int, int], tuple[int, int]]]

DATA_FORMATS = ("channels_last", "channels_first")
ALGORITHMS = ("auto", "dilated", "phase", "col2im")
FLOATING = "(float16, bfloat16, float32, float64)"  # the dtypes error messages allow


def _int(value, name: str, minimum: int) -> int:
  if isinstance(value, bool):
    raise TypeError(f"`{name}` must contain integers, got {value!r}.")
  try:
    out = operator.index(value)
  except TypeError:
    raise TypeError(
        f"`{name}` must contain integers, got {value!r} of type "
        f"{type(value).__name__}.") from None
  if out < minimum:
    raise ValueError(f"`{name}` values must be >= {minimum}, got {value!r}.")
  return out


def normalize_pair(value, name: str, minimum: int) -> tuple[int, int]:
  """An int or a pair of ints, as a validated ``(height, width)`` tuple."""
  if isinstance(value, (tuple, list)):
    if len(value) != 2:
      raise ValueError(
          f"`{name}` must be an int or a pair of ints, got {value!r} "
          f"({len(value)} values).")
    return (_int(value[0], name, minimum), _int(value[1], name, minimum))
  if isinstance(value, (str, bytes)) or value is None:
    raise TypeError(
        f"`{name}` must be an int or a pair of ints, got {value!r}.")
  v = _int(value, name, minimum)
  return (v, v)


def normalize_padding(padding) -> PaddingLike:
  """``'valid'``/``'same'`` (any case) or ``((top, bottom), (left, right))``."""
  if isinstance(padding, str):
    p = padding.lower()
    if p not in ("valid", "same"):
      raise ValueError(
          f"`padding` (={padding!r}) must be 'valid' or 'same' (any case), "
          f"or explicit ((top, bottom), (left, right)) pairs.")
    return p
  if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
      isinstance(p, (tuple, list)) for p in padding):
    return (normalize_pair(tuple(padding[0]), "padding", 0),
            normalize_pair(tuple(padding[1]), "padding", 0))
  raise ValueError(
      f"`padding` (={padding!r}) must be 'valid' or 'same' (any case), or "
      f"explicit ((top, bottom), (left, right)) pairs of non-negative ints.")


def _normalize_precision(precision):
  if precision is None or isinstance(precision, lax.Precision):
    return precision
  if isinstance(precision, str):
    try:
      return lax.Precision(precision.lower())
    except ValueError:
      raise ValueError(
          f"`precision` (={precision!r}) is not a jax.lax.Precision name; "
          f"expected one of 'default', 'high', 'highest'.") from None
  if isinstance(precision, (tuple, list)) and len(precision) == 2:
    return tuple(_normalize_precision(p) for p in precision)
  raise TypeError(
      f"`precision` must be None, a jax.lax.Precision, its name, or a pair "
      f"of them, got {precision!r}.")


def floating_dtype(dtype, name: str) -> np.dtype:
  """``dtype`` as a NumPy dtype; a ``TypeError`` naming ``name`` unless it
  is a floating dtype."""
  try:
    out = np.dtype(dtype)
  except TypeError:
    raise TypeError(f"`{name}` must be a floating dtype {FLOATING}, got {dtype!r}.") from None
  if not jnp.issubdtype(out, jnp.floating):
    raise TypeError(f"`{name}` must be a floating dtype {FLOATING}, got {out}.")
  return out


def _normalize_dtype(dtype, name: str):
  return None if dtype is None else floating_dtype(dtype, name)


@dataclasses.dataclass(frozen=True)
class ConvTransposeConfig:
  """Static settings of a 2-D transposed convolution, in TensorFlow's terms.

  Every field is normalised in ``__post_init__`` to a hashable value (ints to
  ``(height, width)`` tuples, names to lower case), so equal configs compare
  and hash equal and ``jax.jit`` never retraces for them. The config is a
  pytree with no leaves: pass it straight through ``jax.jit``.

  Attributes:
    strides: int or ``(sh, sw)``, each ``>= 1``.
    padding: ``'valid'`` or ``'same'`` (case-insensitive), as TF; or, beyond
      TF, explicit ``((top, bottom), (left, right))`` crops of the full
      transposed convolution (the padding of the matching forward conv).
    output_padding: ``None`` or int or pair, each ``< stride`` (TF's rule):
      extra rows/columns at the bottom/right, as Keras.
    dilation_rate: int or pair, each ``>= 1``. TF refuses it together with
      ``strides > 1``; jconvt defines that case as the gradient of the
      matching forward convolution.
    data_format: ``'channels_last'`` (NHWC) or ``'channels_first'`` (NCHW).
    activation: ``None``, a callable, or a tf_keras activation name
      (``'relu'``, ``'gelu'``, ...).
    precision: ``None``, a ``jax.lax.Precision`` or its name, or a pair,
      passed to ``lax.conv_general_dilated``.
    preferred_element_type: ``None`` or a floating dtype: the accumulation
      and output dtype. By default the output dtype is the input's.
    algorithm: ``'auto'``, ``'dilated'`` (the input-dilated reference
      formulation), ``'phase'`` (sub-pixel decomposition) or ``'col2im'``
      (one GEMM, then col2im). See ``jconvt._algorithms.dispatch``.

  >>> cfg = ConvTransposeConfig(strides=2, padding="SAME")
  >>> cfg.strides, cfg.padding
  ((2, 2), 'same')
  """

  strides: IntOrPair = 1
  padding: PaddingLike = "valid"
  output_padding: IntOrPair | None = None
  dilation_rate: IntOrPair = 1
  data_format: str = "channels_last"
  activation: Union[str, Callable[..., Any], None] = None
  precision: Any = None
  preferred_element_type: Any = None
  algorithm: str = "auto"

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
    set_("strides", normalize_pair(self.strides, "strides", 1))
    set_("padding", normalize_padding(self.padding))
    set_("dilation_rate", normalize_pair(self.dilation_rate, "dilation_rate", 1))
    if self.output_padding is not None:
      op = normalize_pair(self.output_padding, "output_padding", 0)
      for axis in range(2):
        if op[axis] >= self.strides[axis]:
          raise ValueError(
              f"`output_padding` (={self.output_padding!r}) must be smaller "
              f"than `strides` (={self.strides}) on every axis, as in "
              f"TensorFlow; axis {axis} has {op[axis]} >= "
              f"{self.strides[axis]}.")
      set_("output_padding", op)
    if not isinstance(self.data_format, str) or (
        self.data_format.lower() not in DATA_FORMATS):
      raise ValueError(
          f"`data_format` (={self.data_format!r}) must be one of "
          f"{DATA_FORMATS}.")
    set_("data_format", self.data_format.lower())
    set_("activation", _activations.normalize_activation(self.activation))
    set_("precision", _normalize_precision(self.precision))
    set_("preferred_element_type", _normalize_dtype(
        self.preferred_element_type, "preferred_element_type"))
    if not isinstance(self.algorithm, str) or (
        self.algorithm.lower() not in ALGORITHMS):
      raise ValueError(
          f"`algorithm` (={self.algorithm!r}) must be one of {ALGORITHMS}.")
    set_("algorithm", self.algorithm.lower())
    if self.algorithm == "phase" and self.dilation_rate != (1, 1):
      raise ValueError(
          f"`algorithm` (='phase') needs `dilation_rate` (={self.dilation_rate}) "
          f"of 1: the sub-pixel decomposition of a dilated kernel is not "
          f"implemented. Use algorithm='auto' or 'dilated'.")

  @property
  def channels_last(self) -> bool:
    return self.data_format == "channels_last"

  def replace(self, **changes) -> "ConvTransposeConfig":
    """A copy with some fields changed (and validated again)."""
    return dataclasses.replace(self, **changes)


jax.tree_util.register_static(ConvTransposeConfig)
