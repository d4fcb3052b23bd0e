"""oneDNN's convolution through XLA:CPU's custom call (``jconvt._onednn``):
the same values as ``lax.conv_general_dilated``, its transforms, the
switch, and that the fast paths reach it on CPU."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from jax import lax

import jconvt
from jconvt import ConvTransposeConfig, _onednn
from conftest import assert_close, examples, onednn_routes

# The plan auto runs on CPU, on whichever backend the tests run.
_cpu_plan = functools.partial(jconvt.algorithm_plan, platform="cpu")

on_cpu_with_onednn = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not _onednn.enabled(),
    reason="oneDNN runs on XLA:CPU, x86-64, a verified jaxlib")

CASES = [  # lhs (NHWC), rhs (HWIO), window strides, padding, rhs dilation
    ((2, 9, 8, 5), (3, 2, 5, 7), (1, 1), ((1, 1), (0, 1)), (1, 1)),
    ((2, 9, 8, 5), (3, 2, 5, 7), (2, 1), ((1, 0), (1, 1)), (1, 1)),
    ((2, 9, 8, 5), (3, 2, 5, 7), (1, 1), ((2, 2), (1, 1)), (2, 1)),
    ((2, 9, 8, 5), (3, 2, 5, 7), (2, 3), ((0, 0), (0, 0)), (1, 2)),
    ((1, 6, 11, 3), (4, 4, 3, 8), (3, 2), ((2, 1), (1, 2)), (1, 2)),
    ((3, 5, 5, 2), (1, 1, 2, 3), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((2, 4, 1, 3), (2, 1, 3, 2), (1, 1), ((1, 0), (0, 0)), (1, 1)),  # width 1
    ((2, 3, 3, 4), (5, 5, 4, 6), (1, 1), ((2, 2), (2, 2)), (1, 1)),  # kernel > input
]


def _operands(lhs_shape, rhs_shape, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal(lhs_shape), jnp.float32),
          jnp.asarray(rng.standard_normal(rhs_shape), jnp.float32))


def _reference(lhs, rhs, strides, padding, dilation):
  return lax.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=lax.Precision.HIGHEST)


@on_cpu_with_onednn
@pytest.mark.parametrize("lhs_shape,rhs_shape,strides,padding,dilation", CASES)
def test_same_convolution_as_lax(lhs_shape, rhs_shape, strides, padding, dilation):
  """The custom call (strides, padding, dilations as XLA:CPU's oneDNN
  runtime reads them) computes lax's convolution: shape and values, under
  ``jit`` and outside it; the compiled module has the custom call."""
  lhs, rhs = _operands(lhs_shape, rhs_shape)
  conv = lambda l, r: _onednn.conv(l, r, strides, padding, dilation)
  expected = _reference(lhs, rhs, strides, padding, dilation)
  assert _onednn.TARGET in jax.jit(conv).lower(lhs, rhs).compile().as_text()
  for got in (jax.jit(conv)(lhs, rhs), conv(lhs, rhs)):
    assert got.shape == expected.shape
    assert_close(got, expected)


@pytest.mark.parametrize("lhs_shape,rhs_shape,strides,padding,dilation", CASES[1:5])
def test_gradients_second_order_and_vmap(lhs_shape, rhs_shape, strides, padding, dilation):
  """First and second derivatives equal lax's (the tangents are lax's
  convolution); ``vmap`` over the input folds it into the batch, over the
  kernel falls back to lax. Any backend (elsewhere the primitive lowers to
  lax's convolution)."""
  lhs, rhs = _operands(lhs_shape, rhs_shape)

  def loss(conv):
    return lambda l, r: jnp.sum(jnp.sin(conv(l, r)))

  ours = loss(lambda l, r: _onednn.conv(l, r, strides, padding, dilation))
  ref = loss(lambda l, r: _reference(l, r, strides, padding, dilation))
  for a, b in zip(jax.grad(ours, (0, 1))(lhs, rhs), jax.grad(ref, (0, 1))(lhs, rhs)):
    assert_close(a, b)
  second = lambda f: jax.grad(lambda l: jnp.sum(jax.grad(f, 1)(l, rhs) ** 2))(lhs)
  assert_close(second(ours), second(ref))
  lhs_batch = jnp.stack([lhs, -2 * lhs, lhs ** 2])
  rhs_batch = jnp.stack([rhs, 3 * rhs])
  for in_axes, args in (((0, None), (lhs_batch, rhs)), ((None, 0), (lhs, rhs_batch)),
                        ((1, 0), (jnp.moveaxis(lhs_batch[:2], 0, 1), rhs_batch))):
    got = jax.vmap(lambda l, r: _onednn.conv(l, r, strides, padding, dilation),
                   in_axes=in_axes)(*args)
    expected = jax.vmap(lambda l, r: _reference(l, r, strides, padding, dilation),
                        in_axes=in_axes)(*args)
    assert_close(got, expected)


@pytest.mark.parametrize("rhs_spec", ["IHWO", "OIHW", "HIWO"])
def test_kernel_layouts(rhs_spec):
  """A kernel in another layout (``rhs_spec``, a permutation of HWIO) gives
  lax's convolution, its gradients and its ``vmap``; on CPU with oneDNN
  the custom call reads it as it is (no transpose in the module)."""
  lhs_shape, rhs_shape, strides, padding, dilation = CASES[4]
  lhs, rhs = _operands(lhs_shape, rhs_shape)
  permuted = jnp.transpose(rhs, ["HWIO".index(d) for d in rhs_spec])
  conv = lambda l, r: _onednn.conv(l, r, strides, padding, dilation, rhs_spec=rhs_spec)
  assert _onednn.hwio_shape(permuted.shape, rhs_spec) == rhs_shape
  assert_close(jax.jit(conv)(lhs, permuted), _reference(lhs, rhs, strides, padding, dilation))
  loss = lambda l, r: jnp.sum(jnp.sin(conv(l, r)))
  ref_loss = lambda l, r: jnp.sum(jnp.sin(_reference(
      l, jnp.transpose(r, [rhs_spec.index(d) for d in "HWIO"]), strides, padding, dilation)))
  for a, b in zip(jax.grad(loss, (0, 1))(lhs, permuted), jax.grad(ref_loss, (0, 1))(lhs, permuted)):
    assert_close(a, b)
  batch = jnp.stack([lhs, -lhs])
  assert_close(jax.vmap(conv, (0, None))(batch, permuted),
               jnp.stack([conv(lhs, permuted), conv(-lhs, permuted)]))
  if jax.default_backend() == "cpu" and _onednn.enabled():
    hlo = jax.jit(conv).lower(lhs, permuted).compile().as_text()
    assert _onednn.TARGET in hlo and "transpose(" not in hlo


def test_kernel_layout_rejected():
  lhs, rhs = _operands(*CASES[0][:2])
  for spec in ("HWIN", "WHIO"):  # lax would take W as the window's first dimension
    with pytest.raises(ValueError, match=f"rhs_spec must be a permutation .* got '{spec}'"):
      _onednn.conv(lhs, rhs, (1, 1), ((0, 0), (0, 0)), rhs_spec=spec)


def _assert_as_reference(conv, ref, lhs, rhs):
  """``conv`` gives ``ref``'s values (jitted and eager), gradients (of a
  sine's sum) and ``vmap`` over the input."""
  expected = ref(lhs, rhs)
  for got in (jax.jit(conv)(lhs, rhs), conv(lhs, rhs)):
    assert got.shape == expected.shape
    assert_close(got, expected)
  loss = lambda f: lambda l, r: jnp.sum(jnp.sin(f(l, r)))
  for a, b in zip(jax.grad(loss(conv), (0, 1))(lhs, rhs), jax.grad(loss(ref), (0, 1))(lhs, rhs)):
    assert_close(a, b)
  batch = jnp.stack([lhs, -lhs])
  assert_close(jax.vmap(conv, (0, None))(batch, rhs), jnp.stack([expected, ref(-lhs, rhs)]))


@pytest.mark.parametrize("lhs_shape,rhs_shape,strides,padding,dilation", CASES[:5])
def test_channels_first_lhs(lhs_shape, rhs_shape, strides, padding, dilation):
  """A channels-first ``lhs`` (``lhs_spec="NCHW"``; the output laid out as
  it): lax's convolution with those dimension numbers, its gradients and
  its ``vmap``; on CPU with oneDNN the custom call reads it as it is, its
  configuration naming the channels as dimension 1, and the module holds
  no transpose."""
  lhs, rhs = _operands(lhs_shape, rhs_shape)
  lhs = jnp.transpose(lhs, (0, 3, 1, 2))
  conv = lambda l, r: _onednn.conv(l, r, strides, padding, dilation, lhs_spec="NCHW")
  ref = lambda l, r: lax.conv_general_dilated(l, r, strides, padding, rhs_dilation=dilation,
                                              dimension_numbers=("NCHW", "HWIO", "NCHW"),
                                              precision=lax.Precision.HIGHEST)
  expected = ref(lhs, rhs)
  nhwc = _reference(jnp.transpose(lhs, (0, 2, 3, 1)), rhs, strides, padding, dilation)
  assert_close(expected, jnp.transpose(nhwc, (0, 3, 1, 2)))  # what lax's spec means
  _assert_as_reference(conv, ref, lhs, rhs)
  if jax.default_backend() == "cpu" and _onednn.enabled() and not _onednn.miscomputed(
      rhs_shape, strides):
    hlo = jax.jit(conv).lower(lhs, rhs).compile().as_text()
    assert _onednn.TARGET in hlo and "transpose(" not in hlo
    assert '"input":{"data":{"batch_dim":0,"feature_dim":1' in hlo.replace(" ", "")


def test_channels_first_three_spatial_axes():
  """``"NCDHW"``: lax's 3-D convolution with those dimension numbers."""
  lhs_shape, rhs_shape, strides, padding, dilation = CASES_3D[1]
  lhs, rhs = _operands(lhs_shape, rhs_shape)
  lhs = jnp.transpose(lhs, (0, 4, 1, 2, 3))
  got = jax.jit(lambda l, r: _onednn.conv(l, r, strides, padding, dilation,
                                          lhs_spec="NCDHW"))(lhs, rhs)
  expected = lax.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=dilation,
                                      dimension_numbers=("NCDHW", "DHWIO", "NCDHW"),
                                      precision=lax.Precision.HIGHEST)
  assert_close(got, expected)


