"""``jconvt.compat.v1.nn``: TF's ``tf.nn.conv2d_transpose`` op with its own
arguments, against fixtures TF wrote (tests/golden/make_tf_nn.py), an
independent NumPy scatter of TF's definition, and TF's refusals."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_close, examples, load_golden
import jconvt
from jconvt import _shapes
from jconvt.compat import v1 as tf_v1

FIXTURE = pathlib.Path(__file__).parent / "golden" / "tf_nn_conv2d_transpose.npz"


CASES = load_golden(FIXTURE)


def _case_id(rec) -> str:
  pad = rec["padding"] if isinstance(rec["padding"], str) else "explicit"
  parts = [rec["op"].split("_")[0], f"k{rec['kernel'][0]}x{rec['kernel'][1]}", pad,
           f"s{rec.get('strides')}", f"out{rec['output_shape']}", rec["data_format"]]
  if rec.get("dilations") or rec.get("rate"):
    parts.append(f"d{rec.get('dilations') or rec.get('rate')}")
  return "-".join(str(p).replace(" ", "") for p in parts)


def _call(rec, x, kernel, **kwargs):
  if rec["op"] == "atrous_conv2d_transpose":
    return tf_v1.nn.atrous_conv2d_transpose(x, kernel, rec["output_shape"], rec["rate"],
                                            rec["padding"], **kwargs)
  return tf_v1.nn.conv2d_transpose(x, kernel, rec["output_shape"], strides=rec["strides"],
                                   padding=rec["padding"], data_format=rec["data_format"],
                                   dilations=rec["dilations"], **kwargs)


def test_fixture_is_broad():
  recs = [r for r, _ in CASES]
  assert len(recs) >= 80
  assert {r["kernel"][0] for r in recs} >= set(range(1, 6))
  assert {r["data_format"] for r in recs} == {"NHWC", "NCHW"}
  assert any(not isinstance(r["padding"], str) for r in recs)  # explicit
  assert any(r["op"] == "atrous_conv2d_transpose" for r in recs)
  assert any(r["dilations"] not in (None, 1) and r.get("strides") == 2 for r in recs)
  assert any(len(r["output_shape"]) == 2 for r in recs)
  assert any(0 in arrays["y"].shape for _, arrays in CASES)
  # Several output sizes of one input: what Keras' output_padding picks.
  sizes = {}
  for r in recs:
    key = (r["op"], tuple(r["kernel"]), json.dumps(r.get("strides")), json.dumps(r["padding"]))
    sizes.setdefault(key, set()).add(tuple(r["output_shape"]))
  assert sum(len(v) > 1 for v in sizes.values()) >= 10


# Every case on ``auto``; the reference and col2im on every other case each.
ALGORITHM_CASES = [(algorithm, rec, arrays) for i, (rec, arrays) in enumerate(CASES)
                   for algorithm in ("auto", ("dilated", "col2im")[i % 2])]


@pytest.mark.parametrize("algorithm,rec,arrays", ALGORITHM_CASES,
                         ids=[f"{a}-{_case_id(r)}" for a, r, _ in ALGORITHM_CASES])
def test_forward_and_gradients_match_tf(algorithm, rec, arrays):
  x, kernel = jnp.asarray(arrays["x"]), jnp.asarray(arrays["kernel"])

  @jax.jit
  def loss(x, kernel):
    y = _call(rec, x, kernel, algorithm=algorithm)
    return jnp.sum(y * arrays["dy"]), y

  (_, y), (dx, dk) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, kernel)
  assert y.shape == arrays["y"].shape and y.dtype == jnp.float32
  assert_close(y, arrays["y"])
  assert_close(dx, arrays["dx"])
  assert_close(dk, arrays["dkernel"])


@pytest.mark.parametrize("rec,arrays", CASES[::2], ids=[_case_id(r) for r, _ in CASES[::2]])
def test_conv2d_backprop_input_is_the_same_op(rec, arrays):
  if rec["op"] != "conv2d_transpose":
    return
  y = tf_v1.nn.conv2d_backprop_input(rec["output_shape"], arrays["kernel"], arrays["x"],
                                     rec["strides"], rec["padding"],
                                     data_format=rec["data_format"],
                                     dilations=rec["dilations"] or 1)
  assert_close(y, arrays["y"])


def _tf_definition(x, kernel, length_hw, strides, dilations, padding):
  """TF's definition, in float64: the input gradient of the forward
  convolution over an input of ``length_hw``, its padding computed as
  TF's ``GetWindowedOutputSize`` does, by scattering each input pixel
  through each tap (NHWC)."""
  n, h, w, _ = x.shape
  kh, kw, f, _ = kernel.shape
  pads = []
  for axis, (length, s, d, k) in enumerate(zip(length_hw, strides, dilations, (kh, kw))):
    k_eff = (k - 1) * d + 1
    if padding == "SAME":
      pads.append(max((-(-length // s) - 1) * s + k_eff - length, 0) // 2)
    else:
      pads.append(0 if padding == "VALID" else padding[axis][0])
  y = np.zeros((n, *length_hw, f))
  for i, j, a, b in np.ndindex(h, w, kh, kw):
    oh = i * strides[0] + a * dilations[0] - pads[0]
    ow = j * strides[1] + b * dilations[1] - pads[1]
    if 0 <= oh < length_hw[0] and 0 <= ow < length_hw[1]:
      y[:, oh, ow] += x[:, i, j].astype(np.float64) @ kernel[a, b].T.astype(np.float64)
  return y


def _forward_length(length, k_eff, s, padding):
  """How many windows TF's forward convolution fits over ``length`` pixels."""
  if padding == "SAME":
    return -(-length // s)
  lo, hi = (0, 0) if padding == "VALID" else padding
  return max(0, (length + lo + hi - k_eff) // s + 1)


@settings(max_examples=examples(40), deadline=None)
@given(st.data())
def test_every_output_shape_tf_takes_matches_its_definition(data):
  """Random layers and every output size TF accepts for them (and one it
  refuses), against the NumPy scatter of TF's definition."""
  hw = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 4)), label="in_hw")
  k = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 4)), label="kernel")
  s = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="strides")
  d = data.draw(st.sampled_from([(1, 1), (2, 2), (2, 1)]), label="dilations")
  padding = data.draw(st.sampled_from(["SAME", "VALID", ((1, 0), (0, 2)), ((2, 1), (1, 1))]),
                      label="padding")
  lengths = []
  for axis in range(2):
    k_eff = (k[axis] - 1) * d[axis] + 1
    pad = padding if isinstance(padding, str) else padding[axis]
    fits = [n for n in range(1, hw[axis] * s[axis] + k_eff + s[axis] + 2)
            if _forward_length(n, k_eff, s[axis], pad) == hw[axis]]
    lengths.append(data.draw(st.sampled_from(fits) if fits else st.nothing(), label="length"))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, *hw, 3)).astype(np.float32)
  kernel = rng.standard_normal((*k, 2, 3)).astype(np.float32)
  tf_padding = padding if isinstance(padding, str) else [[0, 0], *map(list, padding), [0, 0]]
  y = tf_v1.nn.conv2d_transpose(x, kernel, [2, *lengths, 2], strides=list(s),
                                padding=tf_padding, dilations=list(d))
  assert_close(y, _tf_definition(x, kernel, lengths, s, d, padding))
  # One size more than the largest that fits on the height: refused.
  k_eff = (k[0] - 1) * d[0] + 1
  too_long = max(n for n in range(1, hw[0] * s[0] + k_eff + s[0] + 2)
                 if _forward_length(n, k_eff, s[0],
                                    padding if isinstance(padding, str) else padding[0])
                 == hw[0]) + 1
  with pytest.raises(ValueError, match=r"`output_shape`.*does not fit the input's height"):
    tf_v1.nn.conv2d_transpose(x, kernel, [2, too_long, lengths[1], 2], strides=list(s),
                              padding=tf_padding, dilations=list(d))


