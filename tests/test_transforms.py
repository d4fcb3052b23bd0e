"""jit, grad, vmap, dtypes, precision, sharding, and the cases beyond TF."""

import contextlib
import math
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

import jconvt
from jconvt import ConvTransposeConfig
from conftest import assert_close, eigen_route, gpu_rules, large_input_paths

ALGORITHMS = ("dilated", "phase", "col2im", "auto")


def _data(x_shape=(2, 5, 4, 3), k_shape=(3, 3, 4, 3), seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(x_shape), dtype)
  params = {"kernel": jnp.asarray(rng.standard_normal(k_shape), dtype),
            "bias": jnp.asarray(rng.standard_normal(k_shape[2]), dtype)}
  return params, x


def test_config_equal_and_hashable():
  a = ConvTransposeConfig(strides=2, padding="SAME", output_padding=[1, 1],
                          activation="ReLU", precision="highest")
  b = ConvTransposeConfig(strides=(2, 2), padding="same", output_padding=1,
                          activation="relu", precision=lax.Precision.HIGHEST)
  assert a == b and hash(a) == hash(b)
  assert a.strides == (2, 2) and a.output_padding == (1, 1) and a.activation == "relu"
  assert a != a.replace(strides=3)
  assert jax.tree_util.tree_leaves(a) == []
  with pytest.raises(dataclasses_frozen_error()):
    a.strides = (1, 1)


def dataclasses_frozen_error():
  import dataclasses
  return dataclasses.FrozenInstanceError


def test_equal_configs_never_retrace():
  traces = []

  @jax.jit
  def f(params, x, cfg):
    traces.append(cfg)
    return jconvt.conv2d_transpose(params, x, cfg)

  params, x = _data()
  f(params, x, ConvTransposeConfig(2, "same", activation="relu"))
  f(params, x, ConvTransposeConfig((2, 2), "SAME", activation="ReLU"))
  f(params, x + 1, ConvTransposeConfig(2, "Same", activation="relu"))
  assert len(traces) == 1
  f(params, x, ConvTransposeConfig(2, "valid"))
  assert len(traces) == 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("strides,padding,dilation", [
    (2, "same", 1), ((3, 2), "valid", 1), (1, "same", 2), (2, "same", 2)])
def test_check_grads(algorithm, strides, padding, dilation):
  params, x = _data(x_shape=(2, 3, 4, 2), k_shape=(3, 2, 3, 2))
  if algorithm == "phase" and dilation != 1:
    with pytest.raises(ValueError, match=r"`algorithm` \(='phase'\) needs `dilation_rate`"):
      ConvTransposeConfig(strides, padding, dilation_rate=dilation, algorithm=algorithm)
    return
  cfg = ConvTransposeConfig(strides, padding, dilation_rate=dilation,
                            algorithm=algorithm)
  f = lambda k, b, x: jconvt.conv2d_transpose({"kernel": k, "bias": b}, x, cfg)
  with jax.default_matmul_precision("highest"):
    check_grads(f, (params["kernel"], params["bias"], x), order=1, modes=["rev"],
                atol=5e-2, rtol=5e-2, eps=1e-2)


def test_second_order_reverse_mode():
  """Hessian-vector products (reverse over reverse) through every algorithm,
  and through the plan ``auto`` runs on NVIDIA GPUs, equal the reference's;
  also with respect to the kernel."""
  params, x = _data(x_shape=(1, 3, 3, 2), k_shape=(3, 3, 2, 2))
  runs = [(algorithm, contextlib.nullcontext()) for algorithm in ALGORITHMS]
  runs.append(("auto", gpu_rules()))
  for algorithm, rules in runs:
    cfg = ConvTransposeConfig(2, "same", activation="tanh", algorithm=algorithm)
    loss = lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg) ** 3)
    with rules:
      hvp = jax.grad(lambda p, x: jnp.vdot(jax.grad(loss, argnums=1)(p, x), jnp.ones_like(x)),
                     argnums=(0, 1))(params, x)
    if algorithm == "dilated":
      ref = hvp
    else:
      for a, b in zip(jax.tree.leaves(hvp), jax.tree.leaves(ref)):
        assert_close(a, b)


@pytest.mark.parametrize("algorithm,rules", [
    ("auto", "cpu"), ("auto", "large inputs"), ("auto", "gpu"), ("phase", "cpu"),
    ("phase", "large inputs"), ("col2im", "cpu"), ("col2im", "large inputs")])
def test_forward_mode(algorithm, rules):
  """Forward-mode autodiff (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``:
  forward over reverse), reverse over forward and ``jax.linear_transpose``
  through every algorithm, with ``auto``'s CPU rules, its paths for large
  inputs and its NVIDIA GPU plan, equal the reference's; with respect to
  the input, the kernel and the bias. (A ``jax.custom_vjp`` refused
  forward mode with a ``TypeError``.)"""
  params, x = _data(x_shape=(2, 3, 3, 2), k_shape=(3, 3, 2, 2))
  context = {"cpu": contextlib.nullcontext, "large inputs": large_input_paths,
             "gpu": gpu_rules}[rules]

  def results(algorithm):
    cfg = ConvTransposeConfig(2, "same", activation="tanh", algorithm=algorithm)
    f = lambda p, x: jconvt.conv2d_transpose(p, x, cfg)
    loss = lambda p, x: jnp.sum(f(p, x) ** 3)
    tangents = jax.tree.map(lambda a: jnp.cos(a) * 0.5, (params, x))
    linear = ConvTransposeConfig(2, "same", algorithm=algorithm)
    conv = lambda x: jconvt.conv2d_transpose({"kernel": params["kernel"]}, x, linear)
    with context():
      return (jax.jvp(f, (params, x), tangents),
              jax.jacfwd(f, argnums=(0, 1))(params, x[:1]),
              jax.hessian(loss, argnums=(0, 1))(params, x[:1, :2, :2]),
              jax.grad(lambda p: jnp.sum(jax.jvp(lambda x: f(p, x), (x,), (tangents[1],))[1]
                                         ** 2))(params),
              jax.linear_transpose(conv, x)(conv(x)))

  for a, b in zip(jax.tree.leaves(results(algorithm)), jax.tree.leaves(results("dilated"))):
    assert_close(a, b)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_vmap_over_leading_dims_and_params(algorithm):
  params, x = _data(x_shape=(3, 2, 5, 4, 3))
  cfg = ConvTransposeConfig(2, "same", algorithm=algorithm)
  y = jax.vmap(jconvt.conv2d_transpose, in_axes=(None, 0, None))(params, x, cfg)
  for i in range(3):
    assert_close(y[i], jconvt.conv2d_transpose(params, x[i], cfg))
  stacked = jax.tree_util.tree_map(lambda p: jnp.stack([p, 2 * p]), params)
  y2 = jax.vmap(jconvt.conv2d_transpose, in_axes=(0, None, None))(stacked, x[0], cfg)
  assert_close(y2[1], 2 * y2[0])  # kernel and bias both doubled
  g = jax.vmap(jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg) ** 2)),
               in_axes=(None, 0))(params, x)
  assert g["kernel"].shape == (3,) + params["kernel"].shape


def test_linear_transpose_in_input_and_kernel_at_once_is_refused():
  params, x = _data()
  cfg = ConvTransposeConfig(2, "same", algorithm="phase")
  f = lambda x, k: jconvt.conv2d_transpose({"kernel": k}, x, cfg)
  with pytest.raises(ValueError, match="linear in the input or the kernel, not in both"):
    jax.linear_transpose(f, x, params["kernel"])(f(x, params["kernel"]))


@pytest.mark.parametrize("algorithm", ALGORITHMS[1:])
def test_vmap_over_kernels_runs_each_on_the_fast_path(algorithm):
  """An ensemble (kernels mapped by ``jax.vmap``, the input shared or
  mapped too): forward, reverse- and forward-mode derivatives equal each
  member's own, and the compiled training step holds no grouped
  convolution (``jax.vmap`` of the former custom VJP batched its
  convolutions into grouped ones, XLA:CPU's slow path); each member runs
  the fast path in turn."""
  params, x = _data(x_shape=(2, 8, 8, 4), k_shape=(4, 4, 6, 4))
  kernels = jnp.stack([params["kernel"] * s for s in (1.0, -0.5, 2.0)])
  xs = jnp.stack([x, jnp.sin(x), -x])
  cfg = ConvTransposeConfig(2, "same", algorithm=algorithm)
  f = lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, cfg)
  loss = lambda k, x: jnp.sum(jnp.tanh(f(k, x)) ** 2)
  for in_axes, x_in in (((0, None), x), ((0, 0), xs)):
    member = lambda i: x_in[i] if in_axes[1] == 0 else x_in
    ys = jax.vmap(f, in_axes)(kernels, x_in)
    grads = jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes)(kernels, x_in)
    _, tangents = jax.jvp(jax.vmap(f, in_axes), (kernels, x_in), (jnp.cos(kernels), x_in))
    step = jax.jit(jax.grad(lambda k, x: jnp.sum(jax.vmap(loss, in_axes)(k, x)), argnums=(0, 1)))
    whole = step(kernels, x_in)
    for i in range(3):
      assert_close(ys[i], f(kernels[i], member(i)))
      one = jax.grad(loss, argnums=(0, 1))(kernels[i], member(i))
      assert_close(grads[0][i], one[0])
      assert_close(grads[1][i], one[1])
      assert_close(whole[0][i], one[0])
      _, tangent = jax.jvp(f, (kernels[i], member(i)), (jnp.cos(kernels[i]), member(i)))
      assert_close(tangents[i], tangent)
    hlo = step.lower(kernels, x_in).compile().as_text()
    assert "feature_group_count" not in hlo and "batch_group_count" not in hlo


def test_vmap_of_the_gpu_plan_gradients():
  """The plan ``auto`` runs on NVIDIA GPUs, batched by ``jax.vmap`` over
  extra leading dims: per-example gradients equal the unbatched ones."""
  params, x = _data(x_shape=(3, 2, 5, 4, 3))
  cfg = ConvTransposeConfig(2, "same")
  grad = jax.grad(lambda p, x: jnp.sum(jnp.sin(jconvt.conv2d_transpose(p, x, cfg))),
                  argnums=(0, 1))
  with gpu_rules():
    batched = jax.vmap(grad, in_axes=(None, 0))(params, x)
    for i in range(3):
      single = grad(params, x[i])
      for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(batched)):
        assert_close(b[i], a)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_dtypes_follow_input(dtype, algorithm):
  params, x = _data(dtype=np.float32)
  cfg = ConvTransposeConfig(2, "same", algorithm=algorithm)
  y = jconvt.conv2d_transpose(params, x.astype(dtype), cfg)
  assert y.dtype == dtype
  ref = jconvt.reference_conv2d_transpose(
      np.asarray(x.astype(dtype), np.float32), np.asarray(params["kernel"].astype(dtype), np.float32),
      np.asarray(params["bias"].astype(dtype), np.float32), cfg)
  assert_close(y, ref, dtype=dtype)
  g = jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg).astype(jnp.float32)),
               argnums=(0, 1))(jax.tree_util.tree_map(lambda a: a.astype(dtype), params),
                               x.astype(dtype))
  assert g[0]["kernel"].dtype == dtype and g[1].dtype == dtype


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_preferred_element_type(algorithm):
  params, x = _data()
  p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
  cfg = ConvTransposeConfig(2, "same", preferred_element_type=jnp.float32, algorithm=algorithm)
  y = jconvt.conv2d_transpose(p16, x.astype(jnp.bfloat16), cfg)
  assert y.dtype == jnp.float32
  ref = jconvt.reference_conv2d_transpose(
      np.asarray(x.astype(jnp.bfloat16), np.float32),
      np.asarray(p16["kernel"], np.float32), np.asarray(p16["bias"], np.float32), cfg)
  assert_close(y, ref)  # bf16 inputs, exact float32 accumulation


@pytest.mark.parametrize("kernel_size,strides", [(4, 2), (3, 2), (2, 2), (3, 1)])
def test_bfloat16_gradients_match_float32(kernel_size, strides):
  """``auto``'s gradients of bfloat16 inputs (the float32-accumulated GEMMs
  at stride > 1) against the float32 reference path's on the same values."""
  params, x = _data((2, 5, 6, 16), (kernel_size, kernel_size, 24, 16))
  params = {"kernel": params["kernel"].astype(jnp.bfloat16)}
  x = x.astype(jnp.bfloat16)
  dy = jnp.asarray(np.random.default_rng(2).standard_normal(jconvt.output_shape(
      x.shape, params["kernel"].shape, ConvTransposeConfig(strides, "same"))), jnp.bfloat16)

  def grads(p, x, algorithm):
    cfg = ConvTransposeConfig(strides, "same", algorithm=algorithm)
    return jax.grad(lambda p, x: jnp.sum((jconvt.conv2d_transpose(p, x, cfg) * dy)
                                         .astype(jnp.float32)), argnums=(0, 1))(p, x)

  got = grads(params, x, "auto")
  want = grads(*jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), (params, x)), "dilated")
  assert got[1].dtype == jnp.bfloat16
  assert_close(got[1], want[1], dtype=jnp.bfloat16)
  assert_close(got[0]["kernel"], want[0]["kernel"], dtype=jnp.bfloat16)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_16_bit_bias_gradient_sums_in_float32(dtype, data_format):
  """The bias gradient sums ``dy`` over 8 x 32 x 32 output pixels in
  float32, rounded once to ``dtype``: summed in the 16-bit type (XLA:CPU's
  transpose of the broadcast, and TF's ``BiasAddGrad``) these sums were off
  by 8-16% in bfloat16 and 1.4% in float16. The forward is unchanged: the
  16-bit sum of the convolution and the bias, bit for bit."""
  cfg = ConvTransposeConfig(2, "same", data_format=data_format)
  x_shape = (8, 16, 16, 32) if data_format == "channels_last" else (8, 32, 16, 16)
  params, x = _data(x_shape, (4, 4, 3, 32), dtype=np.float32)
  params, x = jax.tree_util.tree_map(lambda a: a.astype(dtype), (params, x))
  dy = jnp.asarray(np.random.default_rng(3).standard_normal(
      jconvt.output_shape(x.shape, params["kernel"].shape, cfg)), dtype)
  y, vjp = jax.vjp(lambda p: jconvt.conv2d_transpose(p, x, cfg), params)
  axes = (0, 1, 2) if data_format == "channels_last" else (0, 2, 3)
  want = np.asarray(dy, np.float64).sum(axes)
  got = vjp(dy)[0]["bias"]
  assert got.dtype == dtype
  # Within one rounding to the 16-bit type (and float32's summation error).
  np.testing.assert_allclose(np.asarray(got, np.float64), want,
                             rtol=float(jnp.finfo(dtype).eps), atol=1e-3)
  unbiased = jconvt.conv2d_transpose({"kernel": params["kernel"]}, x, cfg)
  shape = (1, 1, 1, -1) if data_format == "channels_last" else (1, -1, 1, 1)
  np.testing.assert_array_equal(np.asarray(y, np.float32),
                                np.asarray(unbiased + params["bias"].reshape(shape), np.float32))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_precision_reaches_hlo(algorithm):
  params, x = _data()

  def hlo(precision):
    with jax.default_matmul_precision("bfloat16"):  # None -> DEFAULT
      return _hlo(precision)

  def _hlo(precision):
    cfg = ConvTransposeConfig(2, "same", precision=precision, algorithm=algorithm)
    return jax.jit(jconvt.conv2d_transpose).lower(params, x, cfg).as_text()

  assert "HIGHEST" in hlo("highest")
  assert "HIGHEST" not in hlo(None)
  with jax.default_matmul_precision("bfloat16"):
    grad_hlo = jax.jit(jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(
        p, x, ConvTransposeConfig(2, "same", precision="highest", algorithm=algorithm))))).lower(
            params, x).as_text()
  assert grad_hlo.count("HIGHEST") >= 2


@pytest.mark.usefixtures("without_onednn")
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolution layouts")
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("strides,dilation,size,filters", [
    (1, 1, 4, 6), (1, 1, 24, 6), (2, 1, 4, 6), (2, 1, 24, 6), (1, 2, 24, 6), (2, 2, 24, 6),
    (1, 1, 24, 12), (1, 2, 24, 12)])  # 12 filters > 8 channels: swapped kernel gradient
@pytest.mark.parametrize("nested_jit", [False, True])
def test_cpu_training_step_convolutions_are_canonical(data_format, strides, dilation, size,
                                                      filters, nested_jit):
  """Every convolution of the fast path's training step reaches XLA:CPU in
  its canonical layout (``b01f_01io->b01f``), the only one it runs on its
  fast (Eigen) path: others fall to a naive loop 10-20x slower. A kernel
  gradient left to XLA's layout pass lost it when the forward sat in its
  own ``jax.jit``."""
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation, data_format=data_format)
  x = jnp.ones((2, size, size, 8) if data_format == "channels_last" else (2, 8, size, size))
  params = {"kernel": jnp.ones((3, 3, filters, 8)), "bias": jnp.zeros((filters,))}
  f = lambda p, x: jconvt.conv2d_transpose(p, x, cfg)
  f = jax.jit(f) if nested_jit else f
  step = jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x) ** 2), argnums=(0, 1)))
  convs = [line for line in step.lower(params, x).compile().as_text().splitlines()
           if " convolution(" in line]
  assert convs  # every configuration here has at least one convolution
  for line in convs:
    assert "dim_labels=b01f_01io->b01f" in line, line


def _convolution_windows(compiled):
  """``(input height, width, window height, width)`` of every convolution in
  a compiled program, the input and window dilated (``lhs_dilate``,
  ``rhs_dilate``); its lines are printed with operand shapes, in the
  canonical ``b01f`` layout."""
  hlo = pytest.importorskip("jaxlib._hlo")
  options = hlo.HloPrintOptions.short_parsable()
  options.print_operand_shape = True
  windows = []
  for module in compiled.runtime_executable().hlo_modules():
    for line in module.to_string(options).splitlines():
      if " convolution(" not in line:
        continue
      assert "dim_labels=b01f_01io->b01f" in line, line
      h, w = map(int, re.search(r" convolution\(\w+\[\d+,(\d+),(\d+),", line).groups())
      kh, kw = map(int, re.search(r"window=\{size=(\d+)x(\d+)", line).groups())
      lhs = re.search(r"lhs_dilate=(\d+)x(\d+)", line)
      lh, lw = map(int, lhs.groups()) if lhs else (1, 1)
      dilate = re.search(r"rhs_dilate=(\d+)x(\d+)", line)
      dh, dw = map(int, dilate.groups()) if dilate else (1, 1)
      windows.append(((h - 1) * lh + 1, (w - 1) * lw + 1, (kh - 1) * dh + 1, (kw - 1) * dw + 1))
  return windows


