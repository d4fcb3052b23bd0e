"""oneDNN's forward convolution on XLA:CPU, for the fast paths' convolutions.

jaxlib's XLA:CPU carries oneDNN and runs its convolution for the custom call
``__onednn$convolution`` (the target XLA's own oneDNN rewriter emits, off by
default), configured by a ``BackendConfig`` in JSON. On the 2-core AMD EPYC
(AVX-512) the project measures on, it ran float32 convolutions 1.15-2.2x
faster than XLA:CPU's own (Eigen or YNNPACK): 202-238 GFLOP/s against
95-197, e.g. 16x64x64x64 -> 128 k4 s2 (a training step's input gradient)
20.8 against 28.9 ms, 8x32x32x64 -> 64 k3 2.9 against 6.4 ms.

The custom call is XLA's internal interface, not a public one: its window
encoding has changed between XLA versions (offsets on the strides, padding
and dilations), and a configuration oneDNN rejects aborts the process. So
it is used only where ``enabled()``: an x86-64 machine and a jaxlib whose
encoding the tests check against ``lax.conv_general_dilated``
(``VERIFIED_JAXLIB``), or ``JCONVT_ONEDNN=1`` in the environment to force
it (``JCONVT_ONEDNN=0`` turns it off). Only float32 and bfloat16 (on a CPU
that multiplies it natively, with a multiple of 16 contracted channels and
no strided single output column: ``bfloat16_miscomputed``;
``JCONVT_ONEDNN_BFLOAT16=0`` keeps bfloat16 off), channels-last input
(NHWC, or NDHWC with three spatial axes, which the kernel gradient uses),
no input dilation, padding >= 0 (``supported``). bfloat16 ran 2.2-2.8x
faster than XLA:CPU's (390-455 GFLOP/s against 160-181: 16x16x16x256 ->
512 k2 11.0 against 23.7 ms).

``conv`` is a primitive of its own: on CPU the custom call, on every other
platform ``lax.conv_general_dilated``; differentiable (its tangents are
``lax.conv_general_dilated``, so higher orders work), batched by
folding a mapped input into the batch axis, and split by batch under a
sharded ``jit`` (``_partitioned``). Lowered for ``jax.export`` it is
``lax.conv_general_dilated`` on CPU too: an exported program outlives the
jaxlib whose encoding of the custom call it would hold.
"""

import functools
import importlib.metadata
import json
import math
import os
import platform

import jax
import jax.numpy as jnp
from jax import lax
from jax._src import dispatch
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jconvt import _shapes


TARGET = "__onednn$convolution"
# jaxlib (major, minor) versions whose encoding of the window (strides and
# padding as they are, dilations plus one) tests/test_onednn.py checks.
# 0.10: this project's machines (0.10.2). 0.11: jaxlib 0.11.2 on a lent GPU
# machine's CPU (an Intel Xeon, 2026-11-28), JAX_PLATFORMS=cpu and
# JCONVT_ONEDNN=1: tests/test_onednn.py's 84 tests passed, and so did the
# whole default suite but two tests of glibc's malloc whose probe program
# XLA:CPU 0.11 fused away (since mended;
# benchmarks/results/2026-11-28-h100-cpu-jaxlib-0.11.log).
VERIFIED_JAXLIB = ((0, 10), (0, 11))


@functools.cache
def _default_enabled() -> bool:
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return False
  version = tuple(int(v) for v in importlib.metadata.version("jaxlib").split(".")[:2])
  return version in VERIFIED_JAXLIB


def enabled() -> bool:
  """Whether ``conv`` may be used on CPU: ``JCONVT_ONEDNN`` ``"1"`` or
  ``"0"`` if set, else an x86-64 machine with a jaxlib in
  ``VERIFIED_JAXLIB``. Read at trace time."""
  flag = os.environ.get("JCONVT_ONEDNN", "").strip()
  if flag in ("0", "1"):
    return flag == "1"
  return _default_enabled()