@pytest.mark.parametrize("padding,hw", [("SAME", (6, 8)), ("VALID", (7, 9)),
                                        ([[0, 0], [1, 0], [2, 1], [0, 0]], (7, 7))],
                         ids=["same", "valid", "explicit"])
def test_nchw_is_nhwc_transposed(padding, hw):
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
  y = tf_v1.nn.conv2d_transpose(x, kernel, [2, *hw, 4], [1, 2, 2, 1], padding)
  nchw_padding = padding if isinstance(padding, str) else [[0, 0], [0, 0], *padding[1:3]]
  y_nchw = tf_v1.nn.conv2d_transpose(x.transpose(0, 3, 1, 2), kernel, [2, 4, *hw],
                                     [1, 1, 2, 2], nchw_padding, data_format="NCHW")
  np.testing.assert_array_equal(np.asarray(y_nchw), np.asarray(y).transpose(0, 3, 1, 2))


def test_argument_forms_agree():
  """TF's spellings of the same call give the same output: strides and
  dilations as an int or 1, 2 or 4 values, ``output_shape`` of 4 or 2
  sizes, ``input``/``filters`` for ``value``/``filter``, any-case padding."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((1, 3, 3, 2)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)
  want = tf_v1.nn.conv2d_transpose(x, kernel, [1, 5, 6, 4], [1, 2, 2, 1])
  for call in (
      lambda: tf_v1.nn.conv2d_transpose(x, kernel, [1, 5, 6, 4], 2),
      lambda: tf_v1.nn.conv2d_transpose(x, kernel, [1, 5, 6, 4], [2]),
      lambda: tf_v1.nn.conv2d_transpose(x, kernel, (5, 6), [2, 2], dilations=[1, 1, 1, 1]),
      lambda: tf_v1.nn.conv2d_transpose(x, kernel, np.array([1, 5, 6, 4]), 2, "same"),
      lambda: tf_v1.nn.conv2d_transpose(input=x, filters=kernel, output_shape=[1, 5, 6, 4],
                                        strides=2, name="deconv"),
  ):
    np.testing.assert_array_equal(np.asarray(call()), np.asarray(want))


def test_runs_under_jit_vmap_and_grad():
  rng = np.random.default_rng(3)
  xs = jnp.asarray(rng.standard_normal((3, 2, 4, 4, 2)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((4, 4, 3, 2)), jnp.float32)
  op = lambda x, k: tf_v1.nn.conv2d_transpose(x, k, [2, 8, 8, 3], [1, 2, 2, 1])  # noqa: E731
  ys = jax.jit(jax.vmap(op, in_axes=(0, None)))(xs, kernel)
  assert ys.shape == (3, 2, 8, 8, 3)
  for i in range(3):
    assert_close(ys[i], op(xs[i], kernel))
  dk = jax.grad(lambda k: jnp.sum(op(xs[0], k) ** 2))(kernel)
  assert dk.shape == kernel.shape and bool(jnp.all(jnp.isfinite(dk)))
  assert float(jnp.abs(dk).max()) > 0


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,data_format", [
    ((16, 32, 32, 128), (4, 4, 64, 128), 2, "same", "NHWC"),        # dcgan 32->64
    ((8, 32, 32, 128), (3, 3, 128, 128), 2, "same", "NHWC"),        # unet k3s2
    ((8, 32, 32, 256), (2, 2, 128, 256), 2, "valid", "NHWC"),       # unet k2s2
    ((16, 256, 16, 16), (4, 4, 128, 256), 2, "same", "NCHW"),       # channels_first
    ((1, 16, 16, 21), (64, 64, 21, 21), 32, "same", "NHWC"),        # FCN-32s
], ids=["dcgan", "unet-k3s2", "unet-k2s2", "nchw", "fcn32s"])
def test_the_op_lowers_to_the_layers_program(x_shape, kernel_shape, strides, padding,
                                              data_format):
  """Its explicit crop gives the same program as the layer's 'same' or
  'valid' (the optimized HLO of the 24 benchmark layers' forwards and steps
  compared equal too): the same speed."""
  cfg = jconvt.ConvTransposeConfig(
      strides, padding, data_format="channels_last" if data_format == "NHWC" else "channels_first")
  x, kernel = jnp.zeros(x_shape), jnp.zeros(kernel_shape)
  out = list(jconvt.output_shape(x_shape, kernel_shape, cfg))

  def lowered(f):
    step = jax.grad(lambda x, k: jnp.sum(f(x, k) ** 2), argnums=(0, 1))
    return [jax.jit(g).lower(x, kernel).as_text(debug_info=False) for g in (f, step)]

  layer = lowered(lambda x, k: jconvt.conv2d_transpose({"kernel": k}, x, cfg))
  op = lowered(lambda x, k: tf_v1.nn.conv2d_transpose(x, k, out, strides, padding.upper(),
                                                      data_format=data_format))
  assert op == layer


def test_backprop_input_crop_covers_what_output_padding_adds():
  """The crop and ``output_padding`` rebuild the asked length from the
  full transposed convolution, with ``output_padding`` below the stride,
  for every length that fits."""
  for n, k, s, d, pad in [(3, 3, 2, 1, "same"), (3, 4, 2, 1, "valid"), (2, 2, 3, 1, "valid"),
                          (4, 3, 1, 2, "same"), (3, 3, 2, 1, (1, 2)), (0, 3, 2, 1, "same")]:
    k_eff = (k - 1) * d + 1
    for length in range(0, n * s + k_eff + s):
      if _forward_length(length, k_eff, s, pad.upper() if isinstance(pad, str) else pad) != n:
        with pytest.raises(ValueError, match="the lengths that map to"):
          _shapes.backprop_input_crop(n, k, s, d, pad, length)
        continue
      (lo, hi), op = _shapes.backprop_input_crop(n, k, s, d, pad, length)
      assert 0 <= op < s and lo >= 0 and hi >= 0
      got, pad_before = _shapes.transpose_padding_1d(n, k, s, (lo, hi), op, d)
      assert (got, pad_before) == (length, lo)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(output_shape=[2, 7, 7, 4], strides=2), ValueError,
     r"`output_shape` \(=\[2, 7, 7, 4\]\) does not fit the input's height: .* gives 4, not "
     r"the input's 3: the lengths that map to 3 are 5 to 6"),
    (dict(output_shape=[2, 6, 9, 4], strides=2, padding="VALID"), ValueError,
     r"does not fit the input's height: .*'valid'.* lengths that map to 3 are 7 to 8"),
    (dict(output_shape=[3, 6, 6, 4], strides=2), ValueError,
     r"`output_shape` .* has batch 3 and 4 channels; the input's batch is 2"),
    (dict(output_shape=[2, 6, 6, 5], strides=2), ValueError,
     r"filter's out_channels \(its third dimension\) 4"),
    (dict(output_shape=[2, 6, 6], strides=2), ValueError, r"must hold 4 sizes, or the 2"),
    (dict(output_shape=None, strides=2), TypeError, r"`output_shape` is required"),
    (dict(output_shape=[2, 6.0, 6, 4], strides=2), TypeError,
     r"`output_shape` must be an int or a list of ints"),
    (dict(output_shape=[2, 6, 6, 4], strides=[2, 2, 2]), ValueError,
     r"`strides` .* should be of length 1, 2 or 4, got 3"),
    (dict(output_shape=[2, 6, 6, 4], strides=[2, 2, 2, 1]), ValueError,
     r"`strides` .* must be 1 in the batch and channel dimensions"),
    (dict(output_shape=[2, 6, 6, 4], strides=0), ValueError, r"`strides` \(=0\) must be >= 1"),
    (dict(output_shape=[2, 6, 6, 4], strides=2, dilations="2"), TypeError,
     r"`dilations` must be an int or a list of ints"),
    (dict(output_shape=[2, 6, 6, 4], strides=2, padding="FULL"), ValueError,
     r"`padding` \(='FULL'\) must be 'SAME' or 'VALID'"),
    (dict(output_shape=[2, 6, 6, 4], strides=2, padding=[[1, 0], [1, 1], [1, 1], [0, 0]]),
     ValueError, r"must be zero in the batch and channel dimensions"),
    (dict(output_shape=[2, 6, 6, 4], strides=2, padding=[[0, 0], [1, 1], [0, 0]]),
     ValueError, r"four \(before, after\) pairs"),
    (dict(output_shape=[2, 6, 6, 4], strides=2, padding=[[0, 0], [-1, 1], [0, 0], [0, 0]]),
     ValueError, r"must be >= 0 everywhere"),
    (dict(output_shape=[2, 6, 6, 4], strides=2, data_format="NWHC"), ValueError,
     r"`data_format` \(='NWHC'\) must be 'NHWC' or 'NCHW'"),
    (dict(output_shape=[2, 6, 6, 4], strides=2, input=np.ones((2, 3, 3, 3), np.float32)),
     ValueError, r"Cannot specify both `value` and `input`"),
])
def test_bad_arguments_raise_naming_them(kwargs, error, match):
  x = np.ones((2, 3, 3, 3), np.float32)
  kernel = np.ones((3, 3, 4, 3), np.float32)
  with pytest.raises(error, match=match):
    tf_v1.nn.conv2d_transpose(x, kernel, **kwargs)


def test_a_name_that_is_not_a_string_is_refused():
  """TF2's tf.nn.conv2d_transpose takes `dilations` 7th, where v1 (this
  signature) takes `name`: TF2 code passing dilations positionally gets an
  error that says so, not a silently undilated output."""
  x, kernel = np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 3, 2), np.float32)
  with pytest.raises(TypeError, match=r"`name` must be a string or None, got \[1, 2, 2, 1\]: "
                     r"in TF v1's signature.*argument 7 is `name`.*`dilations` there"):
    tf_v1.nn.conv2d_transpose(x, kernel, [1, 4, 4, 3], 1, "SAME", "NHWC", [1, 2, 2, 1])
  y = tf_v1.nn.conv2d_transpose(x, kernel, [1, 4, 4, 3], 1, "SAME", "NHWC", "up",
                                dilations=[1, 2, 2, 1])
  assert y.shape == (1, 4, 4, 3)
  with pytest.raises(TypeError, match=r"`name` .* got 3: .*argument 6 is `name`\.$"):
    tf_v1.nn.atrous_conv2d_transpose(x, kernel, [1, 4, 4, 3], 2, "SAME", 3)
  with pytest.raises(TypeError, match=r"`use_cudnn_on_gpu` must be a bool, got 'NHWC'"):
    tf_v1.nn.conv2d_backprop_input([1, 4, 4, 3], kernel, x, 1, "SAME", "NHWC")


def test_conv2d_backprop_input_needs_padding_and_out_backprop():
  kernel = np.ones((3, 3, 4, 2), np.float32)
  with pytest.raises(TypeError, match=r"`padding` is required"):
    tf_v1.nn.conv2d_backprop_input([1, 6, 6, 4], kernel, np.ones((1, 3, 3, 2), np.float32), 2)
  with pytest.raises(TypeError, match=r"`out_backprop` is required"):
    tf_v1.nn.conv2d_backprop_input([1, 6, 6, 4], kernel, strides=2, padding="SAME")


def test_a_traced_output_shape_is_refused_clearly():
  x, kernel = jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 4, 2))
  with pytest.raises(TypeError, match=r"`output_shape` must be static.*x\.shape\[0\]"):
    jax.jit(lambda shape: tf_v1.nn.conv2d_transpose(x, kernel, shape, 2))(
        jnp.array([1, 6, 6, 4]))
  # TF v1's tf.stack([tf.shape(x)[0], ...]) carried over literally is traced
  # under jit; x.shape[0] is the static form, and it runs.
  stacked = lambda x: tf_v1.nn.conv2d_transpose(x, kernel, jnp.stack([jnp.shape(x)[0], 6, 6, 4]), 2)
  with pytest.raises(TypeError, match=r"`output_shape` must be static"):
    jax.jit(stacked)(x)
  static = lambda x: tf_v1.nn.conv2d_transpose(x, kernel, [x.shape[0], 6, 6, 4], 2)
  assert jax.jit(static)(x).shape == (1, 6, 6, 4)


@pytest.mark.parametrize("rate", [0, 1.5, True, None])
def test_atrous_rate_must_be_a_positive_int(rate):
  with pytest.raises(ValueError, match=r"`rate` \(=.*\) must be a positive int"):
    tf_v1.nn.atrous_conv2d_transpose(jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 4, 2)),
                                     [1, 3, 3, 4], rate, "SAME")