def test_lhs_layout_rejected():
  lhs, rhs = _operands(*CASES[0][:2])
  for spec in ("NHCW", "CNHW", "NCDHW"):
    with pytest.raises(ValueError, match=f"lhs_spec must be 'NHWC' or 'NCHW' .* got '{spec}'"):
      _onednn.conv(lhs, rhs, (1, 1), ((0, 0), (0, 0)), lhs_spec=spec)


CASES_3D = [  # lhs (NDHWC), rhs (DHWIO), window strides, padding, rhs dilation
    ((1, 9, 8, 6, 5), (3, 2, 1, 5, 7), (1, 1, 1), ((1, 1), (0, 1), (0, 0)), (1, 1, 1)),
    ((2, 9, 8, 6, 5), (3, 2, 2, 5, 7), (2, 1, 1), ((1, 0), (1, 1), (0, 1)), (2, 1, 1)),
    ((1, 12, 10, 4, 3), (5, 4, 1, 3, 8), (1, 1, 1), ((2, 1), (1, 2), (0, 0)), (2, 2, 1)),
]


def _reference_3d(lhs, rhs, strides, padding, dilation, rhs_spec="DHWIO"):
  return lax.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=("NDHWC", rhs_spec, "NDHWC"),
                                  precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("lhs_shape,rhs_shape,strides,padding,dilation", CASES_3D)
@pytest.mark.parametrize("rhs_spec", ["DHWIO", "IDHWO"])
def test_three_spatial_axes(lhs_shape, rhs_shape, strides, padding, dilation, rhs_spec):
  """A 5-D (NDHWC) ``lhs`` with a ``"DHWIO"`` permutation as the kernel (the
  form of ``_algorithms._kernel_grad_onednn``): lax's 3-D convolution, its
  gradients and its ``vmap``; on CPU with oneDNN the custom call, its
  configuration naming five dimensions."""
  lhs, rhs = _operands(lhs_shape, rhs_shape)
  rhs = jnp.transpose(rhs, ["DHWIO".index(d) for d in rhs_spec])
  assert _onednn.hwio_shape(rhs.shape, rhs_spec) == rhs_shape
  conv = lambda l, r: _onednn.conv(l, r, strides, padding, dilation, rhs_spec=rhs_spec)
  ref = lambda l, r: _reference_3d(l, r, strides, padding, dilation, rhs_spec)
  _assert_as_reference(conv, ref, lhs, rhs)
  if jax.default_backend() == "cpu" and _onednn.enabled():
    hlo = jax.jit(conv).lower(lhs, rhs).compile().as_text()
    assert _onednn.TARGET in hlo and '"dims":5' in hlo.replace(" ", "")


def _lax_reference(lhs, rhs, strides, padding, dilation):
  """lax's convolution of a 4-D (NHWC) or 5-D (NDHWC) ``lhs``."""
  reference = _reference if lhs.ndim == 4 else _reference_3d
  return reference(lhs, rhs, strides, padding, dilation)


# Convolutions oneDNN (jaxlib 0.10) computed wrong, found by comparing it
# with lax: one contracted channel, a strided width with one output column,
# an undilated kernel at least two columns wide (test_random_convolutions_as_lax
# draws that corner too rarely to find it).
MISCOMPUTED = [  # lhs, rhs (HWIO / DHWIO), window strides, padding, rhs dilation
    ((1, 3, 3, 1), (1, 3, 1, 1), (1, 2), ((0, 0), (0, 0)), (1, 1)),
    ((2, 2, 2, 1), (3, 3, 1, 3), (1, 3), ((2, 0), (1, 0)), (1, 1)),
    ((3, 6, 1, 1), (2, 2, 1, 2), (1, 2), ((0, 1), (1, 1)), (1, 1)),
    ((2, 6, 7, 1, 1), (3, 3, 2, 1, 8), (1, 1, 2), ((2, 0), (0, 1), (0, 1)), (1, 3, 1)),
]


@pytest.mark.parametrize("lhs_shape,rhs_shape,strides,padding,dilation", MISCOMPUTED)
def test_miscomputed_convolutions_stay_off_onednn(lhs_shape, rhs_shape, strides, padding,
                                                  dilation, monkeypatch):
  """``supported`` rejects them, and ``conv`` given one anyway lowers to
  lax's convolution on CPU too (no custom call), with lax's values."""
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  assert _onednn.miscomputed(rhs_shape, strides)
  assert not _onednn.supported(lhs_shape, rhs_shape, strides, padding, dilation, jnp.float32)
  lhs, rhs = _operands(lhs_shape, rhs_shape)
  conv = jax.jit(lambda l, r: _onednn.conv(l, r, strides, padding, dilation))
  assert _onednn.TARGET not in conv.lower(lhs, rhs).compile().as_text()
  assert_close(conv(lhs, rhs), _lax_reference(lhs, rhs, strides, padding, dilation))
  # Two contracted channels, or a width stride of 1: oneDNN's again.
  wider = (*rhs_shape[:-2], 2, rhs_shape[-1])
  assert not _onednn.miscomputed(wider, strides)
  assert not _onednn.miscomputed(rhs_shape, (*strides[:-1], 1))


@st.composite
def _convolutions(draw):
  """A random small convolution with a non-empty output: 2 or 3 spatial
  axes, 1-5 input and 1-9 output channels, strides of 1-3, dilations
  (half of them 1) and padding of 0-2 per side."""
  dims = draw(st.sampled_from([2, 2, 3]))
  # sampled_from draws every value about as often (integers favours the
  # ends of its range).
  pick = lambda lo, hi: draw(st.sampled_from(range(lo, hi + 1)))
  axis = lambda lo, hi: tuple(pick(lo, hi) for _ in range(dims))
  lhs_shape = (pick(1, 3), *axis(1, 7), pick(1, 5))
  rhs_shape = (*axis(1, 4), lhs_shape[-1], pick(1, 9))
  strides = axis(1, 3)
  dilation = tuple(draw(st.sampled_from([1, 1, 2, 3])) for _ in range(dims))
  padding = tuple(zip(axis(0, 2), axis(0, 2)))
  assume(min(_onednn._output_shape(lhs_shape, rhs_shape, strides, padding, dilation)) > 0)
  return lhs_shape, rhs_shape, strides, padding, dilation


@on_cpu_with_onednn
@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_convolutions(), st.booleans())
def test_random_convolutions_as_lax(case, channels_first):
  """Random small convolutions, channels-last or channels-first
  (``lhs_spec``): ``supported`` takes all but the ``miscomputed`` ones,
  and ``conv`` (the custom call, or lax's lowering for those) computes
  lax's values."""
  lhs_shape, rhs_shape, strides, padding, dilation = case
  assert _onednn.supported(lhs_shape, rhs_shape, strides, padding, dilation, jnp.float32) == (
      not _onednn.miscomputed(rhs_shape, strides))
  lhs, rhs = _operands(lhs_shape, rhs_shape)
  expected = _lax_reference(lhs, rhs, strides, padding, dilation)
  if channels_first:  # the same convolution, its lhs and output moved to NC...
    lhs_spec = "NC" + _onednn._spatial_letters(lhs.ndim)
    to_first = (0, lhs.ndim - 1, *range(1, lhs.ndim - 1))
    lhs, expected = jnp.transpose(lhs, to_first), jnp.transpose(expected, to_first)
  else:
    lhs_spec = None
  got = jax.jit(lambda l, r: _onednn.conv(l, r, strides, padding, dilation,
                                          lhs_spec=lhs_spec))(lhs, rhs)
  assert_close(got, expected)


