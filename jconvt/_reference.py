"""An independent NumPy reference of TensorFlow's transposed convolution.

It implements TF's definition directly and shares no code with the JAX path
(its shape maths is written out again on purpose, from Keras'
``deconv_output_length`` and TF's ``conv2d_backprop_input`` /
``atrous_conv2d_transpose``): every input pixel, times the kernel, is
scatter-added into a large-enough canvas at ``i * stride + tap * dilation``,
and TF's window is cut out of it. Slow; for tests and demonstrations.
"""

import numpy as np

from jconvt._activations import get_activation


def _keras_length(n, k_eff, s, padding, op):
  if op is None:
    if padding == "valid":
      return n * s + max(k_eff - s, 0)
    return n * s
  pad = k_eff // 2 if padding == "same" else 0
  return (n - 1) * s + k_eff - 2 * pad + op


def _window(n, k, s, d, padding, op):
  """(start, length) of TF's output inside the full scatter canvas."""
  k_eff = d * (k - 1) + 1
  if not isinstance(padding, str):  # explicit (lo, hi): crops of the canvas
    lo, hi = padding
    return lo, max(0, (n - 1) * s + k_eff - lo - hi + (op or 0))
  length = max(0, _keras_length(n, k_eff, s, padding, op))
  if padding == "valid":
    return 0, length
  if s == 1:  # TF's atrous_conv2d_transpose (stride 1): fixed (k_eff - 1) // 2
    return (k_eff - 1) // 2, length
  # TF's conv2d_backprop_input: the padding of the forward 'same' conv.
  forward_out = -(-length // s)
  pad_needed = max(0, (forward_out - 1) * s + k_eff - length)
  return pad_needed // 2, length


def reference_conv2d_transpose(x, kernel, bias=None, config=None):
  """TF's transposed convolution in float64 NumPy, by scatter-add.

  Args:
    x: ``(batch, h, w, in_channels)``, or NCHW for ``channels_first``.
    kernel: ``(kh, kw, filters, in_channels)``.
    bias: ``(filters,)`` or ``None``.
    config: a ``jconvt.ConvTransposeConfig`` (default: its defaults).

  Returns:
    A float64 array in the input's data format.
  """
  from jconvt._config import ConvTransposeConfig  # noqa: PLC0415
  config = config or ConvTransposeConfig()
  x = np.asarray(x, np.float64)
  kernel = np.asarray(kernel, np.float64)
  if not config.channels_last:
    x = x.transpose(0, 2, 3, 1)
  n, h, w, _ = x.shape
  kh, kw, filters, _ = kernel.shape
  (sh, sw), (dh, dw) = config.strides, config.dilation_rate
  pads = config.padding if isinstance(config.padding, tuple) else (
      config.padding, config.padding)
  ops = config.output_padding or (None, None)
  top, out_h = _window(h, kh, sh, dh, pads[0], ops[0])
  left, out_w = _window(w, kw, sw, dw, pads[1], ops[1])
  # A canvas that holds the full scatter and TF's window, wherever it lies.
  canvas_h = max((h - 1) * sh + dh * (kh - 1) + 1, top + out_h, 0)
  canvas_w = max((w - 1) * sw + dw * (kw - 1) + 1, left + out_w, 0)
  canvas = np.zeros((n, canvas_h, canvas_w, filters))
  for i in range(h):
    for j in range(w):
      for a in range(kh):
        for b in range(kw):
          # x[:, i, j, :] (n, c) times kernel[a, b] (filters, c).
          canvas[:, i * sh + a * dh, j * sw + b * dw, :] += (
              x[:, i, j, :] @ kernel[a, b].T)
  y = canvas[:, top:top + out_h, left:left + out_w, :]
  if bias is not None:
    y = y + np.asarray(bias, np.float64)
  if not config.channels_last:
    y = y.transpose(0, 3, 1, 2)
  act = get_activation(config.activation)
  if act is not None:
    import jax.numpy as jnp  # noqa: PLC0415  (activations are JAX functions)
    y = np.asarray(act(jnp.asarray(y, jnp.float32)), np.float64)
  return y
