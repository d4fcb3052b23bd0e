"""The convolution algorithms behind ``conv2d_transpose``, and the rule that
picks one. Each takes a validated input and kernel (same dtype, non-empty)
and returns the transposed convolution without bias or activation.

* ``dilated``: the reference. One stride-1 convolution over the input dilated
  by the stride, with the flipped kernel; differentiated by JAX itself.
  Simple and exact, but it multiplies the inserted zeros (``s * s`` times the
  useful work) and XLA:CPU turns its kernel gradient into a convolution with
  window reversal that leaves its fast path (15-25x slower than TF).
* ``phase``: the sub-pixel decomposition. Output pixel ``o`` only meets the
  kernel taps ``a`` with ``a = (o + pad) mod s`` (mod ``s``), so each of the
  ``s * s`` output phases is a stride-1 convolution of the *undilated* input
  with a sub-kernel of ``ceil(k / s)`` (or one fewer) taps per axis. Phases
  with equal tap counts share one convolution (at most four groups), their
  outputs are interleaved (depth-to-space) and TF's window is cut out; where
  every phase meets the same input pixels, on oneDNN, one 3-D convolution
  writes them interleaved.
* ``col2im``: one GEMM of the input with the stored kernel, then each tap's
  columns are added at their output positions; exactly the useful work, any
  stride and dilation.
* The fast paths (``phase``, ``col2im`` and ``auto`` on CPU) are a
  primitive (``_fast_p``) whose transpose rules have no window reversal
  (and whose JVP is the forward itself, so forward mode works): ``dx`` is
  the strided convolution of ``dy`` with the kernel (the forward convolution
  the transposed one is the gradient of) or, on small inputs and kernels
  no larger than the stride, GEMMs in the phase decomposition, and
  ``dkernel`` either the correlation of ``dy`` with the input (kernel
  dilated by the stride) or (large strided inputs; stride 1 with 32 or more
  channels each way) GEMMs in the phase decomposition, chunked over the
  batch. They work in NHWC with HWIO kernels, the only convolution layout
  XLA:CPU runs on its fast (Eigen) path whatever the caller's program looks
  like: channels_first data is transposed around them. Lowered for XLA:CPU,
  their convolutions run on oneDNN where ``_onednn_runs`` (``_onednn``),
  else the gradients' convolutions are written input-dilated where that
  keeps them on Eigen rather than YNNPACK (``_convolve``).
"""

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src import dispatch  # apply_primitive: eager binds, as lax's primitives run
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jconvt import _onednn, _shapes
from jconvt._config import ConvTransposeConfig

KERNEL_LAYOUT = "HWOI"  # TF: (kh, kw, filters, in_channels)


def dimension_numbers(config: ConvTransposeConfig):
  io = "NHWC" if config.channels_last else "NCHW"
  return (io, KERNEL_LAYOUT, io)


def spatial(shape: Sequence[int], config: ConvTransposeConfig) -> tuple[int, int]:
  return tuple(shape[1:3]) if config.channels_last else tuple(shape[2:4])


def channels(shape: Sequence[int], config: ConvTransposeConfig) -> int:
  return shape[3] if config.channels_last else shape[1]


def conv_dilated(x: jax.Array, kernel: jax.Array, config: ConvTransposeConfig,
                 geometry) -> jax.Array:
  """The reference formulation: one convolution over the input dilated by the
  stride, with the spatially flipped kernel. No bias, no activation.

  The input's zeros are inserted by the convolution's ``lhs_dilation``, or,
  where XLA would swap that convolution's operands wrongly
  (``_xla_swaps_wrongly``), by an interior pad (``_dilated``'s
  ``insert_zeros``): the same products and sums."""
  return _dilated(x, kernel, config, geometry, insert_zeros=_xla_swaps_wrongly(
      spatial(x.shape, config), kernel.shape[:2], config, geometry))


def _xla_swaps_wrongly(in_hw, kernel_hw, config: ConvTransposeConfig, geometry) -> bool:
  """Whether ``_dilated``'s convolution, or the kernel gradient JAX
  derives from it, has an axis XLA's operand swap (``ConvOperandSwapper``,
  jaxlib 0.10.2) takes for a "group" dimension: unpadded, its window as
  large as its base dilation (the stride) and its window stride one less.
  The swap copies that axis's window unchanged onto the swapped kernel,
  whose size there differs, and XLA:CPU's compiler then aborts the whole
  process ("Window dimensions do not match RHS shape"). The forward: a
  kernel of 2 at stride 2 (dilation 1); its kernel gradient, a window of
  the output's length: an output as long as the stride, the dilation one
  less than it. E.g. 2x4x3x1 -> 8, a (6, 2) kernel, strides 2, padding
  ((1, 2), (1, 2)), output_padding (0, 1): the random search that found it
  aborted at its 2769th layer, and ``lax.conv_transpose`` aborts on it
  too; it was the test suite's intermittent abort."""
  padding = _dilated_padding(in_hw, kernel_hw, config, geometry)
  for a in range(2):
    s, d, k = config.strides[a], config.dilation_rate[a], kernel_hw[a]
    if s == 1 or padding[a] != (0, 0):
      continue
    if (k == s == 2 and d == 1) or (geometry[a][0] == s and d == s - 1):
      return True
  return False


def _dilated(x, kernel, config, geometry, insert_zeros=False):
  """``conv_dilated``'s convolution (also transposed by ``grad_input_dilated``).
  With ``insert_zeros`` the input's zeros are inserted by an interior
  ``lax.pad`` (``strides - 1`` between pixels) rather than by
  ``lhs_dilation``: the same products and sums, where XLA would swap the
  other form's operands wrongly. Explicit, the zeros are multiplied:
  XLA:GPU runs the ``lhs_dilation`` form as cuDNN's backward-data
  convolution, which skips them."""
  padding = _dilated_padding(spatial(x.shape, config), kernel.shape[:2], config, geometry)
  lhs_dilation = config.strides
  if insert_zeros:
    interior = [0, 0, 0, 0]
    for axis, s in zip((1, 2) if config.channels_last else (2, 3), config.strides):
      interior[axis] = s - 1
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, i) for i in interior])
    lhs_dilation = (1, 1)
  return lax.conv_general_dilated(
      x, kernel[::-1, ::-1], window_strides=(1, 1), padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=config.dilation_rate,
      dimension_numbers=dimension_numbers(config),
      precision=config.precision,
      preferred_element_type=config.preferred_element_type)


def _dilated_padding(in_hw, kernel_hw, config, geometry):
  """Per axis, ``(lo, hi)`` of the input-dilated convolution with the flipped
  kernel that computes the transposed one (at stride 1: the plain one)."""
  return [_shapes.dilated_conv_padding(in_hw[a], kernel_hw[a], config.strides[a],
                                       config.dilation_rate[a], *geometry[a])
          for a in range(2)]


def _forward_conv_padding(in_hw, kernel_hw, config, geometry):
  """Per axis, ``(lo, hi)`` of the forward convolution (of the transposed
  one's output, ``length`` long) whose output has the input's ``n`` pixels:
  the padding both gradients use."""
  padding = []
  for a in range(2):
    length, pad_before = geometry[a]
    k_eff = _shapes.effective_kernel_size(kernel_hw[a], config.dilation_rate[a])
    padding.append((pad_before,
                    (in_hw[a] - 1) * config.strides[a] + k_eff - length - pad_before))
  return padding


def _unpadded(padding) -> bool:
  """Whether a convolution's ``((lo, hi), (lo, hi))`` padding is zero: the
  form XLA:CPU runs slowly (the rules below)."""
  return not any(lo or hi for lo, hi in padding)


def _taller_than_input(padding, in_hw, kernel_hw, dilation):
  """A stride-1 convolution's ``padding`` with rows added past the input's
  end, so that its output is taller than its input (the caller crops the
  extra rows). XLA:CPU (jaxlib 0.10) hands a float32 convolution whose
  output is nowhere larger than its input, with more than 16 channels one
  way, to YNNPACK, and any other to Eigen, which ran stride-1 convolutions
  with 32-128 input channels and 24-128 filters 1.1-1.9x faster (k3,
  8x32x32 and 8x64x64); one more row costs ``1 / height`` more work, the
  full canvas it replaced ``(k - 1) / height`` per axis."""
  (lo, hi), width = padding
  out = _shapes.conv_output_length(in_hw[0], kernel_hw[0], 1, dilation[0], (lo, hi))
  return [(lo, hi + max(0, in_hw[0] + 1 - out)), width]


def _unpadded_input_grad_extra(config, batch, in_hw, kernel_shape, padding):
  """Per axis, how much padding ``grad_input`` adds past ``dy``'s end (its
  extra output row and column are dropped): one stride where the strided
  convolution has no padding at all (a ``'valid'`` layer), more than
  ``SMALL_INPUT_PIXELS`` output pixels and at least
  ``UNPADDED_DEEP_CHANNELS`` channels each way. XLA:CPU ran the unpadded
  form 2-2.4x slower there (16x16x16x256 -> 128 k4 s2: 71 vs 36 ms;
  8x32x32x128 -> 128 k3 s2: 39 vs 16 ms), about as fast with 64 channels,
  faster with 3 filters (0.42 vs 0.53 ms) or on 512 pixels (0.22 vs 0.40).
  That was on YNNPACK: on ``_convolve``'s Eigen route, which ``grad_input``
  takes first, the padding cost 1.07-1.20x (16x16x16x256 -> 128 k4 s2:
  28.5 vs 23.7 ms; 8x32x32x128 -> 128 k3 s2 16.1 vs 14.9)."""
  if (_unpadded(padding) and config.strides != (1, 1)
      and batch * in_hw[0] * in_hw[1] > SMALL_INPUT_PIXELS
      and min(kernel_shape[2:]) >= UNPADDED_DEEP_CHANNELS):
    return config.strides
  return (0, 0)


def _pads_odd_filters(config, kernel_shape) -> bool:
  """Whether ``grad_input`` adds a zero filter: dilation 1, an odd number of
  filters (the convolution's contracted channels) from 3 to
  ``ODD_FILTERS_MAX``, and at stride > 1 at most
  ``ODD_FILTERS_STRIDED_MAX_CHANNELS`` input channels (its outputs); the
  rule above ``SMALL_INPUT_PIXELS``."""
  _, _, f, c = kernel_shape
  return (config.dilation_rate == (1, 1) and f % 2 == 1 and 1 < f <= ODD_FILTERS_MAX
          and (config.strides == (1, 1) or c <= ODD_FILTERS_STRIDED_MAX_CHANNELS))


def _convolve(lhs, rhs, window_strides, padding, rhs_dilation=(1, 1), *, precision,
              on_cpu=False, rhs_spec="HWIO"):
  """``lax.conv_general_dilated`` of an NHWC ``lhs`` (n, h, w, i) with a
  ``rhs`` laid out as ``rhs_spec`` (HWIO: (kh, kw, i, o)) -> (n, out_h,
  out_w, o). oneDNN takes ``rhs`` as it is (it reorders every kernel into
  its own layout anyway); XLA's own convolutions get it transposed to HWIO,
  the layout of XLA:CPU's fast (Eigen) path.

  With ``on_cpu`` (XLA:CPU is lowering) and where ``_eigen_beats_ynnpack``
  (the rule), the same convolution written so that XLA:CPU runs it on Eigen:
  ``lhs`` dilated by ``EIGEN_DILATION`` along its width, with the window
  stride, the padding and the ``rhs`` dilation along it scaled by as much.
  Every tap then still lands on an input pixel (``i * d`` in the dilated
  width is pixel ``i``), so the products are the same, none with an inserted
  zero, and Eigen extracts patches of the same size. XLA:CPU (jaxlib 0.10)
  hands YNNPACK only convolutions without input dilation and keeps the
  others on Eigen, which ran these 1.1-1.9x faster. Before either, with
  ``on_cpu`` and where ``_onednn.supported`` (float32), oneDNN's
  convolution (``_onednn.conv``)."""
  if on_cpu and _onednn_runs(lhs.shape, _onednn.hwio_shape(rhs.shape, rhs_spec), window_strides,
                             padding, rhs_dilation, lhs.dtype):
    return _onednn.conv(lhs, rhs, window_strides, padding, rhs_dilation, rhs_spec=rhs_spec)
  if rhs_spec != "HWIO":
    rhs = jnp.transpose(rhs, [rhs_spec.index(d) for d in "HWIO"])
  if on_cpu and _eigen_beats_ynnpack(lhs.shape, rhs.shape, window_strides, padding,
                                     rhs_dilation, lhs.dtype):
    d = EIGEN_DILATION
    (lo, hi) = padding[1]
    return lax.conv_general_dilated(
        lhs, rhs, window_strides=(window_strides[0], window_strides[1] * d),
        padding=(tuple(padding[0]), (lo * d, hi * d)), lhs_dilation=(1, d),
        rhs_dilation=(rhs_dilation[0], rhs_dilation[1] * d),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides=window_strides, padding=padding, rhs_dilation=rhs_dilation,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)


def grad_input(dy, kernel, config, geometry, in_hw, on_cpu=False, nchw=False):
  """``dx``: the strided forward convolution of ``dy`` with the kernel.

  At stride > 1, ``_unpadded_input_grad_extra`` pads an unpadded
  convolution, unless it takes ``_convolve``'s Eigen route. Under
  ``_pads_odd_filters`` (an odd number of filters) ``dy`` and the kernel
  get one zero filter more, which adds only zero products.
  ``on_cpu``: ``_convolve``'s Eigen route.

  ``nchw``: ``dy`` is an NCHW cotangent transposed to NHWC, and ``dx`` is
  transposed to NCHW next (a channels_first layer's, ``_fast``). On oneDNN,
  where ``_nchw_input_grad``, the convolution then runs on NCHW ``dy`` and
  writes NCHW ``dx`` (``lhs_spec="NCHW"``), and XLA cancels the transposes
  on either side."""
  padding = _forward_conv_padding(in_hw, kernel.shape[:2], config, geometry)
  x_shape = (dy.shape[0], *in_hw, kernel.shape[3])
  if on_cpu and nchw and _input_grad_reads_nchw_dy(config, x_shape, kernel.shape, dy.dtype,
                                                   geometry):
    dx = _onednn.conv(jnp.transpose(dy, (0, 3, 1, 2)), kernel, config.strides, padding,
                      config.dilation_rate, lhs_spec="NCHW")
    return jnp.transpose(dx[:, :, :in_hw[0], :in_hw[1]], (0, 2, 3, 1))
  if on_cpu and _input_grad_conv_on_onednn(config, x_shape, kernel.shape, dy.dtype, geometry):
    dx = _onednn.conv(dy, kernel, config.strides, padding, config.dilation_rate)
    return dx[:, :in_hw[0], :in_hw[1]]
  if _pads_odd_filters(config, kernel.shape):  # one zero filter more: exact
    dy = jnp.pad(dy, ((0, 0), (0, 0), (0, 0), (0, 1)))
    kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, 1), (0, 0)))
  if not (on_cpu and _eigen_beats_ynnpack(dy.shape, kernel.shape, config.strides, padding,
                                          config.dilation_rate, dy.dtype)):
    extra = _unpadded_input_grad_extra(config, dy.shape[0], in_hw, kernel.shape, padding)
    padding = [(lo, hi + e) for (lo, hi), e in zip(padding, extra)]
  dx = _convolve(dy, kernel, config.strides, padding,  # I = filters, O = in_channels
                 config.dilation_rate, precision=config.precision, on_cpu=on_cpu)
  return dx[:, :in_hw[0], :in_hw[1]]


# A channels_first layer's input gradient on oneDNN runs channels-first
# (``grad_input``'s ``nchw``) from this many images and filters on.
NCHW_INPUT_GRAD_MIN_BATCH = 8
NCHW_INPUT_GRAD_MIN_FILTERS = 8


def _input_grad_reads_nchw_dy(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                              geometry) -> bool:
  """Whether a channels_first layer's ``conv`` input gradient (``grad_input``
  with ``nchw``, on CPU; ``x_shape`` NHWC) runs its convolution on NCHW
  ``dy``: on oneDNN (``_input_grad_conv_on_onednn``) under
  ``_nchw_input_grad``. ``_kernel_grad_reads_nchw_dy`` asks it too."""
  (out_h, _), (out_w, _) = geometry
  return (_input_grad_conv_on_onednn(config, x_shape, kernel_shape, dtype, geometry)
          and _nchw_input_grad((x_shape[0], out_h, out_w, kernel_shape[2]), dtype))


def _nchw_input_grad(dy_shape, dtype) -> bool:
  """Whether a channels_first layer's input gradient on oneDNN takes ``dy``
  and writes ``dx`` channels-first (``grad_input``'s ``nchw``; ``dy_shape``
  NHWC): float32 where ``_onednn.takes_channels_first``, at least
  ``NCHW_INPUT_GRAD_MIN_BATCH`` images and ``NCHW_INPUT_GRAD_MIN_FILTERS``
  filters. oneDNN reorders its input to channels-last and its output back
  inside the call, in less time than XLA:CPU's transposes of ``dy`` and
  ``dx`` around a channels-last call, and XLA no longer holds a transposed
  copy of ``dy``. Training steps timed against the transposes, interleaved
  in one process (Intel Xeon with AMX, 2026-11-28, k4 s2 'same' unless
  said): 16x32x32x128 -> 64 77.6 -> 63.4 ms (1.22x, scratch 57 -> 41 MiB),
  16x24x24 and 8x32x32 128 -> 64 1.31x and 1.19x, 8x32x32x128 -> 128 k3 s2
  1.17x, the suite's 16x16x16x256 -> 128 1.01x (28 -> 20 MiB), 8 filters
  1.04x, 16 filters 1.06x, 8-32 images of 16x16 1.01-1.03x, stride 1
  (8x32x32x64 -> 64 k3) 1.00x; but 1, 2 and 4 images 0.79x, 0.88x and
  0.91x (16x16x256 -> 128), 2 images of 32x32 0.94x, and 3 filters (the
  16x32x32x64 -> 3 RGB output) 0.95x. bfloat16: oneDNN ran it as its
  GEMM-based convolution, not the reordering wrapper; not used."""
  n, _, _, f = dy_shape
  return (jnp.dtype(dtype) == jnp.float32 and _onednn.takes_channels_first(dtype)
          and n >= NCHW_INPUT_GRAD_MIN_BATCH and f >= NCHW_INPUT_GRAD_MIN_FILTERS)


def grad_input_dilated(dy, kernel, config, geometry, in_hw):
  """``dx`` (batch, in_h, in_w, in_channels) as JAX differentiates the
  reference: the transpose of ``conv_dilated``, which is linear in ``x`` (a
  strided convolution of ``dy`` with the kernel, no reversed window). ``dy``
  comes in ``x``'s dtype, so the transpose is taken without
  ``preferred_element_type``."""
  x = jax.ShapeDtypeStruct((dy.shape[0], *in_hw, kernel.shape[3]), dy.dtype)
  config = config.replace(preferred_element_type=None)
  (dx,) = jax.linear_transpose(lambda x: _dilated(x, kernel, config, geometry), x)(dy)
  return dx


def grad_kernel(x, dy, kernel_hw, config, geometry, on_cpu=False):
  """``dkernel`` (kh, kw, filters, in_channels): ``dy`` correlated with ``x``.

  ``dk[a, b, f, c] = sum_{n,i,j} x[n, i, j, c] dy[n, i*s + a*d - p, ...]``:
  a convolution whose "batch" is the filters, whose contracted feature is
  the batch, and whose kernel is ``x`` dilated by the stride. The operands
  are transposed here into XLA:CPU's canonical layouts (input ``b01f``:
  (f, H, W, n); kernel ``01io``: (h, w, n, c); output ``b01f``), so the
  convolution reaches its fast (Eigen) path however the caller's program
  is nested; left to XLA's layout pass, a gradient taken through an inner
  ``jax.jit`` kept the raw layout and ran 10-20x slower. On oneDNN
  (``on_cpu`` and ``_onednn_runs``) the kernel operand goes in untransposed
  (``_convolve``'s ``rhs_spec="IHWO"``): oneDNN reorders every kernel
  into its own layout anyway, so the transpose was a copy of ``x`` (or
  ``dy``) more (dcgan 32->64: 8 MiB of the step's scratch), and with at
  least ``ONEDNN_KERNEL_GRAD_SPATIAL_BATCH`` filters the convolution is
  written in three dimensions, the filters a spatial axis
  (``_kernel_grad_onednn``). ``on_cpu``: ``_convolve``'s Eigen route, or
  oneDNN.
  """
  padding = _forward_conv_padding(x.shape[1:3], kernel_hw, config, geometry)
  batch = _kernel_grad_batch(x.shape[0], x.dtype, config.strides)
  kernel_shape = (*kernel_hw, dy.shape[3], x.shape[3])
  if on_cpu and batch != x.shape[0] and _kernel_grad_conv_on_onednn(
      config, x.shape, kernel_shape, x.dtype, geometry):  # the plan's question, padded
    extra = ((0, batch - x.shape[0]), (0, 0), (0, 0), (0, 0))
    x, dy = jnp.pad(x, extra), jnp.pad(dy, extra)  # zero images: exact
  swapped, conv = _kernel_grad_conv(x.shape, dy.shape, kernel_hw, config, padding)
  lhs, rhs = (x, dy) if swapped else (dy, x)
  if (on_cpu and conv.lhs[0] >= ONEDNN_KERNEL_GRAD_SPATIAL_BATCH
      and _onednn_runs(conv.lhs, conv.rhs, conv.window_strides, conv.padding,
                       conv.rhs_dilation, x.dtype)):
    if _kernel_grad_by_phase(config, x.shape, dy.shape, kernel_hw, x.dtype):
      return _kernel_grad_phases_onednn(x, dy, kernel_hw, config, padding)
    dk = _kernel_grad_onednn(lhs, rhs, conv.window_strides, conv.padding, conv.rhs_dilation)
    if swapped:  # (kh, kw, c, f), the taps reversed
      return jnp.transpose(dk[::-1, ::-1], (0, 1, 3, 2))
    return dk
  dk = _convolve(jnp.transpose(lhs, (3, 1, 2, 0)), rhs, conv.window_strides, conv.padding,
                 conv.rhs_dilation, precision=config.precision, on_cpu=on_cpu,
                 rhs_spec="IHWO")  # rhs: (n, h, w, c) or (n, H, W, f) as it is
  if swapped:  # (c, kh, kw, f), the taps reversed
    return jnp.transpose(dk[:, ::-1, ::-1], (1, 2, 3, 0))
  return jnp.transpose(dk, (1, 2, 0, 3))  # (f, kh, kw, c)