def test_three_spatial_axes_rejected():
  """A kernel layout with the spatial axes out of order, a window with too
  few entries or a 3-D lhs: ``ValueError`` naming what was given."""
  lhs, rhs = _operands(*CASES_3D[0][:2])
  for spec in ("HDWIO", "DHWIN"):
    with pytest.raises(ValueError, match=f"permutation of 'DHWIO' .* got '{spec}'"):
      _onednn.conv(lhs, rhs, (1, 1, 1), ((0, 0),) * 3, rhs_spec=spec)
  with pytest.raises(ValueError, match=r"need 3 entries each .* got \(1, 1\)"):
    _onednn.conv(lhs, rhs, (1, 1), ((0, 0),) * 2)
  with pytest.raises(ValueError, match="lhs must be 4-D .* or 5-D .* got 3 dimensions"):
    _onednn.conv(lhs[0, 0], rhs, (1,), ((0, 0),))


def _grad_kernel(kernel_hw, cfg, geometry, on_cpu):
  """``_algorithms.grad_kernel`` jitted, ``(x, dy) -> dk``: on oneDNN's routes
  with ``on_cpu``, on XLA's own convolution without."""
  from jconvt import _algorithms
  return jax.jit(lambda x, dy: _algorithms.grad_kernel(x, dy, kernel_hw, cfg, geometry,
                                                       on_cpu=on_cpu))


@on_cpu_with_onednn
@pytest.mark.parametrize("filters,dims", [(8, 5), (4, 4)])
def test_kernel_gradient_reads_its_operand_untransposed(filters, dims):
  """``grad_kernel`` on oneDNN hands ``x`` to the custom call as it is (the
  kernel operand: ``rhs_spec="IDHWO"`` with a unit axis inserted;
  ``"IHWO"`` below ``ONEDNN_KERNEL_GRAD_SPATIAL_BATCH`` filters),
  transposing only ``dy``; with 8 filters the call is the 3-D form
  (``_kernel_grad_onednn``), with 4 the 2-D one. Its value equals the
  convolution's on XLA:CPU's own path."""
  from jconvt import _algorithms
  assert _algorithms.ONEDNN_KERNEL_GRAD_SPATIAL_BATCH == 8
  cfg = ConvTransposeConfig(2, "same")
  x_shape, kernel_shape = (4, 8, 8, 16), (4, 4, filters, 16)
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  x, dy = _operands(x_shape, (4, 16, 16, filters))
  grad = functools.partial(_grad_kernel, kernel_shape[:2], cfg, geometry)
  text = grad(True).lower(x, dy).as_text().replace('"', "")
  call = next(line for line in text.splitlines() if _onednn.TARGET in line)
  if dims == 5:
    assert ("stablehlo.broadcast_in_dim %arg0, dims = [0, 1, 2, 4] : (tensor<4x8x8x16xf32>) "
            "-> tensor<4x8x8x1x16xf32>") in text  # a unit axis, no copy
    assert "stablehlo.transpose %arg0" not in text
    assert "tensor<1x4x4x8x16xf32>" in call  # (1, kh, kw, f, c): the kernel's layout
  else:
    assert f"@{_onednn.TARGET}(%0, %arg0)" in call
    assert "tensor<4x4x4x16xf32>" in call  # (f, kh, kw, c)
  assert_close(grad(True)(x, dy), grad(False)(x, dy))


@on_cpu_with_onednn
@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,output_padding", [
    ((2, 6, 5, 8), (3, 3, 8, 8), (2, 2), "same", None),      # taps 2 and 1 a phase
    ((2, 6, 5, 8), (5, 3, 8, 8), (2, 2), "same", None),      # 3 and 2
    ((2, 5, 6, 8), (3, 5, 8, 8), (3, 2), "same", (2, 1)),    # uneven strides, output padding
    ((2, 6, 5, 8), (3, 3, 8, 8), (2, 2), ((2, 0), (1, 1)), None),  # explicit padding
    ((2, 6, 5, 8), (3, 3, 8, 8), (3, 2), "valid", None),     # one tap a row phase
    ((2, 6, 5, 8), (1, 3, 8, 8), (2, 2), "valid", None),     # a row phase with no tap
])
def test_kernel_gradient_by_phase(x_shape, kernel_shape, strides, padding, output_padding,
                                  monkeypatch):
  """``_kernel_grad_phases_onednn``: the kernel gradient one phase at a time,
  a ``lax.scan`` over the phases with a ``lax.switch`` branch each and a
  oneDNN convolution in each branch a tap reaches, equal to XLA's own
  convolution (phases no tap reaches give zeros); ``grad_kernel`` takes it
  under ``_kernel_grad_by_phase`` (its threshold lowered to reach small
  layers) where the whole convolution would run on oneDNN (not with a
  kernel smaller than its stride: a negative padding)."""
  from jconvt import _algorithms
  monkeypatch.setattr(_algorithms, "ONEDNN_KERNEL_GRAD_MAX_DY_BYTES", 1)
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding)
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  dy_shape = (x_shape[0], geometry[0][0], geometry[1][0], kernel_shape[2])
  assert _algorithms._kernel_grad_by_phase(cfg, x_shape, dy_shape, kernel_shape[:2],
                                           jnp.float32)
  x, dy = _operands(x_shape, dy_shape)
  padding = _algorithms._forward_conv_padding(x_shape[1:3], kernel_shape[:2], cfg, geometry)
  by_phase = jax.jit(lambda x, dy: _algorithms._kernel_grad_phases_onednn(
      x, dy, kernel_shape[:2], cfg, padding))
  text = by_phase.lower(x, dy).as_text()
  assert "stablehlo.while" in text and "stablehlo.case" in text
  reached = min(kernel_shape[0], strides[0]) * min(kernel_shape[1], strides[1])
  assert text.count(f"@{_onednn.TARGET}(") == reached
  grad = functools.partial(_grad_kernel, kernel_shape[:2], cfg, geometry)
  want = grad(False)(x, dy)
  assert_close(by_phase(x, dy), want)
  routed = "stablehlo.case" in grad(True).lower(x, dy).as_text()
  assert routed == (min(lo for pair in padding for lo in pair) >= 0)
  assert_close(grad(True)(x, dy), want)


@on_cpu_with_onednn
@pytest.mark.parametrize("x_shape,kernel_shape,strides,by_phase", [
    ((2, 6, 5, 16), (3, 3, 8, 16), 2, False),   # 16 input channels, 4 at a time
    ((2, 6, 5, 16), (4, 4, 8, 16), 2, False),   # k4 s2
    ((2, 6, 5, 8), (3, 3, 16, 8), 1, False),    # swapped: 16 filters, 4 at a time
    ((2, 6, 5, 16), (3, 3, 16, 16), 2, True),   # in each phase's branch
])
def test_kernel_gradient_in_channel_chunks(x_shape, kernel_shape, strides, by_phase,
                                           monkeypatch):
  """``_kernel_grad_onednn`` where ``_kernel_grad_channel_chunk`` says so
  (its thresholds lowered, the CPU taken for one with AMX): one oneDNN
  convolution of 4 output channels in a ``lax.scan`` over the chunks (one
  chunk of the kernel operand copied at a time), equal to XLA's own
  convolution; swapped (stride 1, fewer input channels than filters) the
  chunks are the filters', and by phase each phase's."""
  from jconvt import _algorithms
  for name, value in (("ONEDNN_KERNEL_GRAD_CHANNEL_CHUNK", 4),
                      ("ONEDNN_KERNEL_GRAD_CHUNKED_MULTIPLE", 8),
                      ("ONEDNN_KERNEL_GRAD_CHUNKED_MIN_PIXELS", 1),
                      ("ONEDNN_KERNEL_GRAD_MAX_DY_BYTES", 1 if by_phase else 2 ** 40)):
    monkeypatch.setattr(_algorithms, name, value)
  monkeypatch.setattr(_onednn, "cpu_has_amx", lambda: True)
  cfg = ConvTransposeConfig(strides, "same")
  geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
  dy_shape = (x_shape[0], geometry[0][0], geometry[1][0], kernel_shape[2])
  x, dy = _operands(x_shape, dy_shape)
  grad = functools.partial(_grad_kernel, kernel_shape[:2], cfg, geometry)
  text = grad(True).lower(x, dy).as_text().replace('"', "")
  calls = [line for line in text.splitlines() if f"@{_onednn.TARGET}(" in line]
  phases = strides * strides if by_phase else 1
  assert len(calls) == phases and "stablehlo.while" in text
  # The kernel operand, (n, h, w, 1, 4): x's channels or (swapped) dy's filters.
  assert all("x1x4xf32>" in call for call in calls), calls
  assert_close(grad(True)(x, dy), grad(False)(x, dy))


