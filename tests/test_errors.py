"""Bad input is rejected eagerly with a message naming the argument."""

import jax.numpy as jnp
import numpy as np
import pytest

import jconvt
from jconvt import ConvTransposeConfig


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(padding="full"), ValueError, r"`padding` \(='full'\) must be 'valid' or 'same'"),
    (dict(padding=3), ValueError, r"`padding` \(=3\)"),
    (dict(padding=((1, -1), (0, 0))), ValueError, r"`padding` values must be >= 0"),
    (dict(strides=0), ValueError, r"`strides` values must be >= 1, got 0"),
    (dict(strides=(2, -1)), ValueError, r"`strides` values must be >= 1, got -1"),
    (dict(strides=(1, 2, 3)), ValueError, r"`strides` must be an int or a pair"),
    (dict(strides=1.5), TypeError, r"`strides` must contain integers, got 1.5"),
    (dict(strides=True), TypeError, r"`strides` must contain integers, got True"),
    (dict(dilation_rate=0), ValueError, r"`dilation_rate` values must be >= 1, got 0"),
    (dict(strides=2, output_padding=2), ValueError,
     r"`output_padding` \(=2\) must be smaller than `strides` \(=\(2, 2\)\)"),
    (dict(strides=(3, 1), output_padding=(1, 1)), ValueError, r"axis 1 has 1 >= 1"),
    (dict(output_padding=-1, strides=2), ValueError, r"`output_padding` values must be >= 0"),
    (dict(data_format="NHWC"), ValueError, r"`data_format` \(='NHWC'\) must be one of"),
    (dict(activation="relu7"), ValueError, r"`activation` \(='relu7'\) is not a known"),
    (dict(activation=3), TypeError, r"`activation` must be None, a callable"),
    (dict(precision="ultra"), ValueError, r"`precision` \(='ultra'\)"),
    (dict(preferred_element_type=jnp.int32), TypeError,
     r"`preferred_element_type` must be a floating dtype \(float16, .*\), got int32"),
    (dict(preferred_element_type="not a dtype"), TypeError,
     r"`preferred_element_type` must be a floating dtype .*, got 'not a dtype'"),
    (dict(algorithm="winograd"), ValueError, r"`algorithm` \(='winograd'\) must be one of"),
])
def test_config_rejects(kwargs, error, match):
  with pytest.raises(error, match=match):
    ConvTransposeConfig(**kwargs)


def _call(x_shape=(1, 4, 4, 3), k_shape=(3, 3, 2, 3), bias_shape=(2,), cfg=None,
          x_dtype=np.float32, k_dtype=np.float32, params=None):
  x = jnp.zeros(x_shape, x_dtype)
  if params is None:
    params = {"kernel": jnp.zeros(k_shape, k_dtype)}
    if bias_shape is not None:
      params["bias"] = jnp.zeros(bias_shape, np.float32)
  return jconvt.conv2d_transpose(params, x, cfg or ConvTransposeConfig(strides=2))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(x_shape=(4, 4, 3)), ValueError, r"`x` must have rank 4 .* got shape \(4, 4, 3\); wrap the call in jax.vmap"),
    (dict(x_shape=(2, 1, 4, 4, 3)), ValueError, r"`x` must have rank 4"),
    (dict(k_shape=(3, 3, 2)), ValueError, r"`kernel` must have rank 4 \(kernel_h, kernel_w, filters, in_channels\).*\(3, 3, 2\)"),
    (dict(k_shape=(3, 3, 2, 5)), ValueError, r"`kernel` in_channels \(=5, its last axis\) must equal the input's channels \(=3\)"),
    (dict(k_shape=(0, 3, 2, 3)), ValueError, r"`kernel` spatial size must be >= 1"),
    (dict(bias_shape=(3,)), ValueError, r"`bias` must have shape \(filters,\) = \(2,\), got \(3,\)"),
    (dict(bias_shape=(1, 2)), ValueError, r"`bias` must have shape"),
    (dict(x_dtype=np.int32), TypeError, r"`x` must have a floating dtype .* got int32"),
    (dict(k_dtype=np.int8), TypeError, r"`kernel` must have a floating dtype .* got int8"),
    (dict(params={"kernel": jnp.zeros((3, 3, 2, 3)), "bais": jnp.zeros(2)}), ValueError,
     r"`params` has unknown keys \['bais'\]"),
    (dict(params={"bias": jnp.zeros(2)}), ValueError, r"`params` must contain 'kernel'"),
    (dict(params=[jnp.zeros((3, 3, 2, 3))]), TypeError, r"`params` must be a mapping"),
    (dict(params={"kernel": np.zeros((3, 3, 2, 3)).tolist()}), TypeError, r"`kernel` must be an array"),
    (dict(k_shape=(4, 4, 2, 3), cfg=ConvTransposeConfig(2, "same", output_padding=0)), ValueError,
     r"`output_padding` \(=0\) on spatial axis 0 with padding='same', stride 2 and an even effective kernel size \(=4\)"),
    (dict(cfg=ConvTransposeConfig(1, ((9, 0), (0, 0)))), ValueError,
     r"`padding` \(=\(9, 0\)\) crops 9 pixels from a transposed convolution output of only 6"),
])
def test_call_rejects(kwargs, error, match):
  with pytest.raises(error, match=match):
    _call(**kwargs)


def test_call_rejects_non_config():
  with pytest.raises(TypeError, match=r"`config` must be a jconvt.ConvTransposeConfig, got dict"):
    jconvt.conv2d_transpose({"kernel": jnp.zeros((3, 3, 2, 3))}, jnp.zeros((1, 4, 4, 3)), {"strides": 2})


def test_errors_raise_at_trace_time_under_jit():
  import jax
  f = jax.jit(jconvt.conv2d_transpose)
  with pytest.raises(ValueError, match="in_channels"):
    f({"kernel": jnp.zeros((3, 3, 2, 5))}, jnp.zeros((1, 4, 4, 3)), ConvTransposeConfig())


def test_channels_first_error_names_layout():
  with pytest.raises(ValueError, match=r"\(batch, channels, height, width\) for data_format='channels_first'"):
    jconvt.output_shape((4, 4, 3), (3, 3, 2, 3), ConvTransposeConfig(data_format="channels_first"))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(dtype=jnp.int32), TypeError, r"`dtype` must be a floating dtype .*, got int32"),
    (dict(dtype="not a dtype"), TypeError, r"`dtype` must be a floating dtype .*, got 'not a dtype'"),
    (dict(platform="CPU"), ValueError, r"`platform` must be one of \('cpu', .*\) or None, got 'CPU'"),
    (dict(x_shape=(1, 4, 4, 5)), ValueError, r"`kernel` in_channels \(=3"),
    (dict(config={"strides": 2}), TypeError, r"`config` must be a jconvt.ConvTransposeConfig"),
])
def test_algorithm_plan_rejects(kwargs, error, match):
  args = {"x_shape": (1, 4, 4, 3), "kernel_shape": (3, 3, 2, 3),
          "config": ConvTransposeConfig(2, "same"), **kwargs}
  with pytest.raises(error, match=match):
    jconvt.algorithm_plan(**args)
