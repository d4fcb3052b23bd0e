"""Integer shape maths for the transposed convolution, and nothing else.

Every output size and every crop offset in jconvt comes from this module.

Definitions, per spatial dimension, with ``n`` the input length, ``k`` the
kernel size, ``s`` the stride, ``d`` the dilation and ``k_eff = (k - 1) * d + 1``:

* The *full* transposed convolution scatters input pixel ``i`` through kernel
  tap ``a`` onto position ``i * s + a * d``; it has length
  ``full = (n - 1) * s + k_eff``.
* The layer's output is ``full[pad_before : pad_before + length]``, where
  positions past the end of ``full`` are zeros (before bias).

``length`` follows Keras' ``deconv_output_length``. ``pad_before`` follows
TensorFlow: for ``'valid'`` it is 0; for ``'same'`` with ``s > 1`` it is the
padding of the forward ``'same'`` convolution whose gradient TF's
``conv2d_transpose`` is, ``max(0, (n - 1) * s + k_eff - length) // 2``; for
``'same'`` with ``s == 1`` it is ``(k_eff - 1) // 2``, which is what
``tf.nn.atrous_conv2d_transpose`` (TF's path for ``dilation_rate > 1``) uses
and equals the former wherever TF's ``conv2d_transpose`` accepts the shapes.
For explicit ``(lo, hi)`` padding, ``pad_before = lo`` and the output is
``full`` cropped by ``lo`` and ``hi``, extended by ``output_padding``.
"""

from collections.abc import Sequence
from typing import Union

Padding = Union[str, tuple[tuple[int, int], tuple[int, int]]]


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
  """Size of a kernel of ``kernel_size`` taps spread ``dilation`` apart."""
  return (kernel_size - 1) * dilation + 1


def conv_output_length(input_length: int, kernel_size: int, stride: int, dilation: int,
                       padding: tuple[int, int]) -> int:
  """Output length of a forward convolution along one axis: ``input_length``
  padded by ``padding`` (lo, hi), a kernel of ``kernel_size`` taps
  ``dilation`` apart, window stride ``stride``."""
  lo, hi = padding
  return (input_length + lo + hi - effective_kernel_size(kernel_size, dilation)) // stride + 1


def conv_output_hw(in_hw, kernel_hw, strides, dilation, padding) -> tuple[int, int]:
  """``conv_output_length`` along height and width: each argument a pair
  (``padding`` a pair of (lo, hi))."""
  return tuple(conv_output_length(n, k, s, d, p)
               for n, k, s, d, p in zip(in_hw, kernel_hw, strides, dilation, padding))


def check_same_padding_is_invertible(
    kernel_size: int, stride: int, dilation: int, output_padding: int | None,
    axis: int) -> None:
  """Rejects the one ``'same'`` case TensorFlow rejects for ``stride > 1``.

  With an even effective kernel and ``output_padding=0`` Keras asks for an
  output of ``(n - 1) * stride``, which a ``'same'`` convolution maps to
  ``n - 1`` pixels, not ``n``: TF fails with "Size of out_backprop doesn't
  match computed". jconvt raises the same condition eagerly and clearly.

  Raises:
    ValueError: for that combination.
  """
  k_eff = effective_kernel_size(kernel_size, dilation)
  if stride > 1 and output_padding == 0 and k_eff % 2 == 0:
    raise ValueError(
        f"`output_padding` (={output_padding}) on spatial axis {axis} with "
        f"padding='same', stride {stride} and an even effective kernel size "
        f"(={k_eff}) asks for an output that a 'same' convolution does not "
        f"map back to the input size; TensorFlow rejects it too. Use "
        f"output_padding=None or 1..{stride - 1}, or explicit padding.")


def transpose_padding_1d(
    input_length: int, kernel_size: int, stride: int, padding: str | tuple[int, int],
    output_padding: int | None, dilation: int) -> tuple[int, int]:
  """Output length and crop offset of a 1-D transposed convolution.

  Args:
    input_length: ``n >= 0``.
    kernel_size: ``k >= 1`` (undilated).
    stride: ``s >= 1``.
    padding: ``'valid'``, ``'same'`` (lower case) or an explicit ``(lo, hi)``.
    output_padding: ``None`` or an int in ``[0, s)``.
    dilation: ``d >= 1``.

  Returns:
    ``(length, pad_before)``: the output length and the offset into the full
    transposed convolution at which the output starts.

  Raises:
    ValueError: if explicit padding crops more than the full output.
  """
  k_eff = effective_kernel_size(kernel_size, dilation)
  full = (input_length - 1) * stride + k_eff
  if isinstance(padding, tuple):
    lo, hi = padding
    length = full - lo - hi + (output_padding or 0)
    if length < 0 and input_length > 0:
      raise ValueError(
          f"`padding` (={padding}) crops {lo + hi} pixels from a transposed "
          f"convolution output of only {full} pixels.")
    return max(length, 0), lo
  if output_padding is None:
    if padding == "valid":
      length = input_length * stride + max(k_eff - stride, 0)
    else:
      length = input_length * stride
  else:
    pad = k_eff // 2 if padding == "same" else 0
    length = (input_length - 1) * stride + k_eff - 2 * pad + output_padding
  length = max(length, 0)  # only an empty input can make the formula negative
  if padding == "valid":
    pad_before = 0
  elif stride == 1:
    pad_before = (k_eff - 1) // 2
  else:
    pad_before = max(0, full - length) // 2
  return length, pad_before