def test_kernel_gradient_channel_chunk_rule(monkeypatch):
  """``_kernel_grad_channel_chunk``: 128 output channels at a time on a CPU
  with AMX, in float32, where there are a multiple of 256 of them, at most
  8 images and images of at least 32x32; else all of them."""
  from jconvt._algorithms import _kernel_grad_channel_chunk as chunk
  f32 = jnp.float32
  monkeypatch.setattr(_onednn, "cpu_has_amx", lambda: True)
  for shape in ((8, 32, 32, 256), (8, 32, 32, 512), (4, 64, 64, 256), (2, 48, 48, 1024)):
    assert chunk(shape, f32) == 128, shape
  for shape in ((8, 32, 32, 128), (8, 32, 32, 384), (12, 32, 32, 256), (8, 16, 16, 256),
                (8, 32, 16, 256)):
    assert chunk(shape, f32) == shape[3], shape
  assert chunk((8, 32, 32, 256), jnp.bfloat16) == 256
  monkeypatch.setattr(_onednn, "cpu_has_amx", lambda: False)
  assert chunk((8, 32, 32, 256), f32) == 256


def test_kernel_gradient_by_phase_rule():
  """``_kernel_grad_by_phase``: strided, undilated, a stride not dividing
  its kernel size, filters >= input channels, ``dy`` of 16 MiB or more."""
  from jconvt._algorithms import _kernel_grad_by_phase
  s2 = ConvTransposeConfig(2, "same")
  assert _kernel_grad_by_phase(s2, (8, 32, 32, 128), (8, 64, 64, 128), (3, 3), jnp.float32)
  assert not _kernel_grad_by_phase(s2, (8, 32, 32, 128), (8, 64, 64, 128), (4, 4),
                                   jnp.float32)  # the forward's canvas: 33 MiB anyway
  assert not _kernel_grad_by_phase(s2, (8, 32, 32, 256), (8, 64, 64, 128), (3, 3),
                                   jnp.float32)  # fewer filters than input channels
  assert not _kernel_grad_by_phase(s2, (4, 32, 32, 128), (4, 64, 64, 128), (3, 3),
                                   jnp.float32)  # dy 8 MiB
  assert not _kernel_grad_by_phase(ConvTransposeConfig(1, "same"), (8, 64, 64, 128),
                                   (8, 64, 64, 128), (3, 3), jnp.float32)
  for dilation in ((1, 2), (2, 1)):  # its phases' taps are undilated
    assert not _kernel_grad_by_phase(s2.replace(dilation_rate=dilation), (8, 32, 32, 128),
                                     (8, 64, 64, 128), (3, 3), jnp.float32)


@on_cpu_with_onednn
@pytest.mark.parametrize("strides,dilation", [((2, 1), (2, 1)), ((2, 2), (1, 2))])
def test_strided_dilated_kernel_gradient_on_onednn(strides, dilation, monkeypatch):
  """A strided, dilated layer (which TF refuses; jconvt defines it as the
  gradient of the forward convolution) whose ``dy`` would otherwise send
  its kernel gradient phase by phase: the whole 3-D convolution, equal to
  the dilated reference's autodiff. The phases once ran here, their taps
  undilated: a wrong kernel gradient (errors of 140%)."""
  from jconvt import _algorithms
  monkeypatch.setattr(_algorithms, "ONEDNN_KERNEL_GRAD_MAX_DY_BYTES", 1)
  cfg = ConvTransposeConfig(strides, "same", dilation_rate=dilation)
  x, kernel = _operands((2, 6, 5, 8), (3, 3, 16, 8))
  dy = jnp.asarray(np.random.default_rng(1).standard_normal(
      jconvt.output_shape(x.shape, kernel.shape, cfg)), jnp.float32)

  def grads(config):
    return jax.jit(jax.grad(
        lambda k, x: jnp.sum(jconvt.conv2d_transpose({"kernel": k}, x, config) * dy),
        argnums=(0, 1)))

  step = grads(cfg)
  assert _onednn.TARGET in step.lower(kernel, x).compile().as_text()
  for got, want in zip(step(kernel, x), grads(cfg.replace(algorithm="dilated"))(kernel, x)):
    assert_close(got, want)


@on_cpu_with_onednn
def test_exported_programs_hold_no_custom_call():
  """``jax.export`` of a layer whose forward and gradients run on oneDNN:
  the serialized program convolves with ``stablehlo.convolution`` (export
  refused the custom call, whose encoding XLA may change), and it computes
  what the jitted layer computes; the jitted step still runs oneDNN."""
  cfg = ConvTransposeConfig(2, "same")
  x, kernel = _operands((2, 8, 8, 16), (4, 4, 16, 16))
  step = jax.jit(jax.value_and_grad(
      lambda k, x: jnp.sum(jconvt.conv2d_transpose({"kernel": k}, x, cfg) ** 2), argnums=(0, 1)))
  assert _onednn.TARGET in step.lower(kernel, x).as_text()
  exported = jax.export.export(step, platforms=("cpu",))(kernel, x)
  text = exported.mlir_module()
  assert _onednn.TARGET not in text and "stablehlo.convolution" in text
  (loss, grads), (want_loss, want_grads) = exported.call(kernel, x), step(kernel, x)
  assert_close(loss, want_loss)
  for got, want in zip(grads, want_grads):
    assert_close(got, want)


def test_switch(monkeypatch):
  """``JCONVT_ONEDNN`` forces oneDNN on or off; unset, it follows the
  machine and the jaxlib (x86-64, ``VERIFIED_JAXLIB``)."""
  import importlib.metadata
  import platform
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  assert not _onednn.enabled()
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  assert _onednn.enabled()
  monkeypatch.delenv("JCONVT_ONEDNN")
  version = tuple(int(v) for v in importlib.metadata.version("jaxlib").split(".")[:2])
  assert _onednn.enabled() == (platform.machine().lower() in ("x86_64", "amd64")
                               and version in _onednn.VERIFIED_JAXLIB)


@pytest.mark.parametrize("flag", [None, "0", "1"])
def test_bfloat16_unless_turned_off(monkeypatch, flag):
  """oneDNN takes bfloat16 on a CPU with native bfloat16 products, unless
  ``JCONVT_ONEDNN_BFLOAT16=0`` turns it off (``_takes_bfloat16``)."""
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  if flag is None:
    monkeypatch.delenv("JCONVT_ONEDNN_BFLOAT16", raising=False)
  else:
    monkeypatch.setenv("JCONVT_ONEDNN_BFLOAT16", flag)
  assert _onednn.takes_dtype(jnp.bfloat16) == (flag != "0" and _onednn._cpu_has_bfloat16())
  assert _onednn.takes_dtype(jnp.float32)


# bfloat16 convolutions oneDNN's AMX kernel computed wrong (Intel Xeon,
# jaxlib 0.10.2), with their errors over the output's largest value:
# contracted channels that are not a multiple of 16, or a strided single
# output column.
BFLOAT16_MISCOMPUTED = [
    ((3, 2, 24, 4), (2, 24, 4, 8), (1, 1), ((1, 1), (1, 1))),  # make explore's: off by 1.1
    ((4, 9, 21, 12), (4, 8, 12, 16), (1, 1), ((2, 2), (1, 1))),  # 1.19
    ((2, 14, 24, 8), (3, 8, 8, 64), (1, 1), ((1, 1), (2, 2))),  # 1.13
    ((2, 12, 8, 3), (4, 8, 3, 32), (1, 2), ((2, 2), (0, 0))),  # 1.52
    ((3, 13, 5, 128), (2, 9, 128, 16), (1, 2), ((0, 0), (2, 2))),  # one column: 1.38
]


@pytest.mark.parametrize("lhs_shape,rhs_shape,strides,padding", BFLOAT16_MISCOMPUTED)
def test_bfloat16_miscomputed_convolutions_stay_off_onednn(lhs_shape, rhs_shape, strides,
                                                           padding, monkeypatch):
  """``supported`` rejects them in bfloat16 (float32 stays), and ``conv``
  given one anyway lowers to lax's convolution on CPU (no custom call),
  with the float32 convolution's values within bfloat16's tolerance. With
  16 contracted channels, or a second output column, they pass."""
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  monkeypatch.setattr(_onednn, "_takes_bfloat16", lambda: True)
  dilation = (1, 1)
  out_width = _onednn._output_shape(lhs_shape, rhs_shape, strides, padding, dilation)[-2]
  assert _onednn.bfloat16_miscomputed(rhs_shape, strides, out_width)
  assert not _onednn.supported(lhs_shape, rhs_shape, strides, padding, dilation, jnp.bfloat16)
  assert _onednn.supported(lhs_shape, rhs_shape, strides, padding, dilation, jnp.float32)
  assert not _onednn.bfloat16_miscomputed((*rhs_shape[:-2], 16, rhs_shape[-1]), strides, 2)
  lhs, rhs = (a.astype(jnp.bfloat16) for a in _operands(lhs_shape, rhs_shape))
  conv = jax.jit(lambda l, r: _onednn.conv(l, r, strides, padding, dilation))
  if jax.default_backend() == "cpu":
    assert _onednn.TARGET not in conv.lower(lhs, rhs).compile().as_text()
  want = _lax_reference(lhs.astype(jnp.float32), rhs.astype(jnp.float32), strides, padding,
                        dilation)
  assert_close(conv(lhs, rhs), want, jnp.bfloat16)


@pytest.mark.skipif(jax.default_backend() != "cpu" or not _onednn.takes_dtype(jnp.bfloat16),
                    reason="oneDNN's bfloat16 on XLA:CPU (AVX512_BF16 or AMX)")