@functools.cache
def _cpu_flags() -> frozenset:
  """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be
  read)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def _cpu_has_bfloat16() -> bool:
  """Whether the CPU computes bfloat16 products natively (AVX512_BF16 or
  AMX-BF16), which oneDNN's bfloat16 convolution needs to be fast (and, on
  some ISAs, to exist)."""
  return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def _takes_bfloat16() -> bool:
  """Whether ``conv`` takes bfloat16 inputs: on a CPU that computes
  bfloat16 products natively (``_cpu_has_bfloat16``), unless
  ``JCONVT_ONEDNN_BFLOAT16=0`` turns it off (read at trace time); and
  then only convolutions ``bfloat16_miscomputed`` passes.

  Off by default for a while on 2026-11-28, after oneDNN's bfloat16
  convolutions computed wrong values on an Intel Xeon with AMX (jaxlib
  0.10.2): the same on every run, errors the size of the outputs (for
  instance (3, 2, 24, 4) with a (2, 24, 4, 8) kernel, padding 1: a kernel
  gradient's convolution at stride 1, which the property tests found). On
  since, with that rule: every wrong one ran oneDNN's AMX kernel
  (``brg_conv_fwd:avx10_1_512_amx`` in ``ONEDNN_VERBOSE``), and every one
  had a contracted channel count that is not a multiple of 16 (kernels the
  AMX kernel pads) or a strided single output column. Without it the
  suite's bfloat16 layer's training step took 22.4 ms instead of 11.1, its
  forward 7.1 instead of 3.6. Capping oneDNN's ISA below AMX
  (``ONEDNN_MAX_CPU_ISA``) computed right but ran that forward 6x slower."""
  return (os.environ.get("JCONVT_ONEDNN_BFLOAT16", "").strip() != "0"
          and _cpu_has_bfloat16())


# bfloat16 convolutions go to oneDNN only with a multiple of this many
# contracted channels (``bfloat16_miscomputed``).
BFLOAT16_CONTRACTED_MULTIPLE = 16


def bfloat16_miscomputed(rhs_shape, window_strides, out_width) -> bool:
  """Whether oneDNN's bfloat16 convolution (jaxlib 0.10.2, oneDNN 3.7.3)
  may compute this one wrong: a contracted channel count (``rhs_shape`` in
  the default layout, HWIO or DHWIO) that is not a multiple of
  ``BFLOAT16_CONTRACTED_MULTIPLE``, or a window stride > 1 along the width
  with one output column (``out_width``).

  Found on an Intel Xeon with AMX (2026-11-28), against
  ``lax.conv_general_dilated`` in float32 on random convolutions (1-128
  contracted channels, strides 1-2, padding): 28 of 1263 wrong, all on
  oneDNN's AMX kernel (``brg_conv_fwd:avx10_1_512_amx``): 16 of the 21
  with 8 or 12 channels (which it pads) and an 8-wide kernel, at any
  stride; 12 of the 46 strided onto one output column (11 of 26 with
  fewer than 16 channels, 1 of 20 with a multiple of 16). This rule
  catches all 28; of the convolutions it passes none was wrong (457
  there, 1500 more with 16-256 channels, 2-D and 3-D, dilated, windows as
  large as the input)."""
  return (not _bfloat16_contracted_ok(rhs_shape[-2])
          or (window_strides[-1] > 1 and out_width == 1))


def _bfloat16_contracted_ok(contracted: int) -> bool:
  """The channel half of ``bfloat16_miscomputed``: whether oneDNN's
  bfloat16 convolution may contract ``contracted`` channels (a multiple of
  ``BFLOAT16_CONTRACTED_MULTIPLE``). ``takes`` asks it alone."""
  return contracted % BFLOAT16_CONTRACTED_MULTIPLE == 0


def cpu_has_amx() -> bool:
  """Whether the CPU has AMX tiles (Intel Xeon, Sapphire Rapids and later):
  the machine ``_algorithms._kernel_grad_channel_chunk``'s rule and the AMX
  clause of ``_algorithms._kernel_grad_is_gemm`` were measured on."""
  return "amx_tile" in _cpu_flags()


def takes(dtype, contracted: int) -> bool:
  """Whether ``conv`` takes inputs of ``dtype`` convolved over
  ``contracted`` channels (``takes_dtype``; for bfloat16 a multiple of
  ``BFLOAT16_CONTRACTED_MULTIPLE``): the rules' question before they know
  the rest of the convolution."""
  return takes_dtype(dtype) and (jnp.dtype(dtype) != jnp.bfloat16
                                 or _bfloat16_contracted_ok(contracted))


def takes_dtype(dtype) -> bool:
  """Whether ``conv`` takes inputs of ``dtype``: float32, or bfloat16 where
  ``_takes_bfloat16``; and ``enabled()``."""
  dtype = jnp.dtype(dtype)
  return enabled() and (dtype == jnp.float32
                        or (dtype == jnp.bfloat16 and _takes_bfloat16()))


def takes_channels_first(dtype) -> bool:
  """Whether ``conv`` runs a channels-first ``lhs_spec`` fast: ``takes_dtype``
  on a CPU with AVX-512 (avx512f, bw, vl and dq: oneDNN's ``avx512_core``),
  where oneDNN wraps its channels-last convolution in reorders
  (``jit_uni_ncsp_convolution``). Where it has no such wrapper it may run
  its reference code, 1000x slower (as it did for a permuted layout);
  machines without AVX-512 are unmeasured."""
  return takes_dtype(dtype) and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= _cpu_flags()


def supported(lhs_shape, rhs_shape, window_strides, padding, rhs_dilation, dtype,
              preferred_element_type=None) -> bool:
  """Whether ``conv`` takes this convolution: ``takes_dtype(dtype)``, an
  output of the input's dtype or float32, padding >= 0 and a non-empty
  output."""
  if not takes_dtype(dtype):
    return False
  if preferred_element_type is not None and jnp.dtype(preferred_element_type) not in (
      jnp.dtype(dtype), jnp.dtype(jnp.float32)):
    return False
  if any(lo < 0 or hi < 0 for lo, hi in padding):
    return False
  if miscomputed(rhs_shape, window_strides):
    return False
  out = _output_shape(lhs_shape, rhs_shape, window_strides, padding, rhs_dilation)
  if jnp.dtype(dtype) == jnp.bfloat16 and bfloat16_miscomputed(rhs_shape, window_strides,
                                                               out[-2]):
    return False
  return min(out) > 0 and min(lhs_shape) > 0 and min(rhs_shape) > 0


def miscomputed(rhs_shape, window_strides) -> bool:
  """Whether oneDNN's convolution (jaxlib 0.10) may compute this one wrong:
  one contracted channel (``rhs_shape`` in the default layout, HWIO or
  DHWIO) with a window stride > 1 along the last spatial axis (the width).

  Found by comparing ``conv`` with ``lax.conv_general_dilated`` on random
  small convolutions (2-D and 3-D, 1-5 input channels, strides,
  dilations, padding): 3 of 890 were wrong, and 25 of a grid of 1-8 input
  and output channels. Every wrong one had one input channel, a strided
  width with a single output column and an undilated kernel at least two
  columns wide; some read memory past their operands (values of 1e37).
  With two input channels or more every convolution matched. The whole
  pattern (one contracted channel, a strided width) is kept off oneDNN:
  ``supported`` rejects it and the CPU lowering runs it as
  ``lax.conv_general_dilated``. The fast paths never send it
  (``ONEDNN_MIN_CONTRACTED``)."""
  return rhs_shape[-2] == 1 and window_strides[-1] > 1


def conv(lhs, rhs, window_strides, padding, rhs_dilation=None, preferred_element_type=None,
         rhs_spec=None, lhs_spec=None):
  """The convolution of an ``lhs`` laid out as ``lhs_spec`` says (default
  channels-last) with a ``rhs`` laid out as ``rhs_spec`` says, as
  ``lax.conv_general_dilated`` with these arguments computes it; oneDNN's on
  CPU (products accumulated in float32, the output in
  ``preferred_element_type`` or ``lhs``'s dtype).

  Two spatial axes: ``lhs`` NHWC (n, h, w, i), ``rhs_spec`` a permutation
  of ``"HWIO"`` with H before W (default ``"HWIO"``, (kh, kw, i, o)) ->
  (n, out_h, out_w, o). Three (``lhs`` 5-D, NDHWC): a permutation of
  ``"DHWIO"`` with D, H, W in that order (default ``"DHWIO"``) -> (n, out_d,
  out_h, out_w, o); ``window_strides``, ``padding`` and ``rhs_dilation``
  (default all ones) have an entry per spatial axis. oneDNN reorders every
  kernel into a layout of its own choosing before it runs, so a ``rhs`` in
  another layout costs no copy that the default would not. ``supported``
  and the rules take the kernel's shape in the default layout
  (``hwio_shape``).

  ``lhs_spec``: ``"NHWC"`` (``"NDHWC"``; the default) or channels-first,
  ``"NCHW"`` (``"NCDHW"``); the output is laid out as ``lhs``. oneDNN runs a
  channels-first convolution (``takes_channels_first``) by reordering its
  input to channels-last and its output back inside the call, faster than
  XLA:CPU's transposes around a channels-last call (Intel Xeon with AMX,
  2026-11-28: a 16x128x32x32 -> 256 k4 s2 convolution 13.0 ms against 10.8
  channels-last, 18.3 with XLA's transposes around it).
  ``supported`` and the rules take the channels-last shapes."""
  spatial = _spatial_letters(lhs.ndim)
  lhs_spec = lhs_spec or _channels_last_spec(lhs.ndim)
  if lhs_spec not in (_channels_last_spec(lhs.ndim), "NC" + spatial):
    raise ValueError(f"lhs_spec must be {_channels_last_spec(lhs.ndim)!r} or {'NC' + spatial!r} "
                     f"for a {lhs.ndim}-D lhs, got {lhs_spec!r}")
  rhs_spec = rhs_spec or spatial + "IO"
  if (sorted(rhs_spec) != sorted(spatial + "IO")
      or [d for d in rhs_spec if d in spatial] != list(spatial)):
    raise ValueError(f"rhs_spec must be a permutation of {spatial + 'IO'!r} with "
                     f"{', '.join(spatial)} in that order (lax orders the window's dimensions as "
                     f"the kernel's) for a {lhs.ndim}-D lhs, got {rhs_spec!r}")
  rhs_dilation = (1,) * len(spatial) if rhs_dilation is None else rhs_dilation
  if not len(window_strides) == len(padding) == len(rhs_dilation) == len(spatial):
    raise ValueError(f"window_strides, padding and rhs_dilation need {len(spatial)} entries "
                     f"each (one per spatial axis of a {lhs.ndim}-D lhs), got "
                     f"{window_strides!r}, {padding!r}, {rhs_dilation!r}")
  out_dtype = jnp.dtype(preferred_element_type or lhs.dtype)
  return _conv_p.bind(lhs, rhs, window_strides=tuple(window_strides),
                      padding=tuple(tuple(p) for p in padding),
                      rhs_dilation=tuple(rhs_dilation), out_dtype=out_dtype, rhs_spec=rhs_spec,
                      lhs_spec=lhs_spec)


def _spatial_letters(ndim: int) -> str:
  """The spatial axes' letters of a ``ndim``-D operand: HW or DHW."""
  if ndim not in (4, 5):
    raise ValueError(f"lhs must be 4-D (NHWC) or 5-D (NDHWC), got {ndim} dimensions")
  return "DHW"[5 - ndim:]


def hwio_shape(rhs_shape, rhs_spec="HWIO"):
  """A kernel of ``rhs_shape`` laid out as ``rhs_spec``: its (kh, kw, i, o),
  or (kd, kh, kw, i, o) for a ``"DHWIO"`` permutation."""
  return tuple(rhs_shape[rhs_spec.index(d)] for d in _spatial_letters(len(rhs_shape)) + "IO")


def _output_shape(lhs_shape, rhs_shape, window_strides, padding, rhs_dilation):
  out = tuple(_shapes.conv_output_length(*args) for args in zip(
      lhs_shape[1:-1], rhs_shape[:-2], window_strides, rhs_dilation, padding))
  return (lhs_shape[0], *out, rhs_shape[-1])


def _channels_last_spec(ndim: int) -> str:
  """The default ``lhs_spec`` of a ``ndim``-D operand: NHWC or NDHWC."""
  return "N" + _spatial_letters(ndim) + "C"


def _channels_last(shape, lhs_spec):
  """A shape laid out as ``lhs_spec``, channels-last."""
  return tuple(shape[lhs_spec.index(d)] for d in _channels_last_spec(len(shape)))


def _laid_out(channels_last_shape, lhs_spec):
  """A channels-last shape laid out as ``lhs_spec``."""
  default = _channels_last_spec(len(channels_last_shape))
  return tuple(channels_last_shape[default.index(d)] for d in lhs_spec)


def _lax_conv(lhs, rhs, *, window_strides, padding, rhs_dilation, out_dtype, rhs_spec, lhs_spec):
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding,
                                  rhs_dilation=rhs_dilation,
                                  dimension_numbers=(lhs_spec, rhs_spec, lhs_spec),
                                  precision=lax.Precision.HIGHEST,
                                  preferred_element_type=out_dtype)


def _abstract_eval(lhs, rhs, *, window_strides, padding, rhs_dilation, out_dtype, rhs_spec,
                   lhs_spec):
  shape = _output_shape(_channels_last(lhs.shape, lhs_spec), hwio_shape(rhs.shape, rhs_spec),
                        window_strides, padding, rhs_dilation)
  return jax.core.ShapedArray(_laid_out(shape, lhs_spec), out_dtype)


def backend_config(window_strides, padding, rhs_dilation, rhs_spec="HWIO", lhs_spec=None) -> str:
  """The ``BackendConfig`` JSON of the custom call: input and output laid
  out as ``lhs_spec`` (default channels-last: NHWC, or NDHWC for a
  ``"DHWIO"`` ``rhs_spec``), the kernel as ``rhs_spec``; the window as
  jaxlib 0.10's oneDNN runtime reads it (strides and padding as they are,
  dilations plus one: it subtracts one to get oneDNN's, where 0 is
  undilated)."""
  dims = len(rhs_spec)
  spatial = _spatial_letters(dims)
  lhs_spec = lhs_spec or _channels_last_spec(dims)
  data = {"batch_dim": lhs_spec.index("N"), "feature_dim": lhs_spec.index("C"),
          "spatial_dims": [lhs_spec.index(d) for d in spatial]}
  return json.dumps({"onednn_conv_config": {
      "dims": dims,
      "input": {"dims": dims, "data": data},
      "kernel": {"dims": dims, "filter": {"input_feature_dim": rhs_spec.index("I"),
                                          "output_feature_dim": rhs_spec.index("O"),
                                          "spatial_dims": [rhs_spec.index(d) for d in spatial]}},
      "output": {"dims": dims, "data": data},
      "window": {"pad_left": [lo for lo, _ in padding],
                 "pad_right": [hi for _, hi in padding],
                 "strides": list(window_strides),
                 "window_dilations": list(rhs_dilation)},
      "feature_groups": 1}})


def _sharding_rule(rhs_spec="HWIO", lhs_spec=None):
  """Shardy's rule for the convolution, as ``custom_partitioning`` takes it:
  ``(rule, need_replication_factors)``. The batch ``b`` is parallel and
  the contracted channels ``i`` are a reduction (``_partitioned`` sums the
  shards' outputs); the rest is replicated (a spatial split would need
  halos), the output channels ``o`` too (``_partitioned`` keeps the kernel
  whole but for ``i``)."""
  spatial = _spatial_letters(len(rhs_spec)).lower()
  lhs_spec = (lhs_spec or _channels_last_spec(len(rhs_spec))).lower()
  kernel = {d: "k" + d for d in spatial} | {"i": "i", "o": "o"}
  kernel = [kernel[d] for d in rhs_spec.lower()]
  lhs = [{"n": "b", "c": "i"}.get(d, d) for d in lhs_spec]
  out = [{"n": "b", "c": "o"}.get(d, "o" + d) for d in lhs_spec]
  outputs = ["o" + d for d in spatial]
  factors = ["b", *spatial, "i"] + [f for f in kernel if f != "i"] + outputs
  rule = f"{' '.join(lhs)}, {' '.join(kernel)} -> {' '.join(out)}"
  return rule, tuple(f for f in factors if f not in ("b", "i"))


def spec_axes(spec_entry):
  """A ``PartitionSpec`` entry as a tuple of mesh axis names."""
  if spec_entry is None:
    return ()
  return tuple(spec_entry) if isinstance(spec_entry, (tuple, list)) else (spec_entry,)


def _entry(axes):
  return None if not axes else axes[0] if len(axes) == 1 else axes


def _partition_specs(mesh, lhs, rhs_spec, lhs_spec):
  """The shardings ``_partitioned`` runs the convolution with, from the
  input's (``lhs``, a ``ShapeDtypeStruct`` with its sharding, laid out as
  ``lhs_spec``): the batch as the input's, the contracted channels as the
  input's where they split evenly (the kernel's ``I`` likewise; an uneven
  split would sum the partitioner's padding), the rest whole; ``(lhs, rhs,
  out)`` ``PartitionSpec``s and the contracted channels' mesh axes."""
  ndim = len(lhs_spec)
  spec = tuple(getattr(lhs.sharding, "spec", ())) + (None,) * ndim
  batch = spec_axes(spec[lhs_spec.index("N")])
  contracted = spec_axes(spec[lhs_spec.index("C")])
  if lhs.shape[lhs_spec.index("C")] % math.prod(mesh.shape[a] for a in contracted):
    contracted = ()
  lhs_entries = {"N": _entry(batch), "C": _entry(contracted)}
  out_entries = {"N": _entry(batch)}
  return (P(*[lhs_entries.get(d) for d in lhs_spec]),
          P(*[_entry(contracted) if d == "I" else None for d in rhs_spec]),
          P(*[out_entries.get(d) for d in lhs_spec]), contracted)


@functools.cache
def _partitioned(window_strides, padding, rhs_dilation, out_dtype, rhs_spec, lhs_spec):
  """The custom call as a ``custom_partitioning`` function: on one device
  the call itself; under a sharded ``jit`` each device convolves its own
  share of the batch (without this XLA's partitioner gathers the whole
  input onto every device, which then computes every image), and a split
  of the contracted channels (a kernel gradient's batch) is summed
  across devices (``lax.psum``)."""
  params = dict(window_strides=window_strides, padding=padding, rhs_dilation=rhs_dilation,
                out_dtype=out_dtype, rhs_spec=rhs_spec, lhs_spec=lhs_spec)

  @custom_partitioning
  def conv(lhs, rhs):
    return _raw_p.bind(lhs, rhs, **params)

  def infer(mesh, arg_shapes, result_shape):
    del result_shape
    return NamedSharding(mesh, _partition_specs(mesh, arg_shapes[0], rhs_spec, lhs_spec)[2])

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    lhs, rhs, out, contracted = _partition_specs(mesh, arg_shapes[0], rhs_spec, lhs_spec)

    def lower(lhs, rhs):
      y = _raw_p.bind(lhs, rhs, **params)
      return lax.psum(y, contracted) if contracted else y

    return (mesh, lower, NamedSharding(mesh, out),
            (NamedSharding(mesh, lhs), NamedSharding(mesh, rhs)))

  rule, replicated = _sharding_rule(rhs_spec, lhs_spec)
  conv.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                     reduction_factors=("i",), need_replication_factors=replicated)
  return conv


def _custom_call_lowering(ctx, lhs, rhs, *, window_strides, padding, rhs_dilation, out_dtype,
                          rhs_spec, lhs_spec):
  # A dilation along a one-tap axis changes nothing but crashed oneDNN's
  # bfloat16 convolution (a segfault after its kernel's reorder; a (1, 5,
  # 1, 48) input, a (2, 1, 48, 1) kernel dilated (1, 2)): it gets none.
  taps = hwio_shape(ctx.avals_in[1].shape, rhs_spec)[:-2]
  rhs_dilation = tuple(1 if k == 1 else d for k, d in zip(taps, rhs_dilation))
  rule = jax.ffi.ffi_lowering(
      TARGET, backend_config=backend_config(window_strides, padding, rhs_dilation, rhs_spec,
                                            lhs_spec),
      api_version=1)
  return rule(ctx, lhs, rhs)


def _cpu_lowering(ctx, lhs, rhs, *, window_strides, padding, rhs_dilation, out_dtype,
                  rhs_spec, lhs_spec):
  params = dict(window_strides=window_strides, padding=padding, rhs_dilation=rhs_dilation,
                out_dtype=out_dtype, rhs_spec=rhs_spec, lhs_spec=lhs_spec)
  rhs_shape = hwio_shape(ctx.avals_in[1].shape, rhs_spec)
  out_width = _channels_last(ctx.avals_out[0].shape, lhs_spec)[-2]
  bfloat16 = ctx.avals_in[0].dtype == jnp.bfloat16
  if (miscomputed(rhs_shape, window_strides)
      or (bfloat16 and bfloat16_miscomputed(rhs_shape, window_strides, out_width))
      or ctx.module_context.lowering_parameters.for_export):
    # ``jax.export``: a serialized program must not hold the custom call,
    # whose encoding XLA may change (export refuses it unless told not to).
    return _lax_lowering(ctx, lhs, rhs, **params)
  return mlir.lower_fun(_partitioned(**params), multiple_results=False)(ctx, lhs, rhs)


def _batch(args, dims, **params):
  lhs, rhs = args
  lhs_dim, rhs_dim = dims
  if rhs_dim is not None:  # a kernel per example: lax's convolution
    return jax.vmap(functools.partial(_lax_conv, **params), in_axes=dims)(lhs, rhs), 0
  lhs = jnp.moveaxis(lhs, lhs_dim, 0)
  b, n = lhs.shape[:2]
  y = _conv_p.bind(lhs.reshape(b * n, *lhs.shape[2:]), rhs, **params)
  return y.reshape(b, n, *y.shape[1:]), 0


@functools.partial(jax.jit, static_argnames=("window_strides", "padding", "rhs_dilation",
                                             "out_dtype", "rhs_spec", "lhs_spec"))
def _impl(lhs, rhs, **params):  # outside jit: compiled, as lax's primitives are
  return _conv_p.bind(lhs, rhs, **params)


# The custom call itself, bound only by ``_partitioned``'s functions, which
# the CPU lowering of ``_conv_p`` lowers.
_raw_p = Primitive("jconvt_onednn_conv_call")
_raw_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(_raw_p, _custom_call_lowering, platform="cpu")

def needs_devices_at_lowering(prim: Primitive) -> None:
  """Tells JAX that lowering ``prim`` may lower ``conv`` on CPU, a
  ``custom_partitioning`` function, which needs the devices at lowering
  time (JAX looks for such primitives in the jaxpr; no public API
  registers one)."""
  getattr(dispatch, "prim_requires_devices_during_lowering", set()).add(prim)


_conv_p = Primitive("jconvt_onednn_conv")
needs_devices_at_lowering(_conv_p)
_conv_p.def_impl(_impl)
_conv_p.def_abstract_eval(_abstract_eval)
_lax_lowering = mlir.lower_fun(_lax_conv, multiple_results=False)
mlir.register_lowering(_conv_p, _lax_lowering)
mlir.register_lowering(_conv_p, _cpu_lowering, platform="cpu")
ad.defjvp(_conv_p,
          lambda g, lhs, rhs, **params: _lax_conv(g, rhs, **params),
          lambda g, lhs, rhs, **params: _lax_conv(lhs, g, **params))
batching.primitive_batchers[_conv_p] = _batch
