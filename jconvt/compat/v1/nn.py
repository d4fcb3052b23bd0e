"""``tf.compat.v1.nn.conv2d_transpose``, ``atrous_conv2d_transpose`` and
``conv2d_backprop_input``, in JAX.

The op TF v1 decoders call with their own weights (DCGAN's generators among
them): ``output_shape`` names the output's size, and TF computes the input
gradient of the forward convolution over an input of that size. Each
``output_shape`` maps onto an explicit crop and ``output_padding`` of
``jconvt.conv2d_transpose`` (``_shapes.backprop_input_crop``), so the same
weights give the same values, and the call runs on jconvt's fast paths under
``jax.jit``, ``jax.grad`` and ``jax.vmap``.

>>> import jax.numpy as jnp
>>> from jconvt.compat import v1 as tf_v1
>>> x, w = jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 8, 3))  # w: (kh, kw, out, in)
>>> tf_v1.nn.conv2d_transpose(x, w, output_shape=[1, 7, 7, 8], strides=[1, 2, 2, 1]).shape
(1, 7, 7, 8)
"""

import operator
from collections.abc import Sequence

import jax
import numpy as np

from jconvt import _shapes
from jconvt._config import ConvTransposeConfig
from jconvt._conv import conv2d_transpose as _conv2d_transpose

__all__ = ("atrous_conv2d_transpose", "conv2d_backprop_input", "conv2d_transpose")

_DATA_FORMATS = {"NHWC": "channels_last", "NCHW": "channels_first"}


def _either(name: str, value, other_name: str, other):
  """TF's ``deprecated_argument_lookup``: one of two names for an argument."""
  if value is not None and other is not None:
    raise ValueError(f"Cannot specify both `{name}` and `{other_name}`: they are the same "
                     f"argument.")
  out = value if value is not None else other
  if out is None:
    raise TypeError(f"`{name}` (or `{other_name}`) is required.")
  return out


def _check_name(name, position: int, v2_argument: str | None = None):
  """TF's ``name`` is a string (or ``None``). Anything else is refused: the
  likeliest cause is TF2's signature, which has another argument at
  ``position``, and ignoring it would silently drop that argument."""
  if name is None or isinstance(name, str):
    return
  hint = (f" TF2's signature has `{v2_argument}` there; pass it by keyword "
          f"({v2_argument}=...)." if v2_argument else "")
  raise TypeError(f"`name` must be a string or None, got {name!r}: in TF v1's signature, "
                  f"which this follows, argument {position} is `name`.{hint}")


def _ints(value, name: str) -> list[int]:
  """``value`` (an int, a sequence or a 1-D array of ints) as a list."""
  if isinstance(value, (str, bytes)):
    raise TypeError(f"`{name}` must be an int or a list of ints, got {value!r}.")
  if hasattr(value, "shape"):
    try:
      values = np.asarray(value).tolist()
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
      raise TypeError(f"`{name}` must be static: a list or tuple of ints, or a concrete "
                      f"array, not a traced one (got {value!r}). Under jit, build it from "
                      f"Python ints, e.g. x.shape[0] where TF code has tf.shape(x)[0], and "
                      f"not with jnp.stack or jnp.array.") from None
  else:
    values = value
  values = list(values) if isinstance(values, (list, tuple)) else [values]
  try:
    if any(isinstance(v, bool) for v in values):
      raise TypeError
    return [operator.index(v) for v in values]
  except TypeError:
    raise TypeError(f"`{name}` must be an int or a list of ints, got {value!r}.") from None


def _outer_and_spatial(values: Sequence, channels_first: bool) -> tuple[tuple, list]:
  """A 4-D argument in the data format's order (NHWC or NCHW) split into
  its (batch, channel) entries and its (height, width) ones."""
  if channels_first:
    return (values[0], values[1]), list(values[2:])
  return (values[0], values[3]), list(values[1:3])


def _spatial_pair(value, name: str, channels_first: bool) -> tuple[int, int]:
  """TF's ``_get_sequence`` for 2-D ops: ``None`` is 1; one value, a
  (height, width) pair, or four in the data format's order whose batch and
  channel entries are 1; each at least 1."""
  values = [1] if value is None else _ints(value, name)
  if len(values) == 4:
    outer, values = _outer_and_spatial(values, channels_first)
    if outer != (1, 1):
      raise ValueError(
          f"`{name}` (={value!r}) must be 1 in the batch and channel dimensions, as in "
          f"TensorFlow: only the spatial ones may differ.")
  elif len(values) == 1:
    values = values * 2
  elif len(values) != 2:
    raise ValueError(f"`{name}` (={value!r}) should be of length 1, 2 or 4, got "
                     f"{len(values)} values.")
  if min(values) < 1:
    raise ValueError(f"`{name}` (={value!r}) must be >= 1 everywhere.")
  return values[0], values[1]