def test_bfloat16_dilated_one_tap_axis():
  """A bfloat16 convolution dilated along an axis with one tap crashed
  oneDNN (a segfault after its kernel's reorder): the custom call gets no
  dilation there, which changes nothing."""
  strides, padding, dilation = (1, 2), ((0, 1), (1, 2)), (1, 2)
  lhs, rhs = (a.astype(jnp.bfloat16) for a in _operands((1, 5, 1, 48), (2, 1, 48, 16)))
  conv = jax.jit(lambda l, r: _onednn.conv(l, r, strides, padding, dilation))
  hlo = conv.lower(lhs, rhs).compile().as_text()
  assert _onednn.TARGET in hlo and '"window_dilations":[1,1]' in hlo.replace(" ", "")
  want = _lax_reference(lhs.astype(jnp.float32), rhs.astype(jnp.float32), strides, padding,
                        dilation)
  assert_close(conv(lhs, rhs), want, jnp.bfloat16)


def test_bfloat16_stride1_kernel_gradient_as_the_reference():
  """The layer on which ``make explore`` found oneDNN's bfloat16 kernel
  gradient wrong (its convolution of x with a 2x24 window of ``dy``,
  contracting the 4 images): ``auto``'s gradients equal the float32
  reference's, that convolution now off oneDNN (``bfloat16_miscomputed``)."""
  cfg = ConvTransposeConfig(1, "same")
  rng = np.random.default_rng(0)
  draw = lambda shape, scale=1.0: jnp.asarray(rng.standard_normal(shape) * scale, jnp.bfloat16)
  kernel, x = draw((3, 3, 8, 3), 1 / np.sqrt(27)), draw((4, 2, 24, 3))
  dy = draw(jconvt.output_shape(x.shape, kernel.shape, cfg))

  def grads(kernel, x, dy, algorithm):
    c = cfg.replace(algorithm=algorithm)
    return jax.vjp(lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, c), kernel, x)[1](dy)

  got = grads(kernel, x, dy, "auto")
  want = grads(*(a.astype(jnp.float32) for a in (kernel, x, dy)), "dilated")
  for a, b in zip(got, want):
    assert_close(a, b, jnp.bfloat16)


def test_supported(monkeypatch):
  """Float32 (bfloat16 where the CPU multiplies it natively, over a multiple
  of 16 channels) in, the input's
  dtype or float32 out, padding >= 0, a non-empty output; nothing when
  off."""
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  ok = ((2, 8, 8, 4), (3, 3, 4, 8), (1, 1), ((1, 1), (1, 1)), (1, 1))
  assert _onednn.supported(*ok, jnp.float32)
  assert _onednn.supported(*ok, jnp.float32, jnp.float32)
  assert not _onednn.supported(*ok, jnp.bfloat16)  # 4 contracted channels
  deep = ((2, 8, 8, 16), (3, 3, 16, 8), *ok[2:])
  assert _onednn.supported(*deep, jnp.bfloat16) == _onednn._takes_bfloat16()
  assert _onednn.supported(*deep, jnp.bfloat16, jnp.float32) == _onednn._takes_bfloat16()
  assert not _onednn.supported(*ok, jnp.float16)
  assert not _onednn.supported(*ok, jnp.float32, jnp.bfloat16)
  assert not _onednn.supported(*ok[:3], ((1, -1), (1, 1)), (1, 1), jnp.float32)
  assert not _onednn.supported((2, 2, 2, 4), (5, 5, 4, 8), (1, 1), ((0, 0), (0, 0)), (1, 1),
                               jnp.float32)  # empty output
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  assert not _onednn.supported(*ok, jnp.float32)


def test_takes_channels_first(monkeypatch):
  """Channels-first convolutions need oneDNN's ``avx512_core`` (its
  reordering wrapper) on top of what ``takes_dtype`` needs."""
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  avx512 = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2"})
  monkeypatch.setattr(_onednn, "_cpu_flags", lambda: avx512)
  assert _onednn.takes_channels_first(jnp.float32)
  assert not _onednn.takes_channels_first(jnp.float16)
  monkeypatch.setattr(_onednn, "_cpu_flags", lambda: avx512 - {"avx512bw"})
  assert not _onednn.takes_channels_first(jnp.float32)
  monkeypatch.setattr(_onednn, "_cpu_flags", lambda: avx512)
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  assert not _onednn.takes_channels_first(jnp.float32)


def test_nchw_input_grad_rule(monkeypatch):
  """A channels_first layer's input gradient runs channels-first from 8
  images and 8 filters on, in float32 (``dy`` NHWC here)."""
  from jconvt import _algorithms
  monkeypatch.setattr(_onednn, "takes_channels_first", lambda dtype: True)
  assert _algorithms._nchw_input_grad((8, 32, 32, 8), jnp.float32)
  assert _algorithms._nchw_input_grad((16, 32, 32, 128), jnp.float32)
  assert not _algorithms._nchw_input_grad((4, 32, 32, 128), jnp.float32)  # 0.91x
  assert not _algorithms._nchw_input_grad((16, 64, 64, 3), jnp.float32)  # RGB: 0.95x
  assert not _algorithms._nchw_input_grad((16, 32, 32, 128), jnp.bfloat16)
  monkeypatch.setattr(_onednn, "takes_channels_first", lambda dtype: False)
  assert not _algorithms._nchw_input_grad((16, 32, 32, 128), jnp.float32)


@on_cpu_with_onednn
@pytest.mark.parametrize("strides,kernel,padding",
                         [(2, 4, "same"), (2, 3, "valid"), (1, 3, "same")])
def test_channels_first_input_gradient_runs_channels_first(monkeypatch, strides, kernel,
                                                            padding):
  """A channels_first layer's training step (8x16x9x9 -> 16) runs its input
  gradient's convolution on NCHW ``dy`` (the custom call's input channels
  at dimension 1) where ``_onednn.takes_channels_first``, and channels-last
  with ``NCHW_INPUT_GRAD_MIN_BATCH`` above its batch; each equals the
  dilated reference."""
  from jconvt import _algorithms
  cfg = ConvTransposeConfig(strides, padding, data_format="channels_first")
  rng = np.random.default_rng(0)
  params = {"kernel": jnp.asarray(rng.standard_normal((kernel, kernel, 16, 16)), jnp.float32)}
  x = jnp.asarray(rng.standard_normal((8, 16, 9, 9)), jnp.float32)
  dy = jnp.asarray(rng.standard_normal(
      jconvt.output_shape(x.shape, params["kernel"].shape, cfg)), jnp.float32)

  def step(algorithm):  # a new function each time: traced afresh
    c = cfg.replace(algorithm=algorithm)
    return jax.jit(jax.grad(
        lambda p, x: 0.5 * jnp.sum((jconvt.conv2d_transpose(p, x, c) - dy) ** 2),
        argnums=(0, 1)))

  ref = step("dilated")(params, x)
  for min_batch, channels_first in ((8, _onednn.takes_channels_first(jnp.float32)), (9, False)):
    monkeypatch.setattr(_algorithms, "NCHW_INPUT_GRAD_MIN_BATCH", min_batch)
    hlo = step("auto").lower(params, x).compile().as_text().replace(" ", "")
    assert _onednn.TARGET in hlo
    assert ('"input":{"data":{"batch_dim":0,"feature_dim":1' in hlo) == channels_first
    for a, b in zip(jax.tree.leaves(step("auto")(params, x)), jax.tree.leaves(ref)):
      assert_close(a, b)


def test_kernel_gradient_reads_nchw_dy_rule(monkeypatch):
  """A channels_first layer's kernel gradient reads its NCHW ``dy`` written
  whole where the input gradient reads that ``dy`` too: the oneDNN
  convolution under ``_nchw_input_grad`` (8 images and 8 filters on, in
  float32; ``x`` NHWC here)."""
  from jconvt import _algorithms
  monkeypatch.setattr(_onednn, "takes_channels_first", lambda dtype: True)
  monkeypatch.setenv("JCONVT_ONEDNN", "1")

  def rule(x_shape, kernel_shape, strides=2, dtype=jnp.float32, nchw_after=True, on_cpu=True,
           plan=None):
    cfg = ConvTransposeConfig(strides, "same")
    geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
    plan = plan or _algorithms.AlgorithmPlan("phase", "conv", "conv")
    return _algorithms._kernel_grad_reads_nchw_dy(plan, cfg, x_shape, kernel_shape, dtype,
                                                  geometry, on_cpu, nchw_after)

  assert rule((16, 16, 16, 256), (4, 4, 128, 256))  # the suite's: 1.10x behind a batch norm
  assert rule((8, 32, 32, 64), (3, 3, 64, 64), strides=1)
  assert not rule((4, 16, 16, 256), (4, 4, 128, 256))  # 4 images: 0.90x
  assert not rule((16, 32, 32, 64), (4, 4, 3, 64))  # RGB: 0.94x-0.96x
  assert not rule((16, 16, 16, 256), (4, 4, 128, 256), nchw_after=False)  # channels_last
  assert not rule((16, 16, 16, 256), (4, 4, 128, 256), on_cpu=False)
  assert not rule((16, 16, 16, 256), (4, 4, 128, 256), dtype=jnp.bfloat16)
  assert not rule((16, 16, 16, 256), (4, 4, 128, 256),
                  plan=_algorithms.AlgorithmPlan("phase", "phase_gemm", "conv"))


