"""The convolution algorithms behind ``conv2d_transpose``, and the rule that
picks one. Each takes a validated input and kernel (same dtype, non-empty)
and returns the transposed convolution without bias or activation."""

from collections.abc import Sequence

import jax
from jax import lax

from jconvt import _shapes
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
  stride, with the spatially flipped kernel. No bias, no activation."""
  in_hw = spatial(x.shape, config)
  padding = [
      _shapes.dilated_conv_padding(in_hw[a], kernel.shape[a],
                                   config.strides[a], config.dilation_rate[a],
                                   *geometry[a])
      for a in range(2)
  ]
  return lax.conv_general_dilated(
      x, kernel[::-1, ::-1], window_strides=(1, 1), padding=padding,
      lhs_dilation=config.strides, rhs_dilation=config.dilation_rate,
      dimension_numbers=dimension_numbers(config),
      precision=config.precision,
      preferred_element_type=config.preferred_element_type)



def dispatch(x, kernel, config, geometry):
  return conv_dilated(x, kernel, config, geometry)