def _padding(padding, channels_first: bool):
  """``'SAME'`` or ``'VALID'`` (any case), or TF's explicit padding: four
  (before, after) pairs in the data format's order, zero in the batch and
  channel dimensions. Returns the name in lower case or the spatial pairs."""
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"`padding` (={padding!r}) must be 'SAME' or 'VALID' (any case), or "
                       f"explicit [[0, 0], [top, bottom], [left, right], [0, 0]] pairs.")
    return padding.lower()
  try:
    pairs = [tuple(_ints(p, "padding")) for p in padding]
  except TypeError:
    pairs = []
  if len(pairs) != 4 or any(len(p) != 2 for p in pairs):
    raise ValueError(f"`padding` (={padding!r}) must be 'SAME', 'VALID', or four "
                     f"(before, after) pairs of ints, one per dimension of the input.")
  outer, spatial = _outer_and_spatial(pairs, channels_first)
  if outer != ((0, 0), (0, 0)):
    raise ValueError(f"`padding` (={padding!r}) must be zero in the batch and channel "
                     f"dimensions, as in TensorFlow.")
  if min(min(p) for p in spatial) < 0:
    raise ValueError(f"`padding` (={padding!r}) must be >= 0 everywhere.")
  return tuple(spatial)


def conv2d_transpose(value=None, filter=None, output_shape=None, strides=None,  # noqa: A002
                     padding="SAME", data_format="NHWC", name=None, input=None,  # noqa: A002
                     filters=None, dilations=None, *, algorithm="auto", precision=None):
  """TF's ``tf.compat.v1.nn.conv2d_transpose`` (and ``tf.nn.conv2d_transpose``).

  Args:
    value: the input, ``(batch, height, width, in_channels)`` for ``'NHWC'``
      or ``(batch, in_channels, height, width)`` for ``'NCHW'``; ``input``
      is its other name.
    filter: the kernel, ``(kh, kw, out_channels, in_channels)``, TF's layout;
      ``filters`` is its other name.
    output_shape: the output's shape: 4 ints in the data format's order, or
      the 2 spatial ones. Static: a list, tuple or concrete array.
    strides: an int, or 1, 2 or 4 ints (TF's forms); ``None`` is 1.
    padding: ``'SAME'`` or ``'VALID'`` (any case), or explicit padding:
      four (before, after) pairs, zero at the batch and channels.
    data_format: ``'NHWC'`` or ``'NCHW'``.
    name: accepted for TF's signature (a string or ``None``); unused.
    input: ``value``'s other name.
    filters: ``filter``'s other name.
    dilations: an int, or 1, 2 or 4 ints; ``None`` is 1.
    algorithm: jconvt's ``ConvTransposeConfig.algorithm`` (keyword only).
    precision: passed to XLA (keyword only).

  Returns:
    The output, of ``output_shape``, in the input's dtype.

  Raises:
    ValueError, TypeError: naming the argument, for what TF refuses: an
      ``output_shape`` whose forward convolution does not give the input's
      size, or whose batch or channels do not match the input and the
      filter, or malformed strides, dilations or padding.
  """
  _check_name(name, 7, "dilations")
  x = _either("value", value, "input", input)
  kernel = _either("filter", filter, "filters", filters)
  if data_format not in _DATA_FORMATS:
    raise ValueError(f"`data_format` (={data_format!r}) must be 'NHWC' or 'NCHW'.")
  channels_first = data_format == "NCHW"
  config = _config_for(np.shape(x), np.shape(kernel), output_shape, strides, padding,
                       channels_first, dilations)
  return _conv2d_transpose({"kernel": kernel}, x,
                           config.replace(algorithm=algorithm, precision=precision))


def atrous_conv2d_transpose(value, filters, output_shape, rate, padding, name=None, *,
                            algorithm="auto", precision=None):
  """TF's ``tf.nn.atrous_conv2d_transpose``: stride 1 with a kernel dilated
  by ``rate``; NHWC only, as in TF.

  Args:
    value: ``(batch, height, width, in_channels)``.
    filters: ``(kh, kw, out_channels, in_channels)``.
    output_shape: 4 ints (NHWC) or the 2 spatial ones.
    rate: a positive int.
    padding: ``'SAME'`` or ``'VALID'`` (any case).
    name: accepted for TF's signature (a string or ``None``); unused.
    algorithm, precision: as in ``conv2d_transpose``.

  Returns:
    The output, of ``output_shape``.
  """
  _check_name(name, 6)
  if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate < 1:
    raise ValueError(f"`rate` (={rate!r}) must be a positive int.")
  if not isinstance(padding, str):
    raise ValueError(f"`padding` (={padding!r}) must be 'SAME' or 'VALID'.")
  return conv2d_transpose(value, filters, output_shape, strides=1, padding=padding,
                          dilations=int(rate), algorithm=algorithm, precision=precision)