@on_cpu_with_onednn
@pytest.mark.parametrize("strides,kernel", [(2, 4), (2, 3), (1, 3)])
@pytest.mark.parametrize("argnums", [(0, 1), (0,)])
def test_channels_first_kernel_gradient_reads_written_dy(monkeypatch, strides, kernel,
                                                        argnums):
  """A channels_first layer's training step (8x16x9x9 -> 16, a batch norm
  after) runs its kernel gradient in one branch more, on the NCHW ``dy``
  written whole (``_kernel_grad_reads_nchw_dy``), with the input gradient or
  without; the gradients equal the dilated reference's either way."""
  from jconvt import _algorithms
  monkeypatch.setattr(_onednn, "takes_channels_first", lambda dtype: True)
  cfg = ConvTransposeConfig(strides, "same", data_format="channels_first")
  rng = np.random.default_rng(0)
  params = {"kernel": jnp.asarray(rng.standard_normal((kernel, kernel, 16, 16)), jnp.float32)}
  x = jnp.asarray(rng.standard_normal((8, 16, 9, 9)), jnp.float32)

  def step(algorithm):  # a new function each time: traced afresh
    c = cfg.replace(algorithm=algorithm)

    def loss(p, x):
      y = jconvt.conv2d_transpose(p, x, c)
      m, v = jnp.mean(y, (0, 2, 3), keepdims=True), jnp.var(y, (0, 2, 3), keepdims=True)
      return jnp.sum(jax.nn.relu((y - m) * lax.rsqrt(v + 1e-5)) ** 2)
    return jax.jit(jax.grad(loss, argnums=argnums))

  ref = step("dilated")(params, x)
  branches = {}
  for reads in (True, False):
    rule = _algorithms._kernel_grad_reads_nchw_dy if reads else (lambda *a: False)
    with monkeypatch.context() as m:
      m.setattr(_algorithms, "_kernel_grad_reads_nchw_dy", rule)
      branches[reads] = step("auto").lower(params, x).compile().as_text().count(" conditional(")
      for a, b in zip(jax.tree.leaves(step("auto")(params, x)), jax.tree.leaves(ref)):
        assert_close(a, b)
  assert branches[True] == branches[False] + 1, branches


def test_nchw_phase_forward_rule(monkeypatch):
  """A channels_first layer's phase forward runs channels-first from 2 MiB
  of float32 output per image on, at stride > 1, where its exact phases of
  more than one tap run on oneDNN (``x`` NHWC here)."""
  from jconvt import _algorithms
  monkeypatch.setattr(_onednn, "takes_channels_first", lambda dtype: True)
  monkeypatch.setenv("JCONVT_ONEDNN", "1")

  def rule(x_shape, kernel_shape, strides=2, dtype=jnp.float32, nchw_after=True, **kw):
    cfg = ConvTransposeConfig(strides, "same", **kw)
    geometry = jconvt._conv._geometry(x_shape, kernel_shape, cfg)
    return _algorithms._nchw_phase_forward(x_shape, dtype, kernel_shape, cfg, geometry, True,
                                           nchw_after)

  assert rule((8, 32, 32, 128), (3, 3, 128, 128))  # 2 MiB an image: 1.26x
  assert rule((1, 64, 64, 64), (3, 3, 64, 64))     # 4 MiB: 1.42x
  assert rule((8, 32, 32, 128), (4, 4, 128, 128))  # k4 s2: 1.30x
  assert not rule((16, 32, 32, 128), (3, 3, 64, 128))  # 1 MiB: 0.84x-0.89x
  assert not rule((16, 16, 16, 256), (4, 4, 128, 256))  # the suite's, 0.5 MiB
  assert not rule((8, 32, 32, 128), (3, 3, 128, 128), nchw_after=False)  # channels_last
  assert not rule((8, 32, 32, 128), (3, 3, 128, 128), dtype=jnp.bfloat16)
  assert not rule((8, 64, 64, 128), (3, 3, 128, 128), strides=1)
  assert not rule((8, 32, 32, 128), (3, 3, 128, 128), strides=4)  # 16 phases
  assert rule((1, 256, 256, 128), (3, 3, 8, 128))  # 8 filters, 8 MiB an image
  assert not rule((1, 256, 256, 128), (3, 3, 4, 128))  # 4 filters, 4 MiB: not on oneDNN
  monkeypatch.setattr(_onednn, "takes_channels_first", lambda dtype: False)
  assert not rule((8, 32, 32, 128), (3, 3, 128, 128))


@on_cpu_with_onednn
@pytest.mark.parametrize("kernel,strides,padding,output_padding,bias", [
    (3, 2, "same", None, False),   # phases of 4, 2, 2 and 1 taps (a GEMM)
    (4, 2, "same", None, True),    # four phases of 4 taps
    (5, 2, "valid", None, False),
    (4, 3, "same", None, True),    # nine phases
    (4, 2, "same", 1, False),      # output padding: one more row and column
    (3, (2, 3), "same", None, False),  # uneven strides
])
def test_channels_first_phase_forward_runs_channels_first(monkeypatch, kernel, strides, padding,
                                                         output_padding, bias):
  """A channels_first layer's phase forward (``algorithm="phase"``; ``auto``
  runs col2im on so small an input) under ``_nchw_phase_forward`` (its
  threshold lowered to reach a 2x8x7x6 -> 16 layer): every phase of
  more than one tap is a oneDNN convolution reading and writing NCHW (its
  input channels at dimension 1), with no transpose of the input or the
  output left in the program; the output equals the NumPy reference and a
  training step's gradients the dilated reference's."""
  from jconvt import _algorithms
  if not _onednn.takes_channels_first(jnp.float32):
    pytest.skip("oneDNN's channels-first convolution needs AVX-512 here")
  monkeypatch.setattr(_algorithms, "NCHW_PHASE_FORWARD_MIN_IMAGE_BYTES", 0)
  cfg = ConvTransposeConfig(strides, padding, output_padding=output_padding,
                            data_format="channels_first", algorithm="phase")
  rng = np.random.default_rng(0)
  params = {"kernel": jnp.asarray(rng.standard_normal((kernel, kernel, 16, 8)), jnp.float32)}
  if bias:
    params["bias"] = jnp.asarray(rng.standard_normal(16), jnp.float32)
  x = jnp.asarray(rng.standard_normal((2, 8, 7, 6)), jnp.float32)
  forward = jax.jit(lambda p, x: jconvt.conv2d_transpose(p, x, cfg))
  hlo = forward.lower(params, x).compile().as_text().replace(" ", "")
  calls = [line for line in hlo.splitlines() if _onednn.TARGET in line and "custom-call(" in line]
  assert calls and all('"input":{"data":{"batch_dim":0,"feature_dim":1' in c for c in calls)
  assert "f32[2,7,6,8]" not in hlo  # x as NHWC
  y = forward(params, x)
  assert_close(y, jconvt.reference_conv2d_transpose(
      np.asarray(x), np.asarray(params["kernel"]), np.asarray(params["bias"]) if bias else None,
      cfg))
  dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)

  def grads(algorithm):
    c = cfg.replace(algorithm=algorithm)
    return jax.jit(jax.grad(lambda p, x: jnp.sum(jconvt.conv2d_transpose(p, x, c) * dy),
                            argnums=(0, 1)))(params, x)

  for a, b in zip(jax.tree.leaves(grads("phase")), jax.tree.leaves(grads("dilated"))):
    assert_close(a, b)


def test_onednn_rule():
  """The fast paths hand a convolution to oneDNN with at least 8 output and
  2 contracted channels, and not a 1x1 kernel or output (XLA:CPU's own is
  faster on those)."""
  from jconvt._algorithms import _onednn_runs
  args = ((1, 1), ((1, 1), (1, 1)), (1, 1), jnp.float32)
  expected = _onednn.enabled()
  assert _onednn_runs((8, 64, 64, 32), (3, 3, 32, 8), *args) == expected
  assert not _onednn_runs((8, 64, 64, 32), (3, 3, 32, 4), *args)  # an RGB(A) output
  assert not _onednn_runs((8, 64, 64, 1), (3, 3, 1, 32), *args)   # one contracted channel
  assert _onednn_runs((8, 64, 64, 2), (3, 3, 2, 32), *args) == expected
  assert not _onednn_runs((8, 64, 64, 32), (1, 1, 32, 32), (1, 1), ((0, 0), (0, 0)), (1, 1),
                          jnp.float32)  # a 1x1 kernel: a GEMM
  assert not _onednn_runs((64, 4, 4, 512), (4, 4, 512, 100), (1, 1), ((0, 0), (0, 0)), (1, 1),
                          jnp.float32)  # a 1x1 output: a GEMM