@pytest.mark.usefixtures("without_onednn")
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolutions")
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("x_shape,filters,kernel,strides,padding,dilation", [
    ((4, 16, 16, 8), 32, 3, 1, "valid", 1),   # stride 1, fewer input channels than filters
    ((4, 16, 16, 3), 64, 5, 1, "valid", 1),
    ((4, 16, 16, 8), 16, 3, 1, "valid", 2),
    ((4, 16, 16, 8), 32, 3, 1, "same", 1),    # the swapped kernel gradient
    ((8, 1, 1, 16), 32, 4, 1, "valid", 1),    # a latent: the phase kernel exceeds x
    ((8, 1, 1, 16), 32, 7, 1, "valid", 1),
    ((4, 2, 2, 32), 16, 5, 2, "same", 1),     # k5 exceeds the 4x4 dy: taps
    ((4, 4, 4, 32), 16, 9, 2, "same", 1),     # k9 exceeds the 8x8 dy: the phase GEMMs
    ((4, 2, 3, 16), 16, 3, 1, "same", 1),     # 3 rows exceed 2
    ((4, 4, 4, 16), 16, 7, 1, "same", 1),     # 49 taps: the phase GEMMs at stride 1
])
def test_cpu_training_step_convolutions_fit_their_kernels(x_shape, filters, kernel, strides,
                                                          padding, dilation, data_format):
  """No convolution of the fast path's training step has a kernel (dilated)
  larger than its input, which XLA:CPU (jaxlib 0.10) runs 10-30x slower: the
  stride-1 kernel gradient with its roles swapped (``dy`` as the kernel) is
  kept to layers whose ``dy`` is no larger than ``x``, and on small inputs
  whose phase convolutions or input-gradient convolution would have such a
  kernel, ``auto`` runs col2im and GEMMs instead, or oneDNN's convolution
  (a custom call, not XLA's), which takes such kernels at full speed."""
  cfg = ConvTransposeConfig(strides, padding, dilation_rate=dilation, data_format=data_format)
  n, h, w, c = x_shape
  x = jnp.ones(x_shape if data_format == "channels_last" else (n, c, h, w))
  params = {"kernel": jnp.ones((kernel, kernel, filters, c))}
  step = jax.jit(jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg) ** 2),
                          argnums=(0, 1)))
  windows = _convolution_windows(step.lower(params, x).compile())
  assert windows  # each of these steps keeps a convolution (the kernel gradient's)
  for h, w, kh, kw in windows:
    assert kh <= h and kw <= w, windows


def test_eigen_route_rule():
  """``_convolve`` routes a float32 or bfloat16 gradient convolution to
  Eigen with at least 8 contracted and 32 output channels and 2**24
  multiply-adds, where YNNPACK would take it: not with negative padding, nor
  where the kernel or the output is larger than the input (Eigen runs those
  already)."""
  from jconvt._algorithms import _eigen_beats_ynnpack
  f32, same = jnp.float32, ((1, 1), (1, 1))

  def rule(lhs, rhs, strides=(2, 2), padding=same, dilation=(1, 1), dtype=f32):
    return _eigen_beats_ynnpack(lhs, rhs, strides, padding, dilation, dtype)

  # dcgan 8->16's input gradient: dy (16, 16, 16, 256) with the HWIO kernel.
  assert rule((16, 16, 16, 256), (4, 4, 256, 512))
  assert rule((16, 16, 16, 256), (4, 4, 256, 512), dtype=jnp.bfloat16)
  assert not rule((16, 16, 16, 256), (4, 4, 256, 512), dtype=jnp.float16)  # not YNNPACK's
  assert not rule((16, 16, 16, 3), (4, 4, 3, 512))       # an RGB output's dy: 3 contracted
  assert not rule((16, 16, 16, 256), (4, 4, 256, 16))    # 16 output channels
  assert not rule((2, 16, 16, 64), (4, 4, 64, 64))       # 2**23 multiply-adds
  assert rule((4, 16, 16, 64), (4, 4, 64, 64))           # 2**24
  assert not rule((16, 16, 16, 256), (4, 4, 256, 512), padding=((1, -1), (1, 1)))
  assert not rule((16, 4, 4, 256), (5, 5, 256, 512), (1, 1), ((2, 2), (2, 2)))  # k5 > 4
  # The kernel gradient's convolution: x (dilated by the stride) as its kernel.
  assert rule((256, 16, 16, 16), (8, 8, 16, 512), (1, 1), same, (2, 2))
  # Output one row taller than the input (``_taller_than_input``): on Eigen already.
  assert rule((16, 16, 16, 256), (3, 3, 256, 256), (1, 1), ((1, 1), (1, 1)))
  assert not rule((16, 16, 16, 256), (3, 3, 256, 256), (1, 1), ((1, 2), (1, 1)))


@pytest.mark.parametrize("lhs_shape,rhs_shape,strides,padding,rhs_dilation", [
    ((2, 9, 7, 5), (3, 3, 5, 4), (2, 2), ((1, 1), (0, 2)), (1, 1)),
    ((2, 8, 8, 4), (2, 3, 4, 6), (1, 3), ((0, 0), (2, 1)), (2, 2)),
    ((1, 6, 11, 3), (4, 4, 3, 2), (3, 2), ((2, 1), (1, 2)), (1, 2)),
    ((3, 5, 5, 2), (1, 1, 2, 3), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((2, 4, 1, 3), (2, 1, 3, 2), (1, 1), ((1, 0), (0, 0)), (1, 1)),  # width 1
])
def test_eigen_route_computes_the_same_convolution(lhs_shape, rhs_shape, strides, padding,
                                                   rhs_dilation):
  """``_convolve``'s Eigen route (input dilated by 2 along the width, window
  stride, padding and kernel dilation there doubled) is the plain
  convolution: same shape and values, any stride, padding and dilation."""
  from jconvt._algorithms import _convolve
  rng = np.random.default_rng(0)
  lhs = jnp.asarray(rng.standard_normal(lhs_shape), jnp.float32)
  rhs = jnp.asarray(rng.standard_normal(rhs_shape), jnp.float32)

  def conv(on_cpu):
    return lambda l, r: _convolve(l, r, strides, padding, rhs_dilation,
                                  precision=lax.Precision.HIGHEST, on_cpu=on_cpu)

  with eigen_route():
    routed = jax.jit(conv(True))
    text = routed.lower(lhs, rhs).as_text()
    got = routed(lhs, rhs)
  assert _input_dilated(text), text
  assert not _input_dilated(jax.jit(conv(False)).lower(lhs, rhs).as_text())
  expected = lax.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=rhs_dilation,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=lax.Precision.HIGHEST)
  assert got.shape == expected.shape
  assert_close(got, expected)


def _input_dilated(stablehlo_text):
  """Whether any convolution in StableHLO text dilates its input."""
  return any(d != ("1", "1") for d in re.findall(r"lhs_dilate = \[(\d+), (\d+)\]", stablehlo_text))


def _ynn_fused(hlo_text):
  """The bodies of a compiled CPU module's YNNPACK fusions (``__ynn_fusion``)."""
  bodies = []
  for name in re.findall(r"calls=%([\w.\-]+).*__ynn_fusion", hlo_text):
    match = re.search(r"\n%" + re.escape(name) + r" .*?\n}", hlo_text, re.S)
    bodies.append(match.group(0))
  return bodies


@pytest.mark.usefixtures("without_onednn")
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolutions")
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("batch,kernel,strides", [(2, 4, 2), (8, 3, 1)])
def test_cpu_training_step_takes_the_eigen_route(batch, kernel, strides, data_format):
  """Layers large enough for the rule (2x16x16x64 -> 64 k4 s2, 8x16x16x64
  -> 64 k3 s1): the input gradient's convolution (and at stride 1 the
  kernel gradient's) is written input-dilated, XLA:CPU keeps it out of
  YNNPACK (on Eigen), and the gradients equal the reference's."""
  cfg = ConvTransposeConfig(strides, "same", data_format=data_format)
  x_shape = (batch, 16, 16, 64) if data_format == "channels_last" else (batch, 64, 16, 16)
  k_shape = (kernel, kernel, 64, 64)
  params, x = _data(x_shape, k_shape)
  dy = jnp.asarray(np.random.default_rng(1).standard_normal(
      jconvt.output_shape(x_shape, k_shape, cfg)), jnp.float32)

  def step(algorithm):
    c = cfg.replace(algorithm=algorithm)
    return jax.jit(jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, c) * dy),
                            argnums=(0, 1)))

  text = step("auto").lower(params, x).compile().as_text()
  routed = [line for line in text.splitlines()
            if " convolution(" in line and "lhs_dilate=1x2" in line]
  assert len(routed) == (1 if strides == 2 else 2), text
  assert not any("lhs_dilate" in body for body in _ynn_fused(text))
  got, ref = step("auto")(params, x), step("dilated")(params, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    assert_close(a, b)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolutions")
def test_cpu_hands_the_plain_gradient_convolution_to_ynnpack():
  """The route's premise, and a check that ``_ynn_fused`` finds what the
  test above looks for: XLA:CPU puts the plain form of dcgan 8->16's input
  gradient convolution in a YNNPACK fusion and the routed form outside one.
  Should a jaxlib change this, re-measure ``_eigen_beats_ynnpack``."""
  from jconvt._algorithms import _convolve
  dy, kernel = jnp.ones((16, 16, 16, 256)), jnp.ones((4, 4, 256, 512))

  def compiled(on_cpu):
    conv = lambda d, k: _convolve(d, k, (2, 2), ((1, 1), (1, 1)), precision=None, on_cpu=on_cpu)
    return jax.jit(conv).lower(dy, kernel).compile().as_text()

  assert any(" convolution(" in body for body in _ynn_fused(compiled(False)))
  assert not any(" convolution(" in body for body in _ynn_fused(compiled(True)))


@pytest.mark.usefixtures("without_onednn")
def test_eigen_route_is_lowered_for_cpu_only():
  """An explicit ``phase`` (the CPU's plan on every backend) lowered for CPU
  writes the input gradient's convolution input-dilated; lowered for CUDA
  or ROCm, none of its convolutions is."""
  cfg = ConvTransposeConfig(2, "same", algorithm="phase")
  params, x = _data((2, 16, 16, 64), (4, 4, 64, 64))
  step = jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg) ** 2), argnums=(0, 1))
  assert _input_dilated("\n".join(_lowered_convolutions(step, (params, x), "cpu")))
  for platform in ("cuda", "rocm"):
    convs = _lowered_convolutions(step, (params, x), platform)
    assert convs and not _input_dilated("\n".join(convs))


@pytest.mark.parametrize("batch", [1, 2, 6, 7, 12, 16, 36])
@pytest.mark.parametrize("canvas_pixels", [1, 25, 81, 289, 1089, 4356])
def test_kernel_gradient_chunks_are_the_fewest_images_that_fill_a_chunk(batch, canvas_pixels):
  from jconvt._algorithms import KERNEL_GRAD_CHUNK_ROWS, _kernel_grad_chunk
  chunk = _kernel_grad_chunk(batch, canvas_pixels)
  fits = [b for b in range(1, batch + 1)
          if batch % b == 0 and b * canvas_pixels >= KERNEL_GRAD_CHUNK_ROWS]
  assert chunk == (fits[0] if fits else batch)


@pytest.mark.parametrize("x_shape,kernel_shape,strides,dilation,expected", [
    ((1, 16, 16, 256), (4, 4, 128, 256), 2, 1, "col2im"),  # deep input
    ((2, 16, 16, 64), (4, 4, 64, 64), 2, 1, "phase"),  # shallow input, deep output
    ((2, 16, 16, 64), (4, 4, 3, 64), 2, 1, "col2im"),  # an RGB output
    ((2, 16, 16, 64), (3, 3, 64, 64), 2, 1, "col2im"),  # phase would waste 7 of 16 taps
    ((2, 16, 16, 3), (3, 3, 32, 3), 1, 1, "phase"),  # stride 1, 3 -> 32
    ((2, 16, 16, 3), (3, 3, 32, 3), 1, 2, "col2im"),  # dilated: no phase
    ((1, 16, 16, 256), (5, 5, 128, 256), 1, 1, "col2im"),  # 25 taps per pixel
    ((1, 16, 16, 256), (7, 7, 128, 256), 1, 1, "phase"),  # 49
    ((1, 16, 16, 256), (9, 9, 128, 256), 2, 1, "col2im"),  # 25
    ((1, 16, 16, 256), (11, 11, 128, 256), 2, 1, "phase"),  # 36
    ((1, 16, 16, 256), (7, 7, 128, 256), 1, 2, "dilated"),
    ((4, 32, 32, 64), (4, 4, 64, 64), 2, 1, "phase"),  # large input
    ((4, 32, 32, 64), (4, 4, 64, 64), 1, 2, "dilated"),
    # The phase convolution's kernel would exceed the input (small inputs):
    ((64, 1, 1, 100), (4, 4, 512, 100), 1, 1, "col2im"),  # a latent, not phase
    ((64, 1, 1, 100), (7, 7, 256, 100), 1, 1, "col2im"),  # 49 taps per pixel
    ((4, 8, 8, 128), (9, 9, 128, 128), 1, 1, "col2im"),  # 81
    ((64, 4, 4, 128), (11, 11, 128, 128), 2, 1, "col2im"),  # 6 taps per phase > 4
    ((2, 16, 16, 64), (4, 4, 64, 64), 2, 1, "phase"),  # 2 taps per phase fit
    ((128, 4, 4, 128), (9, 9, 128, 128), 1, 1, "col2im"),  # 2048 pixels: chunked
])
def test_auto_forward_rule(x_shape, kernel_shape, strides, dilation, expected, monkeypatch):
  """The forward ``auto`` picks on CPU, per the documented rule (without
  oneDNN; with it, ``test_large_kernels_on_onednn``)."""
  from jconvt._algorithms import _forward_algorithm
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  assert _forward_algorithm(cfg, x_shape, kernel_shape) == expected


@pytest.mark.parametrize("x_shape,kernel_shape,strides,expected", [
    ((4, 8, 8, 128), (9, 9, 128, 128), 1, ("phase", "conv", "conv")),  # the edge suite's
    ((16, 4, 4, 128), (7, 7, 128, 128), 1, ("phase", "conv", "conv")),
    ((16, 4, 4, 256), (9, 9, 128, 256), 2, ("col2im", "conv", "conv")),  # 4x4 -> 8x8
    ((16, 2, 2, 256), (5, 5, 128, 256), 1, ("col2im", "taps", "conv")),  # 2x2: col2im, taps
    ((64, 2, 2, 256), (5, 5, 128, 256), 2, ("col2im", "taps", "taps")),
    ((64, 1, 1, 100), (7, 7, 256, 100), 1, ("col2im", "taps", "conv")),  # a latent: 1x1
])
def test_large_kernels_on_onednn(x_shape, kernel_shape, strides, expected, monkeypatch):
  """Where a convolution's kernel exceeds its input, oneDNN runs it as
  well as any other (it skips the padding's taps), unlike XLA:CPU's own:
  at stride 1 on images of 4x4 and more ``auto`` keeps the phase forward
  (``_large_kernel_on_onednn``), and the input gradient is the convolution
  where it would have been the phase GEMMs (``_input_grad_conv_on_onednn``);
  without oneDNN col2im and the taps (their windows of ``dy`` at most
  ``TAPS_MAX_WINDOW_BYTES``)."""
  cfg = ConvTransposeConfig(strides, "same")
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  assert tuple(jconvt.algorithm_plan(x_shape, kernel_shape, cfg, platform="cpu")) == expected
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  plan = jconvt.algorithm_plan(x_shape, kernel_shape, cfg, platform="cpu")
  assert plan.forward == "col2im"
  assert plan.input_gradient == {"conv": "taps"}.get(expected[1], expected[1])


def _assert_matches_the_reference(x_shape, kernel_shape, cfg):
  """``auto``'s output and gradients (a weighted sum's) equal the dilated
  reference's and ``_reference_gradients``'."""
  x, kernel, dy, _, want_dx, want_dk = _reference_gradients(x_shape, kernel_shape, cfg)
  f = lambda x, k, c: jconvt.conv2d_transpose({"kernel": k}, x, c)
  assert_close(f(x, kernel, cfg), f(x, kernel, cfg.replace(algorithm="dilated")))
  dx, dk = jax.grad(lambda x, k: jnp.sum(f(x, k, cfg) * dy), argnums=(0, 1))(x, kernel)
  assert_close(dx, want_dx)
  assert_close(dk, want_dk)


@pytest.mark.skipif(jax.default_backend() != "cpu" or not jconvt._onednn._default_enabled(),
                    reason="oneDNN runs on XLA:CPU, x86-64, a verified jaxlib")
@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding", [
    ((2, 4, 5, 8), (7, 7, 8, 8), 1, "same"),
    ((2, 4, 4, 8), (9, 5, 8, 8), 1, "valid"),
    ((2, 4, 4, 8), (9, 9, 8, 8), 2, "same"),
])
def test_large_kernels_on_onednn_match_the_reference(x_shape, kernel_shape, strides, padding):
  """The plans of ``test_large_kernels_on_onednn`` (the phase forward and
  the input gradient's convolution on oneDNN with a kernel larger than
  their input) give the reference's output and gradients."""
  cfg = ConvTransposeConfig(strides, padding)
  plan = jconvt.algorithm_plan(x_shape, kernel_shape, cfg)
  assert plan.input_gradient == "conv" and plan.forward == ("phase" if strides == 1 else "col2im")
  _assert_matches_the_reference(x_shape, kernel_shape, cfg)


@pytest.mark.parametrize("padding,in_hw,kernel_hw,dilation,out_h", [
    (((1, 1), (1, 1)), (32, 32), (3, 3), (1, 1), 33),   # 'same': one row more
    (((2, 2), (1, 1)), (32, 32), (5, 3), (1, 1), 33),
    (((2, 2), (2, 2)), (8, 8), (3, 3), (2, 2), 9),       # dilated 'same'
    (((0, 0), (0, 0)), (8, 8), (3, 3), (1, 1), 9),       # cropped to 6: three rows more
    (((2, 2), (2, 2)), (8, 8), (3, 3), (1, 1), 10),      # 'valid': already taller
])
def test_taller_than_input(padding, in_hw, kernel_hw, dilation, out_h):
  """The padding that makes a stride-1 convolution's output taller than its
  input (XLA:CPU then runs it on Eigen): rows past the end only, none when
  it already is, and the width untouched."""
  from jconvt._algorithms import _taller_than_input
  got = _taller_than_input(padding, in_hw, kernel_hw, dilation)
  assert got[0][0] == padding[0][0] and tuple(got[1]) == padding[1]
  k_eff = (kernel_hw[0] - 1) * dilation[0] + 1
  assert in_hw[0] + sum(got[0]) - k_eff + 1 == out_h


@pytest.mark.usefixtures("without_onednn")
@pytest.mark.skipif(jax.default_backend() != "cpu"
                    or tuple(map(int, jax.__version__.split(".")[:2])) != (0, 10),
                    reason="XLA:CPU's YNNPACK rule as of jaxlib 0.10")
@pytest.mark.parametrize("filters,taller", [(32, True), (3, False)])
def test_stride_one_forward_runs_on_eigen_where_the_rule_says(filters, taller):
  """Under ``_taller_channels`` the stride-1 forward's output is one row
  taller than its input, which keeps it from YNNPACK (on Eigen); an RGB
  output keeps TF's padding and YNNPACK, which ran it faster."""
  cfg = ConvTransposeConfig(1, "same")
  x = jnp.ones((2, 12, 12, 32))
  params = {"kernel": jnp.ones((3, 3, filters, 32))}
  hlo = jax.jit(lambda p, x: jconvt.conv2d_transpose(p, x, cfg)).lower(
      params, x).compile().as_text()
  assert ("__ynn_fusion" not in hlo) == taller
  assert (f"f32[2,13,12,{filters}]" in hlo) == taller


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,expected", [
    ((16, 16, 16, 256), (4, 4, 128, 256), 2, "valid", (2, 2)),
    ((8, 32, 32, 128), (3, 3, 128, 128), (2, 3), "valid", (2, 3)),
    ((16, 16, 16, 256), (4, 4, 128, 256), 2, "same", (0, 0)),  # padded already
    ((8, 32, 32, 64), (3, 3, 64, 64), 2, "valid", (0, 0)),  # 64 channels
    ((2, 16, 16, 256), (4, 4, 128, 256), 2, "valid", (0, 0)),  # 512 pixels
    ((8, 32, 32, 128), (3, 3, 128, 128), 1, "valid", (0, 0)),  # stride 1
])
def test_unpadded_input_gradient_rule(x_shape, kernel_shape, strides, padding, expected):
  """Where the strided-convolution input gradient of a 'valid' layer gets
  one stride of padding (and drops the extra output row and column)."""
  from jconvt._algorithms import _forward_conv_padding, _unpadded_input_grad_extra
  cfg = ConvTransposeConfig(strides, padding)
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  conv_padding = _forward_conv_padding(x_shape[1:3], kernel_shape[:2], cfg, geometry)
  assert _unpadded_input_grad_extra(cfg, x_shape[0], x_shape[1:3], kernel_shape,
                                    conv_padding) == expected