def conv2d_backprop_input(input_sizes, filter=None, out_backprop=None, strides=None,  # noqa: A002
                          padding=None, use_cudnn_on_gpu=True, data_format="NHWC",
                          dilations=(1, 1, 1, 1), name=None, filters=None, *, algorithm="auto",
                          precision=None):
  """TF's ``tf.compat.v1.nn.conv2d_backprop_input``: the op behind
  ``conv2d_transpose``, its arguments in the gradient's terms.

  Args:
    input_sizes: the forward convolution's input shape, the output here
      (``conv2d_transpose``'s ``output_shape``).
    filter: ``(kh, kw, out_channels, in_channels)``; ``filters`` is its
      other name.
    out_backprop: the forward convolution's output gradient, the input
      here.
    strides, padding, data_format, dilations: as ``conv2d_transpose``'s;
      ``padding`` is required, as in TF.
    use_cudnn_on_gpu, name: accepted for TF's signature (a bool; a string
      or ``None``); unused.
    filters: ``filter``'s other name.
    algorithm, precision: as in ``conv2d_transpose``.

  Returns:
    The output, of ``input_sizes``.
  """
  _check_name(name, 9)
  if not isinstance(use_cudnn_on_gpu, bool):
    raise TypeError(f"`use_cudnn_on_gpu` must be a bool, got {use_cudnn_on_gpu!r}: it is "
                    f"argument 6 in TF v1's signature, which this follows.")
  if padding is None:
    raise TypeError("`padding` is required: 'SAME', 'VALID' or explicit pairs.")
  if out_backprop is None:
    raise TypeError("`out_backprop` is required: the input of the transposed convolution.")
  return conv2d_transpose(out_backprop, _either("filter", filter, "filters", filters),
                          input_sizes, strides, padding, data_format, dilations=dilations,
                          algorithm=algorithm, precision=precision)


def _config_for(x_shape: Sequence[int], kernel_shape: Sequence[int], output_shape, strides,
                padding, channels_first: bool, dilations) -> ConvTransposeConfig:
  """The ``ConvTransposeConfig`` that gives TF's output of ``output_shape``."""
  if output_shape is None:
    raise TypeError("`output_shape` is required: the output's 4 (or 2 spatial) sizes.")
  if len(x_shape) != 4 or len(kernel_shape) != 4:
    raise ValueError(f"`value` and `filter` must be 4-D, got shapes {tuple(x_shape)} and "
                     f"{tuple(kernel_shape)}.")
  shape = _ints(output_shape, "output_shape")
  batch, channels = (x_shape[0], kernel_shape[2])
  if len(shape) == 4:
    given, shape = _outer_and_spatial(shape, channels_first)
    if given != (batch, channels):
      raise ValueError(
          f"`output_shape` (={output_shape!r}) has batch {given[0]} and {given[1]} channels; "
          f"the input's batch is {batch} and the filter's out_channels (its third "
          f"dimension) {channels}.")
  elif len(shape) != 2:
    raise ValueError(f"`output_shape` (={output_shape!r}) must hold 4 sizes, or the 2 "
                     f"spatial ones, got {len(shape)}.")
  if min(shape) < 0:
    raise ValueError(f"`output_shape` (={output_shape!r}) must be >= 0 everywhere.")
  stride = _spatial_pair(strides, "strides", channels_first)
  dilation = _spatial_pair(dilations, "dilations", channels_first)
  pad = _padding(padding, channels_first)
  _, in_hw = _outer_and_spatial(x_shape, channels_first)
  crops, extra = [], []
  for axis, what in enumerate(("height", "width")):
    try:
      crop, op = _shapes.backprop_input_crop(
          in_hw[axis], kernel_shape[axis], stride[axis], dilation[axis],
          pad if isinstance(pad, str) else pad[axis], shape[axis])
    except ValueError as e:
      raise ValueError(f"`output_shape` (={output_shape!r}) does not fit the input's "
                       f"{what}: {e}. TensorFlow refuses it too.") from None
    crops.append(crop)
    extra.append(op)
  return ConvTransposeConfig(
      strides=stride, padding=tuple(crops), output_padding=tuple(extra),
      dilation_rate=dilation,
      data_format=_DATA_FORMATS["NCHW" if channels_first else "NHWC"])