def _onednn_calls(step, args):
  return step.lower(*args).compile().as_text().count(f'custom_call_target="{_onednn.TARGET}"')


@on_cpu_with_onednn
def test_onednn_routes_reach_onednn_on_small_layers():
  """``onednn_routes`` (the property test's thresholds) sends a layer of 3
  channels and filters, which ``auto`` keeps off oneDNN, to it: the forward
  and the input and kernel gradients (by phase, a scan)."""
  cfg = ConvTransposeConfig(2, "same")
  x = jnp.ones((2, 5, 5, 3), jnp.float32)
  kernel = jnp.ones((3, 3, 3, 3), jnp.float32)

  def step():  # a new function each time: traced afresh, under the thresholds then set
    return jax.jit(jax.grad(
        lambda k, x: jnp.sum(jconvt.conv2d_transpose({"kernel": k}, x, cfg)), argnums=(0, 1)))

  assert _onednn_calls(step(), (kernel, x)) == 0
  with onednn_routes():
    lowered = step().lower(kernel, x).compile().as_text()
  assert lowered.count(f'custom_call_target="{_onednn.TARGET}"') >= 3
  assert "while" in lowered  # the kernel gradient's phases


@on_cpu_with_onednn
@pytest.mark.parametrize("strides,kernel", [(2, 4), (2, 3), (1, 3)])
def test_training_step_runs_on_onednn_and_equals_the_reference(monkeypatch, strides, kernel):
  """``auto``'s training step on CPU (a 2x16x16x64 -> 64 layer) runs its
  phase forward and its input gradient's convolution on oneDNN, and none
  with ``JCONVT_ONEDNN=0``; both equal the dilated reference."""
  cfg = ConvTransposeConfig(strides, "same")
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 16, 16, 64)), jnp.float32)
  params = {"kernel": jnp.asarray(rng.standard_normal((kernel, kernel, 64, 64)), jnp.float32)}
  dy = jnp.asarray(rng.standard_normal(jconvt.output_shape(x.shape, params["kernel"].shape,
                                                           cfg)), jnp.float32)

  def step(algorithm):
    c = cfg.replace(algorithm=algorithm)
    return jax.jit(jax.grad(
        lambda p, x: 0.5 * jnp.sum((jconvt.conv2d_transpose(p, x, c) - dy) ** 2),
        argnums=(0, 1)))

  ref = step("dilated")(params, x)
  assert _onednn_calls(step("auto"), (params, x)) >= 2
  results = [step("auto")(params, x)]
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  assert _onednn_calls(step("auto"), (params, x)) == 0
  results.append(step("auto")(params, x))
  for got in results:
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
      assert_close(a, b)


@pytest.mark.parametrize("x_shape,kernel_shape,expected", [
    ((16, 16, 16, 256), (4, 4, 128, 256), ("phase", "conv", "conv")),  # the suite's
    ((16, 8, 8, 512), (4, 4, 256, 512), ("phase", "conv", "conv")),     # small: not col2im
    ((16, 32, 32, 256), (2, 2, 128, 256), ("phase", "phase_gemm", "conv")),  # k <= s
    ((2, 1, 1, 64), (4, 4, 32, 64), ("col2im", "taps", "conv")),  # a latent: 1x1 x
    # bfloat16_miscomputed: 8 images (the kernel gradient's contracted
    # channels), 24 filters (the input gradient's), 8 input channels.
    ((8, 32, 32, 256), (2, 2, 128, 256), ("phase", "phase_gemm", "phase_gemm")),
    ((16, 16, 16, 256), (4, 4, 24, 256), ("phase", "phase_gemm", "conv")),
    ((16, 16, 16, 8), (4, 4, 128, 8), ("phase_gemm", "conv", "conv")),
])
def test_bfloat16_plan_with_onednn(monkeypatch, x_shape, kernel_shape, expected):
  """Where oneDNN takes bfloat16, ``auto`` runs bfloat16 layers at stride 2
  through it: the phase forward (col2im only where the phase kernel exceeds
  the input), the convolution input gradient (the GEMMs with a kernel no
  larger than the stride) and the convolution kernel gradient; without
  oneDNN, the bfloat16 GEMMs (``phase_gemm``) as before, but on a 1x1
  input the convolution (XLA:CPU's dot there) either way. Each of the
  three where oneDNN takes its convolution's contracted channels
  (``_onednn.bfloat16_miscomputed``), else the GEMMs."""
  cfg = ConvTransposeConfig(2, "same")
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  monkeypatch.setattr(_onednn, "_takes_bfloat16", lambda: True)
  assert tuple(_cpu_plan(x_shape, kernel_shape, cfg, jnp.bfloat16)) == expected
  monkeypatch.setattr(_onednn, "_takes_bfloat16", lambda: False)
  plan = _cpu_plan(x_shape, kernel_shape, cfg, jnp.bfloat16)
  assert plan.kernel_gradient == ("conv" if x_shape[1:3] == (1, 1) else "phase_gemm")


@pytest.mark.parametrize("x_shape,kernel_shape,strides,bf16_onednn,bf16_without,float32", [
    ((16, 4, 4, 1024), (4, 4, 512, 1024), 2, "conv", "taps", "taps"),  # dcgan 4->8: 1.47x
    ((64, 2, 2, 256), (5, 5, 128, 256), 2, "conv", "taps", "taps"),     # 1.32x
    ((4, 8, 8, 256), (4, 4, 128, 256), 2, "taps", "taps", "taps"),      # 4 images: miscomputed
    ((16, 8, 8, 256), (4, 4, 128, 256), 2, "conv", "phase_gemm", "conv"),  # (4 of them 1.25x)
    ((1, 16, 16, 256), (4, 4, 128, 256), 2, "taps", "taps", "taps"),    # one image: 0.52x
    ((16, 1, 1, 256), (9, 9, 128, 256), 2, "conv", "conv", "conv"),     # a 1x1 input: 3.96x
    ((2, 1, 1, 16), (33, 33, 16, 16), 4, "conv", "conv", "conv"),       # compiled 1.3 -> 0.24 s
    ((16, 2, 2, 16), (4, 4, 16, 16), 2, "conv", "phase_gemm", "conv"),  # 2x2: the rules before
])
def test_bfloat16_kernel_gradient_of_small_inputs(monkeypatch, x_shape, kernel_shape, strides,
                                                  bf16_onednn, bf16_without, float32):
  """On small strided bfloat16 inputs the kernel gradient is the
  convolution where oneDNN takes it (not the tap-window GEMM, which stays
  for float32 and on one image), and on 1x1 inputs with or without oneDNN
  (not the phase GEMMs, whose canvas is all padding there)."""
  cfg = ConvTransposeConfig(strides, "same")
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  plan = lambda dtype: _cpu_plan(x_shape, kernel_shape, cfg, dtype).kernel_gradient
  monkeypatch.setattr(_onednn, "_takes_bfloat16", lambda: True)
  assert plan(jnp.bfloat16) == bf16_onednn
  assert plan(jnp.float32) == float32
  monkeypatch.setattr(_onednn, "_takes_bfloat16", lambda: False)
  assert plan(jnp.bfloat16) == bf16_without


@pytest.mark.skipif(jax.default_backend() != "cpu" or not _onednn.takes_dtype(jnp.bfloat16),
                    reason="oneDNN's bfloat16 on XLA:CPU (AVX512_BF16 or AMX)")
@pytest.mark.parametrize("strides,x_shape", [(2, (16, 8, 8, 32)), (1, (16, 8, 8, 32))])
def test_bfloat16_training_step_on_onednn_equals_the_reference(strides, x_shape):
  """A bfloat16 step through oneDNN (forward, both gradients' convolutions;
  at stride 1 on a batch of 16) equals the dilated reference within
  bfloat16's tolerance."""
  cfg = ConvTransposeConfig(strides, "same")
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.bfloat16)
  params = {"kernel": jnp.asarray(rng.standard_normal((4, 4, 16, 32)) * 0.1, jnp.bfloat16)}
  t = jnp.asarray(rng.standard_normal(jconvt.output_shape(x_shape, (4, 4, 16, 32), cfg)),
                  jnp.bfloat16)

  def step(algorithm):
    c = cfg.replace(algorithm=algorithm)
    loss = lambda p, x: 0.5 * jnp.sum(
        (jconvt.conv2d_transpose(p, x, c).astype(jnp.float32) - t) ** 2)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))

  # The forward: one convolution at stride 1, one per phase at stride 2 (its
  # exact phases: the canvas, 9x9 per phase, is 27% past the 8x8 window).
  assert _onednn_calls(step("auto"), (params, x)) == (3 if strides == 1 else 6)
  for a, b in zip(jax.tree.leaves(step("auto")(params, x)),
                  jax.tree.leaves(step("dilated")(params, x))):
    assert_close(a, b, dtype=jnp.bfloat16)