def _temp_bytes(x_shape, kernel_shape, strides, padding, algorithm, train=True):
  """XLA's temporary bytes for a float32 training step (the gradients of a
  squared error, in the kernel and the input) under ``algorithm``, or with
  ``train=False`` for the forward alone (compiled, not run)."""
  cfg = ConvTransposeConfig(strides, padding, algorithm=algorithm)
  y_shape = jconvt.output_shape(x_shape, kernel_shape, cfg)
  f = lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, cfg)
  loss = lambda k, x, t: 0.5 * jnp.sum((f(k, x) - t) ** 2)
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in (kernel_shape, x_shape, y_shape)]
  fn = jax.jit(jax.grad(loss, argnums=(0, 1))) if train else jax.jit(f)
  return fn.lower(*args[:3 if train else 2]).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's buffers")
@pytest.mark.parametrize("x_shape,filters,kernel,padding", [
    ((16, 32, 32, 128), 64, 4, "same"),     # dcgan 32->64: chunks of two images
    ((8, 64, 64, 64), 32, 3, "same"),       # one image per chunk
    ((8, 32, 32, 256), 128, 2, "valid"),    # unet k2s2
    ((8, 32, 32, 128), 64, 7, "same"),      # 4 taps a phase: the convolution, 20 MiB
    ((16, 8, 8, 512), 256, 4, "same"),      # dcgan 8->16, col2im: 4 MiB, one chunk 16
    ((128, 4, 4, 256), 128, 9, "same"),     # col2im: 4 MiB, in chunks of 1024 pixels 41
    ((64, 2, 2, 256), 128, 5, "same"),      # both tap gradients, one gather: 3.6 MiB, 6.3
    ((16, 4, 4, 256), 512, 4, "same"),      # 10 MiB, stacked per tap 16
])
def test_training_step_scratch_within_the_reference(x_shape, filters, kernel, padding):
  """The issue's memory target on layers whose kernel gradient is the
  chunked GEMMs, or the convolution where they would take more (k7: 29
  MiB, the reference 20), and on col2im's, whose columns in a training step
  come in chunks no larger than the kernel (``_col2im_chunk_images``; the
  reference: 14 and 16 MiB), and on the tap gradients' (one gather of
  ``dy``'s windows for both): XLA's temporary buffers for ``auto``'s
  training step are no larger than for the dilated reference's (compiled,
  not run)."""
  kernel_shape = (kernel, kernel, filters, x_shape[3])
  temp_bytes = lambda algorithm: _temp_bytes(x_shape, kernel_shape, 2, padding, algorithm)
  assert temp_bytes("auto") <= temp_bytes("dilated")


@pytest.mark.skipif(jax.default_backend() != "cpu" or not jconvt._onednn.enabled(),
                    reason="XLA:CPU's buffers; the runs' rule: oneDNN's convolutions")
@pytest.mark.parametrize("x_shape,filters,kernel,strides", [
    ((4, 16, 16, 21), 21, 64, 32),   # FCN-32s on 4 images: 179 MiB with the canvas, 168
    ((4, 32, 32, 64), 64, 8, 4),     # 33 with the canvas, 32
])
def test_large_stride_phases_hold_one_output(x_shape, filters, kernel, strides):
  """Past nine phases the forward computes runs of phases over exactly
  TF's window (``_conv_phase_exact``): its scratch is the phases of one
  output (and a few small buffers), not the canvas's 17x17 phases of
  32x32 pixels at k64 s32 (13% more), and
  the training step's is within the dilated reference's (compiled, not
  run)."""
  kernel_shape = (kernel, kernel, filters, x_shape[3])
  output = 4 * math.prod(jconvt.output_shape(x_shape, kernel_shape,
                                             ConvTransposeConfig(strides, "same")))
  forward = _temp_bytes(x_shape, kernel_shape, strides, "same", "auto", train=False)
  assert forward <= output + 2 ** 16  # and a few small buffers
  assert (_temp_bytes(x_shape, kernel_shape, strides, "same", "auto")
          <= _temp_bytes(x_shape, kernel_shape, strides, "same", "dilated"))


def _batch_norm_relu(y):
  """A batch norm (no scale) and a ReLU: three readers of ``y``."""
  m = jnp.mean(y, (0, 1, 2), dtype=jnp.float32, keepdims=True)
  v = jnp.var(y, (0, 1, 2), dtype=jnp.float32, keepdims=True)
  return jax.nn.relu((y - m) * lax.rsqrt(v + 1e-5))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's fusion")
@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,algorithm,dtype", [
    ((4, 8, 8, 64), (4, 4, 32, 64), 2, "same", "col2im", jnp.float32),
    ((2, 8, 8, 16), (5, 5, 8, 16), 3, "valid", "col2im", jnp.float32),
    ((4, 16, 16, 32), (3, 3, 32, 32), 2, "same", "phase", jnp.float32),   # exact phases
    ((4, 16, 16, 32), (4, 4, 32, 32), 2, "same", "phase", jnp.float32),
    ((4, 16, 16, 32), (4, 4, 64, 32), 2, "same", "phase", jnp.float32),   # spread phases
    ((2, 8, 8, 16), (5, 5, 8, 16), 3, "valid", "phase", jnp.float32),     # phase groups
    # Without oneDNN's bfloat16 (a CPU without it, or JCONVT_ONEDNN_BFLOAT16=0)
    # this one holds 0.19 MiB more with the batch norm (0.82 against 0.63).
    pytest.param((4, 16, 16, 32), (4, 4, 32, 32), 2, "same", "phase", jnp.bfloat16,
                 marks=pytest.mark.skipif(not jconvt._onednn.takes_dtype(jnp.bfloat16),
                                          reason="oneDNN's bfloat16 convolutions")),
    ((4, 8, 8, 64), (4, 4, 32, 64), 2, "same", "auto", jnp.float32),
])
def test_forward_read_by_several_consumers_holds_no_extra_scratch(
    x_shape, kernel_shape, strides, padding, algorithm, dtype):
  """A forward whose output is assembled from pieces (col2im's blocks, the
  phases), followed by a batch norm, holds no more temporary memory than
  it does alone or than the reference followed by the same (compiled, not
  run). XLA:CPU had duplicated the assembly into each of the batch norm's
  readers and kept every piece for them (``_materialized``): 1160 KiB
  against 512 alone for the first case; at dcgan 32->64 83 MiB and 36.6
  ms against 17 MiB and 11 ms. The branch that prevents it is in the
  optimized program."""
  cfg = ConvTransposeConfig(strides, padding, algorithm=algorithm)
  args = [jax.ShapeDtypeStruct(s, dtype) for s in (kernel_shape, x_shape)]

  def compiled(after, config):
    f = lambda k, x: after(jconvt.conv2d_transpose({"kernel": k}, x, config))
    return jax.jit(f).lower(*args).compile()

  alone = compiled(lambda y: y, cfg)
  with_bn = compiled(_batch_norm_relu, cfg)
  reference = compiled(_batch_norm_relu, cfg.replace(algorithm="dilated"))
  temp = lambda c: c.memory_analysis().temp_size_in_bytes
  # 4 KiB: the batch norm's statistics.
  assert temp(with_bn) <= max(temp(alone), temp(reference)) + 4096, (
      temp(with_bn), temp(alone), temp(reference))
  assert "conditional(" in with_bn.as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's fusion")
@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding", [
    ((4, 8, 8, 64), (4, 4, 32, 64), 2, "same"),
    ((2, 4, 4, 32), (9, 9, 16, 32), 2, "same"),
    ((4, 2, 2, 32), (5, 5, 16, 32), 2, "same"),
])
@pytest.mark.parametrize("after", ["batch_norm", "relu_conv"])
def test_col2im_training_step_read_by_several_consumers_holds_no_extra_scratch(
    x_shape, kernel_shape, strides, padding, after):
  """A training step whose forward is col2im, with a batch norm (or a ReLU
  and a 3x3 convolution) between the layer and the loss, holds about the
  temporary memory of the reference's step with the same readers (compiled,
  not run). XLA:CPU had fused the assembly into every reader of the output,
  the backward's included, and kept the tap blocks for them: 4x4 -> 8x8 k9
  s2 at batch 16 held 51 MiB against 1.5 with the branch
  (``_materializes``)."""
  cfg = ConvTransposeConfig(strides, padding, algorithm="col2im")
  filters = kernel_shape[2]
  w2 = jnp.ones((3, 3, filters, filters), jnp.float32)
  readers = {
      "batch_norm": _batch_norm_relu,
      "relu_conv": lambda y: lax.conv_general_dilated(
          jax.nn.relu(y), w2, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
  }
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in (kernel_shape, x_shape)]

  def compiled(after, config):
    loss = lambda k, x: jnp.sum(after(jconvt.conv2d_transpose({"kernel": k}, x, config)) ** 2)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*args).compile()

  with_readers = compiled(readers[after], cfg)
  reference = compiled(readers[after], cfg.replace(algorithm="dilated"))
  temp = lambda c: c.memory_analysis().temp_size_in_bytes
  # col2im's GEMM output and the layer's own output, at most two outputs'
  # worth more than the reference (its scratch was 0.09x-1.6x the
  # reference's in these cases; without the branch 2.4x-4.4x).
  out_bytes = 4 * math.prod(jconvt.output_shape(x_shape, kernel_shape, cfg))
  assert temp(with_readers) <= temp(reference) + 2 * out_bytes, (
      temp(with_readers), temp(reference), out_bytes)
  assert "conditional(" in with_readers.as_text()


def test_materialized_forward_keeps_nans_and_phase_steps_branch_free():
  """``_materialized``'s predicate is the kernel's first tap equal to
  itself: a NaN there takes the other branch, the same forward, so the
  output has NaN exactly where the NumPy reference's scatter puts them (the
  outputs that tap reaches). A training step has the branch where its
  forward is col2im, none where it is the phases' (its loss reads them
  where they lie), nor has a channels_first forward (its transpose to NCHW
  does).

  The NumPy reference, not the dilated one: on an H100 (jax 0.11.2) XLA's
  input-dilated convolution turned the NaN tap into NaN on every output of
  its filter (160 of them here, 24 reached), where XLA:CPU's keeps to the
  24."""
  cfg = ConvTransposeConfig(2, "same", algorithm="col2im")
  params, x = _data((2, 5, 4, 3), (4, 4, 8, 3))
  kernel = params["kernel"].at[0, 0, 0, 0].set(jnp.nan)
  got = jax.jit(lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, cfg))(kernel, x)
  want = jconvt.reference_conv2d_transpose(x, kernel, None, cfg)
  assert np.isnan(got).sum() == 2 * 4 * 3, np.isnan(got).sum()
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  assert_close(np.nan_to_num(got), np.nan_to_num(want))
  if jax.default_backend() != "cpu":
    return
  def step(config):
    loss = lambda k, x: jnp.sum(jconvt.conv2d_transpose({"kernel": k}, x, config) ** 2)
    return jax.jit(jax.grad(loss)).lower(params["kernel"], x).compile().as_text()

  assert "conditional(" in step(cfg)
  assert "conditional(" not in step(cfg.replace(algorithm="phase"))
  nchw = cfg.replace(data_format="channels_first")
  forward = jax.jit(lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, nchw))
  assert "conditional(" not in forward.lower(params["kernel"],
                                             jnp.transpose(x, (0, 3, 1, 2))).compile().as_text()
  assert "conditional(" in jax.jit(lambda k, x: jconvt.conv2d_transpose(
      {"kernel": k}, x, cfg)).lower(params["kernel"], x).compile().as_text()


@pytest.mark.usefixtures("without_onednn")
@pytest.mark.parametrize("on_cpu", [True, False])
def test_unpadded_input_gradient_not_on_the_eigen_route(on_cpu):
  """A 'valid' layer's input gradient gets the extra stride of padding only
  off ``_convolve``'s Eigen route (where it cost 1.07-1.20x): the lowered
  convolution's output is the input's size on the route, one stride
  larger (then cropped) off it. Traced only (no compile)."""
  from jconvt import _algorithms
  x_shape, kernel_shape = (16, 16, 16, 256), (4, 4, 128, 256)
  cfg = ConvTransposeConfig(2, "valid")
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  dy = jax.ShapeDtypeStruct((16, 34, 34, 128), jnp.float32)
  kernel = jax.ShapeDtypeStruct(kernel_shape, jnp.float32)
  text = jax.jit(lambda dy, k: _algorithms.grad_input(
      dy, k, cfg, geometry, x_shape[1:3], on_cpu=on_cpu)).lower(dy, kernel).as_text()
  conv = next(line for line in text.splitlines() if "stablehlo.convolution" in line)
  assert ("lhs_dilate = [1, 2]" in conv) == on_cpu
  assert conv.rstrip().endswith("tensor<16x16x16x256xf32>" if on_cpu
                                else "tensor<16x17x17x256xf32>"), conv


@pytest.mark.parametrize("x_shape,kernel_shape,strides,dilation,expected", [
    ((16, 4, 4, 1024), (4, 4, 512, 1024), 2, 1, "taps"),  # small, deep
    ((1, 16, 16, 512), (4, 4, 256, 512), 2, 1, "taps"),  # 256 pixels
    ((16, 4, 4, 512), (3, 3, 256, 512), 2, 1, "taps"),  # k3 s2: no zero taps either
    ((2, 16, 16, 512), (4, 4, 256, 512), 2, 1, "conv"),  # 512 pixels
    ((1, 16, 16, 256), (4, 4, 128, 256), 2, 1, "conv"),  # 128 filters
    ((1, 8, 8, 512), (7, 7, 256, 512), 2, 1, "conv"),  # 49 taps
    ((1, 16, 16, 512), (2, 2, 256, 512), 2, 1, "phase_gemm"),  # one tap
    ((8, 32, 32, 256), (2, 2, 128, 256), 2, 1, "phase_gemm"),  # one tap: any size
    ((8, 32, 32, 3), (2, 2, 128, 3), 2, 1, "phase_gemm"),
    ((8, 32, 32, 256), (4, 4, 128, 256), 2, 1, "conv"),  # large
    ((1, 16, 16, 512), (3, 3, 256, 512), 1, 1, "conv"),  # stride 1
    ((1, 16, 16, 512), (3, 3, 256, 512), 1, 2, "conv"),  # dilated
    # The convolution's kernel would exceed dy (small inputs):
    ((64, 2, 2, 256), (5, 5, 128, 256), 2, 1, "taps"),  # 4x4 dy, k5
    ((4, 4, 4, 128), (5, 5, 128, 128), 1, 1, "taps"),  # stride 1
    ((16, 4, 4, 256), (9, 9, 128, 256), 2, 1, "taps"),  # 81 taps: windows 10 MiB, 1.43x
    ((4, 4, 4, 128), (9, 9, 128, 128), 1, 1, "taps"),  # at stride 1 too
    ((16, 8, 8, 256), (17, 17, 128, 256), 2, 1, "phase_gemm"),  # windows 144 MiB: the GEMMs
    ((4, 4, 4, 128), (5, 5, 128, 128), 1, 2, "conv"),  # dilated: left
    ((512, 2, 2, 256), (5, 5, 128, 256), 2, 1, "phase_gemm"),  # 2048 pixels: windows 25 MiB
    ((128, 2, 2, 256), (7, 7, 128, 256), 2, 1, "taps"),  # 512 pixels, 49 taps: 12.2 MiB
])
def test_auto_input_gradient_rule(x_shape, kernel_shape, strides, dilation, expected,
                                  monkeypatch):
  """Which input gradient ``auto`` runs on CPU, per the rule (without oneDNN;
  with it, ``test_large_kernels_on_onednn``)."""
  from jconvt._algorithms import _input_grad_algorithm
  from jconvt._conv import _geometry
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  geometry = _geometry(x_shape, kernel_shape, cfg)
  assert _input_grad_algorithm(cfg, x_shape, kernel_shape, jnp.float32, geometry) == expected


@pytest.mark.parametrize("kernel_shape,strides,dilation,expected", [
    ((3, 3, 3, 32), 1, 1, True),  # an RGB output
    ((3, 3, 3, 128), 1, 1, True),  # stride 1: any channel count
    ((5, 5, 21, 64), 1, 1, True),
    ((3, 3, 23, 64), 1, 1, False),  # past ODD_FILTERS_MAX
    ((3, 3, 4, 32), 1, 1, False),  # even
    ((3, 3, 1, 32), 1, 1, False),  # one filter
    ((3, 3, 3, 32), 1, 2, False),  # dilated
    ((4, 4, 3, 32), 2, 1, True),  # strided, 32 input channels
    ((4, 4, 3, 64), 2, 1, False),  # strided, 64
])
def test_odd_filters_input_gradient_rule(kernel_shape, strides, dilation, expected):
  """Where the input gradient's convolution gets one zero filter more."""
  from jconvt._algorithms import _pads_odd_filters
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  assert _pads_odd_filters(cfg, kernel_shape) is expected


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding", [
    ((2, 9, 7, 8), (3, 3, 3, 8), 1, "same"),
    ((2, 9, 7, 8), (5, 4, 5, 8), 1, "valid"),
    ((2, 5, 6, 8), (4, 4, 3, 8), 2, "same"),
    ((1, 5, 6, 4), (3, 3, 7, 4), (2, 3), "valid"),
])
def test_input_gradient_with_a_zero_filter(x_shape, kernel_shape, strides, padding,
                                           monkeypatch):
  """The padded input gradient equals the unpadded one and the reference's."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, padding)
  assert _algorithms._pads_odd_filters(cfg, kernel_shape)
  x, kernel, dy, geometry, want_dx, _ = _reference_gradients(x_shape, kernel_shape, cfg)
  padded = _algorithms.grad_input(dy, kernel, cfg, geometry, x.shape[1:3])
  assert padded.shape == x.shape
  assert_close(padded, want_dx, dtype=jnp.float32)
  monkeypatch.setattr(_algorithms, "_pads_odd_filters", lambda *_: False)
  plain = _algorithms.grad_input(dy, kernel, cfg, geometry, x.shape[1:3])
  assert_close(padded, plain, dtype=jnp.float32)


@pytest.mark.usefixtures("without_onednn")  # the stride-1 rule where oneDNN is off
@pytest.mark.parametrize("x_shape,kernel_shape,strides,dilation,expected", [
    ((4, 32, 32, 64), (4, 4, 64, 64), 2, 1, False),  # 4096 pixels
    ((8, 32, 32, 64), (4, 4, 64, 64), 2, 1, True),  # past GEMM_KERNEL_GRAD_PIXELS
    ((1, 64, 64, 3), (4, 4, 64, 3), 2, 1, True),  # 3 input channels, 64x64 image
    ((1, 16, 16, 16), (3, 3, 64, 16), 2, 1, True),  # 16 input channels, 16x16 image
    ((2, 16, 16, 17), (3, 3, 64, 17), 2, 1, False),  # 17 input channels
    ((1, 16, 16, 17), (3, 3, 64, 17), 2, 1, True),  # ... on one image: the GEMMs
    ((16, 8, 8, 3), (4, 4, 64, 3), 2, 1, False),  # 8x8 images
    ((1, 64, 64, 3), (4, 4, 64, 3), 1, 2, False),  # dilated: no phase
    ((1, 64, 64, 3), (3, 3, 64, 3), 1, 1, False),  # stride 1, shallow
    ((1, 16, 16, 32), (3, 3, 32, 32), 1, 1, True),  # stride 1, deep
    ((8, 32, 32, 64), (3, 3, 64, 64), 1, 1, False),  # deep, the convolution on Eigen
    ((8, 32, 32, 32), (3, 3, 128, 32), 1, 1, False),  # swapped, on Eigen
    ((4, 32, 32, 64), (3, 3, 64, 64), 1, 1, True),  # batch 4: not on Eigen
    ((8, 8, 8, 32), (3, 3, 32, 32), 1, 1, True),  # 2**22 multiply-adds: not on Eigen
    ((64, 1, 1, 100), (4, 4, 512, 100), 1, 1, False),  # deep, but a 1x1 latent
    ((4, 8, 8, 128), (9, 9, 128, 128), 1, 1, True),
])
def test_auto_kernel_gradient_rule(x_shape, kernel_shape, strides, dilation, expected):
  """Whether ``auto``'s kernel gradient is the GEMMs on CPU, per the rule."""
  from jconvt._algorithms import _kernel_grad_algorithm
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  got = _kernel_grad_algorithm(cfg, x_shape, kernel_shape, jnp.float32, geometry)
  assert got == ("phase_gemm" if expected else "conv")


