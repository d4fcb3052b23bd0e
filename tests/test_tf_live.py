"""Live comparison with TensorFlow: runs only when TF is installed (extra `tf`)."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

import jax.numpy as jnp  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

import jconvt  # noqa: E402
from conftest import assert_close, examples  # noqa: E402


@settings(max_examples=examples(40), deadline=None)
@given(k=st.integers(1, 5), s=st.integers(1, 3), padding=st.sampled_from(["valid", "same"]),
       h=st.integers(1, 5), op=st.one_of(st.none(), st.integers(0, 2)),
       data_format=st.sampled_from(["channels_last", "channels_first"]))
def test_random_configs_match_live_tf(k, s, padding, h, op, data_format):
  if op is not None and (op >= s or (padding == "same" and op == 0 and k % 2 == 0)):
    return
  rng = np.random.default_rng(k * 100 + s * 10 + h)
  x_shape = (2, h, h + 1, 3) if data_format == "channels_last" else (2, 3, h, h + 1)
  x = rng.standard_normal(x_shape).astype(np.float32)
  kernel = rng.standard_normal((k, k, 4, 3)).astype(np.float32)
  bias = rng.standard_normal(4).astype(np.float32)
  layer = tf_keras.layers.Conv2DTranspose(4, k, strides=s, padding=padding, output_padding=op,
                                          data_format=data_format, dtype="float64")
  layer.build(x_shape)
  layer.set_weights([kernel, bias])
  expected = layer(tf.constant(x, tf.float64)).numpy()
  cfg = jconvt.ConvTransposeConfig(s, padding, op, data_format=data_format)
  y = jconvt.conv2d_transpose({"kernel": kernel, "bias": bias}, jnp.asarray(x), cfg)
  assert_close(y, expected)


@settings(max_examples=examples(25), deadline=None)
@given(k=st.integers(1, 4), s=st.integers(1, 3), padding=st.sampled_from(["valid", "same"]),
       use_bias=st.booleans(), activation=st.sampled_from([None, "relu", "tanh", "softplus"]),
       kreg=st.sampled_from([None, "l1", "l2", "l1_l2"]), areg=st.sampled_from([None, "l1", "l2"]),
       data_format=st.sampled_from(["channels_last", "channels_first"]))
def test_compat_shim_matches_live_tf_layer(k, s, padding, use_bias, activation, kreg, areg,
                                           data_format):
  from jconvt.compat.v1 import layers as jl
  kwargs = dict(strides=s, padding=padding, use_bias=use_bias, activation=activation,
                kernel_regularizer=kreg, bias_regularizer=kreg if use_bias else None,
                activity_regularizer=areg, data_format=data_format)
  x_shape = (2, 3, 4, 2) if data_format == "channels_last" else (2, 2, 3, 4)
  x = np.random.default_rng(k + 10 * s).standard_normal(x_shape).astype(np.float32)
  tf_layer = tf.compat.v1.layers.Conv2DTranspose(3, k, **kwargs)
  y_tf = tf_layer(tf.constant(x)).numpy()
  layer = jl.Conv2DTranspose(3, k, **kwargs)
  layer.build(x_shape)
  layer.set_weights(tf_layer.get_weights())
  y = layer(jnp.asarray(x))
  assert_close(y, y_tf)
  assert len(layer.losses) == len(tf_layer.losses)
  for a, b in zip(layer.losses, tf_layer.losses):
    assert_close(a, float(b))
  assert layer.compute_output_shape(x_shape) == tuple(tf_layer.compute_output_shape(x_shape))


@settings(max_examples=examples(40), deadline=None)
@given(n=st.integers(1, 4), k=st.integers(1, 4), s=st.integers(1, 3), grow=st.integers(-2, 4),
       padding=st.sampled_from(["SAME", "VALID", [[0, 0], [1, 0], [0, 2], [0, 0]]]))
def test_nn_conv2d_transpose_accepts_and_matches_what_live_tf_does(n, k, s, grow, padding):
  """``tf_v1.nn.conv2d_transpose`` against TF's op, float32 (its oneDNN
  kernels), output sizes around TF's 'same' size: equal where TF computes,
  a ValueError where TF refuses."""
  from jconvt.compat import v1 as tf_v1
  rng = np.random.default_rng(n * 1000 + k * 100 + s * 10 + grow)
  x = rng.standard_normal((2, n, n + 1, 3)).astype(np.float32)
  kernel = rng.standard_normal((k, k, 4, 3)).astype(np.float32)
  shape = [2, n * s + grow, (n + 1) * s + grow, 4]
  if min(shape) < 1:
    return
  try:
    expected = tf.compat.v1.nn.conv2d_transpose(x, kernel, shape, [1, s, s, 1], padding).numpy()
  except tf.errors.OpError:  # InvalidArgumentError, or AbortedError from its oneDNN kernels
    with pytest.raises(ValueError, match="does not fit the input's"):
      tf_v1.nn.conv2d_transpose(x, kernel, shape, [1, s, s, 1], padding)
    return
  assert_close(tf_v1.nn.conv2d_transpose(x, kernel, shape, [1, s, s, 1], padding), expected)