@pytest.mark.parametrize("x_shape,kernel_shape,padding,expected", [
    ((4, 32, 32, 64), (3, 3, 64, 64), "same", "conv"),       # the GEMMs without oneDNN
    ((8, 8, 8, 32), (3, 3, 32, 32), "same", "conv"),
    ((4, 8, 8, 128), (9, 9, 128, 128), "same", "conv"),
    ((2, 64, 64, 32), (3, 3, 32, 32), "valid", "conv"),  # no padding: 0.81x (3-D form)
    ((2, 32, 32, 128), (3, 3, 128, 128), "valid", "conv"),  # 0.82x
    ((1, 16, 16, 32), (3, 3, 32, 32), "same", "phase_gemm"),  # batch 1: one contracted channel
])
def test_stride1_kernel_gradient_with_onednn(monkeypatch, x_shape, kernel_shape, padding,
                                             expected):
  """At stride 1 (float32) the kernel gradient is the convolution wherever
  it runs on oneDNN, with or without padding (its 3-D form beat the GEMMs
  on 'valid' layers too); the GEMMs stay where oneDNN does not take it."""
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  cfg = ConvTransposeConfig(1, padding)
  plan = _cpu_plan(x_shape, kernel_shape, cfg, jnp.float32)
  assert plan.kernel_gradient == expected


@pytest.mark.parametrize("x_shape,kernel_shape,padding,expected", [
    ((16, 32, 32, 128), (4, 4, 64, 128), "same", "conv"),  # dcgan 32->64: 1.06-1.12x
    ((8, 32, 32, 128), (3, 3, 128, 128), "same", "conv"),  # unet k3s2: 1.14x, by phase
    ((8, 32, 32, 128), (3, 3, 64, 128), "same", "conv"),   # 32x32, fewer channels: 1.09x
    ((8, 24, 24, 256), (3, 3, 64, 256), "same", "conv"),   # 24x24: 0.98x, 1.10x with 64 -> 256
    ((8, 32, 32, 256), (3, 3, 256, 256), "same", "conv"),  # dy 32 MiB: 1.10x, by phase
    ((8, 32, 32, 256), (3, 3, 64, 256), "same", "conv"),   # 0.79x: dy 8 MiB
    ((8, 32, 32, 256), (3, 3, 128, 256), "same", "conv"),  # 0.90x: filters < in_channels
    ((8, 32, 32, 128), (3, 3, 256, 128), "same", "conv"),  # dy 32 MiB: 1.11x, by phase
    ((16, 32, 32, 64), (4, 4, 3, 64), "same", "conv"),     # RGB output
    ((8, 64, 64, 64), (4, 4, 32, 64), "same", "conv"),     # 64x64, k4 s2
    ((8, 64, 64, 64), (3, 3, 32, 64), "same", "phase_gemm"),  # 64x64, k3 s2: 0.80-0.89x
    ((8, 32, 32, 256), (2, 2, 128, 256), "valid", "phase_gemm"),  # no padding: 0.56x
    ((8, 64, 64, 64), (5, 5, 32, 64), "same", "conv"),     # 3 taps a phase: with or without
    ((8, 32, 32, 128), (7, 7, 64, 128), "same", "conv"),   # oneDNN
])
def test_strided_float32_kernel_gradient_with_onednn(monkeypatch, x_shape, kernel_shape,
                                                     padding, expected):
  """Past ``GEMM_KERNEL_GRAD_PIXELS`` (float32, stride 2) the kernel
  gradient is the convolution where it runs on oneDNN with padding on
  images of at most 32x32 (one phase at a time where ``dy`` is at least
  16 MiB with at least as many filters as input channels:
  ``_kernel_grad_by_phase``) or with the stride dividing the kernel, and with
  or without oneDNN where a phase has more than 2 taps along an axis; the
  GEMMs elsewhere (on a CPU without AMX: the next test has one)."""
  cfg = ConvTransposeConfig(2, padding)
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  monkeypatch.setattr(_onednn, "cpu_has_amx", lambda: False)
  assert _cpu_plan(x_shape, kernel_shape, cfg, jnp.float32).kernel_gradient == expected
  monkeypatch.setenv("JCONVT_ONEDNN", "0")
  wide_phases = kernel_shape[0] > 4
  assert _cpu_plan(x_shape, kernel_shape, cfg, jnp.float32).kernel_gradient == (
      "conv" if wide_phases else "phase_gemm")


@pytest.mark.parametrize("x_shape,kernel_shape,padding,expected", [
    ((8, 64, 64, 64), (3, 3, 64, 64), "same", "conv"),     # 1.23x
    ((8, 64, 64, 64), (3, 3, 32, 64), "same", "conv"),     # 1.49x
    ((2, 128, 128, 64), (3, 3, 32, 64), "same", "conv"),   # 1.43x
    ((8, 32, 32, 128), (3, 3, 128, 128), "same", "conv"),  # unet k3s2, as without AMX
    ((8, 32, 32, 256), (2, 2, 128, 256), "valid", "phase_gemm"),  # no padding
])
def test_strided_float32_kernel_gradient_with_onednn_and_amx(monkeypatch, x_shape, kernel_shape,
                                                             padding, expected):
  """On a CPU with AMX (an Intel Xeon, where it was measured) the kernel
  gradient of a padded strided layer whose convolution runs on oneDNN is
  that convolution on images of any size: k3 s2 on 64x64 and larger too."""
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  monkeypatch.setattr(_onednn, "cpu_has_amx", lambda: True)
  cfg = ConvTransposeConfig(2, padding)
  assert _cpu_plan(x_shape, kernel_shape, cfg, jnp.float32).kernel_gradient == expected


@pytest.mark.skipif(jax.default_backend() != "cpu" or not _onednn.takes_dtype(jnp.bfloat16),
                    reason="oneDNN's bfloat16 on XLA:CPU (AVX512_BF16 or AMX)")
@pytest.mark.parametrize("batch,calls", [(8, 3), (12, 3), (4, 2)])
def test_bfloat16_stride1_kernel_gradient_pads_the_batch(batch, calls):
  """At stride 1 in bfloat16 the kernel gradient's convolution contracts
  the batch; from 8 images on it runs on oneDNN padded with zero images to
  16 (``_kernel_grad_batch``): three oneDNN calls a step, the third the
  kernel gradient's, and the gradients of the dilated reference in
  float32 within bfloat16's tolerance. On 4 images, two calls (the GEMMs
  compute the kernel gradient)."""
  cfg = ConvTransposeConfig(1, "same")
  rng = np.random.default_rng(batch)
  x = jnp.asarray(rng.standard_normal((batch, 8, 8, 32)), jnp.bfloat16)
  params = {"kernel": jnp.asarray(rng.standard_normal((3, 3, 32, 32)) * 0.1, jnp.bfloat16)}
  t = jnp.asarray(rng.standard_normal((batch, 8, 8, 32)), jnp.float32)

  def step(algorithm):
    c = cfg.replace(algorithm=algorithm)
    loss = lambda p, x: 0.5 * jnp.sum(
        (jconvt.conv2d_transpose(p, x, c).astype(jnp.float32) - t) ** 2)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))

  assert _onednn_calls(step("auto"), (params, x)) == calls
  got = step("auto")(params, x)
  want = step("dilated")(*jax.tree.map(lambda a: a.astype(jnp.float32), (params, x)))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == jnp.bfloat16
    assert_close(a, b, dtype=jnp.bfloat16)


@pytest.mark.parametrize("x_shape,kernel_shape,padding,expected", [
    ((16, 64, 64, 32), (3, 3, 32, 32), "same", "conv"),    # (8 images: 2.15x)
    ((16, 32, 32, 64), (3, 3, 64, 64), "valid", "conv"),   # (8: 1.35x), unpadded too
    ((32, 16, 16, 128), (3, 3, 128, 128), "same", "conv"),  # (4: 1.20x)
    ((2, 32, 32, 64), (3, 3, 64, 64), "same", "phase_gemm"),  # batch 2: 0.75x
    ((8, 64, 64, 32), (3, 3, 32, 32), "same", "conv"),  # 8 images, padded to 16
    ((4, 32, 32, 64), (3, 3, 64, 64), "same", "phase_gemm"),  # 4: miscomputed, not padded
])
def test_stride1_bfloat16_kernel_gradient_with_onednn(monkeypatch, x_shape, kernel_shape,
                                                      padding, expected):
  """At stride 1 in bfloat16 the kernel gradient is the convolution where it
  runs on oneDNN (bfloat16 products in hardware) on batches of 4 or more
  (and a multiple of 16, ``_onednn.bfloat16_miscomputed``, or from 8 on
  padded to one: ``_kernel_grad_batch``), else the GEMMs."""
  cfg = ConvTransposeConfig(1, padding)
  monkeypatch.setenv("JCONVT_ONEDNN", "1")
  monkeypatch.setattr(_onednn, "_takes_bfloat16", lambda: True)
  assert _cpu_plan(x_shape, kernel_shape, cfg, jnp.bfloat16).kernel_gradient == (
      expected)
  monkeypatch.setattr(_onednn, "_takes_bfloat16", lambda: False)
  assert _cpu_plan(x_shape, kernel_shape, cfg, jnp.bfloat16).kernel_gradient == (
      "phase_gemm")