@pytest.mark.usefixtures("without_onednn")
def test_stride1_bfloat16_kernel_gradient_keeps_the_gemms():
  """Without oneDNN, at stride 1 the float32 kernel gradient's convolution
  on Eigen replaces the GEMMs; bfloat16 keeps them (XLA:CPU runs its GEMMs
  at twice the rate). With oneDNN: tests/test_onednn.py."""
  from jconvt._algorithms import _kernel_grad_algorithm
  cfg = ConvTransposeConfig(1, "same")
  x_shape, kernel_shape = (8, 32, 32, 64), (3, 3, 64, 64)
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  assert _kernel_grad_algorithm(cfg, x_shape, kernel_shape, jnp.float32, geometry) == "conv"
  assert _kernel_grad_algorithm(cfg, x_shape, kernel_shape, jnp.bfloat16,
                                geometry) == "phase_gemm"


@pytest.mark.parametrize("x_shape,kernel_shape,padding,expected", [
    ((4, 16, 16, 256), (4, 4, 128, 256), "valid", True),  # no padding, 16x16 images
    ((2, 16, 16, 64), (3, 3, 32, 64), "valid", True),
    ((16, 16, 16, 256), (4, 4, 128, 256), "valid", False),  # its convolution on Eigen
    ((16, 16, 16, 256), (4, 4, 128, 256), "same", False),
    ((16, 8, 8, 512), (4, 4, 256, 512), "valid", False),  # 8x8 images
    ((2, 16, 16, 64), (3, 3, 32, 64), ((1, 0), (0, 0)), False),  # padded on one side
])
def test_auto_kernel_gradient_rule_for_valid_layers(x_shape, kernel_shape, padding, expected):
  """Given the geometry, the kernel gradient of an unpadded ('valid') layer
  is the GEMMs on images of 16x16 or more, unless its convolution takes the
  Eigen route (16 images: the convolution's contracted channels)."""
  from jconvt._algorithms import _kernel_grad_is_gemm
  cfg = ConvTransposeConfig(2, padding)
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  assert _kernel_grad_is_gemm(cfg, x_shape, kernel_shape, jnp.float32, geometry) is expected


@pytest.mark.parametrize("x_shape,kernel_shape,strides,expected", [
    ((1, 16, 16, 256), (4, 4, 128, 256), 2, True),  # batch-1 latency layer
    ((16, 4, 4, 1024), (4, 4, 512, 1024), 2, True),
    ((2, 16, 16, 256), (4, 4, 128, 256), 2, False),  # 512 pixels
    ((1, 16, 16, 64), (4, 4, 64, 64), 2, False),  # 64 input channels
    ((1, 16, 16, 256), (6, 6, 128, 256), 2, False),  # 36 taps
    ((1, 16, 16, 256), (3, 3, 128, 256), 1, False),  # stride 1
])
def test_auto_taps_kernel_gradient_rule(x_shape, kernel_shape, strides, expected):
  from jconvt._algorithms import _kernel_grad_is_taps
  cfg = ConvTransposeConfig(strides, "same")
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  assert _kernel_grad_is_taps(cfg, x_shape, kernel_shape, jnp.float32, geometry) is expected


@pytest.mark.usefixtures("without_onednn")
@pytest.mark.parametrize("kernel_size,strides,dilation,dx_gemm,dk_gemm", [
    (4, 2, 1, True, True),
    (3, 2, 1, False, True),  # the GEMM input gradient would multiply zero taps
    (3, 1, 1, False, False),  # stride 1: the float32 rules (16 filters: convolutions)
    (3, 1, 2, False, False),
])
def test_auto_gradient_rules_for_bfloat16(kernel_size, strides, dilation, dx_gemm, dk_gemm):
  """bfloat16 inputs take the GEMM gradients at stride > 1 whatever the
  size; float32 inputs of that size take the convolutions."""
  from jconvt._algorithms import _input_grad_is_gemm, _kernel_grad_is_gemm
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  x_shape, kernel_shape = (4, 8, 8, 64), (kernel_size, kernel_size, 16, 64)
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  assert _input_grad_is_gemm(cfg, kernel_shape, jnp.bfloat16) is dx_gemm
  assert _kernel_grad_is_gemm(cfg, x_shape, kernel_shape, jnp.bfloat16, geometry) is dk_gemm
  assert not _input_grad_is_gemm(cfg, kernel_shape, jnp.float32)
  assert not _kernel_grad_is_gemm(cfg, x_shape, kernel_shape, jnp.float32, geometry)


@pytest.mark.usefixtures("without_onednn")
@pytest.mark.parametrize("kernel_size,strides,dilation,filters,expected", [
    (4, 2, 1, 128, True),
    (2, 2, 1, 128, True),
    (4, (2, 4), 1, 64, True),  # 512 GEMM columns
    (4, 2, 1, 64, False),  # 256 GEMM columns: the convolution
    (3, 2, 1, 128, False),  # k % s != 0: it would multiply zero taps
    (3, 1, 1, 128, False),  # stride 1
    (3, 1, 2, 128, False),  # dilated
])
def test_auto_forward_rule_for_bfloat16(kernel_size, strides, dilation, filters, expected):
  """bfloat16 inputs take the one-GEMM phase forward at stride > 1 where each
  stride divides its kernel size and the GEMM has 512 or more columns;
  float32 inputs never do."""
  from jconvt._algorithms import _forward_algorithm
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  x_shape, kernel_shape = (4, 16, 16, 64), (kernel_size, kernel_size, filters, 64)
  got = _forward_algorithm(cfg, x_shape, kernel_shape, jnp.bfloat16)
  assert (got == "phase_gemm") is expected
  assert _forward_algorithm(cfg, x_shape, kernel_shape, jnp.float32) != "phase_gemm"
  explicit = cfg.replace(algorithm="col2im")  # an explicit choice stands
  assert _forward_algorithm(explicit, x_shape, kernel_shape, jnp.bfloat16) == "col2im"


_PLAN_NAMES = {  # _algorithms function: (AlgorithmPlan field, name)
    "conv_dilated": ("forward", "dilated"), "conv_phase": ("forward", "phase"),
    "conv_phase_gemm": ("forward", "phase_gemm"), "conv_col2im": ("forward", "col2im"),
    "grad_input": ("input_gradient", "conv"), "grad_input_phase": ("input_gradient", "phase_gemm"),
    "grad_input_taps": ("input_gradient", "taps"),
    "grad_input_dilated": ("input_gradient", "autodiff"),  # inside the custom VJP
    "grad_kernel": ("kernel_gradient", "conv"),
    "grad_kernel_phase": ("kernel_gradient", "phase_gemm"),
    "grad_kernel_taps": ("kernel_gradient", "taps")}


def _record_algorithms(monkeypatch):
  """Wraps every forward and gradient algorithm of ``_algorithms`` so that
  tracing one appends its name to the returned lists, one per
  ``AlgorithmPlan`` field."""
  from jconvt import _algorithms
  calls = {field: [] for field in jconvt.AlgorithmPlan._fields}
  for attr, (field, name) in _PLAN_NAMES.items():
    fn = getattr(_algorithms, attr)
    monkeypatch.setattr(_algorithms, attr,
                        lambda *a, fn=fn, field=field, name=name, **kw:
                        calls[field].append(name) or fn(*a, **kw))
  return calls


@pytest.mark.usefixtures("without_onednn")
@pytest.mark.parametrize("x_shape,kernel_shape,kwargs,dtype,expected", [
    ((1, 8, 8, 128), (4, 4, 256, 128), {}, jnp.float32, ("col2im", "taps", "taps")),
    ((2, 16, 16, 8), (4, 4, 32, 8), {}, jnp.float32, ("phase", "conv", "phase_gemm")),
    ((1, 8, 8, 16), (4, 4, 128, 16), {}, jnp.bfloat16,
     ("phase_gemm", "phase_gemm", "phase_gemm")),
    ((2, 8, 16, 16), (2, 2, 4, 8), {"data_format": "channels_first"}, jnp.float32,
     ("col2im", "phase_gemm", "phase_gemm")),
    ((1, 8, 8, 32), (3, 3, 32, 32), {"strides": 1, "algorithm": "phase"}, jnp.float32,
     ("phase", "conv", "phase_gemm")),
    ((1, 8, 8, 4), (3, 3, 4, 4), {"strides": 1, "dilation_rate": 2}, jnp.float32,
     ("col2im", "conv", "conv")),
    ((1, 8, 8, 4), (3, 3, 4, 4), {"algorithm": "dilated"}, jnp.float32,
     ("dilated", "autodiff", "autodiff")),
    ((0, 8, 8, 4), (3, 3, 4, 4), {}, jnp.float32, ("zeros", "zeros", "zeros")),
])
def test_algorithm_plan_names_what_runs(x_shape, kernel_shape, kwargs, dtype, expected,
                                        monkeypatch):
  """``jconvt.algorithm_plan`` names the forward and the gradients a CPU
  training step traces (recorded by wrapping each algorithm); on another
  backend, what a step traces there."""
  cfg = ConvTransposeConfig(**{"strides": 2, "padding": "same", **kwargs})
  plan = jconvt.algorithm_plan(x_shape, kernel_shape, cfg, dtype, platform="cpu")
  assert tuple(plan) == expected
  assert plan.forward == expected[0]  # a NamedTuple
  plan = jconvt.algorithm_plan(x_shape, kernel_shape, cfg, dtype)  # this backend's
  params, x = _data(x_shape, kernel_shape, dtype=np.float32)
  params, x = jax.tree.map(lambda a: a.astype(dtype), (params, x))
  calls = _record_algorithms(monkeypatch)
  jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg).astype(jnp.float32)),
           argnums=(0, 1))(params, x)
  if not any(calls.values()):  # nothing traced: an empty layer
    assert plan == ("zeros", "zeros", "zeros")
    return
  ran = {field: names or ["autodiff"] for field, names in calls.items()}  # autodiff: no wrapper
  assert ran == {field: [name] for field, name in plan._asdict().items()}


def test_algorithm_plan_on_other_platforms():
  """``auto`` on NVIDIA GPUs replaces the reference's kernel gradient at
  stride > 1, and its forward from 16 phases on; it is the dilated
  reference on ROCm and TPU; an explicit
  fast path is the CPU's everywhere."""
  cfg = ConvTransposeConfig(2, "same")
  for gpu in ("gpu", "cuda"):
    assert tuple(jconvt.algorithm_plan((16, 32, 32, 128), (4, 4, 64, 128), cfg, platform=gpu)) \
        == ("dilated", "autodiff", "conv")
    assert tuple(jconvt.algorithm_plan((16, 32, 32, 128), (3, 3, 64, 128), cfg.replace(strides=1),
                                       platform=gpu)) == ("dilated", "autodiff", "autodiff")
    # From 16 phases (s_h * s_w) the forward is the phase one, unless dilated.
    for strides, dilation, forward in [((4, 4), 1, "phase"), ((32, 32), 1, "phase"),
                                       ((8, 2), 1, "phase"), ((4, 2), 1, "dilated"),
                                       ((3, 3), 1, "dilated"), ((5, 3), 1, "dilated"),
                                       ((4, 4), 2, "dilated")]:
      big = cfg.replace(strides=strides, dilation_rate=dilation)
      assert tuple(jconvt.algorithm_plan((1, 16, 16, 21), (8, 8, 21, 21), big, platform=gpu)) \
          == (forward, "autodiff", "conv"), (strides, dilation)
  for other in ("rocm", "tpu"):
    assert tuple(jconvt.algorithm_plan((16, 32, 32, 128), (4, 4, 64, 128), cfg,
                                       platform=other)) == ("dilated", "autodiff", "autodiff")
  explicit = jconvt.algorithm_plan((16, 32, 32, 128), (4, 4, 64, 128),
                                   cfg.replace(algorithm="phase"), platform="tpu")
  assert explicit.forward == "phase" and explicit.input_gradient == "conv"
  here = jconvt.algorithm_plan((16, 32, 32, 128), (4, 4, 64, 128), cfg)
  assert here == jconvt.algorithm_plan((16, 32, 32, 128), (4, 4, 64, 128), cfg,
                                       platform=jax.default_backend())


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_export_with_a_symbolic_batch(data_format):
  """``jax.export`` with a polymorphic batch ``b``: ``auto``'s rules compare
  sizes, so it runs the dilated reference there (it raised an inconclusive
  comparison of ``64*b`` before); the exported forward and training step
  equal the jitted ones at several batch sizes. An explicit ``phase`` says
  it needs concrete shapes."""
  x_shape = (8, 8, 16) if data_format == "channels_last" else (16, 8, 8)
  cfg = ConvTransposeConfig(2, "same", data_format=data_format)
  kernel = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4, 16, 16)), jnp.float32)
  layer = lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, cfg)
  step = jax.value_and_grad(lambda k, x: jnp.sum(layer(k, x) ** 2), argnums=(0, 1))
  (b,) = jax.export.symbolic_shape("b")
  specs = (jax.ShapeDtypeStruct(kernel.shape, kernel.dtype),
           jax.ShapeDtypeStruct((b, *x_shape), jnp.float32))
  here = jconvt._conv._default_platform()
  for fn in (layer, step):
    # Lowered for the CPU, and for this backend too so that the call runs here.
    exported = jax.export.export(jax.jit(fn), platforms=tuple(dict.fromkeys(("cpu", here))))(
        *specs)
    for n in (1, 3):
      x = jnp.asarray(np.random.default_rng(n).standard_normal((n, *x_shape)), jnp.float32)
      jax.tree.map(assert_close, exported.call(kernel, x), jax.jit(fn)(kernel, x))
  phase = lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, cfg.replace(algorithm="phase"))
  with pytest.raises(ValueError, match="algorithm='phase' needs concrete shapes"):
    jax.export.export(jax.jit(phase), platforms=("cpu",))(*specs)


def _lowered_convolutions(fn, args, platform):
  """The StableHLO convolutions of ``jax.jit(fn)`` lowered for ``platform``
  (lowering needs no such device here)."""
  import re
  text = jax.export.export(jax.jit(fn), platforms=(platform,))(*args).mlir_module()
  return re.findall(r"stablehlo\.convolution\(.*", text)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_cuda_lowering_runs_the_gpu_plan(data_format):
  """``auto``'s strided training step lowered for CUDA: the dilated forward,
  its input gradient (a strided convolution of ``dy``) and ``grad_kernel``'s
  convolution (the input dilated as its kernel): one input-dilated
  convolution, where the reference (ROCm) has two. At stride 1 CUDA runs
  the reference: no dilation at all. At stride 4 (16 phases) the forward
  is the phase convolution, undilated."""
  x_shape = (2, 8, 8, 4) if data_format == "channels_last" else (2, 4, 8, 8)
  params, x = _data(x_shape, (4, 4, 16, 4))

  def step(cfg):
    return jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg) ** 2),
                    argnums=(0, 1))

  cfg = ConvTransposeConfig(2, "same", data_format=data_format)
  cuda = _lowered_convolutions(step(cfg), (params, x), "cuda")
  reference = _lowered_convolutions(step(cfg), (params, x), "rocm")
  assert len(cuda) == len(reference) == 3
  assert [("lhs_dilate" in c, "rhs_dilate" in c, "stride" in c) for c in cuda] == [
      (True, False, False), (False, False, True), (False, True, False)]
  assert sum("lhs_dilate" in c for c in reference) == 2
  stride1 = _lowered_convolutions(step(cfg.replace(strides=1)), (params, x), "cuda")
  assert len(stride1) == 3 and not any("dilate" in c for c in stride1)
  # From 16 phases the forward is the phase convolution: no dilation.
  params4, x4 = _data(x_shape, (8, 8, 6, 4))
  stride4 = _lowered_convolutions(step(cfg.replace(strides=4)), (params4, x4), "cuda")
  phase_forward = [(False, False, False), (False, False, True), (False, True, False)]
  assert [("lhs_dilate" in c, "rhs_dilate" in c, "stride" in c) for c in stride4] == phase_forward
  # So with few filters at k4 s2, with the strided input gradient.
  few = _lowered_convolutions(step(cfg), _data(x_shape, (4, 4, 6, 4)), "cuda")
  assert [("lhs_dilate" in c, "rhs_dilate" in c, "stride" in c) for c in few] == phase_forward


@pytest.mark.parametrize("dtype,preferred", [
    (jnp.float32, None), (jnp.bfloat16, None), (jnp.bfloat16, jnp.float32), (jnp.float16, None)])
@pytest.mark.parametrize("x_shape,kernel_shape,kwargs", [
    ((2, 5, 6, 8), (4, 4, 6, 8), {}),
    ((2, 8, 5, 6), (3, 3, 6, 8), {"data_format": "channels_first", "padding": "valid"}),
    ((1, 4, 4, 7), (3, 5, 5, 7), {"strides": (3, 2), "output_padding": (2, 1)}),
    ((2, 3, 4, 5), (8, 6, 6, 5), {"strides": 4}),  # 16 phases: the phase forward
    ((1, 3, 2, 5), (5, 3, 4, 5), {"strides": (8, 2), "padding": "valid", "output_padding": (3, 1)}),
])
def test_gpu_plan_matches_the_reference(x_shape, kernel_shape, kwargs, dtype, preferred):
  """The plan ``auto`` runs on NVIDIA GPUs, run here: output and both
  gradients equal the dilated reference's in every dtype (the phase
  forward from 16 phases on)."""
  params, x = _data(x_shape, kernel_shape, dtype=np.float32)
  params, x = jax.tree.map(lambda a: a.astype(dtype), (params, x))
  cfg = ConvTransposeConfig(**{"strides": 2, "padding": "same", **kwargs},
                            preferred_element_type=preferred)

  def run(algorithm):
    def loss(p, x):
      y = jconvt.conv2d_transpose(p, x, cfg.replace(algorithm=algorithm))
      return jnp.sum(y.astype(jnp.float32) * jnp.cos(y.astype(jnp.float32))), y
    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return y, grads

  with gpu_rules():
    plan = jconvt.algorithm_plan(x.shape, kernel_shape, cfg, dtype)
    y, (dparams, dx) = run("auto")
  strides = cfg.strides
  few_filters = (kernel_shape[:2] == (2 * strides[0], 2 * strides[1]) and kernel_shape[2] <= 8
                 and dtype == jnp.float32 and preferred is None)
  assert plan == (("phase", "autodiff", "conv") if strides[0] * strides[1] >= 16
                  else ("phase", "conv", "conv") if few_filters
                  else ("dilated", "autodiff", "conv"))
  y_ref, (dparams_ref, dx_ref) = run("dilated")
  assert y.dtype == y_ref.dtype and dx.dtype == x.dtype
  assert dparams["kernel"].dtype == dparams_ref["kernel"].dtype
  assert_close(y, y_ref, dtype)
  assert_close(dx, dx_ref, dtype)
  assert_close(dparams["kernel"], dparams_ref["kernel"], dtype)