def _forward_length(length: int, kernel_size: int, stride: int, dilation: int, padding) -> int:
  """Outputs of TF's forward convolution over ``length`` pixels: ``'same'``,
  ``'valid'`` (lower case) or explicit ``(lo, hi)``."""
  if padding == "same":
    return -(-length // stride)
  pads = (0, 0) if padding == "valid" else padding
  return max(0, conv_output_length(length, kernel_size, stride, dilation, pads))


def backprop_input_crop(input_length: int, kernel_size: int, stride: int, dilation: int,
                        padding, length: int) -> tuple[tuple[int, int], int]:
  """The explicit crop and ``output_padding`` of ``tf.nn.conv2d_transpose``
  along one axis, given its ``output_shape``'s ``length``.

  TF computes ``tf.nn.conv2d_transpose`` as the input gradient of the
  forward convolution whose input has ``length`` pixels. That convolution's
  padding (``'same'``: the forward ``'same'`` convolution's, computed from
  ``length``; ``'valid'``: none; explicit ``(lo, hi)``) sets ``pad_before``,
  and the output is ``full[pad_before : pad_before + length]``, zeros past
  the end of ``full``. As jconvt's explicit padding that is the crop
  ``(pad_before, full - pad_before - length)``; where ``length`` runs past
  ``full``, the bottom crop is 0 and ``output_padding`` adds the rest (less
  than ``stride``, whenever the forward convolution maps ``length`` back to
  ``input_length``).

  Args:
    input_length: the transposed convolution's input length, ``n >= 0``.
    kernel_size: ``k >= 1`` (undilated).
    stride: ``s >= 1``.
    dilation: ``d >= 1``.
    padding: ``'same'`` or ``'valid'`` (any case), or explicit ``(lo, hi)``.
    length: the output length asked for, ``>= 0``.

  Returns:
    ``((lo, hi), output_padding)``.

  Raises:
    ValueError: where the forward convolution over ``length`` pixels does
      not give ``input_length`` outputs (TF: "Size of out_backprop doesn't
      match computed"), naming the lengths that would.
  """
  if isinstance(padding, str):
    padding = padding.lower()

  def forward(n):
    return _forward_length(n, kernel_size, stride, dilation, padding)

  k_eff = effective_kernel_size(kernel_size, dilation)
  computed = forward(length)
  if computed != input_length:
    fits = [n for n in range(input_length * stride + k_eff + stride) if forward(n) == input_length]
    allowed = (f"{fits[0]} to {fits[-1]}" if len(fits) > 1 else str(fits[0])) if fits else "none"
    raise ValueError(
        f"a forward convolution over {length} pixels (kernel {kernel_size}, dilation "
        f"{dilation}, stride {stride}, padding {padding!r}) gives {computed}, not the "
        f"input's {input_length}: the lengths that map to {input_length} are {allowed}")
  full = (input_length - 1) * stride + k_eff
  if padding == "same":  # the forward 'same' convolution's: half of full - length
    pad_before = max(0, full - length) // 2
  elif padding == "valid":
    pad_before = 0
  else:
    pad_before = padding[0]
  hi = full - pad_before - length
  return (pad_before, max(hi, 0)), max(-hi, 0)


def output_spatial_shape(
    input_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int],
    padding: Padding, output_padding: Sequence[int] | None,
    dilation_rate: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
  """Per-axis ``(length, pad_before)`` for height and width."""
  out = []
  for axis in range(2):
    pad = padding if isinstance(padding, str) else padding[axis]
    op = None if output_padding is None else output_padding[axis]
    out.append(transpose_padding_1d(
        input_hw[axis], kernel_hw[axis], strides[axis], pad, op,
        dilation_rate[axis]))
  return out[0], out[1]


def dilated_conv_padding(
    input_length: int, kernel_size: int, stride: int, dilation: int,
    length: int, pad_before: int) -> tuple[int, int]:
  """``(lo, hi)`` padding of the input-dilated convolution that computes it.

  The transposed convolution equals a stride-1 correlation of the input,
  dilated by ``stride``, with the spatially flipped kernel, padded by
  ``(lo, hi)`` (either may be negative, which crops).
  """
  k_eff = effective_kernel_size(kernel_size, dilation)
  lo = k_eff - 1 - pad_before
  hi = length + pad_before - (input_length - 1) * stride - 1
  return lo, hi


def taps_per_phase(kernel_size: int, stride: int) -> int:
  """``ceil(k / s)``: the most taps of one axis that meet one output phase
  (phase ``r`` meets taps ``r, r + s, ...``), at dilation 1."""
  return -(-kernel_size // stride)


def phase_canvas_length(input_length: int, kernel_size: int, stride: int,
                        dilation: int = 1) -> int:
  """Rows of the phase-split canvas (``full`` folded into rows of ``stride``).

  Tap ``a`` of input pixel ``i`` lands at ``i * s + a * d``, i.e. on canvas
  row ``i + (a * d) // s``: the canvas has ``n + ((k - 1) * d) // s`` rows
  (``n + taps_per_phase(k, s) - 1`` at dilation 1).
  """
  return input_length + ((kernel_size - 1) * dilation) // stride