def _kernel_grad_onednn(lhs, rhs, window_strides, padding, rhs_dilation):
  """``grad_kernel``'s convolution (its window: strides, padding and
  dilation per spatial axis) on oneDNN, its batch (the
  filters, or the input channels where swapped) moved to a third spatial
  axis that the window does not slide along. Unswapped: input ``dy`` as
  (1, H, W, f, n), kernel ``x`` as (n, h, w, 1, c) (as it is, a unit axis
  added), output (1, kh, kw, f, c), returned as (kh, kw, f, c): the
  kernel's layout. Swapped: ``x`` as (1, h, w, c, n), ``dy`` as
  (n, H, W, 1, f), returned as (kh, kw, c, f) with the taps reversed.

  oneDNN's convolution (its ``brg_conv_fwd``) computes a row of ``out_w``
  output pixels per inner GEMM. The 2-D form's row is ``kw`` (3-4) pixels
  long, under a window as large as the image; here the row is the
  ``f`` filters. oneDNN's own times (``ONEDNN_VERBOSE``, AMD EPYC with
  AVX-512, the 2-D form first): 8x32x32x64 -> 64 k3 s1 3.7 -> 2.5 ms,
  dcgan 32->64 (16x32x32x128 -> 64 k4 s2) 13.7 -> 9.4, unet k3s2 (8x32x32x128
  -> 128 k3 s2) 13.9 -> 6.7, k4 s2 bfloat16 (16x16x16x256 -> 128) 7.5 ->
  4.4. With 6 to 128 filters (or swapped input channels) it won on every
  layer timed (16x16 to 64x64 images, k3-k5, s1-s2), with 3-4 it took
  0.71-1.41x the 2-D form's time; ``grad_kernel`` takes it from
  ``ONEDNN_KERNEL_GRAD_SPATIAL_BATCH`` (8) on. Its input must be
  channels-last: given ``dy`` as it is, with the batch as the contracted
  axis (a permuted layout), oneDNN fell back to its reference code, 1000x
  slower.
  """
  lhs = jnp.transpose(lhs, (1, 2, 3, 0))[None]
  conv = lambda rhs: _onednn.conv(lhs, rhs[:, :, :, None, :], (*window_strides, 1),
                                  (*padding, (0, 0)), (*rhs_dilation, 1), rhs_spec="IDHWO")[0]
  out = rhs.shape[-1]
  chunk = _kernel_grad_channel_chunk(rhs.shape, rhs.dtype)
  if chunk == out:
    return conv(rhs)
  # One chunk of the kernel operand copied out at a time (a scan): sliced
  # side by side, XLA copied every chunk first (8x32x32x256 -> 128 k3 s2:
  # 40 MiB of step scratch, 33 in the scan, as fast).
  chunk_of = lambda i: lax.dynamic_slice_in_dim(rhs, i * chunk, chunk, axis=3)
  _, dk = lax.scan(lambda carry, i: (carry, conv(chunk_of(i))), 0, jnp.arange(out // chunk))
  dk = jnp.moveaxis(dk, 0, -2)  # (..., out // chunk, chunk)
  return dk.reshape(*dk.shape[:-2], out)


def _kernel_grad_channel_chunk(rhs_shape, dtype) -> int:
  """How many of ``_kernel_grad_onednn``'s output channels (its kernel
  operand's last axis: the layer's input channels, or its filters where
  swapped) one oneDNN convolution computes: ``ONEDNN_KERNEL_GRAD_CHANNEL_CHUNK``
  (128) where oneDNN on an Intel Xeon with AMX (``_onednn.cpu_has_amx``)
  ran the whole convolution at half speed, else all of them. That is
  float32 with a multiple of ``ONEDNN_KERNEL_GRAD_CHUNKED_MULTIPLE`` (256)
  output channels, a batch (the contracted channels) of at most
  ``ONEDNN_KERNEL_GRAD_CHUNKED_MAX_BATCH`` (8) and images (the window) of at
  least ``ONEDNN_KERNEL_GRAD_CHUNKED_MIN_PIXELS`` (32x32). There oneDNN
  blocks the output channels by 32 (weights format ``Acdeb32a``, from
  ``ONEDNN_VERBOSE``; by 64 with 128 of them, by 48 with 384).
  Kernel gradients alone (2026-11-28; k3 s2 unless said, the whole
  convolution's ms against 128 at a time):

  * 8 images of 32x32: 256 -> 128 32.3 against 15.9 ms, 256 -> 64 15.2
    against 9.5, 256 -> 256 76.6 against 36.5, 256 -> 512 160 against 74,
    k4 s2 256 -> 128 58.4 against 26.7, 512 -> 256 243 against 112, k3 s1
    256 -> 256 59.0 against 27.5, 512 -> 512 219 against 113;
  * 8 images of 48x48 and 64x64: 1.19-1.23x; 24x24 0.99-1.08x;
  * slower on 16x16 and 8x8 images (8x16x16x256 -> 128 k4 s2 7.6 against
    10.1 ms; 8x8x8x1024 -> 512 21.7 against 39.3), with 12 or 32 images
    (0.61-0.83x) and with 384 channels (0.90x, blocked by 48); 16 images
    0.86-1.10x between runs, 4 images 1.00-1.13x.

  Training steps (``auto``'s plan, interleaved, 4 rounds), 8 images of
  32x32: 256 -> 128 k3 s2 69.8 -> 50.7 ms, 256 -> 256 k3 s2 142 -> 103,
  256 -> 64 k4 s2 53.1 -> 37.5, 256 -> 256 k3 s1 105 -> 72.5, 512 -> 256
  k4 s2 428 -> 293 (1.38x-1.46x); unet k3s2 (128 channels, untouched)
  1.06x, noise. The chunks run in a ``lax.scan`` (``_kernel_grad_onednn``),
  so the step's scratch stays at or under the dilated reference's (33
  against 40 MiB; 18 against 24). On the AMD EPYC the other rules were
  measured on, these layers' whole convolution trained 1.0-1.27x as fast as
  the phase GEMMs (``_kernel_grad_is_gemm``), not half as fast as here;
  chunks are unmeasured there, and it keeps one convolution."""
  n, h, w, out = rhs_shape
  if (jnp.dtype(dtype) == jnp.float32 and _onednn.cpu_has_amx()
      and out % ONEDNN_KERNEL_GRAD_CHUNKED_MULTIPLE == 0
      and n <= ONEDNN_KERNEL_GRAD_CHUNKED_MAX_BATCH
      and h * w >= ONEDNN_KERNEL_GRAD_CHUNKED_MIN_PIXELS):
    return ONEDNN_KERNEL_GRAD_CHANNEL_CHUNK
  return out


def _kernel_grad_by_phase(config: ConvTransposeConfig, x_shape, dy_shape, kernel_hw,
                          dtype) -> bool:
  """Whether ``grad_kernel`` on oneDNN runs phase by phase
  (``_kernel_grad_phases_onednn``, whose taps are undilated: dilation 1):
  a stride that does not divide its
  kernel size, at least as many filters as input channels and a ``dy`` of
  at least ``ONEDNN_KERNEL_GRAD_MAX_DY_BYTES``, where the whole transposed
  ``dy`` held beside ``dy`` takes the step's scratch to glibc's 32 MiB mmap
  threshold. Steps timed alternating call by call against the phase GEMMs
  that stood in there before (8 or 16 images of 32x32, k3 s2, default
  malloc): 1.10-1.14x as fast on 5 layers (unet k3s2 21.5 against 24.5 ms;
  16x32x32x64 -> 64, 8x32x32 128 -> 256 and 256 -> 256, 16x24x24x128 ->
  128), 0.95-1.01x (noise) on 32 or 64 16x16 images. Where each stride
  divides its kernel size the forward's canvas already takes the step to
  33 MiB (16x32x32x128 -> 64 k4 s2), and the whole 3-D convolution ran
  1.01-1.10x as fast as the phases (4 layers, 8x8 to 32x32 inputs, k4 s2).
  At most ``PHASE_PROGRAMS_MAX`` phases, one ``lax.switch`` branch each:
  a k17 s16 layer's 256 branches compiled in 4 s."""
  n, out_h, out_w, f = dy_shape
  (sh, sw) = config.strides
  return (1 < sh * sw <= PHASE_PROGRAMS_MAX and config.dilation_rate == (1, 1) and f >= x_shape[3]
          and any(k % s for k, s in zip(kernel_hw, config.strides))
          and n * out_h * out_w * f * jnp.dtype(dtype).itemsize
          >= ONEDNN_KERNEL_GRAD_MAX_DY_BYTES)


def _kernel_grad_phases_onednn(x, dy, kernel_hw, config, padding):
  """``grad_kernel`` on oneDNN one output phase at a time: the taps
  ``r + s * q`` of phase ``r`` are the stride-1 correlation of ``x`` with
  ``dy``'s rows ``s * t + r`` (``dy`` padded as the forward convolution
  pads it), ``_kernel_grad_onednn``'s 3-D convolution of that phase of
  ``dy`` transposed, (1, h + kq_r - 1, w + kq_w - 1, f, n), with ``x``; exactly
  the phase's taps. The phases run in a ``lax.scan`` (one ``lax.switch``
  branch each), so one phase's transposed copy is held at a time, a
  quarter of the whole one at s2: XLA:CPU schedules independent copies
  first, ``optimization_barrier`` or not. unet k3s2 (8x32x32x128 -> 128):
  29 MiB of scratch (the whole transposed ``dy``: 32), step 21.8 against
  24.8 ms for the phase GEMMs, which had stood in for the convolution
  there (``_kernel_grad_by_phase``)."""
  n, h, w, c = x.shape
  f = dy.shape[-1]
  (kh, kw), (sh, sw) = kernel_hw, config.strides
  kqh, kqw = _shapes.taps_per_phase(kh, sh), _shapes.taps_per_phase(kw, sw)

  def phase(rh, rw):
    th = _shapes.taps_per_phase(kh - rh, sh) if rh < kh else 0
    tw = _shapes.taps_per_phase(kw - rw, sw) if rw < kw else 0

    def taps(dy):  # (kq_h, kq_w, f, c), zero past the phase's taps
      if th == 0 or tw == 0:
        return jnp.zeros((kqh, kqw, f, c), x.dtype)
      # Padded here, not before the scan: the pad then fuses into this
      # phase's slice and transpose instead of copying all of dy once more.
      d = lax.pad(dy, jnp.zeros((), dy.dtype),
                  ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
      d = d[:, rh:rh + sh * (h + th - 2) + 1:sh, rw:rw + sw * (w + tw - 2) + 1:sw]
      dk = _kernel_grad_onednn(d, x, (1, 1), ((0, 0), (0, 0)), (1, 1))
      return jnp.pad(dk, ((0, kqh - th), (0, kqw - tw), (0, 0), (0, 0)))
    return taps

  branches = [phase(rh, rw) for rh in range(sh) for rw in range(sw)]
  _, dk = lax.scan(lambda carry, i: (carry, lax.switch(i, branches, dy)), 0,
                   jnp.arange(sh * sw))
  dk = jnp.transpose(dk.reshape(sh, sw, kqh, kqw, f, c), (2, 0, 3, 1, 4, 5))
  return dk.reshape(kqh * sh, kqw * sw, f, c)[:kh, :kw]


def _tap_windows(dy, kernel_hw, config, geometry, in_hw):
  """The windows of ``dy`` the taps read (dilation 1), (n, h, w, kh, kw, f):
  tap ``(a, b)`` of ``dy`` padded as the forward convolution pads it is the
  strided window starting at ``(a, b)`` (16-bit values as words,
  ``_packed``). One gather: both tap gradients read the same one (XLA
  computes it once), where a slice per tap stacked had XLA:CPU
  materialize every slice before their concatenation, and each gradient
  stacked its own (2x2 -> 4x4 k5 s2, 64x2x2x256 -> 128: step scratch 6.25
  -> 3.63 MiB, the dilated reference's 3.9; 16x4x4x1024 -> 512 k4 s2 16 ->
  10). Steps timed alternating call by call (Intel Xeon with AMX,
  2026-11-28) 0.96x-1.08x as fast over 11 layers of 2x2 to 16x16 inputs
  (1.04x-1.08x where both gradients are the taps but on 2x2 -> 4x4,
  0.96x-0.98x; bfloat16 2x2 -> 4x4 0.96x, 16x4x4x1024 -> 512 1.00x)."""
  (h, w), (kh, kw), (sh, sw) = in_hw, kernel_hw, config.strides
  (lo_h, hi_h), (lo_w, hi_w) = _forward_conv_padding((h, w), kernel_hw, config, geometry)
  d = _packed(dy)
  d = lax.pad(d, jnp.zeros((), d.dtype), ((0, 0, 0), (lo_h, hi_h, 0), (lo_w, hi_w, 0), (0, 0, 0)))
  rows = np.arange(h)[:, None] * sh + np.arange(kh)  # (h, kh): row i * s_h + a
  cols = np.arange(w)[:, None] * sw + np.arange(kw)
  return d[:, rows[:, None, :, None], cols[None, :, None, :]]


def grad_input_taps(dy, kernel, config, geometry, in_hw):
  """``dx`` (dilation 1) as one GEMM ``W @ kernel`` with ``W`` the windows of
  ``dy`` each tap reads (``_tap_windows``), laid out (n * h * w, kh * kw * f),
  and the kernel (kh * kw * f, c) as stored (no copy): the strided
  convolution of ``grad_input`` as im2col, exactly the useful
  multiplications (also where ``k % s != 0``). ``W`` holds ``kh * kw``
  input-sized slices of ``dy``, so ``auto`` uses it only on small inputs
  (``_input_grad_is_taps``)."""
  n, (h, w), f = dy.shape[0], in_hw, dy.shape[-1]
  kh, kw, _, c = kernel.shape
  windows = _unpacked(_tap_windows(dy, (kh, kw), config, geometry, in_hw), dy.dtype)
  dx = lax.dot_general(windows.reshape(n * h * w, kh * kw * f), kernel.reshape(kh * kw * f, c),
                       (((1,), (0,)), ((), ())), precision=config.precision,
                       preferred_element_type=_accumulation_dtype(dy.dtype))
  return dx.reshape(n, h, w, c).astype(dy.dtype)


def grad_kernel_taps(x, dy, kernel_hw, config, geometry):
  """``dkernel`` (dilation 1) as one GEMM ``W^T @ x`` with ``W`` the windows
  of ``dy`` each tap reads (``_tap_windows``), laid out (n * h * w, kh * kw
  * f) as ``grad_input_taps`` reads them (the same array where both run).
  The GEMM contracts the pixels, the first axis of both operands, and its
  output is the kernel's own layout. ``W`` holds ``kh * kw`` copies of an
  input-sized slice of ``dy``, so ``auto`` uses it only on the smallest
  inputs (``_kernel_grad_is_taps``), where XLA:CPU's convolution and the
  phase GEMMs are least efficient."""
  n, h, w, c = x.shape
  f = dy.shape[-1]
  kh, kw = kernel_hw
  windows = _unpacked(_tap_windows(dy, kernel_hw, config, geometry, (h, w)), dy.dtype)
  dk = lax.dot_general(windows.reshape(n * h * w, kh * kw * f), x.reshape(n * h * w, c),
                       (((0,), (0,)), ((), ())), precision=config.precision,
                       preferred_element_type=_accumulation_dtype(x.dtype))
  return dk.reshape(kh, kw, f, c)


class _Conv(NamedTuple):
  """A convolution's NHWC input and HWIO kernel shapes and its window."""
  lhs: tuple
  rhs: tuple
  window_strides: tuple
  padding: list
  rhs_dilation: tuple


def _kernel_grad_conv(x_shape, dy_shape, kernel_hw, config, padding):
  """``grad_kernel``'s convolution for an NHWC ``x`` and ``dy`` and the
  forward convolution's ``padding``: ``(swapped, _Conv)``.

  Unswapped: input ``dy`` as (f, H, W, n), kernel ``x`` as (h, w, n, c)
  dilated by the stride, window stride the dilation; output (f, kh, kw, c).

  Swapped (stride 1, fewer input channels than filters): XLA:CPU runs the
  convolution 3.5x faster with the smaller channel count as its batch (3 ->
  64 channels). Only where ``dy`` is no larger than ``x``: ``dy`` is then
  the convolution's kernel, and XLA:CPU (jaxlib 0.10) runs a convolution
  whose kernel is larger than its input 10-30x slower (a ``'valid'``
  layer's ``dy`` is ``k - 1`` larger: 8x32x32x16 -> 64 k3, 64 against 2.1
  ms unswapped). ``dk[a] = sum_i x[i] dy[i + a*d - p]`` is ``dy`` slid
  over ``x``: output ``t = p - a*d`` of the convolution (input ``x`` as
  (c, h, w, n), kernel ``dy`` as (H, W, n, f), window stride ``d``), so
  the taps come out reversed.
  """
  n, h, w, c = x_shape
  _, dy_h, dy_w, f = dy_shape
  if (config.strides == (1, 1) and c < f
      and not _kernel_exceeds((dy_h, dy_w), (h, w))):
    dk_hw = []
    for a, (x_len, dy_len) in enumerate(((h, dy_h), (w, dy_w))):
      k, d, p = kernel_hw[a], config.dilation_rate[a], padding[a][0]
      lo = (k - 1) * d - p
      dk_hw.append((lo, (k - 1) * d + dy_len - x_len - lo))
    return True, _Conv((c, h, w, n), (dy_h, dy_w, n, f), config.dilation_rate, dk_hw, (1, 1))
  return False, _Conv((f, dy_h, dy_w, n), (h, w, n, c), config.dilation_rate, padding,
                      config.strides)


def _packed(a):
  """A 16-bit array (..., c) with an even ``c`` seen as (..., c / 2) 32-bit
  words, two adjacent channels per word (``bitcast_convert_type``, which
  XLA:CPU fuses into the copy that reads it); any other array unchanged.
  Pads, slices, concatenations and transposes that keep the channel axis
  last and whole move the same bytes either way, but XLA:CPU copies
  16-bit elements slowly: a 9.5 MB bfloat16 stack of shifted windows took
  13.8 ms, the same stack as words 1.3-1.5 ms (float32, twice the bytes:
  2.4 ms). Zero words are zero pairs. ``_unpacked`` undoes it."""
  if jnp.dtype(a.dtype).itemsize != 2 or a.ndim == 0 or a.shape[-1] % 2:
    return a
  return lax.bitcast_convert_type(a.reshape(*a.shape[:-1], a.shape[-1] // 2, 2), jnp.uint32)


def _unpacked(a, dtype):
  """``_packed``'s inverse: words (..., c / 2) back to ``dtype`` (..., c)."""
  if a.dtype == jnp.dtype(dtype):
    return a
  return lax.bitcast_convert_type(a, dtype).reshape(*a.shape[:-1], -1)


def _window(full, geometry):
  """TF's output window of a full NHWC canvas (n, H, W, f), which starts at
  the canvas origin: ``full[:, pad_h:pad_h + out_h, pad_w:pad_w + out_w]``,
  zero-extended past its end."""
  (out_h, pad_h), (out_w, pad_w) = geometry
  _, canvas_h, canvas_w, _ = full.shape
  return lax.pad(full, jnp.zeros((), full.dtype),
                 ((0, 0, 0), (-pad_h, out_h + pad_h - canvas_h, 0),
                  (-pad_w, out_w + pad_w - canvas_w, 0), (0, 0, 0)))


def _interleave(parts, strides, shape, dtype):
  """The output ``shape`` (n, out_h, out_w, f) of ``dtype`` whose pixels
  ``(o_h + t * s_h, o_w + u * s_w)`` are ``z[:, t, u]`` for each
  ``(z, (o_h, o_w))`` of ``parts`` (phase arrays (n, t_h, t_w, f) at
  distinct offsets mod the strides; pixels past the output are dropped,
  those no phase reaches are zero).

  Each phase, as unsigned words of the dtype's width, is spread by an
  interior pad and cut to the output in the same pad, and the phases are
  ORed together: exact, as each pixel holds one phase's word and zeros
  elsewhere (signs of zero and NaNs kept). XLA:CPU fuses it into one loop,
  which ran 1.5-2x as fast as reshaping, transposing and slicing the
  stacked phases with 64 filters (16x33x33x(4x64) -> 16x64x64x64: 1.0
  against 1.8 ms; ``_interleaves_by_pad``)."""
  _, out_h, out_w, _ = shape
  sh, sw = strides
  bits = jnp.dtype(f"uint{jnp.dtype(dtype).itemsize * 8}")
  out = None
  for z, (oh, ow) in parts:
    _, th, tw, _ = z.shape
    if th == 0 or tw == 0:  # an empty phase (an empty input) adds nothing
      continue
    spread = lax.pad(lax.bitcast_convert_type(z.astype(dtype), bits), jnp.zeros((), bits),
                     ((0, 0, 0), (oh, out_h - oh - (th - 1) * sh - 1, sh - 1),
                      (ow, out_w - ow - (tw - 1) * sw - 1, sw - 1), (0, 0, 0)))
    out = spread if out is None else out | spread
  return jnp.zeros(shape, dtype) if out is None else lax.bitcast_convert_type(out, dtype)


def _interleaves_by_pad(filters: int, dtype, strides, training: bool, on_cpu: bool,
                        nchw_after: bool) -> bool:
  """Whether ``conv_phase`` interleaves its phases with ``_interleave``
  rather than by reshaping and transposing them: on XLA:CPU (``on_cpu``)
  outside training steps, for float32 with ``INTERLEAVE_BY_PAD_FILTERS``
  filters at strides of at most 2, where the output stays NHWC (not
  ``nchw_after``: a channels_first layer's, whose transpose to NCHW XLA
  fuses with the phases' transpose; spread, its forwards ran 0.94-1.0x
  as fast). There XLA:CPU copies each pixel's filters, a run of 64 floats,
  as 64 scalar loads and stores (LLVM unrolls the loop; runs of 96 or more
  floats it vectorizes), which ran at a third to half the speed of a plain
  copy. Forward passes timed interleaved (AMD EPYC, AVX-512): 1.02-1.13x
  on five layers with 64 filters (dcgan 32->64, 8x64x64x64 -> 64, k3 s2
  and 16x16 inputs); with 32, 48 or 96 filters 0.99-1.0x, 128 0.97-1.01x,
  3 (RGB) 0.85-0.91x, bfloat16 0.90-1.0x; training steps with 64 filters
  0.99-1.0x. At stride 4 the sixteen spread phases ran 10x slower.

  These conditions put the spread inside ``_materialized``'s branch: read
  by several consumers outside one, XLA fused the ORs into each and kept
  the four spread phases for them (dcgan 32->64's forward and a batch norm:
  36.6 ms and 83 MiB of scratch; in the branch 13.2 ms and 17 MiB, the
  transpose's 14.3 ms and 17 MiB)."""
  return (on_cpu and not training and not nchw_after and jnp.dtype(dtype) == jnp.float32
          and filters == INTERLEAVE_BY_PAD_FILTERS and max(strides) <= 2)


def _phase_groups(k: int, s: int):
  """Per axis: [(first_phase, num_phases, taps)] with equal tap counts.

  Phase ``r`` (``0 <= r < s``) meets taps ``r, r + s, ...``: ``kq = ceil(k/s)``
  of them for ``r < rem = k - (kq - 1) * s``, one fewer for the rest.
  """
  kq = _shapes.taps_per_phase(k, s)
  rem = k - (kq - 1) * s
  groups = [(0, rem, kq)]
  if rem < s:
    groups.append((rem, s - rem, kq - 1))
  return groups, kq


def _phase_convolve(x, sub, padding, config, on_cpu, nchw=False):
  """A phase forward's stride-1 convolution of an NHWC ``x`` (NCHW with
  ``nchw``; the output laid out as ``x``) with an HWIO ``sub``: a 1x1
  ``sub`` as one GEMM of ``x`` padded (XLA:CPU's convolution is slower;
  with ``nchw`` written (f, n, h, w), so that moving the batch to the front
  copies whole planes), else oneDNN's with ``on_cpu`` where
  ``_onednn.supported``."""
  spec = "NCHW" if nchw else "NHWC"
  if sub.shape[:2] == (1, 1):
    pads = [(0, 0, 0)] * 4
    pads[spec.index("H")], pads[spec.index("W")] = (*padding[0], 0), (*padding[1], 0)
    xp = lax.pad(x, jnp.zeros((), x.dtype), pads)
    if nchw:
      return jnp.transpose(lax.dot_general(
          sub[0, 0], xp, (((0,), (1,)), ((), ())), precision=config.precision,
          preferred_element_type=config.preferred_element_type), (1, 0, 2, 3))
    return lax.dot_general(xp, sub[0, 0], (((3,), (0,)), ((), ())), precision=config.precision,
                           preferred_element_type=config.preferred_element_type)
  nhwc_shape = tuple(x.shape[spec.index(d)] for d in "NHWC")
  if on_cpu and _onednn_runs(nhwc_shape, sub.shape, (1, 1), padding, (1, 1), x.dtype,
                             config.preferred_element_type):
    return _onednn.conv(x, sub, (1, 1), padding, lhs_spec=spec,
                        preferred_element_type=config.preferred_element_type)
  return lax.conv_general_dilated(
      x, sub, window_strides=(1, 1), padding=padding,
      dimension_numbers=(spec, "HWIO", spec), precision=config.precision,
      preferred_element_type=config.preferred_element_type)


def _exact_phases(length: int, k: int, s: int, out: int, pad: int):
  """Per axis, for each phase ``r`` of the sub-pixel decomposition: ``(taps,
  first, count, slot)``, the rows ``t`` in ``[first, first + count)`` of
  ``z_r[t] = sum_q x[t - q] k[q * s + r]`` that TF's window keeps (output
  ``o = t * s + r - pad``, ``0 <= o < out``) and ``slot``, the first such
  ``o`` (0 <= slot < s), for an input of ``length``; ``None`` where the
  convolution computing exactly those rows would need a negative padding
  (it would crop the input)."""
  phases = []
  for r in range(s):
    taps = _shapes.taps_per_phase(k - r, s) if r < k else 0
    first = -(-(pad - r) // s)
    last = (out - 1 + pad - r) // s
    count = max(last - first + 1, 0)
    lo, hi = taps - 1 - first, first + count - length
    if taps and count and (lo < 0 or hi < 0):
      return None
    phases.append((taps, first, count, first * s + r - pad))
  return phases


def _exact_phases_pay(x_shape, dtype, kernel_shape, config, geometry, on_cpu) -> bool:
  """Whether ``conv_phase`` computes one convolution per phase (past
  ``PHASE_PROGRAMS_MAX`` phases, per run of phases) without the
  canvas's extra pixels (``_conv_phase_exact``) rather than one per group
  of phases with equal tap counts: with at least
  ``EXACT_PHASES_MIN_FILTERS`` filters, where that adds no convolution
  (every group holds one phase per axis, as at k3 s2), where the phases'
  convolutions run on oneDNN (``on_cpu``, ``_onednn_runs``), or where
  every phase has one tap (GEMMs). Interleaved training steps against the
  groups (AMD EPYC, AVX-512), with oneDNN: 1.06-1.29x on the suite's unet
  k3s2, unet k2s2 'valid', dcgan 16->32 and bfloat16 layers, the rest
  0.99-1.01x, and 1-4 MiB less scratch; four oneDNN convolutions of one
  phase each ran 1.03-1.09x as fast as one of all four with the canvas
  (16x32x32x128 -> 4 x 64), but in the step dcgan 32->64 (32x32 images,
  whose canvas is 6% larger than the window) ran 0.96-1.01x, so a group is
  split only where its canvas exceeds the window by at least
  ``EXACT_PHASES_MIN_EXTRA`` (16x16 images at k4 s2: 13%). Without oneDNN,
  XLA:CPU's own convolution ran dcgan 32->64's four phases 0.85x as fast as
  their group, unet k3s2's 1.12x. With 3 filters (RGB k4s2) four
  convolutions of 3 outputs, which oneDNN does not take, ran 0.63x.
  Past ``PHASE_PROGRAMS_MAX`` phases (``s_h * s_w > 9``) a convolution
  per phase ran no faster than the groups (four layers of 2-8 16x16 or 8x8
  images, k4 to k12, 0.95-1.5x) and made compile time grow with ``s * s``
  (a k64 s32 layer's 1024 convolutions: 29 s; its group's one: 0.04 s, and
  2-3x faster). There the convolutions are per run of phases that meet
  the same input rows (``_exact_phase_runs``: two runs per axis at k = 2s
  'same'), on oneDNN (``on_cpu``) and at most ``PHASE_PROGRAMS_MAX`` of
  them, whatever the canvas's extra. Timed call by call alternating with
  the group (Intel Xeon with AMX, 2026-11-28; glibc's malloc, then
  ``tune_malloc``), forwards: FCN's heads (21 classes on a 512x512 image)
  k64 s32 1.12x / 1.10x, k32 s16 0.97x / 0.99x, k16 s8 1.07x / 1.15x, k64
  s32 on 4 images 1.03x, 4x32x32x64 -> 64 k8 s4 1.16x / 1.03x; training
  steps 0.99x / 1.02x, 0.97x / 0.94x, 1.02x / 1.08x, 1.00x and 1.00x /
  1.04x. The forward's scratch is one output (FCN-32s 23.7 -> 21.0 MiB), and
  the steps' of FCN-32s on 4 images and of the k8 s4 layer the dilated
  reference's: 179 -> 168 MiB and 33 -> 32 (16x16x16x128 -> 64 k8 s4 and
  8x16x16x256 -> 128 k6 s4 likewise 34 -> 32). With 3 filters (8x32x32x64
  -> 3 k8 s4) the runs' convolutions are too thin for oneDNN: 0.57x, hence
  the filters' floor."""
  kh, kw, f, c = kernel_shape
  (sh, sw), (h, w) = config.strides, x_shape[1:3]
  if f < EXACT_PHASES_MIN_FILTERS:
    return False
  if sh * sw > PHASE_PROGRAMS_MAX:
    windows = _layer_phase_windows((h, w), (kh, kw), config.strides, geometry)
    if not on_cpu or windows is None:
      return False
    return len(windows) <= PHASE_PROGRAMS_MAX and all(
        taps == (1, 1) or _onednn_runs(x_shape, (*taps, c, nr * nc * f), (1, 1), padding,
                                       (1, 1), dtype, config.preferred_element_type)
        for (_, nr, _, nc), taps, padding, _ in windows)
  (groups_h, kqh), (groups_w, kqw) = _phase_groups(kh, sh), _phase_groups(kw, sw)
  if all(nr == 1 for _, nr, _ in groups_h) and all(nc == 1 for _, nc, _ in groups_w):
    return True  # no convolution more
  if kqh == kqw == 1:
    return True  # GEMMs
  (out_h, _), (out_w, _) = geometry
  canvas = (_shapes.phase_canvas_length(h, kh, sh) * sh
            * _shapes.phase_canvas_length(w, kw, sw) * sw)
  return (canvas >= (1 + EXACT_PHASES_MIN_EXTRA) * out_h * out_w
          and on_cpu and _onednn_runs(x_shape, (kqh, kqw, c, f), (1, 1),
                                      ((kqh - 1, 0), (kqw - 1, 0)), (1, 1), dtype,
                                      config.preferred_element_type))


def _conv_phase_exact(x, kernel, config, phases_h, phases_w, on_cpu, spread=False, nchw=False):
  """``conv_phase`` at stride > 1 as one convolution per phase that
  computes only the rows and columns TF's window keeps (``_exact_phases``):
  no pixel of the canvas past the window (a row and a column more per
  phase at k4 s2 'same') is computed or stored, so the step's scratch holds
  ``s_h * s_w`` outputs of exactly the output's size between them (dcgan
  32->64: 16 MiB, 17 with the canvas). Each phase's rows and columns are
  zero-padded to ``ceil(out / s)``, interleaved by their slot and cut to the
  output, or with ``spread`` spread to their slots (``_interleave``). Past
  ``PHASE_PROGRAMS_MAX`` phases, one convolution per run of phases
  (``_exact_phase_windows``; ``_conv_phase_runs``).

  With ``nchw`` (``_nchw_phase_forward``; not with ``spread``) it runs
  channels-first throughout: the NHWC ``x`` transposed to NCHW (which
  cancels the caller's transpose of a channels_first input), each phase's
  convolution reading and writing NCHW (``_phase_convolve``), the phases
  interleaved along the rows and columns of each filter's plane, and the
  output transposed back to NHWC (which cancels the caller's transpose to
  NCHW). Neither ``spread`` nor ``nchw`` is asked for past
  ``PHASE_PROGRAMS_MAX`` phases."""
  n, h, w, _ = x.shape
  f = kernel.shape[2]
  sh, sw = config.strides
  out_dtype = config.preferred_element_type or x.dtype
  mh = max(count for _, _, count, _ in phases_h)
  mw = max(count for _, _, count, _ in phases_w)
  (out_h, out_w) = (sum(p[2] for p in phases_h), sum(p[2] for p in phases_w))
  windows = _exact_phase_windows(phases_h, phases_w, h, w)
  if any(nr * nc > 1 for (_, nr, _, nc), *_ in windows):
    return _conv_phase_runs(x, kernel, config, windows, (mh, mw), (out_h, out_w), on_cpu)
  if nchw:
    x = jnp.transpose(x, (0, 3, 1, 2))
  parts = []  # (z, (slot_h, slot_w)) for the phases that meet a tap and the output
  for (rh, _, rw, _), _, padding, slot in windows:
    # Taps q * s + r, as an HWIO kernel with the q axes flipped.
    sub = jnp.transpose(kernel[rh::sh, rw::sw][::-1, ::-1], (0, 1, 3, 2))
    parts.append((_phase_convolve(x, sub, padding, config, on_cpu, nchw), slot))
  if spread:
    return _interleave(parts, config.strides, (n, out_h, out_w, f), out_dtype)
  rows = 2 if nchw else 1  # the axis of the rows; the columns' is next
  grid = [[jnp.zeros((n, f, mh, mw) if nchw else (n, mh, mw, f), out_dtype)] * sw
          for _ in range(sh)]
  for z, (slot_h, slot_w) in parts:
    pad = [(0, 0)] * 4
    pad[rows], pad[rows + 1] = (0, mh - z.shape[rows]), (0, mw - z.shape[rows + 1])
    grid[slot_h][slot_w] = jnp.pad(z, pad)
  # (n, mh, sh, mw, sw, f), or with nchw (n, f, mh, sh, mw, sw)
  full = jnp.stack([jnp.stack(row, axis=rows + 2) for row in grid], axis=rows + 1)
  if nchw:
    y = full.reshape(n, f, mh * sh, mw * sw)[:, :, :out_h, :out_w]
    return jnp.transpose(y, (0, 2, 3, 1))
  return full.reshape(n, mh * sh, mw * sw, f)[:, :out_h, :out_w]


def _conv_phase_runs(x, kernel, config, windows, rows_cols, out_hw, on_cpu):
  """``_conv_phase_exact`` past ``PHASE_PROGRAMS_MAX`` phases: one
  convolution per pair of runs of phases (``windows``:
  ``_exact_phase_windows``), whose outputs are the runs' phases' filters,
  (n, rows, columns, (i, j, f)). Each run's rows and columns are
  zero-padded to ``rows_cols`` (``ceil(out / s)``) and the runs, in the
  order of their slots, tiled into (n, mh, s_h, mw, s_w, f)
  (``_tile_phase_blocks``; slots no run covers, phases that meet no tap,
  are zero), then cut to ``out_hw``."""
  n = x.shape[0]
  f = kernel.shape[2]
  sh, sw = config.strides
  mh, mw = rows_cols
  blocks = {}  # (slot_h, slot_w) of a run pair -> (n, mh, nr, mw, nc, f)
  for (rh, nr, rw, nc), (ch, cw), padding, slot in windows:
    sub = _phase_run_kernel(kernel, config.strides, (rh, nr, ch), (rw, nc, cw))
    z = _phase_convolve(x, sub, padding, config, on_cpu)
    z = z.reshape(n, z.shape[1], z.shape[2], nr, nc, f).transpose(0, 1, 3, 2, 4, 5)
    blocks[slot] = jnp.pad(z, ((0, 0), (0, mh - z.shape[1]), (0, 0), (0, mw - z.shape[3]),
                               (0, 0), (0, 0)))
  runs_h = _slot_runs(sh, {slot[0]: z.shape[2] for slot, z in blocks.items()})
  runs_w = _slot_runs(sw, {slot[1]: z.shape[4] for slot, z in blocks.items()})
  full = _tile_phase_blocks(blocks, runs_h, runs_w, (n, mh, mw, f),
                            config.preferred_element_type or x.dtype)
  return full.reshape(n, mh * sh, mw * sw, f)[:, :out_hw[0], :out_hw[1]]


def _phase_run_kernel(kernel, strides, rows, cols):
  """The taps ``q * s + r`` of a (kh, kw, f, c) kernel for the phases ``r``
  of a run of rows ``(r0, nr, taps)`` and one of columns (likewise), as an
  HWIO kernel with the q axes flipped (a convolution written as a
  correlation) whose outputs are the phases' filters, (taps_h, taps_w, c,
  (i, j, f)); taps past the kernel are zero."""
  (r0, nr, ch), (c0, nc, cw) = rows, cols
  sh, sw = strides
  _, _, f, c = kernel.shape
  sub = kernel[r0:r0 + (ch - 1) * sh + nr, c0:c0 + (cw - 1) * sw + nc]
  sub = jnp.pad(sub, ((0, ch * sh - sub.shape[0]), (0, cw * sw - sub.shape[1]),
                      (0, 0), (0, 0)))
  sub = sub.reshape(ch, sh, cw, sw, f, c)[:, :nr, :, :nc]
  return sub[::-1, :, ::-1].transpose(0, 2, 5, 1, 3, 4).reshape(ch, cw, c, nr * nc * f)


def _tile_phase_blocks(blocks, runs_h, runs_w, shape, dtype):
  """Blocks of phases, (n, rows, nr, cols, nc, f) keyed by their first row
  and column phase, tiled along the phases in the order of ``runs_h`` and
  ``runs_w`` (``(first, count)`` per axis): (n, rows, s_h, cols, s_w, f),
  zero where a block is missing. ``shape``: (n, rows, cols, f)."""
  n, rows, cols, f = shape
  tiled = []
  for a, nr in runs_h:
    row = [blocks[a, b] if (a, b) in blocks else jnp.zeros((n, rows, nr, cols, nc, f), dtype)
           for b, nc in runs_w]
    tiled.append(row[0] if len(row) == 1 else jnp.concatenate(row, axis=4))
  return tiled[0] if len(tiled) == 1 else jnp.concatenate(tiled, axis=2)


def _slot_runs(s: int, run_slots):
  """An axis's ``s`` slots in order as ``(first slot, count)``: the runs
  ``run_slots`` (first slot -> number of phases) and, one at a time, the
  slots of phases that meet no tap or no output row."""
  out, slot = [], 0
  while slot < s:
    count = run_slots.get(slot, 1)
    out.append((slot, count))
    slot += count
  return out


def _exact_phase_runs(phases, merge=True):
  """An axis's ``_exact_phases`` as runs of consecutive phases that meet
  the same taps at the same input rows: ``(r0, nr, taps, first, count,
  slot)`` for phases ``r0 .. r0 + nr - 1`` whose ``(taps, first, count)``
  agree (their slots are then consecutive), each run one convolution with
  ``nr`` phases' filters; without ``merge``, a run per phase. Phases that
  meet no tap or no output row are left out. At k = 2s 'same' the phases
  form two runs, ``r < pad mod s`` and the rest (k64 s32: 2 where there
  are 32 phases); at k4 s2 'same' each phase is a run of its own."""
  runs = []
  for r, (taps, first, count, slot) in enumerate(phases):
    if not (taps and count):
      continue
    if (merge and runs and runs[-1][0] + runs[-1][1] == r
        and runs[-1][2:5] == (taps, first, count)):
      runs[-1] = (runs[-1][0], runs[-1][1] + 1, *runs[-1][2:])
    else:
      runs.append((r, 1, taps, first, count, slot))
  return runs


def _exact_phase_windows(phases_h, phases_w, h: int, w: int):
  """``_conv_phase_exact``'s convolutions over an input of ``h`` x ``w``:
  ``((rh, nr, rw, nc), taps, padding, slot)`` per pair of runs
  (``_exact_phase_runs``), phases ``rh .. rh + nr - 1`` by ``rw .. rw + nc
  - 1``, ``taps`` their (rows, columns) of taps, ``padding`` their
  stride-1 convolution's and ``slot`` their first output row and column
  (``_exact_phases``). Runs of several phases only past
  ``PHASE_PROGRAMS_MAX`` phases: at k2 s2 'valid' (unet k2s2, 8x32x32x256
  -> 128), whose four phases are one run, their one GEMM ran the training
  step 0.92x as fast as a GEMM per phase (Intel Xeon with AMX, interleaved;
  24 MiB of scratch against 28)."""
  merge = len(phases_h) * len(phases_w) > PHASE_PROGRAMS_MAX
  out = []
  for rh, nr, ch, first_h, count_h, slot_h in _exact_phase_runs(phases_h, merge):
    for rw, nc, cw, first_w, count_w, slot_w in _exact_phase_runs(phases_w, merge):
      padding = ((ch - 1 - first_h, first_h + count_h - h),
                 (cw - 1 - first_w, first_w + count_w - w))
      out.append(((rh, nr, rw, nc), (ch, cw), padding, (slot_h, slot_w)))
  return out


def _layer_phase_windows(in_hw, kernel_hw, strides, geometry):
  """``_exact_phase_windows`` for a layer of input ``in_hw``, from its
  ``geometry``: ``None`` where a phase's convolution would crop the input
  (``_exact_phases``)."""
  (h, w), (kh, kw), (sh, sw) = in_hw, kernel_hw, strides
  (out_h, pad_h), (out_w, pad_w) = geometry
  phases_h = _exact_phases(h, kh, sh, out_h, pad_h)
  phases_w = _exact_phases(w, kw, sw, out_w, pad_w)
  if phases_h is None or phases_w is None:
    return None
  return _exact_phase_windows(phases_h, phases_w, h, w)


def _nchw_phase_forward(x_shape, dtype, kernel_shape, config, geometry, on_cpu,
                        nchw_after) -> bool:
  """Whether ``conv_phase`` runs ``_conv_phase_exact`` channels-first (its
  ``nchw``) for a channels_first layer (``nchw_after``; ``x_shape`` NHWC)
  whose exact phases it computes: on oneDNN (``on_cpu``), float32 where
  ``_onednn.takes_channels_first``, at stride > 1 (at most
  ``PHASE_PROGRAMS_MAX`` phases), with every phase of more than one tap on
  oneDNN, and an output of at least ``NCHW_PHASE_FORWARD_MIN_IMAGE_BYTES``
  (2 MiB) per image. Not where ``_phase_slots`` writes the output
  interleaved itself (k2 s2, k4 s2 'valid'), which ``conv_phase`` tries
  first.

  The NHWC phases are interleaved and transposed to NCHW in one loop of
  XLA:CPU's, which gathers each output row from the phases a filter's
  stride apart: 5.3 ms of a 13.3 ms forward on 8x32x32x128 -> 128 k3 s2
  (16 MiB out), where a plain transpose of that size takes 1.3. Given NCHW
  oneDNN reorders the input and the phases itself, and the phases
  interleave along rows (1.1 ms). Forwards timed interleaved (Intel Xeon
  with AMX, 2026-11-28, 4 rounds; the NHWC route's ms against this one's):
  8 images: 32x32x128 -> 128 k3 s2 14.3 -> 11.4, 32x32x256 -> 128 k3 s2
  21.5 -> 18.9, k4 s2 32x32x128 -> 128 18.9 -> 14.6, 48x48x64 -> 64 k3 s2
  14.7 -> 9.9, 64x64x64 -> 64 k3 s2 50.7 -> 27.7 (its page faults
  included), 64x64x64 -> 32 k4 s2 10.3 -> 9.7; 1x64x64x64 -> 64 k3 s2 3.90
  -> 2.74, 2x32x32x128 -> 128 4.11 -> 2.93, 4x64x64x32 -> 32 3.77 -> 3.32,
  4x32x32x64 -> 128 k5 s2 7.76 -> 6.05, 16x32x32x128 -> 128 k4 s2 45.3 ->
  36.7 (1.05x-1.48x). Slower with less output per image: 1-1.1 MiB
  (16x32x32x128 -> 64 k3 s2 0.84x-0.89x, 8x32x32x64 -> 64 0.78x,
  16x32x32x128 -> 64 k4 s2 0.96x, 8x24x24x128 -> 128 0.96x, 16x16x16x256 ->
  256 0.96x), 0.5 MiB (the suite's 16x16x16x256 -> 128 k4 s2 0.91x-0.96x,
  k3 s2 0.96x, k5 s2 0.98x): each phase's convolution reorders the input
  again, which only a large output's slow transpose outweighs. Training
  steps: 0.98x-1.00x at k3 s2 on 32x32 inputs (XLA fuses the NHWC route's
  transpose into the loss), 1.09x at k4 s2, 1.23x on 64x64 inputs. Not
  measured on the AMD EPYC, whose oneDNN takes NCHW the same way (its
  ``avx512_core`` reorders: the NCHW input gradient, ``_nchw_input_grad``)."""
  n, h, w, c = x_shape
  kh, kw, f, _ = kernel_shape
  (sh, sw), ((out_h, _), (out_w, _)) = config.strides, geometry
  if not (nchw_after and on_cpu and jnp.dtype(dtype) == jnp.float32
          and config.dilation_rate == (1, 1) and 1 < sh * sw <= PHASE_PROGRAMS_MAX
          and _onednn.takes_channels_first(dtype)
          and out_h * out_w * f * jnp.dtype(dtype).itemsize
          >= NCHW_PHASE_FORWARD_MIN_IMAGE_BYTES):
    return False
  windows = _layer_phase_windows((h, w), (kh, kw), config.strides, geometry)
  return windows is not None and all(
      taps == (1, 1) or _onednn_runs(x_shape, (*taps, c, f), (1, 1), padding, (1, 1), dtype,
                                     config.preferred_element_type)
      for _, taps, padding, _ in windows)


def _slot_window(length: int, k: int, s: int, out: int, pad: int):
  """Per axis, the window of ``_conv_phase_slots``: ``(taps, pad_lo,
  pad_hi)``, the stride-1 convolution over the input's ``length`` whose
  ``out / s`` outputs are the output's rows (or columns) in groups of ``s``
  slots; ``None`` unless the stride divides the kernel size, TF's padding
  ``pad`` and ``out`` (every slot then meets ``k / s`` taps at the same
  input rows) and both paddings are >= 0. Output row ``o = m * s + a``
  meets taps ``a + s * q`` of inputs ``m + pad / s - q``."""
  if k % s or pad % s or out % s:
    return None
  taps, shift = k // s, pad // s
  lo, hi = taps - 1 - shift, out // s - length + shift
  return (taps, lo, hi) if lo >= 0 and hi >= 0 else None


def _phase_slots(x_shape, dtype, kernel_shape, config, geometry, on_cpu, training=False):
  """The rows' and columns' ``_slot_window`` where ``conv_phase`` runs as
  ``_conv_phase_slots`` (on oneDNN, ``on_cpu``, with at least
  ``ONEDNN_MIN_FEATURES`` filters), else ``None``; never in a training
  step (``training``), where the loss's subtraction takes in the
  interleaving the slots save (it reads the phases where they lie) and the
  input gradient's phase GEMMs fold ``dy`` back: steps timed interleaved
  against the phases ran 0.90-0.95x as fast at k2 s2 (8x32x32x128 -> 64),
  at 32 MiB of scratch instead of 28 (unet k2s2, past glibc's largest mmap
  threshold: every step took it fresh from the kernel, 28.4 against 20.6
  ms), and 0.99-1.07x at k4 s2 'valid' and k6 s2 'same'."""
  n, h, w, c = x_shape
  kh, kw, f, _ = kernel_shape
  (sh, sw), ((out_h, pad_h), (out_w, pad_w)) = config.strides, geometry
  rows, cols = _slot_window(h, kh, sh, out_h, pad_h), _slot_window(w, kw, sw, out_w, pad_w)
  if training or not on_cpu or rows is None or cols is None or f < ONEDNN_MIN_FEATURES:
    return None
  if c < ONEDNN_MIN_CONTRACTED or not _onednn.supported(
      (n, h, 1, w, c), (rows[0], sh, cols[0], c, sw * f), (1, 1, 1),
      ((rows[1], rows[2]), (sh - 1, sh - 1), (cols[1], cols[2])), (1, 1, 1), dtype,
      config.preferred_element_type):
    return None
  return rows, cols


def _conv_phase_slots(x, kernel, config, rows, cols):
  """``conv_phase`` as one convolution whose output is already interleaved,
  where every output phase meets the same input pixels (``_slot_window``:
  k2 s2, k4 s2 'valid', k6 s2 'same'): no depth-to-space copy.

  The output (n, out_h, out_w, f) is laid out as (n, out_h / s_h, s_h,
  out_w / s_w, s_w * f): a three-dimensional convolution's output with
  the row phase (the slot) as its middle spatial axis and the column phase
  in the channels. Its input is ``x`` as (n, h, 1, w, c), padded by
  ``s_h - 1`` on both sides of that unit axis and slid over by a window of
  ``s_h``, so slot ``a`` meets ``x`` at window position ``s_h - 1 - a``:
  the kernel (kq_h, s_h, kq_w, c, s_w * f) holds each slot's taps there.
  oneDNN skips the padding: unet k2s2 (8x32x32x256 -> 128) 5.4 against
  6.4 ms for the phase GEMMs and their interleaving, 8x32x32x128 -> 64 k4
  s2 'valid' 5.2 against 7.6 (AMD EPYC, AVX-512)."""
  n, h, w, c = x.shape
  kh, kw, f, _ = kernel.shape
  sh, sw = config.strides
  (kqh, lo_h, hi_h), (kqw, lo_w, hi_w) = rows, cols
  # [d, t, e, :, b * f + j] = kernel[s_h - 1 - t + s_h * (kq_h - 1 - d),
  #                                  b + s_w * (kq_w - 1 - e), j, :]
  sub = kernel.reshape(kqh, sh, kqw, sw, f, c)[::-1, ::-1, ::-1]
  sub = jnp.transpose(sub, (0, 1, 2, 5, 3, 4)).reshape(kqh, sh, kqw, c, sw * f)
  y = _onednn.conv(x[:, :, None], sub, (1, 1, 1), ((lo_h, hi_h), (sh - 1, sh - 1), (lo_w, hi_w)),
                   preferred_element_type=config.preferred_element_type)
  return y.reshape(n, y.shape[1] * sh, y.shape[3] * sw, f)


def conv_phase(x, kernel, config, geometry, on_cpu=False, training=False, nchw_after=False):
  """Sub-pixel decomposition (``dilation_rate`` must be 1).

  For output phase ``r`` and ``o + pad = t * s + r``:
  ``y[o] = sum_q x[t - q] kernel[q * s + r]``, a stride-1 convolution of
  the undilated input. Shapes: ``x`` (n, h, w, c) -> per group
  (n, h + kq_h - 1, phases_h, w + kq_w - 1, phases_w, f) -> interleaved
  (n, (h + kq_h - 1) * s_h, (w + kq_w - 1) * s_w, f) -> TF's window. Where
  every phase meets the same input pixels, on oneDNN, one convolution that
  writes the output interleaved (``_conv_phase_slots``); else one per
  phase where ``_exact_phases_pay``, their phases interleaved by a
  transpose or spread (``_interleaves_by_pad``). ``training``: in a
  training step's forward (for both rules); ``nchw_after``: the caller
  transposes the output to NCHW (for ``_interleaves_by_pad``).
  """
  n, h, w, c = x.shape
  kh, kw, f, _ = kernel.shape
  (sh, sw) = config.strides
  if (sh, sw) == (1, 1):
    # One phase: the plain convolution with TF's padding, made taller than
    # the input (on Eigen) with the channel counts XLA:CPU runs faster there.
    padding = _dilated_padding((h, w), (kh, kw), config, geometry)
    hwio = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    if on_cpu and _stride1_phase_on_onednn(x.shape, x.dtype, kernel.shape, config, geometry):
      return _onednn.conv(x, hwio, (1, 1), padding,
                          preferred_element_type=config.preferred_element_type)
    if _taller_channels(kernel.shape):
      padding = _taller_than_input(padding, (h, w), (kh, kw), config.dilation_rate)
    y = lax.conv_general_dilated(
        x, hwio, window_strides=(1, 1), padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=config.precision, preferred_element_type=config.preferred_element_type)
    return y[:, :geometry[0][0]]
  slots = _phase_slots(x.shape, x.dtype, kernel.shape, config, geometry, on_cpu, training)
  if slots is not None:
    return _conv_phase_slots(x, kernel, config, *slots)
  (out_h, pad_h), (out_w, pad_w) = geometry
  phases_h = _exact_phases(h, kh, sh, out_h, pad_h)
  phases_w = _exact_phases(w, kw, sw, out_w, pad_w)
  (gh, kqh), (gw, kqw) = _phase_groups(kh, sh), _phase_groups(kw, sw)
  out_dtype = config.preferred_element_type or x.dtype
  spread = _interleaves_by_pad(f, out_dtype, config.strides, training, on_cpu, nchw_after)
  if _nchw_phase_forward(x.shape, x.dtype, kernel.shape, config, geometry, on_cpu, nchw_after):
    return _conv_phase_exact(x, kernel, config, phases_h, phases_w, on_cpu, nchw=True)
  if (phases_h is not None and phases_w is not None
      and _exact_phases_pay(x.shape, x.dtype, kernel.shape, config, geometry, on_cpu)):
    return _conv_phase_exact(x, kernel, config, phases_h, phases_w, on_cpu, spread)
  th, tw = _shapes.phase_canvas_length(h, kh, sh), _shapes.phase_canvas_length(w, kw, sw)
  groups = {}  # (r0, c0) -> the group's phases (n, th, tw, nr, nc, f); None: no tap reaches
  for r0, nr, ch in gh:
    for c0, nc, cw in gw:
      if ch == 0 or cw == 0:  # phases no tap reaches (kernel < stride): zero
        groups[r0, c0] = None
        continue
      sub = _phase_run_kernel(kernel, config.strides, (r0, nr, ch), (c0, nc, cw))
      z = _phase_convolve(x, sub, ((ch - 1, kqh - 1), (cw - 1, kqw - 1)), config, on_cpu)
      groups[r0, c0] = z.reshape(n, th, tw, nr, nc, f)
  if spread:
    parts = [(z[:, :, :, i, j], (r0 + i - pad_h, c0 + j - pad_w))
             for (r0, c0), z in groups.items() if z is not None
             for i in range(z.shape[3]) for j in range(z.shape[4])]
    return _interleave(parts, config.strides, (n, out_h, out_w, f), out_dtype)
  blocks = {key: z.transpose(0, 1, 3, 2, 4, 5) for key, z in groups.items() if z is not None}
  full = _tile_phase_blocks(blocks, [g[:2] for g in gh], [g[:2] for g in gw],
                            (n, th, tw, f), out_dtype)
  return _window(full.reshape(n, th * sh, tw * sw, f), geometry)


def conv_phase_gemm(x, kernel, config, geometry):
  """The sub-pixel decomposition as one GEMM (dilation 1), for 16-bit inputs.

  ``y_r[t] = sum_q x[t - q] k[q * s + r]`` for all phases ``r`` at once:
  the input's ``kq_h * kq_w`` shifted windows side by side,
  (n * th * tw, kq_h * kq_w * c), times the taps laid out
  (s_h * s_w * f, kq_h * kq_w * c) (both contracted on their last axis, the
  form XLA:CPU runs fastest), accumulated in float32, then interleaved
  (depth-to-space) and windowed in float32 and cast once. XLA:CPU runs a
  bfloat16 GEMM with float32 output at about twice the float32 rate but
  its bfloat16 convolutions (``conv_phase``) at the float32 rate; the
  windows are built as 32-bit words (``_packed``). Taps past the kernel
  (``k % s != 0``) are zero and multiplied, so ``auto`` uses it only where
  each stride divides its kernel size (``_forward_algorithm``).
  """
  n, h, w, c = x.shape
  f = kernel.shape[2]
  sh, sw = config.strides
  taps = _phase_taps(_packed(kernel), config.strides)  # (kq_h, kq_w, s_h, s_w, f, c)
  kqh, kqw = taps.shape[:2]
  taps = _unpacked(jnp.transpose(taps, (2, 3, 4, 0, 1, 5)), kernel.dtype)
  th = _shapes.phase_canvas_length(h, kernel.shape[0], sh)
  tw = _shapes.phase_canvas_length(w, kernel.shape[1], sw)
  xp = jnp.pad(_packed(x), ((0, 0), (kqh - 1, kqh - 1), (kqw - 1, kqw - 1), (0, 0)))
  windows = jnp.concatenate([xp[:, kqh - 1 - a:kqh - 1 - a + th, kqw - 1 - b:kqw - 1 - b + tw]
                             for a in range(kqh) for b in range(kqw)], axis=-1)
  z = lax.dot_general(_unpacked(windows, x.dtype).reshape(n * th * tw, kqh * kqw * c),
                      taps.reshape(sh * sw * f, kqh * kqw * c), (((1,), (1,)), ((), ())),
                      precision=config.precision,
                      preferred_element_type=_accumulation_dtype(x.dtype))
  z = z.reshape(n, th, tw, sh, sw, f).transpose(0, 1, 3, 2, 4, 5)
  y = _window(z.reshape(n, th * sh, tw * sw, f), geometry)
  return y.astype(config.preferred_element_type or x.dtype)


def _phase_taps(kernel, strides):
  """The kernel (kh, kw, f, c) as the phase decomposition's taps
  (kq_h, kq_w, s_h, s_w, f, c): entry ``[q, r]`` is tap ``q * s + r``,
  zero past the kernel. ``_kernel_from_phase_taps`` is its inverse."""
  kh, kw, f, c = kernel.shape
  sh, sw = strides
  kqh, kqw = _shapes.taps_per_phase(kh, sh), _shapes.taps_per_phase(kw, sw)
  k = jnp.pad(kernel, ((0, kqh * sh - kh), (0, kqw * sw - kw), (0, 0), (0, 0)))
  return k.reshape(kqh, sh, kqw, sw, f, c).transpose(0, 2, 1, 3, 4, 5)


def _kernel_from_phase_taps(taps, kernel_hw):
  """Taps (kq_h, kq_w, s_h, s_w, f, c) back to a (kh, kw, f, c) kernel."""
  kqh, kqw, sh, sw, f, c = taps.shape
  k = taps.transpose(0, 2, 1, 3, 4, 5).reshape(kqh * sh, kqw * sw, f, c)
  return k[:kernel_hw[0], :kernel_hw[1]]


def _dy_canvas(dy, kernel_hw, config, geometry, in_hw):
  """The output cotangent placed on the phase decomposition's full canvas
  and folded space-to-depth: (n, th, tw, s_h * s_w * f) with
  ``th = h + ceil(kh / s_h) - 1`` (likewise ``tw``); rows of ``dy`` past
  the canvas, which no input pixel reaches, are dropped. 16-bit values
  come back as words (``_packed``; ``f / 2`` per phase), for the callers'
  own copies.

  Where each stride divides its kernel size (every phase the same taps:
  the callers read the canvas whole) the fold is one strided slice of
  ``dy``'s rows per row phase, concatenated along the channels: a row
  phase's pixels keep their column phases and filters together, runs of
  ``s_w * f`` values that XLA:CPU copies as vectors, where the transpose
  moved each pixel's ``f`` alone (64 float32 as 64 scalar copies:
  ``_interleaves_by_pad``). Training steps timed interleaved against the
  transpose (Intel Xeon with AMX, 2026-11-28): unet k2s2 'valid'
  (8x32x32x256 -> 128, both gradients the phase GEMMs) 25.7 -> 22.0-23.4
  ms, FCN's k16 s8, k32 s16 and k64 s32 heads 1.12x, 1.08x and 1.06x,
  upscore2 (k4 s2) 1.16x, 16x16x16x256 -> 128 k4 s2 with both phase GEMMs
  1.06x; 4x32x32x64 -> 64 k8 s4 1.00x. At k3 s2, whose phase groups the
  kernel gradient slices out of the canvas, it ran 0.93x (8x32x32x128 ->
  128, the phase GEMMs forced), so there the transpose stays."""
  dy = _packed(dy)
  n, f = dy.shape[0], dy.shape[-1]
  (kh, kw), (sh, sw) = kernel_hw, config.strides
  th = _shapes.phase_canvas_length(in_hw[0], kh, sh)
  tw = _shapes.phase_canvas_length(in_hw[1], kw, sw)
  (out_h, pad_h), (out_w, pad_w) = geometry
  d = lax.pad(dy, jnp.zeros((), dy.dtype),
              ((0, 0, 0), (pad_h, th * sh - pad_h - out_h, 0),
               (pad_w, tw * sw - pad_w - out_w, 0), (0, 0, 0)))
  if sh > 1 and _strides_divide_kernel(config, kernel_hw):
    d = d.reshape(n, th, sh, tw * sw * f)
    return jnp.concatenate([d[:, :, r].reshape(n, th, tw, sw * f) for r in range(sh)], axis=-1)
  d = d.reshape(n, th, sh, tw, sw, f).transpose(0, 1, 3, 2, 4, 5)
  return d.reshape(n, th, tw, sh * sw * f)


def grad_input_phase(dy, kernel, config, geometry, in_hw):
  """``dx`` by the phase decomposition (``dilation_rate`` 1), as GEMMs.

  The forward pass is ``y_r[t] = sum_q x[t - q] k[q * s + r]``, so
  ``dx[i] = sum_{q, r} D[i + q, r] k[q * s + r]``: per shift ``q`` one GEMM
  (n*h*w, s_h*s_w*f) @ (s_h*s_w*f, c) of a window of the canvas ``D``
  (``_dy_canvas``) with the kernel's taps ``q * s + r`` (zero past the
  kernel), summed over the ``ceil(k/s)^2`` shifts. Used on small inputs,
  where XLA:CPU runs it faster than the strided convolution (deep
  channels, few pixels); slower on large ones (it reads ``D`` once per
  shift), except when the kernel is no larger than the stride: then it is
  one GEMM, and ``grad_kernel_phase`` builds the same ``D`` unchunked, which
  XLA computes once for both (k2 s2: step 1.6x faster, temporary memory 49
  -> 16 MiB). The GEMMs and their sum are in float32 or wider, which also
  puts bfloat16 GEMMs on XLA:CPU's fast path. Where the windows of ``D``
  outweigh the kernel's taps (more pixels ``n*h*w`` than channels ``c``),
  the shifts are summed in a loop: unrolled, XLA:CPU copied every window
  out before the training step's kernel gradient and kept all the terms for
  one sum (bfloat16 16x16x16x256 -> 128 k4 s2: step 32.9 -> 24.5 MiB and
  1.14-1.29x as fast, timed interleaved; 16x32x32x128 -> 64: 49 -> 34 MiB,
  1.1-1.2x). With more channels (16x4x4x1024 -> 512) the loop's copy of the
  taps costs more than it saves (36 -> 51 MiB, 0.93x): unrolled there, up
  to ``TAPS_MAX_TAPS`` shifts (a 1x1 input's k33 'same' step: 1089 GEMMs
  unrolled compiled in 30 s).
  """
  h, w = in_hw
  d = _dy_canvas(dy, kernel.shape[:2], config, geometry, in_hw)
  k = _phase_taps(kernel, config.strides)
  kqh, kqw = k.shape[:2]
  k = k.reshape(kqh * kqw, -1, k.shape[-1])  # shift q_h * kq_w + q_w: (s_h * s_w * f, c)
  acc_dtype = _accumulation_dtype(dy.dtype)

  def term(q, k_q):
    window = lax.dynamic_slice(d, (0, q // kqw, q % kqw, 0), (d.shape[0], h, w, d.shape[3]))
    return lax.dot_general(_unpacked(window, dy.dtype), k_q, (((3,), (0,)), ((), ())),
                           precision=config.precision, preferred_element_type=acc_dtype)

  dx = term(0, k[0])
  if kqh * kqw > 1 and (d.shape[0] * h * w > k.shape[-1] or kqh * kqw > TAPS_MAX_TAPS):
    dx, _ = lax.scan(lambda dx, qk: (dx + term(qk[0], _unpacked(qk[1], k.dtype)), None), dx,
                     (jnp.arange(1, kqh * kqw), _packed(k[1:])))
  else:
    for q in range(1, kqh * kqw):
      dx = dx + term(q, k[q])
  return dx.astype(dy.dtype)  # (n, h, w, c)


def _correlate_taps(xc, d, ch, cw, tw, precision, acc_dtype, folded):
  """``g[q_h, q_w] = sum_u xc[u]^T d[u + q_h * tw + q_w]`` for
  ``q < (ch, cw)``, as one GEMM: (ch, cw, cols, c).

  ``xc`` (rows, c) and ``d`` (rows, cols) are canvases flattened to rows
  (``folded``: ``d`` is folded space-to-depth, a stride > 1),
  ``tw`` canvas pixels wide; ``xc`` is zero wherever a shift would carry
  ``d`` past a canvas row's end or the last row, so nothing wraps. Each
  operand is a stack of shifted copies (no ``ch * cw`` im2col), split as
  ``_correlate_mode`` says: ``xc`` shifted back by both ``q_h`` canvas rows
  and ``q_w`` pixels and ``d`` not at all (``"x"``), ``xc`` by ``q_h`` and
  ``d`` up by ``q_w`` (``"split"``), or ``d`` by both (``"d"``). The
  narrower stack is the GEMM's left operand, which XLA:CPU runs up to 4x
  faster (2178 rows: (24, 128) 72 GFLOP/s, (128, 24) 16 GFLOP/s), and
  always ``xc``'s with ``"x"``; ``xc``'s is then built transposed,
  (xh * xw * c, rows), a GEMM XLA:CPU ran at 180-200 GFLOP/s on AVX-512
  against 130-150 contracting both operands' first axis (kernel gradients
  up to 1.14x faster; the same for a leading ``d`` stack ran 1.2x slower).
  """
  rows, c = xc.shape
  cols = d.shape[1]
  mode = _correlate_mode(c, cols, ch, cw, folded)
  (xh, xw), (dh, dw) = {"x": ((ch, cw), (1, 1)), "d": ((1, 1), (ch, cw)),
                        "split": ((ch, 1), (1, cw))}[mode]
  front = (xh - 1) * tw + xw - 1
  xp = jnp.pad(_packed(xc), ((front, 0), (0, 0)))  # 16-bit: the copies move words
  x_starts = [front - a * tw - b for a in range(xh) for b in range(xw)]
  offsets = [a * tw + b for a in range(dh) for b in range(dw)]
  dp = jnp.pad(_packed(d), ((0, offsets[-1]), (0, 0)))
  ds = jnp.stack([dp[o:o + rows] for o in offsets], axis=1).reshape(rows, -1)
  ds = _unpacked(ds, d.dtype)
  if mode == "x" or xh * c <= ds.shape[1]:  # x's stack leads, built transposed:
    # (xh * xw * c, rows)
    xs = jnp.concatenate([_unpacked(xp[o:o + rows], xc.dtype).T for o in x_starts], axis=0)
    g = lax.dot_general(xs, ds, (((1,), (0,)), ((), ())), precision=precision,
                        preferred_element_type=acc_dtype)
  else:
    xs = jnp.stack([xp[o:o + rows] for o in x_starts], axis=1).reshape(rows, -1)
    xs = _unpacked(xs, xc.dtype)
    g = lax.dot_general(ds, xs, (((0,), (0,)), ((), ())), precision=precision,
                        preferred_element_type=acc_dtype).T
  # (xh * xw * c, dh * dw * cols): one of xh, dh and one of xw, dw is 1.
  g = g.reshape(xh, xw, c, dh, dw, cols).transpose(0, 3, 1, 4, 5, 2)
  return g.reshape(ch, cw, cols, c)


def _correlate_mode(c, cols, ch, cw, folded) -> str:
  """How ``_correlate_taps`` splits the shifts ``q < (ch, cw)`` between its
  stacks of ``c`` input channels and ``cols`` cotangent columns: the split
  whose stacks are narrowest together, ``"x"`` (``ch * cw * c + cols``),
  ``"split"`` (``ch * c + cw * cols``) or ``"d"`` (``c + ch * cw * cols``),
  the first on a tie; ``"x"`` only on a ``folded`` canvas (stride > 1) and
  up to ``CORRELATE_X_MAX_WIDTH`` columns of ``x``'s stack.

  A ``folded`` ``d`` is the cotangent's canvas folded space-to-depth,
  which ``"x"`` takes as it is; XLA:CPU fuses that fold into the copies of
  a ``d`` stack, which ran slowly (dcgan 32->64's kernel gradient,
  16x32x32x128 -> 64 k4 s2: ``d`` stack 5.5 ms, the fold alone 3.4, of
  35). Timed alone at k4 s2 (batch 8-16, 16x16 to 64x64 inputs, 3-512
  channels, 16-512 filters), ``"x"`` beat the split 1.01-1.36x where its
  stacks are narrower or as narrow (1.5-1.75x on 3-16 input channels,
  dcgan 32->64 1.07-1.09x), but ran 0.91-0.96x with 2048 columns (512
  channels); at k6 s2 (three shifts each way) 1.0-1.13x. On k3 s2's and
  k5 s2's phase groups (8x32x32, 32-128 channels) the rule ran 0.91-1.15x
  as fast as the split alone, ``"x"`` throughout 0.73-0.92x. At stride 1,
  where ``d`` is the cotangent itself, ``"x"`` ran 0.8-0.9x (k3, 16-32
  channels to 64-128 filters).
  """
  widths = {"x": ch * cw * c + cols, "split": ch * c + cw * cols, "d": c + ch * cw * cols}
  if not folded or ch * cw * c > CORRELATE_X_MAX_WIDTH:
    del widths["x"]
  return min(widths, key=widths.get)


def grad_kernel_phase(x, dy, kernel_hw, config, geometry):
  """``dkernel`` by the phase decomposition (``dilation_rate`` 1, any
  stride), as GEMMs per chunk of images.

  With ``D`` the canvas of ``_dy_canvas`` (n, th, tw, s_h*s_w*f) and the
  forward pass ``y_r[t] = sum_q x[t - q] k[q * s + r]``,
  ``dk[q * s + r] = sum_u x[u] D[u + q, r]``: on the canvas flattened to
  ``L = n * th * tw`` rows, a shift by ``q`` is a shift by
  ``q_h * tw + q_w`` rows, and ``x`` (zero past its ``h x w`` corner of
  each canvas) never meets a neighbour's pixels. The phases are grouped
  as in ``conv_phase`` (equal tap counts, at most two groups per axis);
  each pair of groups is one GEMM over its own taps
  (``_correlate_taps``), so no tap past the kernel is computed (k3 s2: 9
  taps, not 16); but with fewer than ``EXACT_TAPS_FILTERS`` filters,
  where each group's GEMM is too thin to pay for its own pass over ``x``,
  all phases are one GEMM over ``ceil(k / s)`` taps per axis, those past
  the kernel dropped afterwards. The batch is cut into chunks of
  ``_kernel_grad_chunk`` images, run by ``lax.scan`` and accumulated in
  float32 or wider: the stacks stay cache-sized and the temporary memory
  about one chunk's. Past ``PHASE_PROGRAMS_MAX`` phases, where
  ``_kernel_grad_phase_windows`` finds the forward's runs of phases, no
  canvas: a GEMM per pair of runs (``_kernel_grad_phase_runs``).
  """
  n, h, w, c = x.shape
  sh, sw = config.strides
  f = dy.shape[-1]
  (gh, kqh), (gw, kqw) = _phase_groups(kernel_hw[0], sh), _phase_groups(kernel_hw[1], sw)
  if f < EXACT_TAPS_FILTERS:
    gh, gw = [(0, sh, kqh)], [(0, sw, kqw)]  # one GEMM, taps past the kernel included
  th = _shapes.phase_canvas_length(h, kernel_hw[0], sh)
  tw = _shapes.phase_canvas_length(w, kernel_hw[1], sw)
  pairs = [(a, b) for a in gh for b in gw if a[2] and b[2]]
  acc_dtype = _accumulation_dtype(x.dtype)

  def taps(x, dy):  # one chunk: per pair of groups, (ch, cw, nr * nc * f, c)
    d = _dy_canvas(dy, kernel_hw, config, geometry, (h, w))  # 16-bit: words
    rows = d.shape[0] * th * tw
    xc = jnp.pad(x, ((0, 0), (0, th - h), (0, tw - w), (0, 0))).reshape(rows, c)
    d = d.reshape(rows, sh, sw, -1)
    return tuple(
        _correlate_taps(xc, _unpacked(d[:, r0:r0 + nr, c0:c0 + nc], dy.dtype).reshape(rows, -1),
                        ch, cw, tw, config.precision, acc_dtype, sh * sw > 1)
        for (r0, nr, ch), (c0, nc, cw) in pairs)

  windows = _kernel_grad_phase_windows(config, x.shape, kernel_hw, geometry)
  if windows is not None:
    return _kernel_grad_phase_runs(x, dy, kernel_hw, config, windows, acc_dtype)
  chunk = n if kqh == kqw == 1 else _kernel_grad_chunk(n, th * tw)
  if chunk == n:
    gs = taps(x, dy)
  else:
    # A chunk's images ride the loop stacked along the height, (n / chunk,
    # chunk * height, ...), with no unit axis: split to (n, 1, ...) for one
    # image per chunk, XLA:CPU gave the loop a copy of the input and more
    # scratch (training steps, against the dilated reference's: 8x64x64x64
    # -> 32 k3 s2 45 -> 28 MiB, its 40; -> 64 81 -> 65, its 72;
    # 4x128x128x128 -> 32 k4 s2 105 -> 73, its 96; 1.03-1.13x as fast).
    split = lambda a: a.reshape(n // chunk, chunk * a.shape[1], *a.shape[2:])
    g0 = tuple(jnp.zeros((ch, cw, nr * nc * f, c), acc_dtype)
               for (_, nr, ch), (_, nc, cw) in pairs)
    def body(g, xd):
      xw, dw = (a.reshape(chunk, -1, *a.shape[1:]) for a in xd)
      return tuple(a + b for a, b in zip(g, taps(_unpacked(xw, x.dtype),
                                                _unpacked(dw, dy.dtype)))), None

    # 16-bit inputs ride the loop as words: XLA:CPU widened bfloat16 loop
    # inputs to float32 copies (16x16x16x256 -> 128 k4 s2: 12 MiB).
    gs, _ = lax.scan(body, g0, (split(_packed(x)), split(_packed(dy))))
  # Back to the taps (kq_h, kq_w, s_h, s_w, f, c), zero past the kernel.
  blocks = dict(zip(pairs, gs))
  rows_out = []
  for a in gh:
    cols_out = []
    for b in gw:
      block = blocks.get((a, b))
      shape = (kqh, kqw, a[1], b[1], f, c)
      if block is None:
        cols_out.append(jnp.zeros(shape, acc_dtype))
        continue
      block = block.reshape(a[2], b[2], a[1], b[1], f, c)
      cols_out.append(jnp.pad(block, ((0, kqh - a[2]), (0, kqw - b[2])) + ((0, 0),) * 4))
    rows_out.append(jnp.concatenate(cols_out, axis=3))
  return _kernel_from_phase_taps(jnp.concatenate(rows_out, axis=2), kernel_hw)


def _kernel_grad_phase_windows(config: ConvTransposeConfig, x_shape, kernel_hw, geometry):
  """The runs of phases (``_exact_phase_windows``) by which
  ``grad_kernel_phase`` runs (``_kernel_grad_phase_runs``), or ``None``:
  past ``PHASE_PROGRAMS_MAX`` phases, at most that many pairs of runs, each
  of at least ``KERNEL_GRAD_RUN_MIN_PHASES`` phases, where the canvas
  would be built for the whole batch at once (``_kernel_grad_chunk``;
  ``x_shape`` NHWC).

  The canvas (FCN-32s, k64 s32 on 16x16: 17x17 rows and columns of
  phases, 23.7 MiB beside ``dy``'s 21) held the batch-1 FCN heads' training
  steps 1.7-4.8 MiB over the dilated reference's 42 (XLA:CPU also
  materialized ``dy`` padded and its row phases before concatenating
  them). By runs: FCN-32s 46.8 -> 36.8 MiB, FCN-16s 43.7 -> 42.4 (the
  reference's 42.1), FCN-8s 44.7 -> 42.8 (42.3), bfloat16 FCN-32s 46.7 ->
  19.2; steps 1.02x-1.04x, 1.03x, 1.03x-1.04x and 1.27x-1.31x as fast,
  timed alternating call by call (Intel Xeon with AMX, 2026-11-28). Runs
  of fewer phases make narrower GEMMs, each with its own stack of shifted
  inputs: with k8 s4's 4 phases a pair, one image of 32x32 to 64x64 with
  32-64 channels trained 0.85x-0.93x as fast as with the canvas, and 4
  images of 32x32x64 -> 64 (whose canvas is chunked) 0.91x."""
  (kh, kw), (sh, sw) = kernel_hw, config.strides
  if sh * sw <= PHASE_PROGRAMS_MAX:
    return None
  n, h, w = x_shape[:3]
  windows = _layer_phase_windows((h, w), kernel_hw, config.strides, geometry)
  if windows is None:
    return None
  canvas = _shapes.phase_canvas_length(h, kh, sh) * _shapes.phase_canvas_length(w, kw, sw)
  if (len(windows) > PHASE_PROGRAMS_MAX or _kernel_grad_chunk(n, canvas) < n
      or any(nr * nc < KERNEL_GRAD_RUN_MIN_PHASES for (_, nr, _, nc), *_ in windows)):
    return None
  return windows


def _kernel_grad_phase_runs(x, dy, kernel_hw, config, windows, acc_dtype):
  """``grad_kernel_phase`` by the forward's runs of phases
  (``_kernel_grad_phase_windows``), with no canvas: for a pair of runs,
  phases ``r`` of rows ``t`` in ``[first, first + count)`` (output ``o = t
  * s + r - pad``), ``dk[q * s + r] = sum_t x[t - q]^T dy[t * s + r -
  pad]``: one GEMM (ch * cw * c, rows) @ (rows, nr * nc * f) over the
  pair's ``rows = n * count_h * count_w`` pixels of ``dy``, copied out
  exactly, with ``x`` shifted once per tap (zero-padded as the pair's
  forward convolution pads it; copied from ``x`` transposed to (c, n, h,
  w) once, rows at a time, which ran the pair's stack 2.5x as fast as
  transposing each shifted copy). The pairs run in a loop (a
  ``lax.switch`` branch each), so one pair's copy of ``dy`` is held at a
  time: unrolled, XLA:CPU made every copy first (FCN-8s: 47.2 MiB, the
  canvas 44.7). The loop's stack of the pairs' taps starts as the first
  pair's, computed before it, unless that pair's shifted inputs outweigh
  the stack (``_runs_stack_starts_zero``)."""
  n, h, w, c = x.shape
  f = dy.shape[-1]
  (kh, kw), (sh, sw) = kernel_hw, config.strides
  kqh, kqw = _shapes.taps_per_phase(kh, sh), _shapes.taps_per_phase(kw, sw)
  mr = max(nr for (_, nr, _, _), *_ in windows)
  mc = max(nc for (_, _, _, nc), *_ in windows)

  def counts(window):  # the pair's rows and columns of phases
    _, (ch, cw), padding, _ = window
    return h + sum(padding[0]) - ch + 1, w + sum(padding[1]) - cw + 1

  def pair(window):  # (kq_h, mr, kq_w, mc, f * c): the pair's taps, zero-padded
    (rh, nr, rw, nc), (ch, cw), padding, (slot_h, slot_w) = window

    def taps(xt, dy):
      count_h, count_w = counts(window)
      # dy's rows slot_h + s_h * t + i (t < count_h, i < nr), likewise columns.
      d = lax.pad(dy, jnp.zeros((), dy.dtype),
                  ((0, 0, 0), (-slot_h, slot_h + sh * count_h - dy.shape[1], 0),
                   (-slot_w, slot_w + sw * count_w - dy.shape[2], 0), (0, 0, 0)))
      d = d.reshape(n, count_h, sh, count_w, sw, f)[:, :, :nr, :, :nc]
      rows = n * count_h * count_w
      d = d.transpose(0, 1, 3, 2, 4, 5).reshape(rows, nr * nc * f)
      xp = jnp.pad(xt, ((0, 0), (0, 0), padding[0], padding[1]))
      xs = jnp.concatenate([xp[:, :, ch - 1 - a:ch - 1 - a + count_h,
                               cw - 1 - b:cw - 1 - b + count_w].reshape(c, rows)
                            for a in range(ch) for b in range(cw)], axis=0)
      g = lax.dot_general(xs, d, (((1,), (0,)), ((), ())), precision=config.precision,
                          preferred_element_type=acc_dtype)
      g = g.reshape(ch, cw, c, nr, nc, f).transpose(0, 3, 1, 4, 5, 2)
      return jnp.pad(g, ((0, kqh - ch), (0, mr - nr), (0, kqw - cw), (0, mc - nc), (0, 0),
                         (0, 0))).reshape(kqh, mr, kqw, mc, f * c)
    return taps

  branches = [pair(window) for window in windows]
  xt = jnp.transpose(x, (3, 0, 1, 2))  # (c, n, h, w)
  stack = (len(windows), kqh, mr, kqw, mc, f * c)
  _, (ch, cw), _, _ = windows[0]
  first_inputs = ch * cw * c * n * math.prod(counts(windows[0]))
  if len(windows) > 1 and _runs_stack_starts_zero(
      math.prod(stack) * jnp.dtype(acc_dtype).itemsize, first_inputs * x.dtype.itemsize):
    gs, start = jnp.zeros(stack, acc_dtype), 0
  else:
    gs = jnp.pad(branches[0](xt, dy)[None], ((0, len(branches) - 1),) + ((0, 0),) * 5)
    start = 1
  gs = lax.fori_loop(start, len(branches), lambda i, gs: lax.dynamic_update_index_in_dim(
      gs, lax.switch(i, branches, xt, dy), i, 0), gs)
  blocks = {(rh, rw): g[:, None, :nr, :, :nc]  # (kq_h, 1, nr, kq_w, nc, f * c)
            for ((rh, nr, rw, nc), *_), g in zip(windows, gs)}
  runs_h = _slot_runs(sh, {rh: nr for (rh, nr, _, _), *_ in windows})
  runs_w = _slot_runs(sw, {rw: nc for (_, _, rw, nc), *_ in windows})
  taps = _tile_phase_blocks(blocks, runs_h, runs_w, (kqh, 1, kqw, f * c), acc_dtype)
  return taps.reshape(kqh * sh, kqw * sw, f, c)[:kh, :kw]


def _runs_stack_starts_zero(stack_bytes: int, first_inputs_bytes: int) -> bool:
  """Whether ``_kernel_grad_phase_runs``'s loop starts its stack as zeros
  (else as the first pair's taps, computed before it): where the stack
  is smaller than the first pair's shifted inputs. XLA:CPU makes the
  one or the other before the forward, beside its output."""
  return stack_bytes < first_inputs_bytes


def conv_col2im(x, kernel, config, geometry, training=False):
  """``_col2im`` over chunks of the batch (``lax.map``; the batch
  zero-padded to whole chunks, the padding's outputs dropped) of
  ``_col2im_chunk_images`` images each, which bounds its columns to one
  chunk's: on larger inputs chunks ran 1.0-2.0x as fast as one GEMM over
  the whole batch with 2-5x less temporary memory (16x32x32x128 -> 64 k4
  s2: 87 -> 46 ms, 64 -> 13 MiB; 256x4x4x64 k9 s1: 52 -> 26 ms, 81 -> 21
  MiB). ``training``: in a training step's forward (smaller chunks)."""
  n = x.shape[0]
  per = _col2im_chunk_images(config, x.shape, kernel.shape, x.dtype, training)
  if per >= n:
    return _col2im(x, kernel, config, geometry)
  chunks = -(-n // per)
  per = -(-n // chunks)  # the same number of chunks, as even as they go
  xs = jnp.pad(x, ((0, chunks * per - n), (0, 0), (0, 0), (0, 0)))
  ys = lax.map(lambda xc: _col2im(xc, kernel, config, geometry),
               xs.reshape(chunks, per, *x.shape[1:]))
  return ys.reshape(chunks * per, *ys.shape[2:])[:n]


def _col2im_chunk_images(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                         training=False) -> int:
  """How many images ``conv_col2im`` gives one ``_col2im`` (at least one):
  at most ``SMALL_INPUT_PIXELS`` input pixels, whose columns (one kernel
  row's under ``_col2im_row_loop``, in the accumulation dtype) take at most
  ``COL2IM_CHUNK_COLUMN_BYTES`` (16 MiB), and in a training step
  (``training``) at most the kernel's bytes or
  ``COL2IM_TRAINING_CHUNK_COLUMN_BYTES`` (8 MiB), the larger.

  * The byte cap keeps the columns, a temporary buffer of every call, well
    under glibc's largest mmap threshold (32 MiB), past which malloc maps
    them afresh from the kernel on each call (README: ``tune_malloc``).
    128x4x4x256 -> 128 k9 s2 (Intel Xeon with AMX, 2026-11-28), chunks of
    1024 pixels (42 MiB of columns) against 256: forward 46.8 -> 37.4 ms,
    step 107 -> 95 ms; after ``tune_malloc()`` 36.8 against 37.8 and 91.1
    against 89.6.
  * In a training step, columns no larger than the kernel fit the kernel
    gradient's output buffer, which XLA reuses for them: dcgan 8->16
    (16x8x8x512 -> 256 k4 s2, 16 MiB of columns) trains in 4 MiB of scratch
    instead of 16 (the dilated reference: 14) in two chunks, as fast (33.2
    against 33.3 ms, 35.5 against 35.4; with a batch norm after 36.8 against
    36.7, 12 MiB); 128x4x4x256 -> 128 k9 s2 in 4 MiB instead of 41 (the
    reference: 16). Its forward alone keeps one chunk: two ran 0.94x as
    fast (12.3 against 11.6 ms). The loop's own work (the stacked output's
    zeros, each chunk's copy of the input: about 0.3 ms) cost smaller
    layers 5-6% of a step for a few MiB (16x8x8x256 -> 128 k4 s2, 8 MiB of
    columns: 8.97 against 9.46 ms, 8 against 2 MiB; 4x16x16x256 -> 128 9.43
    against 10.07; 8x8x8x256 -> 256 k3 s2 5.63 against 5.97), hence the
    8 MiB floor."""
  n, h, w, _ = x_shape
  kh, kw, f, c = kernel_shape
  rows = 1 if _col2im_row_loop(config, x_shape, kernel_shape) else kh
  per_pixel = rows * kw * f * jnp.dtype(_accumulation_dtype(dtype)).itemsize
  cap = COL2IM_CHUNK_COLUMN_BYTES
  if training:
    kernel_bytes = kh * kw * f * c * jnp.dtype(dtype).itemsize
    cap = min(cap, max(kernel_bytes, COL2IM_TRAINING_CHUNK_COLUMN_BYTES))
  pixels = min(SMALL_INPUT_PIXELS, cap // max(per_pixel, 1))
  return max(1, min(n, pixels // max(h * w, 1)))


def _col2im(x, kernel, config, geometry):
  """One GEMM of the input with the untouched kernel, then col2im.

  ``cols = x @ kernel^T``: (n*h*w, c) x (kh*kw*f, c)^T, contracting the
  kernel's last axis where it lies (no kernel transpose, which costs as
  much as the GEMM for large kernels). Tap ``(a, b)`` lands at
  ``i * s + a * d`` on the phase-split canvas (n, th, s, tw, s, f): on phase
  ``(a*d mod s, b*d mod s)`` shifted by ``(a*d div s, b*d div s)``. The
  taps sharing a shift are one block of ``cols`` (``_tap_groups``: at
  dilation 1 ``s`` adjacent taps per axis), zero-padded onto its shift and
  phases, and the ``ceil(k / s)`` blocks per axis are summed, which XLA
  fuses into one pass. Placed tap by tap (``kh*kw`` pads), a k64 s32 layer
  (FCN's upsampling, 4 taps per output pixel) compiled for 110 s; in blocks
  0.1 s, and the suite's col2im layers ran as fast or faster (dcgan 8->16
  11.0 -> 10.1 ms, 4->8 12.0 -> 11.7, batch 1 0.76 -> 0.67).
  Exactly the useful multiplications, any stride and dilation; the columns
  take ``kh*kw*f`` values per input pixel (``conv_col2im`` runs it over
  chunks of the batch), so ``auto`` uses it for small inputs with deep
  channels (see ``dispatch``), where it is fastest, and where the phase
  convolutions' kernel would exceed the input. 16-bit columns are
  computed and added in float32 and the output cast once
  (``_accumulation_dtype``): added in bfloat16, every tap's add rounded,
  an output pixel of 12 taps was 0.037 off the float32 sum where its
  bfloat16 step is 0.0005.
  """
  n, h, w, _ = x.shape
  kh, kw, f, _ = kernel.shape
  (sh, sw), (dh, dw) = config.strides, config.dilation_rate
  th = _shapes.phase_canvas_length(h, kh, sh, dh)
  tw = _shapes.phase_canvas_length(w, kw, sw, dw)
  out_dtype = config.preferred_element_type or x.dtype
  acc = _accumulation_dtype(out_dtype)
  if _col2im_row_loop(config, x.shape, kernel.shape):
    return _window(_col2im_rows(x, kernel, config, th, tw, acc), geometry).astype(out_dtype)
  cols = lax.dot_general(x, kernel.reshape(kh * kw * f, -1), (((3,), (1,)), ((), ())),
                         precision=config.precision, preferred_element_type=acc)
  cols = cols.reshape(n, h, w, kh, kw, f)
  if h == w == 1:  # a 1x1 input (a latent): tap (a, b) lands alone at (a*d, b*d)
    full = lax.pad(cols.reshape(n, kh, kw, f), jnp.zeros((), acc),
                   ((0, 0, 0), (0, th * sh - (kh - 1) * dh - 1, dh - 1),
                    (0, tw * sw - (kw - 1) * dw - 1, dw - 1), (0, 0, 0)))
    return _window(full, geometry).astype(out_dtype)
  z = _col2im_blocks(cols, _tap_groups(kh, sh, dh), config, th, tw)
  return _window(z.reshape(n, th * sh, tw * sw, f), geometry).astype(out_dtype)


def _tap_groups(k: int, s: int, d: int):
  """One kernel axis's taps grouped by the canvas shift they land on: tap
  ``a`` lands at ``a * d = q * s + r``, shift ``q`` and phase ``r``. Returns
  ``[(q, a0, count, r0)]``: taps ``a0 .. a0 + count - 1`` share shift ``q``
  (``a * d div s`` never decreases with ``a``), on phases ``r0, r0 + d,
  ...``."""
  groups = []
  for a in range(k):
    q, r = divmod(a * d, s)
    if groups and groups[-1][0] == q:
      groups[-1][2] += 1
    else:
      groups.append([q, a, 1, r])
  return [tuple(g) for g in groups]


def _col2im_blocks(cols, groups_h, config, th, tw):
  """Column blocks added onto the phase-split canvas: ``cols`` (n, h, w,
  rows, kw, f), the taps of ``rows`` kernel rows, with ``groups_h`` their
  ``_tap_groups`` (taps counted from ``cols``' first row) ->
  (n, th, s_h, tw, s_w, f). Each pair of row and column groups is one
  block of taps, spread onto its phases (an interior pad of ``d - 1``) and
  its shift."""
  n, h, w, _, kw, f = cols.shape
  (sh, sw), (dh, dw) = config.strides, config.dilation_rate
  zero = jnp.zeros((), cols.dtype)
  groups_w = _tap_groups(kw, sw, dw)
  total = None
  for qa, a0, na, ra in groups_h:
    for qb, b0, nb, rb in groups_w:
      block = cols[:, :, :, a0:a0 + na, b0:b0 + nb].transpose(0, 1, 3, 2, 4, 5)
      block = lax.pad(block, zero, (
          (0, 0, 0), (qa, th - h - qa, 0), (ra, sh - ra - (na - 1) * dh - 1, dh - 1),
          (qb, tw - w - qb, 0), (rb, sw - rb - (nb - 1) * dw - 1, dw - 1), (0, 0, 0)))
      total = block if total is None else total + block
  return total


def _accumulation_dtype(dtype):
  """The dtype the fast paths' GEMMs of ``dtype`` operands return and
  their results are summed in before one cast: float32 for 16-bit types,
  wider types as they are."""
  return jnp.promote_types(dtype, jnp.float32)


def _col2im_row_loop(config: ConvTransposeConfig, x_shape, kernel_shape) -> bool:
  """Whether ``_col2im`` runs ``_col2im_rows``: past ``COL2IM_MAX_TAPS``
  blocks of taps (``_tap_groups``: at stride 1 every tap, at dilation 1
  ``ceil(k/s)`` per axis) on inputs larger than 1x1 (where ``auto``'s col2im
  rule gives way to a kernel larger than the input, or an explicit
  ``col2im``). Unrolled, XLA stopped fusing the adds past 25 taps: the
  training step of k11 at stride 1 on a 2x8x8x16 input compiled in 2.0-2.2
  s, in a loop 0.3 s (k13: 2.4-3.2 against 0.3 s; 4x8x8x128 k9: 0.57-0.90
  against 0.51-0.53 s), and ran as fast or faster (forward 5.0 -> 4.5 ms
  there). Strided, unrolled blocks past the cap made training steps 3-10x
  slower than the loop (16x4x4x256 -> 128 k11 s2: 44-49 against 15-16 ms;
  2x8x8x16 -> 32 k33 s2: 64-66 against 6.6, compiled in 4.3 against 0.15
  s) where the forward alone ran 0.94-1.0x as fast at k11-k13 and 0.3-0.6x
  at k21-k33 on 8x8 inputs (k33 s2: 5.5 against 1.8-2.7 ms): a training
  step is what the loop is for."""
  (sh, sw), (dh, dw) = config.strides, config.dilation_rate
  blocks = len(_tap_groups(kernel_shape[0], sh, dh)) * len(_tap_groups(kernel_shape[1], sw, dw))
  return x_shape[1] * x_shape[2] > 1 and blocks > COL2IM_MAX_TAPS


def _col2im_rows(x, kernel, config, th, tw, dtype):
  """``_col2im`` under ``_col2im_row_loop``: a loop over the kernel's rows
  (``lax.fori_loop``), each one GEMM of the input with that row of the
  kernel, (n*h*w, c) x (kw*f, c)^T, whose ``kw`` column blocks are added
  into the row's strip of the phase-split canvas (``_col2im_blocks``); the
  program holds one row's adds whatever the kernel's height. Row ``a`` lands
  on one canvas row shift and phase, ``divmod(a * d, s)``. ``x``
  (n, h, w, c) -> canvas (n, th * s_h, tw * s_w, f) of ``dtype`` (the
  GEMMs' results and their sums)."""
  n, h, w, _ = x.shape
  kh, kw, f, c = kernel.shape
  (sh, sw), dh = config.strides, config.dilation_rate[0]

  def add_row(a, canvas):
    k_row = lax.dynamic_index_in_dim(kernel, a, axis=0, keepdims=False)  # (kw, f, c)
    row = lax.dot_general(x, k_row.reshape(kw * f, c), (((3,), (1,)), ((), ())),
                          precision=config.precision, preferred_element_type=dtype)
    strip = _col2im_blocks(row.reshape(n, h, w, 1, kw, f), [(0, 0, 1, 0)], config, h, tw)
    strip = strip[:, :, :1]  # the row's one phase, placed below
    start = (0, (a * dh) // sh, (a * dh) % sh, 0, 0, 0)
    return lax.dynamic_update_slice(canvas, lax.dynamic_slice(canvas, start, strip.shape) + strip,
                                    start)

  canvas = lax.fori_loop(0, kh, add_row, jnp.zeros((n, th, sh, tw, sw, f), dtype))
  return canvas.reshape(n, th * sh, tw * sw, f)


# The input gradient's convolution contracts the filters. With an odd number
# of them (3 to ODD_FILTERS_MAX) XLA:CPU (YNNPACK, which it hands these
# convolutions: ``_taller_than_input``) runs some channel counts slowly, so
# ``grad_input`` adds one zero filter (exact: zero products):
# training steps timed interleaved on 8x64x64, 16x32x32, 1x64x64 and
# 4x128x128 inputs at stride 1 (dilation 1) ran 1.0-3.1x as fast with it,
# never slower, on 8-128 input channels and 3-21 filters (the stride-1 RGB
# output, 8x64x64x32 -> 3 k3: 7.9 -> 4.2 ms; alone, its convolution 2.9 ->
# 1.2 ms); at stride 2 1.04-1.66x on 16-32 input channels but 0.90-0.98x on
# 48-64 (the RGB k4s2 output, 16x32x32x64 -> 3: 0.92x), so at stride > 1
# only up to ODD_FILTERS_STRIDED_MAX_CHANNELS.
# Inputs with at most this many pixels (batch * height * width) take the
# col2im forward (but phase where it wastes nothing and the layer has at
# least COL2IM_DEEP_FILTERS filters and fewer than COL2IM_DEEP_INPUT input
# channels, or with more than COL2IM_MAX_TAPS taps per output pixel, or
# where its columns outgrow COL2IM_MAX_COLUMN_BYTES and
# COL2IM_COLUMNS_PER_KERNEL times the kernel) under
# "auto", larger ones the phase forward. The input gradient is the strided
# convolution, but (stride > 1, dilation 1) the tap-window GEMM on inputs of
# at most TAPS_INPUT_GRAD_PIXELS with at least TAPS_INPUT_GRAD_FILTERS
# filters and at most COL2IM_MAX_TAPS taps, and the phase GEMM when the
# kernel is no larger than the stride (one GEMM, whatever the size). The kernel gradient
# (dilation 1) is GEMMs (``grad_kernel_phase``) when the stride is > 1
# above GEMM_KERNEL_GRAD_PIXELS or with at most SHALLOW_INPUT_CHANNELS input
# channels or no padding (a 'valid' layer) on images of at least
# SHALLOW_MIN_IMAGE_PIXELS or (float32) on one image, and at stride 1 when
# both channel counts are at
# least STRIDE1_DEEP_CHANNELS (but not where the convolution would run on
# Eigen, below); else a convolution.
# At stride 1 the phase forward's output is made one row taller than its
# input and cropped (``_taller_than_input``: XLA:CPU then runs it on Eigen,
# not YNNPACK) with that many channels each way and fewer than
# TALLER_MAX_CHANNELS (``_taller_channels``), else it has TF's padding. The
# GEMMs' batch is cut into chunks of at least KERNEL_GRAD_CHUNK_ROWS canvas pixels
# (``_kernel_grad_chunk``); with fewer than EXACT_TAPS_FILTERS filters
# they are one GEMM over all phases, else one per pair of phase groups
# (``grad_kernel_phase``). Measured on 2-core x86 CPUs (benchmarks/,
# docs/performance.md): at stride 1 the GEMMs ran 1.3-4.5x faster than XLA:CPU's
# convolution with 32-128 channels but 1.1-3x slower with 16 or fewer (an
# RGB output has 3 filters), and the forward on Eigen (first as the full
# canvas, k - 1 rows and columns more) 1.4-1.8x faster with 64 channels,
# 1.5-2.6x slower with 3; one row taller instead of the full canvas ran
# the forward 1.01-1.21x and the step 1.02-1.14x as fast (8x32x32x64 -> 64
# k5: 12.3 -> 10.2 ms); YNNPACK against Eigen alone, k3 on 8x32x32 and
# 8x64x64: Eigen 1.1-1.9x as fast with 32-128 input channels and 24-128
# filters (not 128 both ways: 0.92-1.01x), 0.28-0.65x with 3-8 filters,
# erratic with 3-8 input channels (0.42-5.1x); chunks of about 2048 rows ran up
# to 2.6x faster than one GEMM over the whole batch and cut its temporary
# memory 2-6x, smaller ones lose GEMM efficiency. On small inputs
# (2x16x16) col2im's forward ran 1.05-3.4x slower than phase with 3-64
# input channels and 32-64 filters at k4 s2 and stride 1 (training step up
# to 2.6x), but faster with 3 filters (1.1-2.7x), with 128 or more input
# channels (up to 1.8x at 1024) and at k3 s2, where phase multiplies 16
# taps for 9 (1.05-3x). Past 25 taps per output pixel (k7 at stride 1) XLA
# no longer fuses col2im's adds into one pass in a training step: the step
# compiled 2-7x slower (k7, k11 at stride 1: 2.2 and 4.5 s against 0.6 s for
# phase) and ran no faster (21 vs 23 ms, 75 vs 67 ms on 2x16x16x128 -> 64).
# Where col2im still meets more (a kernel larger than the input), at stride 1
# it adds the kernel's rows in a loop (``_col2im_row_loop``).
# Kernel gradient at k3 s2 (16x32x32 inputs): a GEMM per pair of phase
# groups ran 1.2-2.8x faster than one GEMM over all 16 taps with 3-128
# input channels and 16-128 filters, 1.4-4x slower with 1-3 filters; with 8
# filters faster at 64 input channels, slower at 128. On inputs of at most
# 4096 pixels (stride 2, k3-k4), the GEMMs ran 1.2-15x faster than the
# convolution with 1-16 input channels on 16x16 to 64x64 images, but
# 0.5-2.9x on 8x8 ones (batch 16); with 32-1024 input channels the
# convolution ran up to 2.6x faster on 8x8 and 16x16 images, the GEMMs up
# to 1.7x faster on 32x32 and 64x64 ones. The tap-window GEMM input
# gradient (``grad_input_taps``; stride 2, k3-k4, AVX-512 EPYC), timed in
# training steps interleaved with the convolution's: 0.97-1.18x as fast on
# 64-256 input pixels with 256-512 filters (1.06-1.18x on 16x4x4 and 1x8x8
# inputs; 16x4x4x1024 -> 512: 89 against 105 ms, 98 for the phase GEMMs,
# temporary memory 54 -> 24 MiB, the phase GEMMs' copy of the kernel gone),
# as fast on 512 pixels, but 0.82-0.92x on 1024 (dcgan 8->16: 83 against
# 75 ms, phase GEMMs 81).
# Alone, both GEMMs beat the convolution there (23 and 24 against 27 ms),
# not inside a step. With 64-128 filters the taps ran 0.53-1.19x as fast
# as the convolution alone. The small-input phase GEMMs it replaced
# (256+ input channels, each stride dividing its kernel size) ran 0.74-1.14x
# as fast as the convolution alone at k4, 0.3-0.5x at k3. At
# stride 1 the input gradient's convolution on Eigen (first the full
# canvas, then one row taller than its input, now ``_convolve``'s route)
# ran 1.2-1.75x faster with 32-64 channels on 1024-16384 pixels, k3 and k5
# (8x32x32x64 -> 64: 6.7 -> 4.6 ms); the route in its place ran training
# steps 0.95-1.14x as fast with 32-128 channels (64x64x128 -> 32: 1.29x)
# and 1.12-1.58x with 256 input channels (batch 8, k3, 16x16 to 64x64), and
# as fast in bfloat16. The kernel gradient's convolution of a 'valid' layer
# (no padding) ran 1.5-2.6x slower than the GEMMs on 16x16 images (16x16x16x256 -> 128
# k4 s2: 79 vs 30 ms; with padding the two ran within 10%), 1.05-1.15x
# faster on 8x8 ones; that was on YNNPACK: on the Eigen route below it ran
# 1.0-1.56x faster than the GEMMs alone on 16x16 images (16x16x16x256 ->
# 128 k4 s2 'valid': 25.3 vs 33.6 ms; k3 15.1 vs 23.6) and the steps
# 1.04-1.16x with 5-7 MiB less scratch (at the dilated reference's, which
# the GEMMs' passed by up to 7 MiB), so the GEMMs give way there. On
# inputs of at most TAPS_KERNEL_GRAD_PIXELS pixels
# with at least TAPS_KERNEL_GRAD_CHANNELS input channels (stride > 1, at
# most TAPS_MAX_TAPS taps) the kernel gradient is one GEMM over dy's tap
# windows (``grad_kernel_taps``), which ran 1.15-2x faster than the
# convolution (1x16x16x256 -> 128 k4 s2: 2.2 vs 3.2 ms; 1x8x8x512: 1.8 vs
# 3.6; 16x4x4x1024: 43 vs 49), 10% slower at 1x16x16x512 -> 256, as fast
# with 32-64 channels and 1.2-2x slower on 512-4096 pixels. With bfloat16
# inputs, both gradients at stride > 1 are the GEMMs (the input gradient
# when each stride divides its kernel size), whatever the size: with
# float32 accumulation XLA:CPU ran a bfloat16 GEMM at about twice the
# float32 rate (AVX512-BF16 EPYC: 389 against 198 GFLOP/s at 2048x2048)
# but its bfloat16 convolutions at the float32 rate; at k4 s2
# on 4x16x16 to 16x32x32 inputs with 64-512 channels the input gradient's
# GEMMs ran 1.01-1.98x, the kernel gradient's 1.01-1.91x as fast as the
# convolutions (suite layer 16x16x16x256 -> 128: step 88 -> 77 ms).
# Kernels larger than their input: XLA:CPU (jaxlib 0.10) runs a convolution
# whose kernel (dilated) is larger than its input 10-30x slower than one
# that fits (4x8x8x128 k9 'same' at stride 1: 104 ms, 10 ms with the padding
# applied first). Tiny images meet it: the phase forward of a 1x1 latent
# (k4 to 4x4), the input gradient of an output smaller than the kernel (2x2
# -> 4x4 at k5 s2), and the stride-1 kernel gradient with its roles swapped
# on a 'valid' layer. Auto then takes col2im for the forward
# (``_phase_kernel_exceeds_input``, chunked over the batch past
# SMALL_INPUT_PIXELS); for the input gradient the taps on inputs of at most
# SMALL_INPUT_PIXELS up to TAPS_MAX_TAPS, else the phase GEMMs
# (``_input_grad_kernel_exceeds_dy``); ``grad_kernel`` swaps only where dy
# fits x. Training steps against the rules before (8aecd56), timed in one
# process: 64x2x2x256 -> 128 k5 s2 86 -> 8.4 ms, 256x2x2 353 -> 39,
# 16x4x4x1024 -> 512 k9 s2 22.6 s -> 0.61 s, 64x4x4x128 -> 128 k11 s2 1.3
# s -> 137 ms, 8x32x32x16 -> 64 k3 s1 'valid' 48 -> 6.5 ms (1x1 latents
# below). Input gradients alone at stride 1 past 25 taps, convolution against
# the phase GEMMs: 4x8x8x128 k9 'same' 113 vs 9.4 ms, k11 159 vs 14,
# 16x4x4x256 k6 272 vs 8.8 (the taps 6.2-31 ms, with 3-15x the memory and
# up to 3.7 s of compile); over SMALL_INPUT_PIXELS 5-33x (128x4x4x256 ->
# 128 k9 s2: 3.7 s vs 112 ms, 10 vs 49 MiB; 256x4x4x64 k9 s1 125 vs 27 ms),
# the taps there 1.2x faster at k5 s2 but 2.7x slower at stride 1. Their
# forwards, phase against chunked col2im: 128x4x4x256 -> 128 k9 s2 2.0 s
# vs 93 ms (18 vs 42 MiB), 512x2x2x256 k5 s2 532 vs 23 ms, 256x4x4x64 k9
# s1 107 vs 26 ms. On a 1x1 input (a latent) the stride-1 kernel gradient
# is the convolution, not the phase GEMMs, whose canvas of k^2 pixels per
# image is all padding but one (64x1x1x100 -> 256 k7 'valid': 77 ms,
# convolution 25; but 4x8x8x128 k9 'same': GEMMs 31 ms, convolution 54),
# and col2im is its GEMM reshaped, each tap alone at its place (that
# layer's forward 46 -> 2.0 ms, step 120 -> 12 ms against the rules before,
# TF's 10; 64x1x1x100 -> 512 k4 25 -> 8.8 ms). Left: dilated kernels.
# The gradients' convolutions on Eigen (``_convolve``, on XLA:CPU): XLA:CPU
# (jaxlib 0.10) hands YNNPACK a float32 or bfloat16 convolution with no
# input dilation whose output and kernel fit in its input, and with more
# than 16 channels one way; Eigen runs any other. Eigen ran the strided input gradient of
# dcgan 8->16 (16x16x16x256 with k4 to 512 channels, stride 2) in 22 ms,
# YNNPACK in 35 (TF: 21). Written input-dilated by 2 along the width (the
# same products), such a convolution stays on Eigen. Timed alone on 8x8 to
# 64x64 inputs (batch 8; k4 s2, k3 s2, k3 s1; 3-512 channels each way), the
# input gradient's convolution ran 1.32x as fast on geometric mean with at
# least EIGEN_MIN_CONTRACTED contracted and EIGEN_MIN_FEATURES output
# channels and EIGEN_MIN_MACS multiply-adds (103 shapes; 1.6-2.75x on 64x64
# inputs with 128-512 channels), the kernel gradient's 1.19x (110 shapes),
# but 0.3-0.7x with 3 channels either way and 0.77-0.83x on smaller ones;
# single convolutions under 1 ms moved by up to 30% between runs.
# Training steps against the plain convolutions, interleaved in one
# process: dcgan 8->16 1.16x, 32->64 1.12x, unet k3s2 1.10x, 16->32 1.17x,
# channels_first 1.14x, batch 1 1.10x, latents 1x1 -> 4x4 and 7x7 1.7-2.2x,
# 'valid' stride 1 16 -> 64 0.99-1.14x (two runs); the others within 4%. The phase
# forward's convolutions gained nothing there (0.94-1.0x). At stride 1 the
# kernel gradient's convolution on Eigen then beat the GEMMs on 21 of 24
# layers (batch 8, k3, 16x16 to 64x64 inputs, 32-128 channels each way:
# 1.04-1.22x; 0.92-0.99x with 32 both ways on 32x32 and 64x64, and 64x64x128
# -> 32), so the GEMMs there give way to it wherever it takes the route
# (``_kernel_grad_conv_on_eigen``; suite stride 1 k3 step 12.6 -> 11.8 ms).
SMALL_INPUT_PIXELS = 1024
ODD_FILTERS_MAX = 21
ODD_FILTERS_STRIDED_MAX_CHANNELS = 32
COL2IM_DEEP_FILTERS = 32
COL2IM_DEEP_INPUT = 128
COL2IM_MAX_TAPS = 25
COL2IM_MAX_COLUMN_BYTES = 32 * 2 ** 20  # _col2im_columns_outgrow
COL2IM_COLUMNS_PER_KERNEL = 4
COL2IM_CHUNK_COLUMN_BYTES = 16 * 2 ** 20  # _col2im_chunk_images
COL2IM_TRAINING_CHUNK_COLUMN_BYTES = 8 * 2 ** 20
# The tap-window gradients (``grad_input_taps``, ``grad_kernel_taps``) hold
# ``kh * kw`` slices of ``dy`` as col2im's GEMM holds ``kh * kw`` column
# blocks: the same cap on their scratch, and the rules above were measured
# with it.
TAPS_MAX_TAPS = COL2IM_MAX_TAPS
TAPS_INPUT_GRAD_PIXELS = 256
TAPS_INPUT_GRAD_FILTERS = 256
TAPS_MAX_WINDOW_BYTES = 16 * 2 ** 20  # _input_grad_algorithm, a kernel larger than dy
GEMM_KERNEL_GRAD_PIXELS = 4096
SHALLOW_INPUT_CHANNELS = 16
SHALLOW_MIN_IMAGE_PIXELS = 256
STRIDE1_DEEP_CHANNELS = 32
TALLER_MAX_CHANNELS = 128
UNPADDED_DEEP_CHANNELS = 128
TAPS_KERNEL_GRAD_PIXELS = 256
TAPS_KERNEL_GRAD_CHANNELS = 128
KERNEL_GRAD_CHUNK_ROWS = 2048
KERNEL_GRAD_RUN_MIN_PHASES = 16  # _kernel_grad_phase_windows
GEMM_FORWARD_COLUMNS = 512
EXACT_TAPS_FILTERS = 8
CORRELATE_X_MAX_WIDTH = 1024
ONEDNN_MIN_FEATURES = 8
EXACT_PHASES_MIN_FILTERS = ONEDNN_MIN_FEATURES
EXACT_PHASES_MIN_EXTRA = 0.1
# The most output phases an algorithm writes a program of their own for
# (a convolution, GEMM or loop branch each): past it, compile time grows
# with s * s (``_exact_phases_pay``, ``_kernel_grad_by_phase``).
PHASE_PROGRAMS_MAX = 9
INTERLEAVE_BY_PAD_FILTERS = 64  # _interleaves_by_pad
NCHW_PHASE_FORWARD_MIN_IMAGE_BYTES = 2 * 2 ** 20  # _nchw_phase_forward
ONEDNN_MIN_CONTRACTED = 2
SINGLE_IMAGE_GEMM_MAX_CHANNELS = 128  # _kernel_grad_is_gemm, one image
ONEDNN_LARGE_KERNEL_MIN_SIDE = 4  # input pixels a side: _large_kernel_on_onednn
ONEDNN_KERNEL_GRAD_IMAGE_PIXELS = 1024  # height * width, the rule of _kernel_grad_is_gemm
ONEDNN_KERNEL_GRAD_MAX_DY_BYTES = 16 * 2 ** 20  # dy, filters >= in_channels: _kernel_grad_by_phase
ONEDNN_BF16_STRIDE1_MIN_BATCH = 4  # the same rule's, at stride 1 in bfloat16
ONEDNN_BF16_PAD_MIN_BATCH = 8  # _kernel_grad_batch (stride 1, bfloat16)
ONEDNN_KERNEL_GRAD_SPATIAL_BATCH = 8  # filters (input channels if swapped): _kernel_grad_onednn
ONEDNN_KERNEL_GRAD_CHANNEL_CHUNK = 128  # _kernel_grad_channel_chunk
ONEDNN_KERNEL_GRAD_CHUNKED_MULTIPLE = 256
ONEDNN_KERNEL_GRAD_CHUNKED_MAX_BATCH = 8
ONEDNN_KERNEL_GRAD_CHUNKED_MIN_PIXELS = 1024
EIGEN_DILATION = 2
EIGEN_MIN_CONTRACTED = 8
EIGEN_MIN_FEATURES = 32
EIGEN_MIN_MACS = 2 ** 24


def _kernel_grad_chunk(batch: int, canvas_pixels: int) -> int:
  """Images per chunk of ``grad_kernel_phase``: the fewest, dividing the
  batch, whose canvases hold at least ``KERNEL_GRAD_CHUNK_ROWS`` pixels."""
  want = -(-KERNEL_GRAD_CHUNK_ROWS // max(canvas_pixels, 1))
  if want >= batch:
    return batch
  return next(b for b in range(want, batch + 1) if batch % b == 0)


def _pixels(x_shape, config: ConvTransposeConfig) -> int:
  """batch * height * width: the size the rules above compare."""
  h, w = spatial(x_shape, config)
  return x_shape[0] * h * w


def _forward_algorithm(config: ConvTransposeConfig, x_shape, kernel_shape,
                       dtype=jnp.float32) -> str:
  """The forward of the fast path: ``config.algorithm``, or for ``auto``
  ``phase_gemm`` under ``_forward_is_gemm`` (bfloat16), col2im on small
  inputs (up to ``COL2IM_MAX_TAPS`` taps per output pixel, unless
  ``_phase_beats_col2im`` or ``_col2im_columns_outgrow``; always where
  ``_phase_kernel_exceeds_input``,
  unless ``_large_kernel_on_onednn``),
  phase on the others with dilation 1, and the dilated form otherwise.
  bfloat16 where oneDNN takes it over the input channels
  (``_onednn.takes``): phase at any size (dilation 1, unless
  its kernel exceeds the input), whose training steps ran 1.47-1.88x as
  fast as col2im's on 8x8 and 16x16 inputs (16x8x8x512 -> 256 k4 s2: 66
  -> 35 ms, scratch 33 -> 7 MiB) and 1.02x on 4x4 (where phase_gemm ran
  1.13x)."""
  if config.algorithm != "auto":
    return config.algorithm
  if _forward_is_gemm(config, kernel_shape, dtype):
    return "phase_gemm"
  phase_ok = config.dilation_rate == (1, 1)
  small = _pixels(x_shape, config) <= SMALL_INPUT_PIXELS
  if (phase_ok and _phase_kernel_exceeds_input(config, x_shape, kernel_shape)
      and not _large_kernel_on_onednn(config, x_shape, kernel_shape, dtype)):
    return "col2im"
  if (phase_ok and jnp.dtype(dtype) == jnp.bfloat16
      and _onednn.takes(dtype, kernel_shape[3])):
    return "phase"  # its convolutions on oneDNN, at any size
  if (small and _col2im_taps_per_pixel(config, kernel_shape) <= COL2IM_MAX_TAPS
      and not (phase_ok and (_phase_beats_col2im(config, kernel_shape)
                             or _col2im_columns_outgrow(config, x_shape, kernel_shape, dtype)))):
    return "col2im"
  return "phase" if phase_ok else "dilated"


def _onednn_runs(lhs_shape, rhs_shape, window_strides, padding, rhs_dilation, dtype,
                 preferred_element_type=None) -> bool:
  """Whether an NHWC/HWIO convolution on XLA:CPU runs on oneDNN
  (``_onednn.conv``): where ``_onednn.supported`` (float32, oneDNN
  enabled), with at least ``ONEDNN_MIN_FEATURES`` output channels and
  ``ONEDNN_MIN_CONTRACTED`` contracted ones. Timed alone against XLA:CPU's
  own convolution (8x64x64 and 16x64x64 inputs, k3 s1 and k4 s2), oneDNN
  ran 0.72-0.78x with 1-4 output channels, 1.13x with 8 and 1.8-2.1x with
  12-32; 0.90-1.04x with one contracted channel, 1.65-6.3x with 3-16. On
  the suite layers' own convolutions (32 channels and more) 1.15-2.2x. Not
  a GEMM in disguise, a 1x1 kernel or a 1x1 output (the kernel covering
  the whole padded input), which XLA:CPU runs as a dot: there oneDNN ran
  0.37-0.87x (a 1x1 latent's gradients, 64x4x4x512 -> 1x1x100: 3.1
  against 1.2 ms)."""
  kh, kw, contracted, features = rhs_shape
  out_hw = _shapes.conv_output_hw(lhs_shape[1:3], (kh, kw), window_strides, rhs_dilation,
                                  padding)
  return (features >= ONEDNN_MIN_FEATURES and contracted >= ONEDNN_MIN_CONTRACTED
          and kh * kw > 1 and out_hw[0] * out_hw[1] > 1
          and _onednn.supported(lhs_shape, rhs_shape, window_strides, padding, rhs_dilation,
                                dtype, preferred_element_type))


def _eigen_beats_ynnpack(lhs_shape, rhs_shape, window_strides, padding, rhs_dilation,
                         dtype) -> bool:
  """Whether ``_convolve`` routes an NHWC/HWIO convolution to Eigen on
  XLA:CPU: float32 or bfloat16, at least ``EIGEN_MIN_CONTRACTED``
  contracted channels, ``EIGEN_MIN_FEATURES`` output channels and
  ``EIGEN_MIN_MACS`` multiply-adds, no negative padding, and a convolution
  YNNPACK would take (neither its kernel nor its output larger than its
  input anywhere: those run on Eigen already)."""
  kh, kw, contracted, features = rhs_shape
  in_hw = lhs_shape[1:3]
  if (jnp.dtype(dtype) not in (jnp.float32, jnp.bfloat16)
      or contracted < EIGEN_MIN_CONTRACTED or features < EIGEN_MIN_FEATURES
      or any(lo < 0 or hi < 0 for lo, hi in padding)
      or _kernel_exceeds((kh, kw), in_hw)):  # YNNPACK checks the undilated kernel
    return False
  out_hw = _shapes.conv_output_hw(in_hw, (kh, kw), window_strides, rhs_dilation, padding)
  if any(out > n for out, n in zip(out_hw, in_hw)):
    return False
  macs = lhs_shape[0] * out_hw[0] * out_hw[1] * kh * kw * contracted * features
  return macs >= EIGEN_MIN_MACS


def _kernel_exceeds(kernel_hw, in_hw) -> bool:
  """Whether a convolution's kernel (dilated) is larger than its input along
  either axis, which XLA:CPU (jaxlib 0.10) runs 10-30x slower (the note
  above ``SMALL_INPUT_PIXELS``)."""
  return any(k > n for k, n in zip(kernel_hw, in_hw))


def _phase_kernel_exceeds_input(config: ConvTransposeConfig, x_shape, kernel_shape) -> bool:
  """Whether ``conv_phase``'s convolutions (dilation 1) have a kernel larger
  than their input: ``ceil(k / s)`` taps per phase past the input's height
  or width (a 1x1 latent to 4x4, k4 at stride 1). XLA:CPU (jaxlib 0.10)
  runs such a convolution 10-30x slower (the note above
  ``SMALL_INPUT_PIXELS``), so ``auto`` takes col2im there, whatever its
  taps per pixel, ``_phase_beats_col2im`` or the input's size."""
  taps = [_shapes.taps_per_phase(k, s) for k, s in zip(kernel_shape[:2], config.strides)]
  return _kernel_exceeds(taps, spatial(x_shape, config))


def _large_kernel_on_onednn(config: ConvTransposeConfig, x_shape, kernel_shape, dtype) -> bool:
  """At stride 1, whether ``conv_phase``'s convolution, whose kernel exceeds
  its input, runs on oneDNN (``_onednn_runs``) on an image of at least
  ``ONEDNN_LARGE_KERNEL_MIN_SIDE`` pixels a side: ``auto`` then keeps the
  phase forward. oneDNN skips the taps that fall in the padding, which
  XLA:CPU's own convolution did not; training steps (phase forward and
  convolution input gradient, against col2im and the phase GEMMs, 5
  interleaved rounds) 1.9-2.3x as fast on 4x4 and 8x8 inputs with k7-k11
  (4x8x8x128 k9 'same': 4.1 against 8.9 ms, the edge suite's layer), the
  forward alone 1.13-1.34x as fast as col2im's. On 1x1 (a latent, k7) and
  2x2 (k5) inputs col2im stayed ahead (2.8 against 6.7 ms, 1.04 against
  1.44)."""
  if config.strides != (1, 1) or config.dilation_rate != (1, 1):
    return False
  h, w = spatial(x_shape, config)
  if min(h, w) < ONEDNN_LARGE_KERNEL_MIN_SIDE:
    return False
  geometry = _shapes.output_spatial_shape((h, w), kernel_shape[:2], config.strides,
                                          config.padding, config.output_padding,
                                          config.dilation_rate)
  return _stride1_phase_on_onednn(x_shape, dtype, kernel_shape, config, geometry)


def _stride1_phase_on_onednn(x_shape, dtype, kernel_shape, config: ConvTransposeConfig,
                             geometry) -> bool:
  """Whether ``conv_phase`` at stride 1 (an NHWC input of ``x_shape``)
  runs its convolution, the flipped kernel (kh, kw, c, f) with TF's
  padding, on oneDNN (``_onednn_runs``): the route and the rule
  ``_large_kernel_on_onednn`` ask the same question."""
  kh, kw, f, c = kernel_shape
  padding = _dilated_padding(x_shape[1:3], (kh, kw), config, geometry)
  return _onednn_runs(x_shape, (kh, kw, c, f), (1, 1), padding, (1, 1), dtype,
                      config.preferred_element_type)


def _input_grad_kernel_exceeds_dy(config: ConvTransposeConfig, kernel_shape,
                                  geometry) -> bool:
  """Whether ``grad_input``'s convolution has a kernel (dilated) larger than
  its input, ``dy`` (the layer's output, from ``geometry``): a 4x4 output
  of a k5 kernel."""
  dilated = [_shapes.effective_kernel_size(k, d)
             for k, d in zip(kernel_shape[:2], config.dilation_rate)]
  return _kernel_exceeds(dilated, [out for out, _ in geometry])


def _forward_is_gemm(config: ConvTransposeConfig, kernel_shape, dtype) -> bool:
  """Whether ``auto``'s forward is ``conv_phase_gemm``: bfloat16 inputs
  whose convolution over the input channels oneDNN would not take
  (``_onednn.takes``), stride > 1, dilation 1, each stride dividing its
  kernel size and at least ``GEMM_FORWARD_COLUMNS`` GEMM columns (``s_h *
  s_w * filters``); the rule above."""
  return (jnp.dtype(dtype) == jnp.bfloat16 and not _onednn.takes(dtype, kernel_shape[3])
          and config.strides != (1, 1)
          and config.dilation_rate == (1, 1) and _strides_divide_kernel(config, kernel_shape)
          and config.strides[0] * config.strides[1] * kernel_shape[2] >= GEMM_FORWARD_COLUMNS)


def _col2im_taps_per_pixel(config: ConvTransposeConfig, kernel_shape) -> int:
  """How many column blocks col2im adds into one output pixel (at most):
  ``ceil(kh/s_h) * ceil(kw/s_w)``, all ``kh * kw`` at stride 1 (TF allows
  a dilation only there)."""
  return (_shapes.taps_per_phase(kernel_shape[0], config.strides[0])
          * _shapes.taps_per_phase(kernel_shape[1], config.strides[1]))


def _phase_beats_col2im(config: ConvTransposeConfig, kernel_shape) -> bool:
  """On a small input (dilation 1), whether the phase forward beats col2im:
  when it multiplies no inserted zero (each stride divides its kernel
  size, stride 1 included) and col2im's ``kh*kw*filters`` columns per pixel
  outweigh its GEMM (at least ``COL2IM_DEEP_FILTERS`` filters, fewer than
  ``COL2IM_DEEP_INPUT`` input channels); the rule above."""
  _, _, f, c = kernel_shape
  exact = _strides_divide_kernel(config, kernel_shape)
  return exact and f >= COL2IM_DEEP_FILTERS and c < COL2IM_DEEP_INPUT


def _col2im_columns_outgrow(config: ConvTransposeConfig, x_shape, kernel_shape, dtype) -> bool:
  """On a small input, whether col2im's columns (``kh*kw*f`` values per
  input pixel, in the accumulation dtype) outgrow both
  ``COL2IM_MAX_COLUMN_BYTES`` and ``COL2IM_COLUMNS_PER_KERNEL`` times the
  kernel (the columns over the kernel are the input's pixels over its
  channels): then the phase forward, which writes the output's size once,
  beats writing and re-reading the columns. Large kernels at large strides
  (forwards, AMD EPYC): FCN's k64 s32 upsampling of 16x16x21 -> 21, 88 MiB
  of columns, 30 against 7-8 ms; 4x16x16x21 k32 s16 30-33 against 6-13;
  16x16x64 -> 64 k32 s16 (67 MiB, the columns 4x the kernel) 27-29
  against 14-16. Where the kernel is as large as the columns, col2im won:
  2x8x8x128 -> 128 k32 s16 (67 MiB both) 32 against 87 ms; 8x8x256 -> 256
  k16 s8 (17 MiB, a quarter of the kernel) 7.7 against 73."""
  kh, kw, f, c = kernel_shape
  pixels = _pixels(x_shape, config)
  columns = pixels * kh * kw * f * jnp.dtype(_accumulation_dtype(dtype)).itemsize
  return columns > COL2IM_MAX_COLUMN_BYTES and pixels >= COL2IM_COLUMNS_PER_KERNEL * c


def _strides_divide_kernel(config: ConvTransposeConfig, kernel_shape) -> bool:
  """Whether each stride divides its kernel size: every phase then has the
  same taps, and the phase decomposition multiplies no inserted zero."""
  return all(k % s == 0 for k, s in zip(kernel_shape[:2], config.strides))


def _input_grad_is_gemm(config: ConvTransposeConfig, kernel_shape, dtype=jnp.float32) -> bool:
  """Whether the fast path's input gradient is ``grad_input_phase``'s GEMMs;
  the rule above. With a kernel no larger than the stride (one tap per
  phase) it is one GEMM at any size, and ``grad_kernel_phase`` runs
  unchunked: both fold the same ``dy``, which XLA builds once. With
  bfloat16 inputs it is the GEMMs whenever each stride divides its kernel
  size, unless oneDNN takes the convolution over the filters
  (``_onednn.takes``)."""
  if config.dilation_rate != (1, 1) or config.strides == (1, 1):
    return False
  if (_strides_divide_kernel(config, kernel_shape) and jnp.dtype(dtype) == jnp.bfloat16
      and not _onednn.takes(dtype, kernel_shape[2])):
    return True
  return all(k <= s for k, s in zip(kernel_shape[:2], config.strides))  # one tap per phase


def _input_grad_algorithm(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                          geometry) -> str:
  """The fast path's input gradient: ``"phase_gemm"`` (``grad_input_phase``)
  under ``_input_grad_is_gemm``, else ``"taps"`` (``grad_input_taps``) under
  ``_input_grad_is_taps``, else ``"conv"`` (``grad_input``); but where
  that convolution's kernel would be larger than ``dy`` (dilation 1;
  ``_input_grad_kernel_exceeds_dy``, from the layer's ``geometry``) the
  taps on small inputs up to ``TAPS_MAX_TAPS``, else the convolution where
  it runs on oneDNN (``_input_grad_conv_on_onednn``), else the taps where
  their windows of ``dy`` hold at most ``TAPS_MAX_WINDOW_BYTES``, else the
  phase GEMMs (at stride 1 too: one GEMM per tap, summed in a loop).
  Without oneDNN the taps trained such layers 1.04x-1.43x as fast as the
  phase GEMMs, with less scratch but at stride 1 (``JCONVT_ONEDNN=0``,
  alternating call by call: 16x4x4x256 -> 128 k9 s2 28.0 -> 19.6 ms, 35.5
  -> 10.6 MiB, the reference's 10.9; k11 s2 42.8 -> 33.2 ms, 36.5 -> 15.6
  MiB; 64x2x2x256 -> 128 k7 s2 42.8 -> 34.3 ms, 32.3 -> 22.7 MiB;
  4x8x8x128 -> 128 k9 s1 22.3 -> 21.5 ms, 14.6 -> 15.1 MiB); their
  windows there held 6-15 MiB. Likewise where the convolution would not
  run on oneDNN for its 1x1 output (a 1x1 latent, 64x1x1x100 -> 256 k7 s1
  'same', with oneDNN: 4.9 -> 4.0 ms, 12.6 -> 4.8 MiB; k4 1.5 against
  1.6 ms, 2.1 -> 1.6 MiB)."""
  if _input_grad_is_gemm(config, kernel_shape, dtype):
    return "phase_gemm"
  if _input_grad_is_taps(config, x_shape, kernel_shape):
    return "taps"
  if (config.dilation_rate == (1, 1)
      and _input_grad_kernel_exceeds_dy(config, kernel_shape, geometry)):
    kh, kw, f, _ = kernel_shape
    pixels = _pixels(x_shape, config)
    if kh * kw <= TAPS_MAX_TAPS and pixels <= SMALL_INPUT_PIXELS:
      return "taps"
    if _input_grad_conv_on_onednn(config, x_shape, kernel_shape, dtype, geometry):
      return "conv"
    windows = pixels * kh * kw * f * jnp.dtype(dtype).itemsize
    return "taps" if windows <= TAPS_MAX_WINDOW_BYTES else "phase_gemm"
  return "conv"


def _input_grad_conv_on_onednn(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                               geometry) -> bool:
  """Whether ``grad_input``'s convolution runs on oneDNN (``_onednn_runs``)
  for an NHWC input of ``x_shape`` (``grad_input`` and the rule ask the
  same question): there a kernel larger than ``dy`` costs
  it nothing it would not (oneDNN skips the padding's taps), and training
  steps with it ran 1.2-1.8x as fast as with the phase GEMMs (16x4x4x256
  -> 128 k9 s2: 10.9 against 13.2-13.9 ms and 1 MiB of scratch against 27;
  k7-k11 at stride 1 on 4x4 and 8x8 inputs, 5 interleaved rounds). Where
  the taps stay (64x2x2x256 -> 128 k5 s2) they beat it: 3.9 against 5.2."""
  (out_h, _), (out_w, _) = geometry
  h, w = spatial(x_shape, config)
  padding = _forward_conv_padding((h, w), kernel_shape[:2], config, geometry)
  return _onednn_runs((x_shape[0], out_h, out_w, kernel_shape[2]), kernel_shape, config.strides,
                      padding, config.dilation_rate, dtype)


def _input_grad_is_taps(config: ConvTransposeConfig, x_shape, kernel_shape) -> bool:
  """Whether the fast path's input gradient, where ``_input_grad_is_gemm``
  does not hold (it takes a kernel no larger than the stride), is
  ``grad_input_taps``: stride > 1, dilation 1, at most
  ``TAPS_INPUT_GRAD_PIXELS`` input pixels, at least
  ``TAPS_INPUT_GRAD_FILTERS`` filters and at most ``TAPS_MAX_TAPS`` taps
  (the rule above); else ``grad_input``'s strided convolution."""
  kh, kw, f, _ = kernel_shape
  return (config.strides != (1, 1) and config.dilation_rate == (1, 1)
          and _pixels(x_shape, config) <= TAPS_INPUT_GRAD_PIXELS
          and f >= TAPS_INPUT_GRAD_FILTERS and kh * kw <= TAPS_MAX_TAPS)


def _taller_channels(kernel_shape) -> bool:
  """At stride 1, whether the channel counts (input and filters) are those
  whose convolution XLA:CPU runs faster on Eigen than on YNNPACK (made
  taller than its input, ``_taller_than_input``): at least
  ``STRIDE1_DEEP_CHANNELS`` and fewer than ``TALLER_MAX_CHANNELS``
  each way."""
  return STRIDE1_DEEP_CHANNELS <= min(kernel_shape[2:]) < TALLER_MAX_CHANNELS


def _kernel_grad_algorithm(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                           geometry) -> str:
  """The fast path's kernel gradient: ``"taps"`` (``grad_kernel_taps``)
  under ``_kernel_grad_is_taps``, else ``"phase_gemm"``
  (``grad_kernel_phase``) under ``_kernel_grad_is_gemm``, else ``"conv"``
  (``grad_kernel``)."""
  if _kernel_grad_is_taps(config, x_shape, kernel_shape, dtype, geometry):
    return "taps"
  if _kernel_grad_is_gemm(config, x_shape, kernel_shape, dtype, geometry):
    return "phase_gemm"
  return "conv"


def _kernel_grad_is_taps(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                         geometry) -> bool:
  """Whether the fast path's kernel gradient is ``grad_kernel_taps``: stride
  > 1, dilation 1, at most ``TAPS_KERNEL_GRAD_PIXELS`` input pixels, at
  least ``TAPS_KERNEL_GRAD_CHANNELS`` input channels and at most
  ``TAPS_MAX_TAPS`` taps (the rule above); but not bfloat16 where the
  convolution runs on oneDNN (``_kernel_grad_conv_on_onednn``), which
  trained such layers 1.06-1.47x as fast as the taps (6 layers of 2x2 to
  8x8 images, 4-64 of them, k3-k5 s2, 64-1024 channels; bfloat16 dcgan
  4->8, 16x4x4x1024 -> 512, 40.7 against 27.7 ms; interleaved, 7 rounds,
  AMD EPYC with AVX512_BF16). On one image oneDNN does not take it, and
  the taps stay (the convolution ran 0.52x there)."""
  kh, kw, _, c = kernel_shape
  taps = (config.strides != (1, 1) and config.dilation_rate == (1, 1)
          and _pixels(x_shape, config) <= TAPS_KERNEL_GRAD_PIXELS
          and c >= TAPS_KERNEL_GRAD_CHANNELS and kh * kw <= TAPS_MAX_TAPS)
  return taps and not (jnp.dtype(dtype) == jnp.bfloat16 and _kernel_grad_conv_on_onednn(
      config, x_shape, kernel_shape, dtype, geometry))


def _kernel_grad_is_gemm(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                         geometry) -> bool:
  """Whether the fast path's kernel gradient, where ``_kernel_grad_is_taps``
  does not hold, is ``grad_kernel_phase``'s GEMMs (else ``grad_kernel``'s
  convolution); the rule above. With bfloat16 inputs at stride > 1 it is
  the GEMMs, but not on 1x1 images (a latent), whose canvas is all padding
  but one pixel: there the convolution (XLA:CPU's dot: its kernel, the
  input, is 1x1) trained 1.0-4.1x as fast (5 layers, with and without
  oneDNN; 16x1x1x256 -> 128 k9 s2 9.3 against 2.3 ms) and compiled up to
  5x faster (2x1x1x16 k33 s4 1.3 against 0.24 s). Also the GEMMs where
  the convolution would have no padding at all (a ``'valid'`` layer, from
  the layer's ``geometry``) on images of at least
  ``SHALLOW_MIN_IMAGE_PIXELS``, unless it takes ``_convolve``'s Eigen route
  (``_kernel_grad_conv_on_eigen``); but bfloat16 where the convolution runs
  on oneDNN (``_kernel_grad_conv_on_onednn``), which trained the strided
  bfloat16 layers 1.10-1.33x as fast as the GEMMs (8x8 to 32x32 inputs,
  k2-k4, 3-512 channels; forward and input gradient on oneDNN too).
  Float32 past ``PHASE_PROGRAMS_MAX`` phases where they run by runs of
  phases (``_kernel_grad_phase_windows``) and the convolution would not
  run on oneDNN: the GEMMs, whose training steps ran 1.43x-1.51x as fast
  as with XLA:CPU's own convolution, with 26-27% less scratch (alternating
  call by call, ``JCONVT_ONEDNN=0``: FCN-32s on 4 images 512 -> 340 ms,
  274 -> 201 MiB; 8x16x16x21 -> 21 k32 s16 221 -> 154 ms, 135 -> 99 MiB;
  2x32x32x21 -> 21 k32 s16 226 -> 154 ms, 133 -> 99 MiB); on oneDNN the
  convolution stays (the GEMMs 1.00x-1.10x, 0.2-0.4 MiB past the
  reference's scratch on 4 such layers).
  Float32 above ``GEMM_KERNEL_GRAD_PIXELS``: the GEMMs, but the convolution
  where it runs on oneDNN with padding (not ``'valid'``) on images of at
  most ``ONEDNN_KERNEL_GRAD_IMAGE_PIXELS`` or with each stride dividing its
  kernel size. Interleaved, it trained such layers 0.96-1.34x as fast as
  the GEMMs (17 layers, 16x32x32 to 8x128x128, k3-k5 s2, 3-256 channels;
  dcgan 32->64 1.06-1.12x, unet k3s2 1.00-1.09x, RGB k4s2 1.22-1.31x;
  0.96x only on 4x128x128x128 -> 32 k4), with no
  more scratch than the reference's (dcgan 32->64: 33 MiB, the reference
  40; 8x32x32x128 -> 64 k5: 16 against the GEMMs' 23 and the reference's
  20); but k3 s2 on 64x64 images 0.80-1.23x (8x64x64x64 -> 32: 0.80-0.89x)
  and a 'valid' k2 s2 layer 0.56x. On a later, faster EPYC (a 2048x2048
  matmul at 419 GFLOP/s; 5 interleaved rounds) the GEMMs trained k3 s2
  layers on 32x32 images in 0.74-0.98x the convolution's time where
  ``filters * in_channels`` is at least 128 * 128 (unet k3s2 0.91x, 32 ->
  29 MiB; 8x32x32x256 -> 256 0.74x; 64 -> 256 0.98x); in 1.00-1.24x with
  fewer (8x32x32x128 -> 64 1.09x), and on 24x24 and 16x16 images in
  0.97-1.57x. Once the convolution ran with the filters as a spatial axis
  (``_kernel_grad_onednn``, 1.5-2x faster alone) it won those back but
  where it holds ``dy`` twice across glibc's 32 MiB mmap threshold and the
  GEMMs' stacks stay under it (7 interleaved rounds, 8 images of 32x32, k3
  s2, default malloc; the convolution's step time over the GEMMs'): 128
  -> 128 (unet k3s2) 1.23x, 32 against 29 MiB; 256 -> 64 0.79x, 256 -> 128
  0.90x, 128 -> 256 0.92-0.98x, 256 -> 256 0.97-0.99x. The GEMMs stayed
  where ``filters >= in_channels`` and ``dy`` is at least 16 MiB
  (``ONEDNN_KERNEL_GRAD_MAX_DY_BYTES``) until the convolution ran there
  one phase at a time (``_kernel_grad_by_phase``), holding a quarter of
  the transposed ``dy``: 1.10-1.14x as fast as the GEMMs on 5 such layers,
  unet k3s2 at 29 MiB. On 64x64 images k3 s2 the
  convolution still lost or tied (8x64x64x64 -> 32 1.22x, -> 64 1.00x).
  On an Intel Xeon with AMX (``_onednn.cpu_has_amx``; 2026-11-28, default
  malloc, interleaved, 4 rounds) it won on every k3 s2 layer over 32x32
  timed, so there the image size does not matter: 1.07x-1.43x (8x64x64x32
  -> 32 1.07x, 8x64x64x64 -> 64 1.23x, -> 32 1.49x, 8x64x64x128 -> 64
  1.11x, 16x64x64x64 -> 64 1.23x, 4x64x64x64 -> 64 1.36x, 8x48x48x64 -> 64
  1.33x, 4x96x96x64 -> 64 1.33x, 2x128x128x64 -> 32 1.43x), with the
  same scratch or less but on two (8x64x64x32 -> 32: 32 against 28 MiB;
  8x64x64x128 -> 64: 64 against 56).
  Also the convolution, with or without
  oneDNN, where a phase has more than 2 taps along an axis (k5-k7 at s2,
  with padding): the GEMMs' stacks grow with the taps, past the reference's
  scratch (8x32x32x128 -> 64 k7: 29 MiB, the reference 20), and the
  convolution trained 1.14-1.30x as fast on oneDNN (3 layers, 8x64x64 and
  4x64x64, k5-k7), 0.92-1.17x without it (XLA:CPU's own; 1.04x and up on 9
  of 10 layers, 8x32x32 to 8x64x64, k5-k7), with less scratch than the
  GEMMs' on 7 of those 13 (8x32x32x128 -> 64 k7: 20 MiB). Without oneDNN
  its transposed operands still take three of them up to 2 MiB past the
  reference's (8x32x32x128 -> 128 k5: 38 against 36; the GEMMs 42). At
  stride 1 not on 1x1 images (a
  latent), whose canvas is all padding but one pixel, nor (float32) where
  the convolution takes ``_convolve``'s Eigen route
  (``_kernel_grad_conv_on_eigen``; bfloat16 GEMMs run at twice the rate)
  or runs on oneDNN: there it trained padded stride-1 layers (2-8 images
  of 8x8 to 32x32, 32-128 channels, k3-k9) 1.06-1.75x as fast as the GEMMs
  with less scratch. A ``'valid'`` one (2x64x64x32 k3) ran 0.89x until the
  convolution took its 3-D form (``_kernel_grad_onednn``); since, 5
  ``'valid'`` layers trained in 0.81-0.89x the GEMMs' time, with a third
  to two thirds of their scratch (interleaved, 5 rounds: 2x64x64x32 k3
  1.90 against 2.35 ms, k5 4.29 against 4.99; 4x32x32x64 k3, 4x64x64x64
  k3, 2x32x32x128 k3). bfloat16 at stride 1: the convolution where
  it runs on oneDNN on batches of at least ``ONEDNN_BF16_STRIDE1_MIN_BATCH``
  images (its contracted channels), with or without padding: it trained
  such layers 1.05-2.15x as fast as the GEMMs (10 layers, 4-16 images of
  16x16 to 64x64, k3-k5, 32-256 channels; 8x64x64x32 k3 6.5 against 13.9
  ms) with a fifth to two thirds of their scratch, but on batches of 2
  0.75-1.43x (2x32x32x64 k3 0.75x). Float32 on one image at stride > 1
  (the convolution then contracts one channel, which oneDNN does not take,
  and runs on XLA:CPU's own): the GEMMs, with at most 2 taps per phase and
  ``filters * in_channels`` at most ``SINGLE_IMAGE_GEMM_MAX_CHANNELS``
  squared. Kernel gradients alone (AMD EPYC): 1x64x64x21 -> 21 k4 s2 0.82
  against 1.04 ms, FCN's k16 s8 and k64 s32 heads 10 against 19.5 and 8.4
  against 18.3, 32x32x32 -> 64 k4 s2 0.52 against 0.97, 64x64x64 -> 32 1.4
  against 2.2, 64x64x64 -> 64 k3 s2 2.0 against 3.1-3.3, 32x32x128 -> 128
  k3 s2 1.3-2.3 against 1.8-2.3; the convolution won with 3 taps a phase
  (32x32x128 -> 64 k7 s2: 2.7-3.0 against 4.2; k5 a tie) and deep channels
  (16x16x512 -> 256 k4 s2 'valid': 3.1 against 5.8)."""
  if config.dilation_rate != (1, 1):
    return False
  h, w = spatial(x_shape, config)
  unpadded = _unpadded(_forward_conv_padding((h, w), kernel_shape[:2], config, geometry))
  float32 = jnp.dtype(dtype) == jnp.float32
  on_eigen = lambda: _kernel_grad_conv_on_eigen(config, x_shape, kernel_shape, dtype, geometry)
  on_onednn = lambda: _kernel_grad_conv_on_onednn(config, x_shape, kernel_shape, dtype,
                                                  geometry)
  if config.strides != (1, 1):
    if jnp.dtype(dtype) == jnp.bfloat16:
      return not on_onednn() and (h, w) != (1, 1)
    deep_image = h * w >= SHALLOW_MIN_IMAGE_PIXELS
    shallow = kernel_shape[3] <= SHALLOW_INPUT_CHANNELS and deep_image
    if shallow or (deep_image and unpadded and not on_eigen()):
      return True
    wide_phases = any(_shapes.taps_per_phase(k, s) > 2
                      for k, s in zip(kernel_shape[:2], config.strides))
    if (x_shape[0] < ONEDNN_MIN_CONTRACTED and not wide_phases
        and kernel_shape[2] * kernel_shape[3] <= SINGLE_IMAGE_GEMM_MAX_CHANNELS ** 2):
      return True  # one image: the convolution contracts one channel, off oneDNN
    if not on_onednn() and _kernel_grad_phase_windows(
        config, (x_shape[0], h, w), kernel_shape[:2], geometry) is not None:
      return True  # runs of phases, XLA:CPU's own convolution
    small_image = h * w <= ONEDNN_KERNEL_GRAD_IMAGE_PIXELS
    any_image = _onednn.cpu_has_amx()  # the Xeon's clause above
    conv_wins = not unpadded and (wide_phases or (
        (small_image or any_image or _strides_divide_kernel(config, kernel_shape))
        and on_onednn()))
    return _pixels(x_shape, config) > GEMM_KERNEL_GRAD_PIXELS and not conv_wins
  if float32 and on_onednn():
    return False
  if (jnp.dtype(dtype) == jnp.bfloat16 and x_shape[0] >= ONEDNN_BF16_STRIDE1_MIN_BATCH
      and on_onednn()):
    return False
  return (min(kernel_shape[2:]) >= STRIDE1_DEEP_CHANNELS and (h, w) != (1, 1)
          and not (float32 and on_eigen()))


def _kernel_grad_convolution(config: ConvTransposeConfig, x_shape, kernel_shape, geometry):
  """``grad_kernel``'s convolution for an NHWC input of ``x_shape``: its
  (lhs shape, rhs shape, window strides, padding, rhs dilation)."""
  (out_h, _), (out_w, _) = geometry
  dy_shape = (x_shape[0], out_h, out_w, kernel_shape[2])
  padding = _forward_conv_padding(x_shape[1:3], kernel_shape[:2], config, geometry)
  return _kernel_grad_conv(x_shape, dy_shape, kernel_shape[:2], config, padding)[1]


def _kernel_grad_conv_on_eigen(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                               geometry) -> bool:
  """Whether ``grad_kernel``'s convolution takes ``_convolve``'s Eigen route
  on XLA:CPU (``_eigen_beats_ynnpack``), for an NHWC input of ``x_shape``."""
  return _eigen_beats_ynnpack(
      *_kernel_grad_convolution(config, x_shape, kernel_shape, geometry), dtype)


def _kernel_grad_conv_on_onednn(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
                                geometry) -> bool:
  """Whether ``grad_kernel``'s convolution runs on oneDNN on XLA:CPU
  (``_onednn_runs``), for an NHWC input of ``x_shape`` (its batch padded
  as ``_kernel_grad_batch`` says)."""
  x_shape = (_kernel_grad_batch(x_shape[0], dtype, config.strides), *x_shape[1:])
  return _onednn_runs(*_kernel_grad_convolution(config, x_shape, kernel_shape, geometry),
                      dtype)


def _kernel_grad_batch(n: int, dtype, strides) -> int:
  """The batch ``grad_kernel`` contracts: ``n``, but at stride 1 in
  bfloat16 where oneDNN takes it, from ``ONEDNN_BF16_PAD_MIN_BATCH``
  images on, ``n`` rounded up to a multiple of
  ``_onednn.BFLOAT16_CONTRACTED_MULTIPLE`` with zero images (which add
  zero products: exact). oneDNN's AMX kernel computed bfloat16
  convolutions over other channel counts wrong
  (``_onednn.bfloat16_miscomputed``), and their GEMMs in its place ran
  slower: alternating call by call on the Xeon, stride-1 bfloat16 steps
  with the padded convolution took 0.42x-0.87x the GEMMs' time on 10 of
  11 layers of 8 or 12 images (8x32x32x256 -> 128 k3 38.4 -> 16.5 ms,
  8x32x32x64 -> 64 k3 4.12 -> 3.17; 8x64x64x32 -> 32 k3 1.06x), but on 4
  images 1.17x-1.21x, and at stride 2 0.95x-1.07x with more scratch."""
  multiple = _onednn.BFLOAT16_CONTRACTED_MULTIPLE
  if (jnp.dtype(dtype) != jnp.bfloat16 or tuple(strides) != (1, 1) or n % multiple == 0
      or n < ONEDNN_BF16_PAD_MIN_BATCH or not _onednn.takes_dtype(dtype)):
    return n
  return -(-n // multiple) * multiple


def _assembles(plan, x_shape, dtype, kernel_shape, config, geometry, on_cpu) -> bool:
  """Whether the plan's forward (outside training) assembles its output
  from pieces after its convolutions or GEMM: col2im's tap blocks, the
  phases' interleaving, the bfloat16 phase GEMM's; not a convolution that
  writes the output itself (``dilated``, stride 1, ``_phase_slots``)."""
  if plan.forward in ("col2im", "phase_gemm"):
    return True
  return (plan.forward == "phase" and config.strides != (1, 1)
          and _phase_slots(x_shape, dtype, kernel_shape, config, geometry, on_cpu) is None)


def _materializes(plan, x_shape, dtype, kernel_shape, config, geometry, on_cpu, nchw_after,
                  training) -> bool:
  """Whether ``_forward`` runs ``_materialized``: on XLA:CPU, where the
  output is assembled and not transposed to NCHW next (``_forward`` says
  why); in a training step only where the forward is col2im.

  In training steps XLA fuses the assembly into the step's readers of the
  output as well. Interleaved A/B with and without the branch, on an Intel
  Xeon (2026-11-28; steps of the batch-norm suite's col2im layers and two
  edge layers, ``value_and_grad``):
    * a loss right after the layer (``0.5 * sum((y - t) ** 2)``): 0.87x-1.17x
      between runs (batch 1) and 0.99x-1.06x elsewhere, the same scratch
      or less;
    * a batch norm and a ReLU between: 4x4 -> 8x8 k9 s2 1.84x (32.1 ->
      17.5 ms, 51 -> 1.5 MiB), 2x2 -> 4x4 k5 s2 1.22x (19 -> 6.3 MiB),
      dcgan 8->16 1.14x (31 -> 16 MiB), batch 1 0.91x-1.18x between runs,
      dcgan 4->8 0.99x-1.02x;
    * a ReLU and a 3x3 convolution (a decoder block): k9 s2 1.44x (50.5 ->
      1 MiB), k5 s2 1.13x, dcgan 8->16 1.03x (31 -> 16 MiB), batch 1 1.01x;
    * the edge suite's latent layers and FCN upscore2 (``jax.grad``): the
      loss right after 0.96x-1.43x, a batch norm 0.97x-1.22x.
  On an AMD EPYC (2026-11-27) the loss right after the layer had run
  0.77x-1.0x with the branch (k9 s2 10.7 -> 14.0 ms; the main suite's
  col2im layers 0.95x-1.0x) and the batch norm 0.90x-2.9x: a layer's output
  read by one linear loss is the benchmark's case, rarely a model's.
  Training steps whose forward is the phases' keep no branch: the loss reads
  the phases where they lie (unet k3s2 on the EPYC: 29.8 against 23.2 ms
  with it); on the Xeon with a batch norm or a ReLU and a convolution
  after, 0.97x-1.03x and the same scratch."""
  if not on_cpu or nchw_after:
    return False
  if training:
    return plan.forward == "col2im"
  return _assembles(plan, x_shape, dtype, kernel_shape, config, geometry, on_cpu)


def _materialized(forward, x, kernel):
  """``forward(x, kernel)``, its output written whole before anything reads
  it, and its operands before it reads them: the forward inside a
  ``lax.cond`` on a predicate XLA cannot fold (the kernel's first tap, or
  the second operand's first element, equals itself; both branches are the
  forward, so a NaN there changes nothing). A branch that XLA finds cheap
  (an identity) it turns into a select, and the cond is gone.

  XLA:CPU fuses an assembled output (pads, transposes and sums of the
  pieces) into its consumers. With one consumer that is one loop; with
  several, as a batch norm has (means, variances, the normalization), it
  duplicates the assembly into each and keeps every piece in memory for
  them: dcgan 8->16's col2im forward followed by a batch norm and a ReLU
  took 19.7 ms and 36 MiB of scratch against 9.4 ms and 16 MiB alone (the
  dilated reference: about 15 ms). In the branch the assembly is one loop
  whose output the consumers read: 9.9 ms and 16 MiB, and unchanged alone
  (9.6 ms). ``lax.optimization_barrier`` does not do it: XLA:CPU removes it
  before fusion."""
  pred = kernel[(0,) * kernel.ndim] == kernel[(0,) * kernel.ndim]
  return lax.cond(pred, forward, forward, x, kernel)


def _forward(x, kernel, config, geometry, plan, on_cpu, nchw_after, training):
  """The plan's forward; ``training``: under autodiff (``_fast_jvp``, e.g. a
  training step), where ``conv_phase`` does not write its output
  interleaved (``_phase_slots``). Outside training on XLA:CPU an assembled
  output is ``_materialized``, unless the caller transposes it to NCHW next
  (``nchw_after``: XLA fuses the assembly into that transpose, which is
  then what the consumers read; materialized, the channels_first forward
  held 16 MiB instead of 8.5, as fast); in a training step only col2im's
  (``_materializes``)."""
  forward = {"phase": functools.partial(conv_phase, on_cpu=on_cpu, training=training,
                                        nchw_after=nchw_after),
             "phase_gemm": conv_phase_gemm,
             "col2im": functools.partial(conv_col2im, training=training),
             "dilated": conv_dilated}[plan.forward]
  run = lambda x, kernel: forward(x, kernel, config, geometry)
  if _materializes(plan, x.shape, x.dtype, kernel.shape, config, geometry, on_cpu, nchw_after,
                    training):
    return _materialized(run, x, kernel)
  return run(x, kernel)


# The fast path is a primitive of its own, bilinear in the input and the
# kernel, rather than a ``jax.custom_vjp``: JAX refuses forward-mode autodiff
# (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) of a custom VJP, and a
# primitive's transpose rules give reverse mode the same reversal-free
# gradients. Its JVP is the forward applied to the tangents (``dy =
# T(dx, k) + T(x, dk)``); transposed for reverse mode, ``T(., k)`` is the
# plan's input gradient and ``T(x, .)`` its kernel gradient, both ordinary
# JAX code, so higher orders differentiate those.
def _fast_nhwc(x, kernel, config, geometry, plan, on_cpu, nchw_after):
  return _fast_p.bind(x, kernel, config=config, geometry=geometry, plan=plan, on_cpu=on_cpu,
                      nchw_after=nchw_after, training=False)


def _fast_abstract_eval(x, kernel, *, config, geometry, **_):
  (h, _), (w, _) = geometry
  return jax.core.ShapedArray((x.shape[0], h, w, kernel.shape[2]),
                              config.preferred_element_type or x.dtype)


def _fast_forward(x, kernel, *, config, geometry, plan, on_cpu, nchw_after, training):
  y = _forward(x, kernel, config, geometry, plan, on_cpu, nchw_after, training)
  return y.astype(config.preferred_element_type or x.dtype)


def _fast_jvp(primals, tangents, **params):
  """``T(x + dx, k + dk) = T(x, k) + T(dx, k) + T(x, dk) + ...``; the primal
  as the forward of a training step (``training``)."""
  x, kernel = primals
  dx, dk = tangents
  params = dict(params, training=True)
  y = _fast_p.bind(x, kernel, **params)
  # JAX calls the rule with at least one nonzero tangent. The kernel's term
  # comes first: transposed, the input gradient does (as the custom VJP had it).
  parts = [] if type(dk) is ad.Zero else [_fast_p.bind(x, dk, **params)]
  if type(dx) is not ad.Zero:
    parts.append(_fast_p.bind(dx, kernel, **params))
  return y, functools.reduce(jnp.add, parts)


def _fast_transpose(dy, x, kernel, *, config, geometry, plan, on_cpu, nchw_after, **_):
  """The cotangent of the input (``kernel`` known) or of the kernel (``x``
  known): the plan's input or kernel gradient, in the input's dtype."""
  x_unknown, kernel_unknown = ad.is_undefined_primal(x), ad.is_undefined_primal(kernel)
  if x_unknown and kernel_unknown:
    raise ValueError("conv2d_transpose is linear in the input or the kernel, not in both: "
                     "it cannot be transposed in both at once.")
  if type(dy) is ad.Zero:
    return [None, None]
  dtype = (x.aval if x_unknown else x).dtype
  dy = dy.astype(dtype)
  if x_unknown:
    grad_x = {"autodiff": grad_input_dilated,
              "conv": functools.partial(grad_input, on_cpu=on_cpu, nchw=nchw_after),
              "phase_gemm": grad_input_phase, "taps": grad_input_taps}[plan.input_gradient]
    dx = grad_x(dy, kernel, config, geometry, x.aval.shape[1:3])
    return [dx.astype(dtype), None]
  grad_k = {"conv": functools.partial(grad_kernel, on_cpu=on_cpu),
            "phase_gemm": grad_kernel_phase, "taps": grad_kernel_taps}[plan.kernel_gradient]
  run = lambda dy, x: grad_k(x, dy, kernel.aval.shape[:2], config, geometry)
  if _kernel_grad_reads_nchw_dy(plan, config, x.shape, kernel.aval.shape, dtype, geometry,
                                on_cpu, nchw_after):
    # The NCHW cotangent (the caller's, transposes cancelling) is the
    # branch's operand, written whole; the branch transposes it back.
    dy_nchw = jnp.transpose(dy, (0, 3, 1, 2))
    dk = _materialized(lambda d, x: run(jnp.transpose(d, (0, 2, 3, 1)), x), dy_nchw, x)
  else:
    dk = run(dy, x)
  return [None, dk.astype(kernel.aval.dtype)]


def _kernel_grad_reads_nchw_dy(plan, config, x_shape, kernel_shape, dtype, geometry, on_cpu,
                               nchw_after) -> bool:
  """Whether ``_fast_transpose`` runs a channels_first layer's kernel
  gradient (``nchw_after``; ``x_shape`` NHWC) on its NCHW cotangent written
  whole (``_materialized``): where its input gradient reads that NCHW ``dy``
  too (``_input_grad_reads_nchw_dy``), so XLA writes it once for both.

  Left to itself, XLA:CPU fuses whatever computes ``dy`` (the loss's
  subtraction, a batch norm's backward) into the kernel gradient's
  transpose of it, to (h, w, f, n) with the batch innermost: a loop that
  reads every one of those inputs a batch apart, NCHW ones across the whole
  array. Behind a batch norm that loop took 6.7 ms of the suite's
  channels_first step (16x16x16x256 -> 128 k4 s2, 64 ms), where the NCHW
  ``dy`` is written in 1.3 ms and transposed in about as much. Training
  steps interleaved against the fused loop (Intel Xeon with AMX,
  2026-11-28; channels_first, k4 s2 unless said):

  * a batch norm and a ReLU after the layer: 16x16x16x256 -> 128 64.2 ->
    58.5 ms (1.10x, 36 -> 32 MiB), 16x32x32x128 -> 64 92.8 -> 80.7
    (1.15x), 8x32x32x128 -> 128 k3 s2 1.06x, 8x32x32x64 -> 64 k3 s1 1.04x;
  * the loss right after: 0.97x-1.03x between runs on those layers.

  Where the input gradient does not read NCHW ``dy`` the branch writes it
  for the kernel gradient alone: 4 images (4x16x16x256 -> 128) 0.90x, 3
  filters (16x32x32x64 -> 3) 0.94x-0.96x, so not there."""
  return (nchw_after and on_cpu and plan.input_gradient == "conv"
          and _input_grad_reads_nchw_dy(config, x_shape, kernel_shape, dtype, geometry))


def _fast_batch(args, dims, **params):
  """A mapped input is folded into the batch; mapped kernels (one per
  example or ensemble member) run one at a time (``lax.map``), each on the
  fast path."""
  x, kernel = args
  x_dim, kernel_dim = dims
  if kernel_dim is None:
    x = jnp.moveaxis(x, x_dim, 0)
    b, n = x.shape[:2]
    y = _fast_p.bind(x.reshape(b * n, *x.shape[2:]), kernel, **params)
    return y.reshape(b, n, *y.shape[1:]), 0
  kernel = jnp.moveaxis(kernel, kernel_dim, 0)
  if x_dim is None:
    return lax.map(lambda k: _fast_p.bind(x, k, **params), kernel), 0
  x = jnp.moveaxis(x, x_dim, 0)
  return lax.map(lambda xk: _fast_p.bind(*xk, **params), (x, kernel)), 0


_fast_p = Primitive("jconvt_conv2d_transpose")
_fast_p.def_impl(functools.partial(dispatch.apply_primitive, _fast_p))
_fast_p.def_abstract_eval(_fast_abstract_eval)
mlir.register_lowering(_fast_p, mlir.lower_fun(_fast_forward, multiple_results=False))
ad.primitive_jvps[_fast_p] = _fast_jvp
ad.primitive_transposes[_fast_p] = _fast_transpose
batching.primitive_batchers[_fast_p] = _fast_batch
_onednn.needs_devices_at_lowering(_fast_p)


def _fast(x, kernel, config, geometry, rules, on_cpu):
  """The fast path in any data format, running the plan ``rules(config,
  x_shape, kernel_shape, dtype, geometry)`` gives for the NHWC shapes (an
  ``AlgorithmPlan``; all ``autodiff``: the dilated reference). Its
  algorithms and gradients work on NHWC (XLA:CPU's canonical convolution
  layout), so a channels_first input is transposed in and the output back.
  ``on_cpu``: lowered for XLA:CPU (the gradients' convolutions may take
  ``_convolve``'s Eigen route)."""
  plan = _nhwc_plan(rules, config, x.shape, kernel.shape, x.dtype, geometry)
  if plan.kernel_gradient == "autodiff":
    return conv_dilated(x, kernel, config, geometry)
  if config.channels_last:
    return _fast_nhwc(x, kernel, config, geometry, plan, on_cpu, False)
  y = _fast_nhwc(jnp.transpose(x, (0, 2, 3, 1)), kernel,
                 config.replace(data_format="channels_last"), geometry, plan, on_cpu, True)
  return jnp.transpose(y, (0, 3, 1, 2))


def _nhwc_plan(rules, config, x_shape, kernel_shape, dtype, geometry):
  """The plan ``rules`` give for an input of ``x_shape`` in ``config``'s data
  format: rules see the NHWC shapes and config the fast path runs on.

  Shapes with symbolic dimensions (``jax.export`` with a polymorphic
  shape, e.g. a batch ``b``): the rules compare sizes, so ``auto`` runs
  the dilated reference there, and an explicit ``phase`` or ``col2im``
  raises ``ValueError``."""
  if not all(isinstance(d, (int, np.integer)) for d in (*x_shape, *kernel_shape)):
    if config.algorithm != "auto":
      raise ValueError(
          f"algorithm={config.algorithm!r} needs concrete shapes, got x of shape "
          f"{tuple(x_shape)} and kernel of shape {tuple(kernel_shape)} with symbolic "
          f"dimensions (shape-polymorphic jax.export); use algorithm='auto' (which runs "
          f"the dilated reference there) or 'dilated'.")
    return REFERENCE
  if not config.channels_last:
    n, c, h, w = x_shape
    x_shape = (n, h, w, c)
  return rules(config.replace(data_format="channels_last"), tuple(x_shape), kernel_shape,
               dtype, geometry)


class AlgorithmPlan(NamedTuple):
  """What ``conv2d_transpose`` runs for one layer (``jconvt.algorithm_plan``).

  Attributes:
    forward: ``"dilated"`` (the reference: one convolution of the input
      dilated by the stride), ``"phase"`` (the sub-pixel decomposition;
      the plain convolution at stride 1), ``"phase_gemm"`` (the sub-pixel
      decomposition as one GEMM), ``"col2im"`` (one GEMM, then each tap's
      columns added in place), or ``"zeros"`` (an empty input, kernel or
      output: nothing to compute).
    input_gradient: ``"autodiff"`` (JAX's own gradient of the dilated
      form; ``grad_input_dilated`` where the kernel gradient is not), ``"conv"``
      (a forward-style convolution of ``dy`` with the
      kernel), ``"phase_gemm"`` (GEMMs of ``dy`` folded space-to-depth),
      ``"taps"`` (one GEMM of the windows of ``dy`` each tap reads), or
      ``"zeros"``.
    kernel_gradient: ``"autodiff"`` (only with the whole reference: the
      fast path then is not taken), ``"conv"`` (a forward-style
      convolution of ``dy`` with the input), ``"phase_gemm"`` (GEMMs of
      shifted input rows with ``dy`` folded space-to-depth), ``"taps"``
      (one GEMM of ``dy``'s tap windows with the input), or ``"zeros"``.
  """
  forward: str
  input_gradient: str
  kernel_gradient: str


REFERENCE = AlgorithmPlan("dilated", "autodiff", "autodiff")


def cpu_plan(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
             geometry) -> AlgorithmPlan:
  """XLA:CPU's fast path for an NHWC input of ``x_shape``: the rules
  ``_forward_algorithm``, ``_input_grad_algorithm`` and
  ``_kernel_grad_algorithm`` (also what ``phase`` and ``col2im`` run on
  any backend)."""
  return AlgorithmPlan(
      _forward_algorithm(config, x_shape, kernel_shape, dtype),
      _input_grad_algorithm(config, x_shape, kernel_shape, dtype, geometry),
      _kernel_grad_algorithm(config, x_shape, kernel_shape, dtype, geometry))


# On NVIDIA GPUs (CUDA), the dilated reference's forward and input gradient
# are convolutions cuDNN runs well, but its kernel gradient (XLA's gradient
# of an input-dilated convolution) is not. Training steps of the suite
# layers on an H200 (jax 0.11.2, float32 at JAX's default precision), at
# their own batch and at 8x, each plan timed against the reference in one
# process (``benchmarks/plans.py``), with only the kernel gradient replaced
# by ``grad_kernel``'s forward-style convolution:
#   * 32x32 inputs (dcgan 32->64, unet k3s2, unet k2s2): 2.5-12x as fast
#     (unet k3s2 at batch 64: 8.0 -> 0.66 ms, temporary memory 2717 -> 264
#     MiB); the RGB k4s2 output 3.0x and 5.5x;
#   * 16x16 inputs: 1.7-2.0x at 8x batch (0.9x at batch 8 of 1x16x16), and
#     0.89-1.26x at their own batch; bfloat16 1.28-1.35x;
#   * 4x4 and 8x8 inputs: 0.96-1.08x, except dcgan 4->8 at batch 16 (0.33
#     against 0.28 ms): steps under 0.4 ms are launch-bound, and their
#     times moved by up to 50% between runs.
# At stride 1 the reference's kernel gradient has no input dilation, and it
# ran as fast (0.95-1.14x), so it stays. So does the input gradient: no
# other algorithm for it (the GEMMs, the taps) was consistently faster.
#
# The forward stays the dilated one below 16 phases (``s_h * s_w``:
# strides 2 and 3, 4x2): at stride 2 the step with the phase forward ran
# 0.79-1.14x on five suite layers (H200, ``...-h200-plans.md``) and
# 1.06-1.09x on FCN heads (below). From 16 phases (stride 4x4) on the
# forward is ``phase`` where the layer is not dilated: on an H100 (2026-11-27,
# ``benchmarks/sweep.py`` over 21-channel FCN heads at batch 4, one round;
# ``benchmarks/results/2026-11-27-h100-sweep-upsample.md``), the step with
# only the forward replaced (``phase/autodiff/conv``) ran 1.09x at k8 s4
# (16x16 and 32x32 inputs), 1.14-1.18x at k16 s8, 6.5x at k32 s16 and
# 6.6x at k64 s32 on 16x16 inputs (6.85 -> 1.05 and 25.9 -> 3.9 ms: XLA's
# dilated forward took 22.5 ms there, the phase forward 0.15), and 0.82x
# at k32 s16 on 32x32 (2.02 against 1.66 ms). In the upsample suite the
# phase forward alone ran 1.03-1.71x at strides 4-16 and 91-154x at 32.
GPU_PHASE_MIN_PHASES = 16

# Below 16 phases, float32 layers with few filters whose kernel is twice
# the stride (k4 s2: two taps per phase and axis) run ``phase/conv/conv``:
# cuDNN's backward-data convolution writing 1-8 output channels is the
# slow kernel there, the phase forward's one convolution writes ``s * s``
# times as many. Timed by the kernels' time in a profiler trace (``python
# -m benchmarks.sweep --timer device``, an H200, 2026-11-28, jax 0.11.2;
# ``benchmarks/results/2026-11-28-h200-sweep-few-filters-device.md``): on
# the 12 k4 s2 layers with 1, 3 and 8 filters (16 images of 32x32 and
# 64x64, 32 and 128 channels) the step's kernels took 1.08-1.49x less time
# than ``dilated/autodiff/conv``'s, in the same scratch (+2 MiB at most);
# the suite's RGB output at 8x its batch 1.51x (217 -> 144 us; wall clock
# 0.506 -> 0.343 ms). With 32 filters still 1.10-1.22x, but in up to twice
# the scratch (32 -> 65 MiB); from 64 filters on the suite's k4 s2 layers
# 0.95-1.08x. At k3 s2 the phase step was the slower (0.61-1.10x), and at
# stride 1 (0.87-1.38x) it was not consistently faster.
GPU_PHASE_MAX_FILTERS = 8


def gpu_plan(config: ConvTransposeConfig, x_shape, kernel_shape, dtype,
             geometry) -> AlgorithmPlan:
  """``auto`` on NVIDIA GPUs (CUDA), for an NHWC input of ``x_shape``: at
  stride > 1, the reference's input gradient (differentiated by JAX inside
  the fast path's transpose rule) with ``grad_kernel``'s convolution for the
  kernel gradient, and the reference's forward, or ``phase`` from
  ``GPU_PHASE_MIN_PHASES`` phases (``s_h * s_w``) on where the layer is not
  dilated; ``phase/conv/conv`` for float32 layers of at most
  ``GPU_PHASE_MAX_FILTERS`` filters whose kernel is twice the stride; at
  stride 1, the reference (the rules above)."""
  sh, sw = config.strides
  if sh * sw == 1:
    return REFERENCE
  if config.dilation_rate == (1, 1):
    if sh * sw >= GPU_PHASE_MIN_PHASES:
      return AlgorithmPlan("phase", "autodiff", "conv")
    kh, kw, f, _ = kernel_shape
    if (f <= GPU_PHASE_MAX_FILTERS and (kh, kw) == (2 * sh, 2 * sw)
        and jnp.dtype(dtype) == jnp.float32 and config.preferred_element_type is None):
      return AlgorithmPlan("phase", "conv", "conv")
  return AlgorithmPlan("dilated", "autodiff", "conv")


# ``auto``'s rules per lowering platform; the others run the reference.
_AUTO_RULES = {"cpu": cpu_plan, "cuda": gpu_plan}


def plan(config: ConvTransposeConfig, x_shape, kernel_shape, dtype, geometry,
         platform: str) -> AlgorithmPlan:
  """The algorithms ``dispatch`` runs on ``platform`` (a lowering platform:
  ``"cpu"``, ``"cuda"``, ``"rocm"``, ``"tpu"``) for an input of ``x_shape``
  (in ``config``'s data format) and ``dtype``: the rules ``_fast`` asks, on
  the NHWC shapes it hands them."""
  if config.algorithm == "dilated":
    return REFERENCE
  rules = cpu_plan if config.algorithm != "auto" else _AUTO_RULES.get(platform)
  if rules is None:
    return REFERENCE
  return _nhwc_plan(rules, config, x_shape, kernel_shape, dtype, geometry)


def dispatch(x, kernel, config, geometry):
  """Runs the algorithm ``config.algorithm`` names.

  * ``"dilated"``: ``conv_dilated``, differentiated by JAX.
  * ``"phase"``: ``conv_phase`` forward (the plain stride-1 convolution when
    the stride is 1) with the reversal-free gradients (``_fast_p``).
  * ``"col2im"``: ``conv_col2im`` forward with those gradients.
  * ``"auto"``: on CPU, the fast path (``_fast_p``) with the forward
    ``_forward_algorithm`` picks: ``conv_col2im`` for inputs of at most
    ``SMALL_INPUT_PIXELS`` batch*height*width pixels and
    ``COL2IM_MAX_TAPS`` taps per output pixel (but ``conv_phase`` under
    ``_phase_beats_col2im`` or ``_col2im_columns_outgrow``), else ``conv_phase``
    when the dilation is 1 (also at stride 1, where its pre-arranged HWIO
    kernel avoids the flip), else ``conv_dilated``; for bfloat16 inputs at
    stride > 1 where each stride divides its kernel size,
    ``conv_phase_gemm`` (``_forward_is_gemm``). With stride > 1 and
    dilation 1, the input gradient is the phase GEMMs with a kernel no
    larger than the stride, the tap-window GEMM (``grad_input_taps``) up to
    ``TAPS_INPUT_GRAD_PIXELS`` with at least ``TAPS_INPUT_GRAD_FILTERS``
    filters, and
    the kernel gradient above ``GEMM_KERNEL_GRAD_PIXELS`` or with at most
    ``SHALLOW_INPUT_CHANNELS`` input channels or no padding (``'valid'``,
    off the Eigen route below) on images of at least
    ``SHALLOW_MIN_IMAGE_PIXELS``; at stride 1
    (dilation 1) the kernel gradient is GEMMs when both channel counts are
    at least ``STRIDE1_DEEP_CHANNELS`` and its convolution would not take
    the Eigen route below; otherwise forward-style
    convolutions (on CPU, input-dilated where that keeps them on Eigen:
    ``_convolve``, for ``"phase"`` and ``"col2im"`` too; on oneDNN where
    ``_onednn_runs``). With bfloat16 inputs and stride > 1 both gradients
    are the GEMMs (the input gradient when each stride divides its kernel
    size), accumulated in float32, unless oneDNN takes bfloat16: then the
    phase forward and both gradients as its convolutions (``cpu_plan``).
    A channels_first layer's input gradient on oneDNN runs on NCHW ``dy``
    where ``_nchw_input_grad``.
    On NVIDIA GPUs
    (``gpu_plan``): at stride > 1 the dilated forward (``conv_phase`` from
    ``GPU_PHASE_MIN_PHASES`` phases on) and the dilated input gradient
    with ``grad_kernel``'s convolution as the kernel gradient (in
    ``_fast_p``), but ``conv_phase`` with the strided-convolution input
    gradient for float32 layers of at most ``GPU_PHASE_MAX_FILTERS``
    filters whose kernel is twice the stride; else ``"dilated"``. On other
    backends (ROCm, TPU), ``"dilated"``: unmeasured there. The choice is made per platform at
    lowering (``lax.platform_dependent``).
  """
  if config.algorithm == "dilated":
    return conv_dilated(x, kernel, config, geometry)
  if config.algorithm in ("phase", "col2im"):  # the CPU's plan on every backend
    explicit = functools.partial(_fast, config=config, geometry=geometry, rules=cpu_plan)
    return lax.platform_dependent(x, kernel, cpu=functools.partial(explicit, on_cpu=True),
                                  default=functools.partial(explicit, on_cpu=False))
  branches = {name: functools.partial(_fast, config=config, geometry=geometry, rules=rules,
                                      on_cpu=name == "cpu")
              for name, rules in _AUTO_RULES.items()}
  return lax.platform_dependent(
      x, kernel, **branches,
      default=lambda x, k: conv_dilated(x, k, config, geometry))