@pytest.mark.parametrize("x_shape,kernel_shape,kwargs,dtype,expected", [
    ((16, 32, 32, 64), (4, 4, 3, 64), {}, jnp.float32, ("phase", "conv", "conv")),
    ((16, 32, 32, 64), (4, 4, 8, 64), {}, jnp.float32, ("phase", "conv", "conv")),
    ((16, 64, 32, 32), (4, 4, 3, 64), {"data_format": "channels_first"}, jnp.float32,
     ("phase", "conv", "conv")),
    ((4, 8, 8, 16), (6, 6, 1, 16), {"strides": 3}, jnp.float32, ("phase", "conv", "conv")),
    ((16, 32, 32, 64), (4, 4, 9, 64), {}, jnp.float32, ("dilated", "autodiff", "conv")),
    ((16, 32, 32, 64), (3, 3, 3, 64), {}, jnp.float32, ("dilated", "autodiff", "conv")),
    ((16, 32, 32, 64), (5, 5, 3, 64), {}, jnp.float32, ("dilated", "autodiff", "conv")),
    ((16, 32, 32, 64), (4, 4, 3, 64), {}, jnp.bfloat16, ("dilated", "autodiff", "conv")),
    ((16, 32, 32, 64), (4, 4, 3, 64), {"preferred_element_type": jnp.float32}, jnp.bfloat16,
     ("dilated", "autodiff", "conv")),
    ((16, 32, 32, 64), (3, 3, 3, 64), {"strides": 1}, jnp.float32,
     ("dilated", "autodiff", "autodiff")),
    ((4, 8, 8, 16), (8, 8, 3, 16), {"strides": 4}, jnp.float32, ("phase", "autodiff", "conv")),
])
def test_gpu_few_filters_rule(x_shape, kernel_shape, kwargs, dtype, expected):
  """``auto`` on NVIDIA GPUs runs ``phase/conv/conv`` for float32 layers of
  at most 8 filters whose kernel is twice the stride (k4 s2, k6 s3), and
  its other plans elsewhere."""
  cfg = ConvTransposeConfig(**{"strides": 2, "padding": "same", **kwargs})
  assert tuple(jconvt.algorithm_plan(x_shape, kernel_shape, cfg, dtype, "cuda")) == expected


@pytest.mark.parametrize("version,expected", [
    ("cuda 13000", ("dilated", "autodiff", "conv")),
    ("rocm 6.4.1", ("dilated", "autodiff", "autodiff")),
])
def test_algorithm_plan_tells_cuda_from_rocm(monkeypatch, version, expected):
  """JAX names both GPU runtimes ``"gpu"``; the default plan follows the
  runtime, as ``lax.platform_dependent`` does when lowering."""
  class Client:
    platform_version = version

  class Device:
    client = Client()

  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax, "devices", lambda *_: [Device()])
  plan = jconvt.algorithm_plan((1, 8, 8, 4), (4, 4, 16, 4), ConvTransposeConfig(2, "same"))
  assert tuple(plan) == expected


def test_algorithm_plan_on_a_plugin_backend(monkeypatch):
  """The default backend may be a plugin whose name is not in the list an
  explicit ``platform`` is checked against: ``auto`` runs the reference there."""
  monkeypatch.setattr(jax, "default_backend", lambda: "METAL")
  plan = jconvt.algorithm_plan((1, 8, 8, 4), (4, 4, 8, 4), ConvTransposeConfig(2, "same"))
  assert plan == ("dilated", "autodiff", "autodiff")


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,output_padding,exact", [
    ((2, 6, 5, 3), (4, 4, 8, 3), (2, 2), "same", None, "onednn"),  # k4 s2: one group split
    ((2, 6, 5, 3), (3, 3, 8, 3), (2, 2), "same", None, True),     # k3 s2: a phase per group
    ((2, 6, 5, 3), (2, 2, 8, 3), (2, 2), "valid", None, True),    # one tap per phase: GEMMs
    ((1, 4, 4, 3), (3, 5, 8, 3), (3, 2), "same", (2, 1), "onednn"),  # output padding, uneven
    ((2, 5, 4, 3), (1, 1, 8, 3), (2, 2), "valid", None, True),    # phases no tap reaches
    ((2, 5, 4, 3), (3, 3, 8, 3), (2, 2), ((1, 0), (0, 1)), None, True),  # explicit crops
    ((2, 5, 4, 3), (3, 3, 8, 3), (2, 2), ((0, 2), (3, 1)), None, False),  # input cropped
    ((2, 6, 5, 3), (4, 4, 3, 3), (2, 2), "same", None, False),    # 3 filters: the groups
    # Past nine phases, a convolution per run of phases (oneDNN's):
    ((1, 4, 4, 3), (16, 16, 8, 3), (8, 8), "same", None, "onednn"),  # k = 2s: 2 runs an axis
    ((2, 3, 4, 5), (6, 5, 8, 5), (4, 3), "same", None, "onednn"),    # taps 2 and 1: 3 runs
    ((2, 4, 3, 3), (8, 8, 8, 3), (4, 4), "valid", None, "onednn"),   # one run: the canvas's
    ((1, 3, 3, 3), (3, 3, 8, 3), (4, 4), "same", None, "onednn"),    # phases no tap reaches
    ((1, 3, 3, 3), (10, 10, 8, 3), (4, 4), ((3, 5), (2, 7)), None, False),  # input cropped
    ((1, 4, 4, 3), (16, 16, 3, 3), (8, 8), "same", None, False),     # 3 filters
])
def test_phase_forward_computes_only_the_window(x_shape, kernel_shape, strides, padding,
                                                output_padding, exact):
  """At stride > 1 ``conv_phase`` computes one convolution per phase over
  exactly the rows and columns TF's window keeps (``_conv_phase_exact``)
  where ``_exact_phases_pay`` (8 filters or more) and no phase would crop
  the input, else one per group on the canvas; both equal the NumPy
  reference, with oneDNN (``on_cpu``) and without. ``exact="onednn"``: a
  group split, or past nine phases runs of phases, only where oneDNN runs
  the phases (``_onednn.enabled()``: not with a jaxlib it has not been
  verified on)."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding)
  params, x = _data(x_shape, kernel_shape)
  geometry = jconvt._conv._geometry(x.shape, kernel_shape, cfg)
  (out_h, pad_h), (out_w, pad_w) = geometry
  phases = (_algorithms._exact_phases(x_shape[1], kernel_shape[0], cfg.strides[0], out_h, pad_h),
            _algorithms._exact_phases(x_shape[2], kernel_shape[1], cfg.strides[1], out_w, pad_w))
  if None not in phases:
    # Each output row or column belongs to one phase: the slots tile [0, s).
    for axis_phases, s, out in zip(phases, cfg.strides, (out_h, out_w)):
      assert sorted(p[3] for p in axis_phases) == list(range(s))
      assert sum(p[2] for p in axis_phases) == out
  pays = _algorithms._exact_phases_pay(x_shape, x.dtype, kernel_shape, cfg, geometry, on_cpu=True)
  if exact == "onednn":
    exact = jconvt._onednn.enabled()
  assert (None not in phases and pays) is exact
  want = jconvt.reference_conv2d_transpose(np.asarray(x), np.asarray(params["kernel"]), None, cfg)
  for on_cpu in (True, False):
    got = jax.jit(lambda x, k: _algorithms.conv_phase(x, k, cfg, geometry, on_cpu=on_cpu))(
        x, params["kernel"])
    assert got.shape == want.shape
    assert_close(got, want)


@pytest.mark.parametrize("x_shape,kernel_shape,on_cpu,expected,strides,output_padding", [
    ((16, 16, 16, 256), (4, 4, 128, 256), True, True, 2, None),   # canvas 13% past the window
    ((16, 32, 32, 128), (4, 4, 64, 128), True, False, 2, None),   # 6%: the group stays
    ((16, 16, 16, 256), (4, 4, 128, 256), False, False, 2, None),  # XLA's own convolutions
    ((8, 32, 32, 128), (3, 3, 128, 128), False, True, 2, None),   # a phase per group already
    ((8, 32, 32, 256), (2, 2, 128, 256), False, True, 2, None),   # one tap per phase: GEMMs
    ((16, 32, 32, 64), (4, 4, 3, 64), True, False, 2, None),      # 3 filters
    # Past nine phases, runs of phases on oneDNN whatever the canvas's extra:
    ((1, 16, 16, 21), (64, 64, 21, 21), True, True, 32, None),   # FCN-32s: 4 runs of 256 phases
    ((1, 64, 64, 21), (16, 16, 21, 21), True, True, 8, None),    # FCN-8s: canvas 3% past the window
    ((1, 16, 16, 21), (64, 64, 21, 21), False, False, 32, None),  # XLA's own convolutions
    ((8, 32, 32, 64), (8, 8, 3, 64), True, False, 4, None),      # 3 filters
    ((2, 16, 16, 16), (11, 11, 16, 16), True, False, 4, 0),  # 16 runs: 4 taps or 3, 15 rows or 16
])
def test_exact_phases_rule(x_shape, kernel_shape, on_cpu, expected, strides, output_padding,
                           monkeypatch):
  """``_exact_phases_pay``: which phase forwards drop the canvas's extra
  pixels (oneDNN on for the ``on_cpu`` cases)."""
  from jconvt import _algorithms
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  cfg = ConvTransposeConfig(strides, "same", output_padding=output_padding)
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  assert _algorithms._exact_phases_pay(x_shape, jnp.float32, kernel_shape, cfg, geometry,
                                       on_cpu) is expected


@pytest.mark.parametrize("filters,dtype,strides,training,on_cpu,nchw_after,expected", [
    (64, jnp.float32, (2, 2), False, True, False, True),
    (64, jnp.float32, (2, 1), False, True, False, True),
    (64, jnp.float32, (2, 2), True, True, False, False),   # a training step: the transpose
    (64, jnp.float32, (2, 2), False, False, False, False),  # not XLA:CPU, where it was measured
    (64, jnp.float32, (2, 2), False, True, True, False),   # channels_first: fused with NCHW's
    (64, jnp.bfloat16, (2, 2), False, True, False, False),
    (32, jnp.float32, (2, 2), False, True, False, False),
    (128, jnp.float32, (2, 2), False, True, False, False),
    (3, jnp.float32, (2, 2), False, True, False, False),
    (64, jnp.float32, (4, 2), False, True, False, False),  # sixteen phases or more spread slowly
])
def test_interleave_by_pad_rule(filters, dtype, strides, training, on_cpu, nchw_after,
                                expected):
  """``_interleaves_by_pad``: where ``conv_phase`` spreads its phases."""
  from jconvt import _algorithms
  assert _algorithms._interleaves_by_pad(filters, dtype, strides, training, on_cpu,
                                         nchw_after) is expected


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,output_padding", [
    ((2, 6, 5, 3), (4, 4, 64, 3), (2, 2), "same", None),     # k4 s2: the group's canvas
    ((2, 6, 5, 3), (3, 3, 64, 3), (2, 2), "same", None),     # k3 s2: exact phases
    ((2, 5, 4, 3), (1, 1, 64, 3), (2, 2), "valid", None),    # phases no tap reaches
    ((1, 4, 4, 3), (3, 5, 64, 3), (2, 1), "same", (1, 0)),   # output padding, one stride 1
    ((2, 5, 4, 3), (3, 3, 64, 3), (2, 2), ((0, 2), (3, 1)), None),  # input cropped: canvas
    ((2, 1, 1, 3), (4, 4, 64, 3), (2, 2), "same", None),     # a 1x1 input
])
def test_phase_forward_spreads_the_phases(x_shape, kernel_shape, strides, padding,
                                          output_padding, monkeypatch):
  """With 64 float32 filters, on XLA:CPU (``on_cpu``, with oneDNN and
  without) outside training, ``conv_phase`` interleaves its phases by
  interior pads and bitwise ORs (``_interleave``) rather than by a
  depth-to-space transpose (a training step, other platforms' lowering and
  a channels_first layer's forward transpose them); its output equals, bit
  for bit, the transposed phases of a training step's forward, and the
  NumPy reference."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding)
  params, x = _data(x_shape, kernel_shape)
  geometry = jconvt._conv._geometry(x.shape, kernel_shape, cfg)
  want = jconvt.reference_conv2d_transpose(np.asarray(x), np.asarray(params["kernel"]), None, cfg)

  def phase(training, on_cpu, nchw_after=False):
    return jax.jit(lambda x, k: _algorithms.conv_phase(x, k, cfg, geometry, on_cpu=on_cpu,
                                                       training=training,
                                                       nchw_after=nchw_after))

  for onednn in ("1", "0"):
    monkeypatch.setenv("JCONVT_ONEDNN", onednn)
    spread = phase(False, True)
    # The phases spread as 32-bit words (``_interleave``) there and only there.
    assert "xui32>" in spread.lower(x, params["kernel"]).as_text()
    got = spread(x, params["kernel"])
    for other in (phase(True, True), phase(False, False), phase(False, True, nchw_after=True)):
      assert "xui32>" not in other.lower(x, params["kernel"]).as_text()
    # Bit for bit the training step's transposed phases (the same convolutions).
    np.testing.assert_array_equal(got, phase(True, True)(x, params["kernel"]))
    assert got.shape == want.shape
    assert_close(got, want)


@pytest.mark.parametrize("length,k,s,out,pad,expected", [
    (5, 2, 2, 10, 0, (1, 0, 0)),   # k2 s2: one tap, no padding
    (5, 4, 2, 12, 0, (2, 1, 1)),   # k4 s2 'valid': the full canvas
    (5, 6, 2, 10, 2, (3, 1, 1)),   # k6 s2 'same': the window starts one row in
    (5, 4, 2, 10, 1, None),        # k4 s2 'same': the phases' rows differ by one
    (5, 3, 2, 10, 0, None),        # k3 s2: the phases' taps differ in number
    (5, 4, 2, 13, 0, None),        # an output not a multiple of the stride
    (5, 2, 2, 8, 2, None),         # starting a slot row past the first: padding < 0
    (4, 6, 3, 12, 3, (2, 0, 1)),   # k6 s3 from offset 3: no padding before
])
def test_slot_window(length, k, s, out, pad, expected):
  """``_slot_window``: the stride-1 window that gives all ``s`` phases of
  ``out / s`` output rows at once, where they meet the same input rows."""
  from jconvt import _algorithms
  assert _algorithms._slot_window(length, k, s, out, pad) == expected
  if expected is not None:
    taps, lo, hi = expected
    assert length + lo + hi - taps + 1 == out // s


@pytest.mark.skipif(jax.default_backend() != "cpu" or not jconvt._onednn.enabled(),
                    reason="oneDNN runs on XLA:CPU, x86-64, a verified jaxlib")
@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,output_padding", [
    ((2, 6, 5, 3), (2, 2, 8, 3), (2, 2), "valid", None),
    ((2, 6, 5, 3), (2, 2, 8, 3), (2, 2), "same", None),
    ((2, 6, 5, 3), (4, 4, 8, 3), (2, 2), "valid", None),
    ((2, 6, 5, 3), (6, 6, 8, 3), (2, 2), "same", None),
    ((2, 4, 5, 3), (6, 3, 8, 3), (3, 3), "valid", None),
    ((2, 4, 5, 3), (4, 3, 8, 3), (2, 1), "valid", None),      # stride 1 across
    ((2, 4, 5, 3), (4, 4, 8, 3), (2, 2), ((2, 0), (0, 2)), None),  # explicit, multiples of 2
    ((2, 4, 5, 3), (4, 6, 9, 3), (2, 3), "valid", None),
])
def test_phase_forward_writes_the_output_interleaved(x_shape, kernel_shape, strides, padding,
                                                     output_padding):
  """Where every phase meets the same input pixels, ``conv_phase`` on oneDNN
  runs one three-dimensional convolution whose output is the layer's, with
  no interleaving copy (``_conv_phase_slots``), equal to the NumPy
  reference; not in a training step (``training``), whose gradients still
  equal the reference."""
  from jconvt import _algorithms, _onednn
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding)
  params, x = _data(x_shape, kernel_shape)
  geometry = jconvt._conv._geometry(x.shape, kernel_shape, cfg)
  slots = _algorithms._phase_slots(x_shape, x.dtype, kernel_shape, cfg, geometry, on_cpu=True)
  assert slots is not None
  assert _algorithms._phase_slots(x_shape, x.dtype, kernel_shape, cfg, geometry,
                                  on_cpu=True, training=True) is None
  want = jconvt.reference_conv2d_transpose(np.asarray(x), np.asarray(params["kernel"]), None, cfg)
  phase = jax.jit(lambda x, k: _algorithms.conv_phase(x, k, cfg, geometry, on_cpu=True))
  text = phase.lower(x, params["kernel"]).as_text()
  calls = [line for line in text.splitlines() if _onednn.TARGET in line]
  assert len(calls) == 1 and f"(tensor<{x_shape[0]}x{x_shape[1]}x1x" in calls[0]
  assert text.count("stablehlo.transpose") == 1  # the kernel's; no depth-to-space
  got = phase(x, params["kernel"])
  assert got.shape == want.shape
  assert_close(got, want)
  ref = jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(
      p, x, cfg.replace(algorithm="dilated")) ** 2), argnums=(0, 1))(params, x)
  grads = jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(
      p, x, cfg.replace(algorithm="phase")) ** 2), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
    assert_close(a, b)


@pytest.mark.parametrize("kernel_shape,padding,on_cpu,expected", [
    ((2, 2, 8, 16), "valid", True, True),
    ((2, 2, 4, 16), "valid", True, False),   # 4 filters: oneDNN's narrow outputs
    ((2, 2, 8, 1), "valid", True, False),    # one contracted channel
    ((4, 4, 8, 16), "same", True, False),    # the phases' rows differ
    ((2, 2, 8, 16), "valid", False, False),  # not lowered for XLA:CPU
])
def test_phase_slots_rule(kernel_shape, padding, on_cpu, expected, monkeypatch):
  """``_phase_slots``: where ``conv_phase`` writes its output interleaved."""
  from jconvt import _algorithms
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  cfg = ConvTransposeConfig(2, padding)
  x_shape = (2, 8, 8, kernel_shape[3])
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  got = _algorithms._phase_slots(x_shape, jnp.float32, kernel_shape, cfg, geometry, on_cpu)
  assert (got is not None) is expected
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  assert _algorithms._phase_slots(x_shape, jnp.float32, kernel_shape, cfg, geometry,
                                  on_cpu) is None


def test_exact_phase_runs():
  """``_exact_phase_runs`` merges consecutive phases that meet the same
  taps at the same input rows; phases that meet no tap are left out."""
  from jconvt import _algorithms
  runs = lambda length, k, s, out, pad: [
      r[:2] for r in _algorithms._exact_phase_runs(_algorithms._exact_phases(length, k, s, out, pad))]
  assert runs(16, 64, 32, 512, 16) == [(0, 16), (16, 16)]   # k64 s32 'same'
  assert runs(16, 4, 2, 32, 1) == [(0, 1), (1, 1)]          # k4 s2 'same'
  assert runs(8, 8, 4, 36, 0) == [(0, 4)]                   # k8 s4 'valid'
  assert runs(6, 3, 4, 24, 0) == [(0, 3)]                   # k3 s4: phase 3 meets no tap
  assert runs(7, 6, 4, 28, 1) == [(0, 1), (1, 1), (2, 2)]   # k6 s4 'same': taps 2 or 1


def test_exact_phases_refuses_a_cropped_input():
  """Where a phase's rows would start past its first window (a negative
  padding: the input cropped), ``_exact_phases`` says so and ``conv_phase``
  keeps the canvas."""
  from jconvt import _algorithms
  # length 4, k 2, s 2, 6 outputs from offset 3: phase 1's first row is t = 1, one tap.
  assert _algorithms._exact_phases(4, 2, 2, 6, 3) is None
  assert _algorithms._exact_phases(4, 2, 2, 8, 0) == [(1, 0, 4, 0), (1, 0, 4, 1)]


@pytest.mark.parametrize("dtype,preferred", [
    (jnp.float32, None), (jnp.bfloat16, None), (jnp.bfloat16, jnp.float32), (jnp.float16, None)])
@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,output_padding", [
    ((2, 5, 6, 8), (4, 4, 6, 8), (2, 2), "same", None),
    ((2, 5, 6, 8), (3, 3, 6, 8), (2, 3), "valid", None),  # k % s != 0: zero taps
    ((1, 4, 4, 7), (3, 5, 5, 7), (3, 2), "same", (2, 1)),  # odd channels: not packed
    ((2, 5, 4, 8), (3, 3, 6, 8), (2, 2), ((2, 0), (1, 3)), None),  # explicit crops
    ((2, 5, 4, 8), (1, 1, 6, 8), (2, 2), "valid", None),  # phases no tap reaches
])
def test_phase_gemm_forward(x_shape, kernel_shape, strides, padding, output_padding, dtype,
                            preferred):
  """``conv_phase_gemm`` against the NumPy reference on the same (rounded)
  values, with TF's paddings, output padding, explicit crops, odd channel
  counts (no packing), and a float32 output of bfloat16 inputs."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding,
                            preferred_element_type=preferred)
  params, x = _data(x_shape, kernel_shape)
  x, kernel = x.astype(dtype), params["kernel"].astype(dtype)
  geometry = jconvt._conv._geometry(x.shape, kernel.shape, cfg)
  got = _algorithms.conv_phase_gemm(x, kernel, cfg, geometry)
  assert got.dtype == (preferred or dtype)
  want = jconvt.reference_conv2d_transpose(np.asarray(x, np.float32),
                                           np.asarray(kernel, np.float32), None, cfg)
  assert_close(got, want, dtype=preferred or dtype)


@pytest.mark.usefixtures("without_onednn")
def test_bfloat16_forward_and_gradients_of_auto_with_the_gemm_forward():
  """A bfloat16 layer whose ``auto`` forward is the one-GEMM phase forward:
  output and gradients against the float32 reference path's on the same
  values."""
  from jconvt._algorithms import _forward_algorithm
  cfg = ConvTransposeConfig(2, "same")
  params, x = _data((2, 5, 6, 16), (4, 4, 128, 16))
  params = {"kernel": params["kernel"].astype(jnp.bfloat16)}
  x = x.astype(jnp.bfloat16)
  assert _forward_algorithm(cfg, x.shape, params["kernel"].shape, x.dtype) == "phase_gemm"
  dy = jnp.asarray(np.random.default_rng(2).standard_normal(
      jconvt.output_shape(x.shape, params["kernel"].shape, cfg)), jnp.bfloat16)

  def run(p, x, algorithm):
    c = cfg.replace(algorithm=algorithm)
    y, vjp = jax.vjp(lambda p, x: jconvt.conv2d_transpose(p, x, c), p, x)
    return y, vjp(dy.astype(y.dtype))

  y, (dp, dx) = run(params, x, "auto")
  want_y, (want_dp, want_dx) = run(
      *jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), (params, x)), "dilated")
  assert y.dtype == dx.dtype == dp["kernel"].dtype == jnp.bfloat16
  assert_close(y, want_y, dtype=jnp.bfloat16)
  assert_close(dx, want_dx, dtype=jnp.bfloat16)
  assert_close(dp["kernel"], want_dp["kernel"], dtype=jnp.bfloat16)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_packed_words_move_channel_pairs(dtype):
  """16-bit arrays with an even channel count are moved as 32-bit words, two
  adjacent channels each: copies that keep the channel axis last and whole
  give the same values either way; odd channel counts and float32 arrays
  are left as they are."""
  from jconvt._algorithms import _packed, _unpacked
  a = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4, 6)), dtype)
  words = _packed(a)
  assert words.dtype == jnp.uint32 and words.shape == (3, 4, 3)
  np.testing.assert_array_equal(_unpacked(words, dtype), a)
  pad = ((1, 0), (0, 2), (0, 0))
  moved = jnp.concatenate([jnp.pad(words, pad)[1:, 1:4], words[::-1, 1:]], axis=-1)
  want = jnp.concatenate([jnp.pad(a, pad)[1:, 1:4], a[::-1, 1:]], axis=-1)
  np.testing.assert_array_equal(_unpacked(moved, dtype), want)
  assert _packed(a[..., :5]).dtype == dtype
  assert _packed(a.astype(jnp.float32)).dtype == jnp.float32


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,plan", [
    ((3, 1, 1, 5), (4, 4, 6, 5), 1, "valid", ("col2im", "conv", "conv")),  # a latent
    ((3, 1, 1, 40), (4, 3, 36, 40), 1, "valid", ("col2im", "conv", "conv")),  # deep: no GEMMs
    ((3, 1, 1, 4), (3, 3, 5, 4), (2, 1), "same", ("col2im", "taps", "conv")),
    ((3, 1, 1, 5), (5, 3, 6, 5), 1, "same", ("col2im", "taps", "conv")),
    ((2, 2, 3, 8), (7, 5, 6, 8), 1, "same", ("col2im", "taps/conv", "conv")),  # 35 taps
    ((2, 2, 2, 8), (5, 5, 6, 8), 2, "same", ("col2im", "taps", "conv")),
    ((2, 2, 3, 8), (9, 7, 6, 8), 2, "same", ("col2im", "taps/conv", "conv")),
    ((2, 3, 2, 8), (7, 7, 6, 8), (3, 2), "valid", ("col2im", "conv", "conv")),
    ((2, 6, 6, 3), (3, 3, 8, 3), 1, "valid", ("col2im", "conv", "conv")),  # unswapped dk
])
@pytest.mark.parametrize("onednn", ["0", "1"])
def test_auto_on_kernels_larger_than_their_input_matches_the_reference(
    x_shape, kernel_shape, strides, padding, plan, onednn, monkeypatch):
  """Where a convolution's kernel would exceed its input, ``auto``'s plan
  (col2im, the taps, the unswapped kernel gradient) gives the reference's
  output and gradients; with oneDNN the input gradient's convolution where
  it would be the taps past ``TAPS_MAX_TAPS`` (``_input_grad_conv_on_onednn``;
  "taps/conv": without oneDNN / with it)."""
  if onednn == "1" and not (jax.default_backend() == "cpu" and jconvt._onednn._default_enabled()):
    pytest.skip("oneDNN runs on XLA:CPU, x86-64, a verified jaxlib")
  monkeypatch.setenv("JCONVT_ONEDNN", onednn)
  plan = tuple(a.split("/")[-1 if onednn == "1" else 0] for a in plan)
  cfg = ConvTransposeConfig(strides, padding)
  assert tuple(jconvt.algorithm_plan(x_shape, kernel_shape, cfg, platform="cpu")) == plan
  _assert_matches_the_reference(x_shape, kernel_shape, cfg)


@pytest.mark.parametrize("x_shape,kernel_shape,strides,dilation", [
    ((5, 16, 16, 4), (4, 4, 3, 4), 2, 1),    # 1280 pixels: 2 chunks of 3 images, 1 padded
    ((7, 13, 12, 2), (3, 5, 2, 2), (2, 3), 1),
    ((3, 20, 20, 2), (3, 3, 2, 2), 1, 2),
    ((1, 40, 40, 2), (3, 3, 2, 2), 2, 1),    # one image: unchunked
])
def test_col2im_chunks_its_batch(x_shape, kernel_shape, strides, dilation):
  """``conv_col2im`` over more than ``SMALL_INPUT_PIXELS`` runs chunks of the
  batch (a loop: one GEMM per chunk), which give the unchunked values."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  params, x = _data(x_shape, kernel_shape)
  geometry = jconvt._conv._geometry(x.shape, kernel_shape, cfg)
  chunked = jax.jit(lambda x, k: _algorithms.conv_col2im(x, k, cfg, geometry))
  assert (" while(" in chunked.lower(x, params["kernel"]).compile().as_text()) == (x_shape[0] > 1)
  assert_close(chunked(x, params["kernel"]),
               _algorithms._col2im(x, params["kernel"], cfg, geometry))
  assert_close(chunked(x, params["kernel"]),
               _algorithms.conv_dilated(x, params["kernel"], cfg, geometry))


@pytest.mark.parametrize("x_shape,kernel_shape,strides,forward,training", [
    ((16, 8, 8, 512), (4, 4, 256, 512), 2, 16, 8),      # dcgan 8->16: 16 MiB of columns
    ((128, 4, 4, 256), (9, 9, 128, 256), 2, 25, 16),    # 40 KiB a pixel; the kernel 10 MiB
    ((16, 8, 8, 256), (4, 4, 128, 256), 2, 16, 16),     # 8 MiB: the training floor
    ((64, 8, 8, 128), (9, 9, 128, 128), 1, 16, 16),     # row loop: a kernel row's columns
    ((4, 64, 64, 256), (4, 4, 256, 256), 2, 1, 1),      # an image past the caps
    ((2, 4, 4, 8), (3, 3, 4, 8), 2, 2, 2),              # small: the whole batch
])
def test_col2im_chunk_rule(x_shape, kernel_shape, strides, forward, training):
  """``_col2im_chunk_images``: at most ``SMALL_INPUT_PIXELS`` pixels and 16
  MiB of columns a chunk, and in a training step no more columns than the
  kernel's bytes or 8 MiB, the larger; at least one image."""
  from jconvt._algorithms import _col2im_chunk_images
  cfg = ConvTransposeConfig(strides, "same")
  assert _col2im_chunk_images(cfg, x_shape, kernel_shape, jnp.float32) == forward
  assert _col2im_chunk_images(cfg, x_shape, kernel_shape, jnp.float32, training=True) == training


@pytest.mark.parametrize("x_hw,k,s,padding,dtype", [
    ((5, 4), (4, 4), (2, 2), "same", jnp.float32),     # strides divide: by row phase
    ((3, 3), (8, 4), (4, 2), "valid", jnp.float32),
    ((2, 3), (4, 4), (2, 2), "same", jnp.bfloat16),    # words, two filters each
    ((4, 4), (3, 3), (2, 2), "same", jnp.float32),     # k3 s2: the transpose
    ((4, 5), (4, 3), (2, 1), "valid", jnp.float32),
])
def test_dy_canvas_folds_the_output_cotangent_space_to_depth(x_hw, k, s, padding, dtype):
  """``_dy_canvas``: ``dy`` placed on the phase canvas (TF's padding
  before it, zeros past it) and folded space-to-depth, phase by phase,
  equals NumPy's pad, reshape and transpose, by row phase or by the
  transpose (16-bit values as words)."""
  from jconvt import _algorithms, _shapes
  f = 4
  cfg = ConvTransposeConfig(s, padding)
  x_shape = (2, *x_hw, 3)
  geometry = jconvt._conv._geometry(x_shape, (*k, f, 3), cfg)
  (out_h, pad_h), (out_w, pad_w) = geometry
  dy = np.random.default_rng(0).standard_normal((2, out_h, out_w, f)).astype(dtype)
  got = _algorithms._dy_canvas(jnp.asarray(dy), k, cfg, geometry, x_hw)
  if jnp.dtype(dtype).itemsize == 2:
    got = lax.bitcast_convert_type(got, dtype).reshape(*got.shape[:-1], -1)
  th = _shapes.phase_canvas_length(x_hw[0], k[0], s[0])
  tw = _shapes.phase_canvas_length(x_hw[1], k[1], s[1])
  canvas = np.zeros((2, max(th * s[0], pad_h + out_h), max(tw * s[1], pad_w + out_w), f), dtype)
  canvas[:, pad_h:pad_h + out_h, pad_w:pad_w + out_w] = dy
  canvas = canvas[:, :th * s[0], :tw * s[1]]
  want = canvas.reshape(2, th, s[0], tw, s[1], f).transpose(0, 1, 3, 2, 4, 5)
  np.testing.assert_array_equal(np.asarray(got), want.reshape(2, th, tw, -1))


@pytest.mark.parametrize("k,s,d", [
    (4, 2, 1), (3, 2, 1), (64, 32, 1), (17, 16, 1), (2, 4, 1), (5, 1, 1), (3, 1, 2),
    (3, 3, 2), (5, 2, 3), (4, 2, 2)])
def test_tap_groups_cover_each_tap_once_at_its_shift_and_phase(k, s, d):
  """``_tap_groups``: every tap ``a`` is in exactly one group, at shift
  ``a*d div s`` and phase ``a*d mod s``, the group's phases ``d`` apart;
  at dilation 1 there are ``ceil(k / s)`` groups, one per shift."""
  from jconvt._algorithms import _tap_groups
  groups = _tap_groups(k, s, d)
  taps = [a0 + i for _, a0, count, _ in groups for i in range(count)]
  assert taps == list(range(k))
  for q, a0, count, r0 in groups:
    for i in range(count):
      assert divmod((a0 + i) * d, s) == (q, r0 + i * d)
  assert len({q for q, *_ in groups}) == len(groups)
  if d == 1:
    assert len(groups) == -(-k // s)


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding", [
    ((1, 3, 3, 3), (64, 64, 2, 3), 32, "same"),    # FCN-32s's upsampling: k = 2s
    ((1, 2, 3, 2), (33, 33, 2, 2), 16, "valid"),   # k = 2s + 1: phases of 3 and 2 taps
    ((2, 2, 2, 4), (17, 17, 8, 4), 16, "same"),    # 8 filters: the phases were one each
    ((2, 2, 2, 4), (16, 16, 8, 4), 16, "valid"),   # one tap a phase: 256 GEMMs
    ((1, 4, 4, 2), (33, 33, 2, 2), 2, "same"),     # 289 blocks of col2im: its row loop
    ((1, 1, 1, 4), (33, 33, 4, 4), 1, "same"),     # the input gradient's 1089 shifts
])
@pytest.mark.parametrize("algorithm", ["auto", "phase", "col2im"])
def test_large_strides_lower_to_a_program_that_does_not_grow_with_them(
    x_shape, kernel_shape, strides, padding, algorithm):
  """At strides 16 and 32, and with kernels of 33 on tiny inputs, a
  training step lowers to a program of a few hundred operations, one per
  block of taps or group of phases or a loop, not one per tap, phase or
  shift (k64 s32: col2im placed 4096 taps, 110 s of compile; the phase
  forward wrote 1024 convolutions, 29 s; a 1x1 input's k33 input gradient
  1089 GEMMs, 30 s), and its values and gradients equal the reference's."""
  cfg = ConvTransposeConfig(strides, padding, algorithm=algorithm)
  lines = _step_lines_checked_against_reference(*_data(x_shape, kernel_shape), cfg)
  assert lines < 500, lines


def _step_lines_checked_against_reference(params, x, cfg):
  """The StableHLO line count of a training step in ``cfg``, whose values
  and gradients are checked against the dilated reference's (tolerances of
  ``x``'s dtype)."""
  step = jax.jit(jax.value_and_grad(
      lambda p, x, c: jnp.sum(jconvt.conv2d_transpose(p, x, c).astype(jnp.float32) ** 2),
      argnums=(0, 1)), static_argnums=2)
  lines = step.lower(params, x, cfg).as_text().count("\n")
  got = step(params, x, cfg)
  want = step(params, x, cfg.replace(algorithm="dilated"))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert_close(g, w, dtype=x.dtype)
  return lines


def test_bfloat16_latent_with_a_large_kernel_lowers_to_a_small_program():
  """A bfloat16 1x1 input with a k33 s4 kernel: its kernel gradient is the
  convolution, not the phase GEMMs, whose slices of an all-padding canvas
  made the step 764 lines (1.3 s to compile, against 0.24); the values
  equal the reference's."""
  params, x = _data((2, 1, 1, 16), (33, 33, 16, 16), dtype=jnp.bfloat16)
  lines = _step_lines_checked_against_reference(params, x, ConvTransposeConfig(4, "same"))
  assert lines < 300, lines


@pytest.mark.parametrize("x_shape,kernel_shape,strides,expected", [
    ((1, 16, 16, 21), (64, 64, 21, 21), 32, "phase"),   # FCN-32s: 88 MiB, 12x the kernel
    ((4, 16, 16, 21), (32, 32, 21, 21), 16, "phase"),   # 88 MiB, 49x
    ((2, 8, 8, 128), (32, 32, 128, 128), 16, "col2im"),  # 64 MiB, as large as the kernel
    ((1, 16, 16, 21), (16, 16, 21, 21), 8, "col2im"),   # 5.5 MiB
    ((16, 8, 8, 512), (4, 4, 256, 512), 2, "col2im"),   # the suite's dcgan 8->16: 16 MiB
])
def test_col2im_gives_way_where_its_columns_outgrow_kernel_and_heap(
    x_shape, kernel_shape, strides, expected):
  """On small inputs ``auto`` takes col2im unless its columns exceed both
  32 MiB and four times the kernel (``_col2im_columns_outgrow``)."""
  cfg = ConvTransposeConfig(strides, "same")
  assert jconvt.algorithm_plan(x_shape, kernel_shape, cfg, platform="cpu").forward == expected


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,expected", [
    ((1, 64, 64, 21), (16, 16, 21, 21), 8, "same", "phase_gemm"),   # FCN-8s's head
    ((1, 32, 32, 32), (4, 4, 64, 32), 2, "same", "phase_gemm"),
    ((1, 32, 32, 128), (3, 3, 128, 128), 2, "same", "phase_gemm"),
    ((2, 32, 32, 32), (4, 4, 64, 32), 2, "same", "conv"),           # two images: oneDNN
    ((1, 32, 32, 128), (7, 7, 64, 128), 2, "same", "conv"),         # 4 taps a phase
    ((1, 16, 16, 512), (4, 4, 256, 512), 2, "valid", "taps"),       # deep: not the GEMMs
])
def test_one_image_takes_the_kernel_gradient_gemms(x_shape, kernel_shape, strides, padding,
                                                   expected):
  """On one image at stride > 1 (float32) the kernel gradient's convolution
  would contract one channel, off oneDNN: the phase GEMMs instead, up to 2
  taps a phase and 128 x 128 channels (``_kernel_grad_is_gemm``)."""
  cfg = ConvTransposeConfig(strides, padding)
  plan = jconvt.algorithm_plan(x_shape, kernel_shape, cfg, platform="cpu")
  assert plan.kernel_gradient == expected


@pytest.mark.parametrize("x_shape,kernel_shape,strides,dilation,loop", [
    ((2, 3, 4, 3), (6, 7, 2, 3), 1, 1, True),         # 42 taps per output pixel
    ((2, 3, 3, 2), (6, 6, 2, 2), 1, (2, 1), True),    # 36, dilated
    ((2, 8, 8, 16), (11, 11, 16, 16), 1, 1, True),    # the compile sweep's k11 s1 (auto: col2im)
    ((3, 2, 2, 4), (8, 8, 5, 4), 1, 1, True),         # 64 on a 2x2 input
    ((2, 3, 4, 3), (5, 5, 2, 3), 1, 1, False),        # 25: the adds unrolled
    ((1, 4, 2, 2), (11, 5, 2, 2), (2, 1), 1, True),   # 30 blocks, strided
    ((2, 3, 3, 2), (9, 9, 2, 2), 2, 1, False),        # 25 blocks at s2: unrolled
    ((1, 3, 2, 2), (7, 6, 2, 2), (3, 2), (1, 2), False),  # strided and dilated: 18 blocks
    ((1, 3, 2, 2), (7, 8, 2, 2), (2, 3), (2, 3), True),   # 7 x 8 blocks
    ((3, 1, 1, 4), (8, 8, 5, 4), 1, 1, False),        # a 1x1 input: its GEMM reshaped
])
def test_col2im_adds_the_rows_in_a_loop_past_the_tap_cap(x_shape, kernel_shape, strides, dilation,
                                                         loop, monkeypatch):
  """Past ``COL2IM_MAX_TAPS`` taps per output pixel at stride 1, col2im adds
  the kernel's rows in a loop (``lax.fori_loop``: one row's GEMM and adds in
  the program), which gives the unrolled adds' values and the reference's."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  params, x = _data(x_shape, kernel_shape)
  geometry = jconvt._conv._geometry(x.shape, kernel_shape, cfg)
  col2im = lambda x, k: _algorithms._col2im(x, k, cfg, geometry)
  looped = jax.jit(col2im)
  assert _algorithms._col2im_row_loop(cfg, x_shape, kernel_shape) is loop
  assert ("stablehlo.while" in looped.lower(x, params["kernel"]).as_text()) is loop
  got = looped(x, params["kernel"])
  monkeypatch.setattr(_algorithms, "COL2IM_MAX_TAPS", 10**9)
  unrolled = jax.jit(lambda x, k: col2im(x, k))
  assert "stablehlo.while" not in unrolled.lower(x, params["kernel"]).as_text()
  assert_close(got, unrolled(x, params["kernel"]))
  assert_close(got, _algorithms.conv_dilated(x, params["kernel"], cfg, geometry))


@pytest.mark.parametrize("x_shape,kernel_shape,strides,loop", [
    ((2, 2, 5, 3), (3, 4, 8, 3), 1, False),   # 12 taps a pixel, the adds unrolled
    ((2, 4, 4, 16), (4, 4, 8, 16), 2, False),  # strided: 4 taps a pixel
    ((2, 3, 4, 8), (6, 7, 8, 8), 1, True),     # 42: the row loop
    ((3, 1, 1, 8), (4, 4, 8, 8), 1, False),    # a 1x1 input: no adds
])
def test_col2im_adds_bfloat16_in_float32(x_shape, kernel_shape, strides, loop):
  """bfloat16 col2im: its columns are added in float32 and the output
  rounded once, so every output pixel is within half a bfloat16 step of
  the float32 result on the same values (added in bfloat16, a pixel of 12
  taps was 0.037 off where its bfloat16 step is 0.0005)."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, "same")
  params, x = _data(x_shape, kernel_shape)
  x, kernel = x.astype(jnp.bfloat16), params["kernel"].astype(jnp.bfloat16)
  geometry = jconvt._conv._geometry(x.shape, kernel_shape, cfg)
  assert _algorithms._col2im_row_loop(cfg, x_shape, kernel_shape) is loop
  got = jax.jit(lambda x, k: _algorithms._col2im(x, k, cfg, geometry))(x, kernel)
  assert got.dtype == jnp.bfloat16
  want = np.asarray(_algorithms.conv_dilated(x.astype(jnp.float32), kernel.astype(jnp.float32),
                                             cfg, geometry))
  # Half a step of bfloat16 (8 significant bits) at each value, and a
  # little for float32's own sums.
  np.testing.assert_array_less(np.abs(np.asarray(got, np.float32) - want),
                               np.abs(want) * 2.0 ** -8 + 1e-6)


def _reference_gradients(x_shape, kernel_shape, cfg):
  """An input, a kernel, a random ``dy``, the layer's geometry and the
  dilated reference's input and kernel gradients for that ``dy``: what a
  gradient algorithm is checked against."""
  params, x = _data(x_shape, kernel_shape)
  geometry = jconvt._conv._geometry(x.shape, kernel_shape, cfg)
  dy = jnp.asarray(np.random.default_rng(1).standard_normal(
      jconvt.output_shape(x.shape, kernel_shape, cfg)), np.float32)
  dx, dk = jax.grad(lambda x, k: jnp.sum(jconvt.conv2d_transpose(
      {"kernel": k}, x, cfg.replace(algorithm="dilated")) * dy), argnums=(0, 1))(
          x, params["kernel"])
  return x, params["kernel"], dy, geometry, dx, dk


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,output_padding", [
    ((2, 5, 6, 8), (4, 4, 6, 8), (2, 2), "same", None),
    ((2, 5, 6, 8), (3, 3, 6, 8), (2, 3), "valid", None),
    ((1, 4, 4, 8), (3, 5, 6, 8), (3, 2), "same", (2, 1)),
    ((2, 5, 4, 8), (3, 3, 6, 8), (2, 2), ((2, 0), (1, 3)), None),  # explicit crops
    ((2, 5, 4, 8), (1, 1, 6, 8), (2, 2), "valid", None),
    ((0, 5, 4, 8), (3, 3, 6, 8), (2, 2), "same", None),  # empty batch
    ((2, 3, 4, 8), (5, 5, 6, 8), (1, 1), "same", None),  # stride 1
    ((2, 2, 3, 8), (9, 7, 6, 8), (2, 2), "same", None),  # a kernel larger than dy
])
def test_tap_window_gradients(x_shape, kernel_shape, strides, padding, output_padding):
  """``grad_kernel_taps`` and ``grad_input_taps`` against the reference's
  gradients, with TF's paddings, output padding, explicit crops, a 1x1
  kernel and an empty batch."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding)
  x, kernel, dy, geometry, want_dx, want_dk = _reference_gradients(x_shape, kernel_shape, cfg)
  dk = _algorithms.grad_kernel_taps(x, dy, kernel_shape[:2], cfg, geometry)
  assert dk.shape == kernel_shape
  assert_close(dk, want_dk)
  dx = _algorithms.grad_input_taps(dy, kernel, cfg, geometry, x_shape[1:3])
  assert dx.shape == x_shape
  assert_close(dx, want_dx)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_tap_window_input_gradient_in_half_precision(dtype):
  """``grad_input_taps`` of 16-bit values (its windows moved as words) in
  float32-accumulated form, against the float32 reference on the same
  values; an odd filter count is not packed."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(2, "same")
  for kernel_shape in [(3, 3, 6, 8), (4, 4, 5, 8)]:
    x, kernel, dy, geometry, _, _ = _reference_gradients((2, 5, 6, 8), kernel_shape, cfg)
    kernel, dy = kernel.astype(dtype), dy.astype(dtype)
    want = jax.grad(lambda x: jnp.sum(jconvt.conv2d_transpose(
        {"kernel": kernel.astype(jnp.float32)}, x, cfg.replace(algorithm="dilated"))
        * dy.astype(jnp.float32)))(x)
    got = _algorithms.grad_input_taps(dy, kernel, cfg, geometry, x.shape[1:3])
    assert got.dtype == dtype
    assert_close(got, want, dtype=dtype)


@pytest.mark.parametrize("exact_taps", [True, False])
@pytest.mark.parametrize("x_shape,kernel_shape,strides", [
    ((2, 5, 6, 40), (3, 3, 33, 40), (2, 2)),  # k % s != 0: two phase groups per axis
    ((3, 4, 5, 32), (5, 4, 32, 32), (2, 3)),  # groups on one axis only
    ((2, 6, 6, 33), (3, 5, 40, 33), (3, 2)),
    ((2, 5, 5, 64), (4, 4, 3, 64), (2, 2)),   # a 3-filter dy
    ((2, 5, 5, 64), (3, 3, 3, 64), (2, 2)),
    ((2, 5, 5, 3), (3, 3, 64, 3), (2, 2)),    # 3 input channels
    ((2, 4, 5, 8), (5, 7, 8, 8), (2, 3)),     # three shifts down, three across
    ((2, 6, 6, 32), (1, 1, 40, 32), (2, 2)),  # kernel < stride: phases no tap reaches
    ((2, 6, 7, 32), (3, 3, 32, 32), (1, 1)),
])
def test_gemm_kernel_gradient_variants(x_shape, kernel_shape, strides, exact_taps,
                                       monkeypatch):
  """``grad_kernel_phase`` against the reference's kernel gradient, whole and
  one image per chunk, with one GEMM per pair of phase groups (its own taps
  only) and with one GEMM over all taps (zero past the kernel), and each
  way of splitting the shifts between the stacks (``_correlate_mode``;
  "x" both whole and chunked)."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, "same")
  x, _, dy, geometry, _, want = _reference_gradients(x_shape, kernel_shape, cfg)
  monkeypatch.setattr(_algorithms, "EXACT_TAPS_FILTERS", 0 if exact_taps else 10**9)
  for mode, chunk_rows in (("x", 10**9), ("x", 1), ("split", 1), ("d", 10**9)):
    monkeypatch.setattr(_algorithms, "_correlate_mode", lambda *_, mode=mode: mode)
    monkeypatch.setattr(_algorithms, "KERNEL_GRAD_CHUNK_ROWS", chunk_rows)
    got = _algorithms.grad_kernel_phase(x, dy, kernel_shape[:2], cfg, geometry)
    assert_close(got, want)


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,output_padding,pairs", [
    ((1, 4, 4, 3), (16, 16, 8, 3), (8, 8), "same", None, 4),    # k = 2s: two runs an axis
    ((0, 4, 4, 3), (16, 16, 8, 3), (8, 8), "same", None, 4),    # an empty batch
    ((2, 3, 4, 5), (6, 5, 8, 5), (4, 3), "same", None, 9),      # 3 uneven runs an axis
    ((2, 4, 3, 3), (8, 8, 8, 3), (4, 4), "valid", None, 1),     # one run: the canvas's
    ((1, 3, 3, 3), (3, 3, 8, 3), (4, 4), "same", None, 1),      # a phase no tap reaches
    ((1, 4, 5, 3), (12, 10, 6, 3), (4, 5), "same", (2, 3), 9),  # output padding
    ((2, 6, 6, 3), (11, 11, 4, 3), (4, 4), "same", 0, None),    # 16 pairs: the canvas
    ((1, 3, 3, 3), (10, 10, 8, 3), (4, 4), ((3, 5), (2, 7)), None, None),  # input cropped
])
def test_kernel_gradient_by_runs_of_phases(x_shape, kernel_shape, strides, padding,
                                           output_padding, pairs, monkeypatch):
  """Past nine phases ``grad_kernel_phase`` runs by the forward's runs of
  phases (``_kernel_grad_phase_runs``: a GEMM per pair of runs over exactly
  its pixels of ``dy``, in a loop) where ``_kernel_grad_phase_windows``
  finds at most nine pairs and no phase would crop the input; with either
  start of the loop's stack, against the reference's kernel gradient (the
  runs' floor of phases lifted to reach these small kernels)."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding)
  x, _, dy, geometry, _, want = _reference_gradients(x_shape, kernel_shape, cfg)
  monkeypatch.setattr(_algorithms, "KERNEL_GRAD_RUN_MIN_PHASES", 0)
  windows = _algorithms._kernel_grad_phase_windows(cfg, x.shape, kernel_shape[:2], geometry)
  assert (None if windows is None else len(windows)) == pairs
  for first_outside in (True, False):  # the loop's stack starts as the first pair's, or zeros
    monkeypatch.setattr(_algorithms, "_runs_stack_starts_zero",
                        lambda *_, zero=not first_outside: zero)
    got = jax.jit(lambda x, dy: _algorithms.grad_kernel_phase(x, dy, kernel_shape[:2], cfg,
                                                              geometry))(x, dy)
    assert got.shape == kernel_shape
    assert_close(got, want)


def test_kernel_gradient_by_runs_of_phases_in_bfloat16():
  """bfloat16 inputs through the runs (FCN-32s's shape, 21 -> 8 channels on
  a 4x4 input): float32 GEMMs, the reference's gradient of the rounded
  inputs within bfloat16's tolerance."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(32, "same")
  x, _, dy, geometry, _, _ = _reference_gradients((1, 4, 4, 21), (64, 64, 8, 21), cfg)
  x, dy = x.astype(jnp.bfloat16), dy.astype(jnp.bfloat16)
  assert _algorithms._kernel_grad_phase_windows(cfg, x.shape, (64, 64), geometry)
  want = jax.grad(lambda k: jnp.sum(jconvt.conv2d_transpose(
      {"kernel": k}, x.astype(jnp.float32), cfg.replace(algorithm="dilated"))
      * dy.astype(jnp.float32)))(jnp.zeros((64, 64, 8, 21), jnp.float32))
  got = jax.jit(lambda x, dy: _algorithms.grad_kernel_phase(x, dy, (64, 64), cfg, geometry))(
      x, dy)
  assert got.dtype == jnp.float32
  assert_close(got.astype(jnp.bfloat16), want, dtype=jnp.bfloat16)


@pytest.mark.parametrize("x_shape,kernel_shape,strides,runs", [
    ((1, 16, 16, 21), (64, 64, 21, 21), 32, True),   # FCN-32s: 4 pairs of 256 phases
    ((1, 64, 64, 21), (16, 16, 21, 21), 8, True),    # FCN-8s: 4 pairs of 16
    ((4, 16, 16, 21), (64, 64, 21, 21), 32, True),   # 4 images, one canvas: unchunked
    ((1, 32, 32, 64), (8, 8, 32, 64), 4, False),     # k8 s4: pairs of 4 phases, 0.85-0.93x
    ((4, 32, 32, 64), (8, 8, 64, 64), 4, False),
    ((16, 16, 16, 21), (64, 64, 21, 21), 32, False),  # a chunked canvas
    ((1, 16, 16, 64), (6, 6, 32, 64), 2, False),     # nine phases or fewer
])
def test_kernel_gradient_by_runs_rule(x_shape, kernel_shape, strides, runs):
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, "same")
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  windows = _algorithms._kernel_grad_phase_windows(cfg, x_shape, kernel_shape[:2], geometry)
  assert (windows is not None) is runs


@pytest.mark.parametrize("x_shape,kernel_shape,strides,onednn,expected", [
    ((4, 16, 16, 21), (64, 64, 21, 21), 32, False, "phase_gemm"),  # FCN-32s on 4 images: 1.51x
    ((8, 16, 16, 21), (32, 32, 21, 21), 16, False, "phase_gemm"),  # 1.43x
    ((4, 16, 16, 21), (64, 64, 21, 21), 32, True, "conv"),         # on oneDNN: 1.00x-1.10x
    ((4, 32, 32, 64), (8, 8, 64, 64), 4, False, "conv"),   # k8 s4: no runs (pairs of 4 phases)
    ((16, 16, 16, 21), (64, 64, 21, 21), 32, False, "conv"),  # a chunked canvas: no runs
])
def test_large_stride_kernel_gradient_rule_without_onednn(monkeypatch, x_shape, kernel_shape,
                                                          strides, onednn, expected):
  """Float32 past nine phases, where the kernel gradient's GEMMs run by
  runs of phases and its convolution would be XLA:CPU's own (no oneDNN):
  the GEMMs; on oneDNN the convolution, below ``GEMM_KERNEL_GRAD_PIXELS``."""
  from jconvt import _algorithms
  monkeypatch.setenv("JCONVT_ONEDNN", "1" if onednn else "0")
  cfg = ConvTransposeConfig(strides, "same")
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  assert _algorithms._kernel_grad_algorithm(cfg, x_shape, kernel_shape, jnp.float32,
                                            geometry) == expected


@pytest.mark.skipif(jax.default_backend() != "cpu" or not jconvt._onednn.enabled(),
                    reason="XLA:CPU's buffers; the runs' forward: oneDNN's")
@pytest.mark.parametrize("x_shape,kernel,strides", [
    ((1, 16, 16, 21), 64, 32),   # FCN-32s: 46.8 MiB with the canvas, 36.8; the reference 42.0
    ((1, 32, 32, 21), 32, 16),   # FCN-16s: 43.7, 42.4; 42.1
    ((1, 64, 64, 21), 16, 8),    # FCN-8s: 44.7, 42.8; 42.3
])
def test_one_image_large_stride_step_memory(x_shape, kernel, strides):
  """The batch-1 FCN heads' training steps, whose kernel gradient runs by
  runs of phases, hold at most half a MiB more scratch than the dilated
  reference's (the loop's stack or the transposed input, which XLA:CPU
  makes before the forward; with the canvas 1.6-4.8 MiB more; compiled,
  not run). Without oneDNN the forward's canvas groups take them past it."""
  kernel_shape = (kernel, kernel, x_shape[3], x_shape[3])
  temp_bytes = lambda algorithm: _temp_bytes(x_shape, kernel_shape, strides, "same", algorithm)
  assert temp_bytes("auto") <= temp_bytes("dilated") + 2 ** 19


@pytest.mark.parametrize("c,cols,ch,cw,folded,want", [
    (128, 256, 2, 2, True, "x"),     # dcgan 32->64 (64 filters, four phases): a tie
    (3, 256, 2, 2, True, "x"),
    (3, 64, 3, 3, False, "split"),   # stride 1: d is the cotangent itself
    (512, 1024, 2, 2, True, "split"),  # x's stack past CORRELATE_X_MAX_WIDTH
    (128, 128, 2, 2, True, "split"),   # k3 s2's one-phase group
    (64, 12, 2, 2, True, "d"),       # an RGB output
    (64, 12, 1, 1, True, "x"),       # one shift: every split the same
])
def test_correlate_mode_rule(c, cols, ch, cw, folded, want):
  from jconvt import _algorithms
  assert _algorithms._correlate_mode(c, cols, ch, cw, folded) == want


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("strides", [1, 2])
def test_chunked_kernel_gradient_accumulates_in_float32(dtype, strides):
  """The GEMM kernel gradient sums its chunks in float32. Here 2048 one-image
  chunks each add a positive share: a half-precision running sum would stall
  once it outgrew the shares by the mantissa's range (2^8 for bfloat16,
  2^11 for float16) and end far below the true sum."""
  rng = np.random.default_rng(0)
  x = rng.uniform(0.5, 1.0, (2048, 2, 2, 2)).astype(dtype).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 2, 2)).astype(dtype).astype(np.float32)
  cfg = ConvTransposeConfig(strides, "same")

  def dk(algorithm, dtype):
    c = cfg.replace(algorithm=algorithm)
    return jax.grad(lambda k: jnp.sum(jconvt.conv2d_transpose(
        {"kernel": k}, jnp.asarray(x, dtype), c).astype(jnp.float32)))(
            jnp.asarray(kernel, dtype))

  with large_input_paths():  # the GEMM kernel gradient, one image per chunk
    got = dk("auto", dtype)
  assert got.dtype == dtype
  assert_close(got, dk("dilated", jnp.float32), dtype=dtype)


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,loop", [
    ((2, 5, 6, 8), (4, 4, 6, 8), 2, "same", True),     # 60 pixels > 8 channels
    ((2, 5, 6, 8), (3, 3, 6, 8), 2, "valid", True),
    ((1, 2, 2, 8), (4, 4, 6, 8), 2, "same", False),    # 4 pixels <= 8 channels
    ((1, 2, 3, 8), (5, 3, 6, 8), (2, 2), "valid", False),
    ((2, 5, 6, 8), (2, 2, 6, 8), 2, "same", False),    # one shift: one GEMM
])
def test_phase_gemm_input_gradient(x_shape, kernel_shape, strides, padding, loop):
  """``grad_input_phase`` against the reference's ``dx``: its shifts summed
  in a loop (where the windows of ``dy`` outweigh the kernel's taps) or
  unrolled."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, padding)
  x, kernel, dy, geometry, want, _ = _reference_gradients(x_shape, kernel_shape, cfg)
  f = jax.jit(lambda dy, k: _algorithms.grad_input_phase(dy, k, cfg, geometry, x.shape[1:3]))
  assert (" while(" in f.lower(dy, kernel).compile().as_text()) == loop
  assert_close(f(dy, kernel), want)


@pytest.mark.parametrize("channels", [8, 7])  # the loop's taps as words, or not (odd)
def test_phase_gemm_input_gradient_in_bfloat16(channels):
  """The loop form in bfloat16 (how ``auto`` runs it), against the
  reference's ``dx`` of the same bfloat16-rounded ``dy`` and kernel."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(2, "same")
  x, kernel, dy, geometry, _, _ = _reference_gradients((2, 5, 6, channels), (4, 4, 6, channels),
                                                       cfg)
  dy, kernel = dy.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  want = jax.grad(lambda x: jnp.sum(jconvt.conv2d_transpose(
      {"kernel": kernel.astype(jnp.float32)}, x, cfg.replace(algorithm="dilated"))
      * dy.astype(jnp.float32)))(x)
  f = jax.jit(lambda dy, k: _algorithms.grad_input_phase(dy, k, cfg, geometry, x.shape[1:3]))
  assert " while(" in f.lower(dy, kernel).compile().as_text()
  got = f(dy, kernel)
  assert got.dtype == jnp.bfloat16
  assert_close(got, want, dtype=jnp.bfloat16)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_chunked_kernel_gradient_loop_carries_no_float32_copy(dtype, monkeypatch):
  """The chunk loop's 16-bit inputs travel as 32-bit words (``_packed``):
  XLA:CPU widened bfloat16 loop inputs to float32 copies (16x16x16x256 ->
  128 k4 s2: a 40 MiB training step, 33 MiB without)."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(2, "same")
  x = jnp.ones((16, 8, 8, 6), dtype)
  dy = jnp.ones((16, 16, 16, 4), dtype)
  geometry = jconvt._conv._geometry(x.shape, (4, 4, 4, 6), cfg)
  monkeypatch.setattr(_algorithms, "KERNEL_GRAD_CHUNK_ROWS", 4 * 9 * 9)
  assert _algorithms._kernel_grad_chunk(16, 9 * 9) == 4  # a loop over 4 chunks
  hlo = jax.jit(lambda x, dy: _algorithms.grad_kernel_phase(x, dy, (4, 4), cfg, geometry)).lower(
      x, dy).compile().as_text()
  loops = [line for line in hlo.splitlines() if " while(" in line]
  assert loops
  for line in loops:
    carried = line.split(" = ", 1)[1].split(" while(", 1)[0]
    assert "u32[" in carried, line
    assert not any(f"f32[{n},{shape}]" in carried for n in (2, 4, 8)
                   for shape in ("8,8,6", "16,16,4")), line


@pytest.mark.parametrize("strides,dilation,padding", [
    (2, 2, "same"), ((2, 3), (3, 2), "valid"), (3, 2, "same"), (1, 3, "same"), (2, 1, "valid")])
def test_strided_dilated_is_gradient_of_forward_conv(strides, dilation, padding):
  """Beyond TF: stride > 1 with dilation > 1 is the VJP of the forward conv."""
  params, x = _data(x_shape=(2, 4, 3, 3), k_shape=(3, 2, 4, 3))
  cfg = ConvTransposeConfig(strides, padding, dilation_rate=dilation)
  out_shape = jconvt.output_shape(x.shape, params["kernel"].shape, cfg)
  fwd = lambda y: lax.conv_general_dilated(
      y, params["kernel"], cfg.strides, padding.upper(), rhs_dilation=cfg.dilation_rate,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  _, vjp = jax.vjp(fwd, jnp.zeros(out_shape))
  expected = vjp(x)[0]
  for algorithm in ALGORITHMS:
    if algorithm == "phase" and cfg.dilation_rate != (1, 1):
      continue  # rejected by the config, tested in test_check_grads
    y = jconvt.conv2d_transpose({"kernel": params["kernel"]}, x, cfg.replace(algorithm=algorithm))
    assert_close(y, expected)


@pytest.mark.parametrize("padding,output_padding", [
    (((0, 0), (0, 0)), None), (((1, 2), (2, 0)), None), (((2, 1), (0, 3)), (1, 1))])
def test_explicit_padding_crops_the_full_output(padding, output_padding):
  params, x = _data(x_shape=(1, 3, 4, 3), k_shape=(4, 3, 2, 3))
  full = jconvt.conv2d_transpose(params, x, ConvTransposeConfig(2, ((0, 0), (0, 0))))
  assert full.shape == (1, (3 - 1) * 2 + 4, (4 - 1) * 2 + 3, 2)
  cfg = ConvTransposeConfig(2, padding, output_padding)
  (t, b), (l, r) = padding
  op = output_padding or (0, 0)
  b0 = params["bias"].reshape(1, 1, 1, -1)
  # output_padding uncovers what `hi` cropped first, then zeros (as Keras'
  # output_padding does for 'same'): the window [t, t + length) of the full
  # output, extended by zeros.
  canvas = jnp.pad(full - b0, ((0, 0), (0, op[0]), (0, op[1]), (0, 0)))
  length_h = full.shape[1] - t - b + op[0]
  length_w = full.shape[2] - l - r + op[1]
  expected = canvas[:, t:t + length_h, l:l + length_w] + b0
  for algorithm in ALGORITHMS:
    y = jconvt.conv2d_transpose(params, x, cfg.replace(algorithm=algorithm))
    assert_close(y, expected)


def test_stride_one_even_kernel_output_padding_zero_follows_atrous_rule():
  """Beyond TF: TF's plain path rejects it, its dilated path uses (k_eff-1)//2."""
  params, x = _data(x_shape=(1, 4, 4, 3), k_shape=(2, 2, 2, 3))
  y = jconvt.conv2d_transpose(params, x, ConvTransposeConfig(1, "same", output_padding=0))
  full = jconvt.conv2d_transpose(params, x, ConvTransposeConfig(1, "valid"))
  assert y.shape == (1, 3, 3, 2)
  assert_close(y, full[:, 0:3, 0:3])


def test_empty_inputs_have_zero_gradients():
  for x_shape in [(0, 3, 3, 2), (2, 0, 3, 2), (2, 3, 3, 0)]:
    params, x = _data(x_shape=x_shape, k_shape=(3, 3, 2, x_shape[-1]))
    for algorithm in ALGORITHMS:
      cfg = ConvTransposeConfig(2, "valid", algorithm=algorithm)
      f = lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg) ** 2)
      gp, gx = jax.jit(jax.grad(f, argnums=(0, 1)))(params, x)
      assert gx.shape == x.shape and not np.any(gx)
      assert gp["kernel"].shape == params["kernel"].shape
      assert not np.any(gp["kernel"])


# (strides, padding, output_padding, output height): each crops a width-2
# kernel's output on a one-pixel-wide input to nothing.
EMPTY_OUTPUT_CONFIGS = [(1, "same", 0, 3), (2, ((0, 0), (1, 1)), None, 7)]


@pytest.mark.parametrize("strides,padding,output_padding,out_h", EMPTY_OUTPUT_CONFIGS)
@pytest.mark.parametrize("channels", [(1, 2), (2, 1), (40, 40)])  # (in, filters)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_empty_outputs_have_zero_gradients(strides, padding, output_padding, out_h,
                                           channels, data_format):
  """A non-empty input whose output is empty (width 0): every algorithm's
  output is empty and its gradients are exactly zero, also on the paths
  forced for large inputs (the stride-1 kernel gradient with roles swapped
  once failed to lower there: a zero-sized window)."""
  c, f = channels
  cl = data_format == "channels_last"
  x_shape = (2, 3, 1, c) if cl else (2, c, 3, 1)
  params, x = _data(x_shape=x_shape, k_shape=(3, 2, f, c))
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding,
                            data_format=data_format)
  out_shape = jconvt.output_shape(x_shape, params["kernel"].shape, cfg)
  assert out_shape == ((2, out_h, 0, f) if cl else (2, f, out_h, 0))
  for algorithm in ALGORITHMS:
    c_alg = cfg.replace(algorithm=algorithm)
    f_loss = lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, c_alg) ** 2)
    for forced in (contextlib.nullcontext(), large_input_paths()):
      with forced:
        y = jconvt.conv2d_transpose(params, x, c_alg)
        gp, gx = jax.jit(jax.grad(f_loss, argnums=(0, 1)))(params, x)
      assert y.shape == out_shape
      assert gx.shape == x.shape and not np.any(gx)
      assert gp["kernel"].shape == params["kernel"].shape and not np.any(gp["kernel"])
      assert not np.any(gp["bias"])


def _run_on_cpu_devices(code: str, devices: int):
  """Runs ``code`` in a Python process with ``devices`` simulated CPU
  devices (their count is fixed when JAX starts); it must print ``OK``."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith("OK")


def test_multi_device_batch_sharding():
  """Batch-sharded input over 8 simulated CPU devices gives the same result
  (with 8 channels each way the kernel gradient's convolution runs on
  oneDNN on x86-64, its kernel operand ``x`` in its own layout, in three
  dimensions: ``_kernel_grad_onednn``), and each device computes its own
  images: no input is gathered whole onto every device, and each oneDNN
  convolution reads an eighth of the input it reads on one device
  (``_onednn._partitioned``; XLA's partitioner gathered the custom call's
  inputs before, and every device convolved all 16 images); a
  channels_first layer's input gradient on NCHW ``dy`` likewise."""
  code = textwrap.dedent("""
      import re
      import jax, jax.numpy as jnp, numpy as np, jconvt
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from jconvt import _onednn
      assert jax.device_count() == 8, jax.devices()
      mesh = Mesh(np.array(jax.devices()), ("batch",))
      rng = np.random.default_rng(0)
      for c, f, alg, fmt in [(3, 2, "dilated", "channels_last"), (3, 2, "phase", "channels_last"),
                             (3, 2, "auto", "channels_last"), (8, 8, "auto", "channels_last"),
                             (16, 3, "auto", "channels_last"), (8, 8, "phase", "channels_last"),
                             (8, 8, "auto", "channels_first")]:
          x = jnp.asarray(rng.standard_normal(
              (16, 6, 5, c) if fmt == "channels_last" else (16, c, 6, 5)), jnp.float32)
          params = {"kernel": jnp.asarray(rng.standard_normal((4, 4, f, c)), jnp.float32),
                    "bias": jnp.zeros(f)}
          cfg = jconvt.ConvTransposeConfig(2, "same", algorithm=alg, data_format=fmt)
          loss = lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, cfg) ** 2)
          step = jax.jit(jax.value_and_grad(loss))
          xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
          ps = jax.device_put(params, NamedSharding(mesh, P()))
          forward = jax.jit(jconvt.conv2d_transpose, static_argnums=(2,))
          sizes = []  # of the oneDNN calls' inputs, sharded and whole
          for args in ((ps, xs), (params, x)):
              texts = [forward.lower(*args, cfg).compile().as_text(),
                       step.lower(*args).compile().as_text()]
              assert not any(" all-gather(" in t for t in texts), (c, f, alg)
              sizes.append(sorted(
                  np.prod([int(d) for d in dims.split(",")])
                  for t in texts for dims in re.findall(
                      r"__onednn.convolution., operand_layout_constraints=.f32.([0-9,]+)", t)))
          if _onednn.enabled() and c == 8:
              assert sizes[1], (c, f, alg)  # the check below then has something to check
          if fmt == "channels_first" and _onednn.takes_channels_first(jnp.float32):
              # the input gradient's convolution on NCHW dy, split by batch too
              grad_x = jax.jit(jax.grad(loss, argnums=1))
              t = grad_x.lower(ps, xs).compile().as_text()
              assert '"feature_dim":1' in t.replace(" ", "") and " all-gather(" not in t
              np.testing.assert_allclose(grad_x(ps, xs), grad_x(params, x), rtol=1e-4, atol=1e-3)
          assert [8 * n for n in sizes[0]] == sizes[1], (sizes, c, f, alg)
          y = forward(ps, xs, cfg)
          assert y.sharding.spec[0] == "batch", y.sharding
          with jax.default_matmul_precision("float32"):
              (l1, g1), (l0, g0) = step(ps, xs), step(params, x)
          np.testing.assert_allclose(l1, l0, rtol=1e-5)
          np.testing.assert_allclose(g1["kernel"], g0["kernel"], rtol=1e-4, atol=1e-3)
      print("OK")
  """)
  _run_on_cpu_devices(code, 8)


def test_explicit_sharding():
  """Arrays sharded in their types (``jax.make_mesh``'s default axis type,
  ``Explicit``): the forward, gradients and tangents of every algorithm,
  batch-sharded, with the kernel's filters or the contracted channels
  sharded too, in both data formats, jitted and eager, equal the unsharded
  ones; the output is sharded like the input's batch and the kernel's
  filters; an ensemble over a sharded member axis keeps that sharding.
  (Before, the algorithms' reshapes, and JAX's transpose of the reference's
  convolution, raised ``ShardingTypeError``.)"""
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np, jconvt
      from jax.sharding import NamedSharding, PartitionSpec as P, AxisType
      assert jax.device_count() == 4, jax.devices()
      mesh = jax.make_mesh((2, 2), ("d", "m"))
      assert mesh.axis_types == (AxisType.Explicit,) * 2
      rng = np.random.default_rng(0)
      def close(a, b):
          np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)
      for fmt in ("channels_last", "channels_first"):
          x = jnp.asarray(rng.standard_normal((4, 5, 6, 16) if fmt == "channels_last"
                                              else (4, 16, 5, 6)), jnp.float32)
          k = jnp.asarray(rng.standard_normal((4, 4, 8, 16)), jnp.float32)
          channels = (None, None, "m") if fmt == "channels_last" else ("m",)
          for x_spec, k_spec, out_channels in [
                  (P("d"), P(), None), (P("d"), P(None, None, "m"), "m"),
                  (P("d", *channels), P(None, None, None, "m"), None)]:
              for alg in ("auto", "dilated", "phase", "col2im"):
                  cfg = jconvt.ConvTransposeConfig(2, "same", algorithm=alg, data_format=fmt)
                  f = lambda k, x: jconvt.conv2d_transpose({"kernel": k, "bias": jnp.ones(8)},
                                                           x, cfg)
                  loss = lambda k, x: jnp.sum(jnp.tanh(f(k, x)) ** 2)
                  tangent = lambda k, x: jax.jvp(f, (k, x), (jnp.cos(k), x))[1]
                  xs = jax.device_put(x, NamedSharding(mesh, x_spec))
                  ks = jax.device_put(k, NamedSharding(mesh, k_spec))
                  for fn in (f, jax.grad(loss, argnums=(0, 1)), tangent):
                      for got, want in zip(jax.tree.leaves(jax.jit(fn)(ks, xs)),
                                           jax.tree.leaves(fn(k, x))):
                          close(got, want)
                  y = f(ks, xs)  # eager
                  close(y, f(k, x))
                  channel_axis = 3 if fmt == "channels_last" else 1
                  assert y.sharding.spec[0] == "d" and y.sharding.spec[channel_axis] == out_channels
      # An ensemble: kernels mapped by vmap, their member axis sharded.
      cfg = jconvt.ConvTransposeConfig(2, "same")
      f = lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, cfg)
      ks = jnp.asarray(rng.standard_normal((2, 4, 4, 8, 16)), jnp.float32)
      x = jnp.asarray(rng.standard_normal((4, 5, 6, 16)), jnp.float32)
      members = jax.device_put(ks, NamedSharding(mesh, P("d")))
      grads = jax.jit(jax.grad(lambda k: jnp.sum(jax.vmap(f, (0, None))(k, x) ** 2)))
      got = grads(members)
      assert got.sharding.spec[0] == "d", got.sharding
      close(got, jnp.stack([jax.grad(lambda k: jnp.sum(f(k, x) ** 2))(k) for k in ks]))
      print("OK")
  """)
  _run_on_cpu_devices(code, 4)


def test_dilated_reference_where_xla_swaps_operands_wrongly():
  """A layer whose ``lhs_dilation`` convolution XLA's operand swap breaks
  (``_xla_swaps_wrongly``: its width has a kernel of 2 at stride 2,
  unpadded) and whose output feeds a nonlinearity: the dilated reference's
  forward and gradients compile (in a subprocess: the break aborted the
  whole process) and equal the NumPy reference and ``auto``'s gradients."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(2, ((1, 2), (1, 2)), (0, 1), data_format="channels_first",
                            activation="tanh", algorithm="dilated")
  geometry = jconvt._conv._geometry((2, 1, 4, 3), (6, 2, 8, 1), cfg)
  assert _algorithms._xla_swaps_wrongly((4, 3), (6, 2), cfg, geometry)
  for strides, padding, op in ((2, "valid", None), (2, "same", None), (2, ((0, 0), (0, 0)), None)):
    other = ConvTransposeConfig(strides, padding, op)  # k2 s2 padded by the dilated form
    assert not _algorithms._xla_swaps_wrongly(
        (4, 3), (2, 2), other, jconvt._conv._geometry((2, 4, 3, 1), (2, 2, 8, 1), other))
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np, jconvt
      from jconvt import ConvTransposeConfig
      cfg = ConvTransposeConfig(2, ((1, 2), (1, 2)), (0, 1), data_format="channels_first",
                                activation="tanh", algorithm="dilated")
      rng = np.random.default_rng(0)
      x = rng.standard_normal((2, 1, 4, 3)).astype(np.float32)
      k = rng.standard_normal((6, 2, 8, 1)).astype(np.float32)
      y = jax.jit(lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, cfg))(k, x)
      np.testing.assert_allclose(y, jconvt.reference_conv2d_transpose(x, k, None, cfg),
                                 rtol=1e-5, atol=1e-5)
      grads = lambda c: jax.jit(jax.grad(lambda k, x: jnp.sum(
          jconvt.conv2d_transpose({"kernel": k}, x, c) ** 2), argnums=(0, 1)))(k, x)
      for a, b in zip(grads(cfg), grads(cfg.replace(algorithm="auto"))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
      print("OK")
  """)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]

