"""Writes tests/golden/tf_nn_conv2d_transpose.npz with real TensorFlow.

Needs the ``tf`` extra (``pip install -e '.[tf]'``); run from the repository
root::

    python tests/golden/make_tf_nn.py

For each case it calls ``tf.compat.v1.nn.conv2d_transpose`` (or
``tf.nn.atrous_conv2d_transpose``) in float64 with TF's own argument forms
(strides as an int or 1, 2 or 4 values, ``output_shape`` of 4 or 2 values,
explicit padding as four pairs, NCHW), and records the input, filter,
output, a random output cotangent and TF's gradients with respect to the
input and the filter. TF's float64 kernels refuse dilations and NCHW on CPU,
so those cases run in float32 on its oneDNN kernels (``"tf_dtype"`` in the
record). The grid takes every ``output_shape`` TF accepts for
its input, including the sizes a ``'same'`` or ``'valid'`` convolution maps
to the same input (the ones ``output_padding`` picks in Keras), and empty
outputs. A case TF refuses is not written: the tests check that jconvt
refuses it too (``tests/test_compat_nn.py``).
"""

import itertools
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _fixture  # noqa: E402  (tests/golden/, the script's own folder)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = pathlib.Path(__file__).with_name("tf_nn_conv2d_transpose.npz")
IN_HW = (3, 2)  # the input's height and width in every grid case


def _lengths(n, k_eff, s, pad):
  """Output lengths whose forward convolution gives ``n`` (TF's rule)."""
  if pad == "SAME":
    return list(range((n - 1) * s + 1, n * s + 1))
  lo, hi = (0, 0) if pad == "VALID" else pad
  return [length for length in range(n * s + k_eff + s)
          if max(0, (length + lo + hi - k_eff) // s + 1) == n]


def grid():
  """Yields case records (JSON-able dicts) of TF's arguments."""
  base = dict(op="conv2d_transpose", batch=2, in_channels=2, filters=3, x_hw=list(IN_HW),
              data_format="NHWC", dilations=None)
  # Kernel sizes 1-5 x strides 1-3 x both paddings, every output size TF
  # accepts for the height (the width takes its largest); strides in TF's
  # three forms.
  forms = {1: lambda s: s, 2: lambda s: [s, s], 3: lambda s: [1, s, s, 1]}
  for i, (k, s, pad) in enumerate(itertools.product(range(1, 6), range(1, 4),
                                                    ("SAME", "VALID"))):
    width = _lengths(IN_HW[1], k, s, pad)[-1]
    for height in _lengths(IN_HW[0], k, s, pad):
      yield {**base, "kernel": [k, k], "strides": forms[1 + i % 3](s), "padding": pad,
             "output_shape": [2, height, width, 3]}
  # Explicit padding (TF's four pairs), every height it accepts.
  for k, s in ((3, 2), (4, 2), (3, 1), (2, 3), (5, 3)):
    pads = [[0, 0], [1, 2], [2, 0], [0, 0]]
    width = _lengths(IN_HW[1], k, s, (2, 0))[-1]
    for height in _lengths(IN_HW[0], k, s, (1, 2)):
      yield {**base, "kernel": [k, k], "strides": [1, s, s, 1], "padding": pads,
             "output_shape": [2, height, width, 3]}
  # Dilation at stride 1, and at stride 2 (TF's oneDNN kernels take it; jconvt
  # defines it as the gradient of the forward convolution).
  for k, d, pad in itertools.product((2, 3), (2, 3), ("SAME", "VALID")):
    k_eff = (k - 1) * d + 1
    yield {**base, "kernel": [k, k], "strides": 1, "padding": pad, "dilations": d,
           "output_shape": [2] + [_lengths(n, k_eff, 1, pad)[0] for n in IN_HW] + [3]}
  for k, d, pad in ((3, 2, "SAME"), (2, 2, "VALID")):
    k_eff = (k - 1) * d + 1
    yield {**base, "kernel": [k, k], "strides": 2, "padding": pad, "dilations": [d, d],
           "output_shape": [2] + [_lengths(n, k_eff, 2, pad)[-1] for n in IN_HW] + [3]}
  # Non-square kernels and strides; output_shape as the 2 spatial sizes.
  for (kh, kw), (sh, sw), pad in (((3, 2), (2, 1), "SAME"), ((1, 4), (3, 2), "VALID"),
                                  ((5, 3), (1, 3), "SAME"), ((2, 5), (3, 2), "VALID")):
    hw = [_lengths(IN_HW[0], kh, sh, pad)[0], _lengths(IN_HW[1], kw, sw, pad)[-1]]
    yield {**base, "kernel": [kh, kw], "strides": [sh, sw], "padding": pad,
           "output_shape": hw}
  # NCHW: strides, padding and output_shape in its order.
  for k, s, pad, hw in ((3, 2, "SAME", (5, 3)), (4, 2, "VALID", (9, 7)),
                        (2, 3, "VALID", (9, 5))):
    yield {**base, "kernel": [k, k], "strides": [1, 1, s, s], "padding": pad,
           "data_format": "NCHW", "output_shape": [2, 3, *hw]}
  # A DCGAN generator block: 4x4x8 -> 8x8x4, k5 s2 'SAME'.
  yield {**base, "kernel": [5, 5], "strides": [1, 2, 2, 1], "padding": "SAME", "in_channels": 8,
         "filters": 4, "x_hw": [4, 4], "output_shape": [2, 8, 8, 4]}
  # Empty: no images, and an input of height 0.
  yield {**base, "kernel": [3, 3], "strides": 2, "padding": "SAME", "batch": 0,
         "output_shape": [0, 6, 4, 3]}
  yield {**base, "kernel": [3, 3], "strides": 2, "padding": "SAME", "x_hw": [0, 2],
         "output_shape": [2, 0, 4, 3]}
  # tf.nn.atrous_conv2d_transpose.
  for k, rate, pad in ((3, 2, "SAME"), (3, 2, "VALID"), (2, 3, "SAME"), (4, 2, "SAME")):
    k_eff = (k - 1) * rate + 1
    yield {**base, "op": "atrous_conv2d_transpose", "kernel": [k, k], "rate": rate,
           "padding": pad, "x_hw": [4, 5],
           "output_shape": [2] + [_lengths(n, k_eff, 1, pad)[0] for n in (4, 5)] + [3]}


def main():
  rng = np.random.default_rng(20261127)
  arrays, records = {}, []
  for i, rec in enumerate(grid()):
    h, w = rec["x_hw"]
    nchw = rec["data_format"] == "NCHW"
    xs = ((rec["batch"], rec["in_channels"], h, w) if nchw
          else (rec["batch"], h, w, rec["in_channels"]))
    x = rng.standard_normal(xs).astype(np.float32)
    kernel = rng.standard_normal((*rec["kernel"], rec["filters"],
                                  rec["in_channels"])).astype(np.float32)

    def run(xt, kt):
      if rec["op"] == "atrous_conv2d_transpose":
        return tf.nn.atrous_conv2d_transpose(xt, kt, rec["output_shape"], rec["rate"],
                                             rec["padding"])
      return tf.compat.v1.nn.conv2d_transpose(
          xt, kt, rec["output_shape"], strides=rec["strides"], padding=rec["padding"],
          data_format=rec["data_format"], dilations=rec["dilations"])

    for dtype in (tf.float64, tf.float32):
      xt, kt = tf.constant(x, dtype), tf.constant(kernel, dtype)
      try:
        y = run(xt, kt).numpy()
        break
      except (tf.errors.OpError, ValueError) as e:
        error = str(e).splitlines()[-1][:120]
    else:
      print(f"skipped, TF refuses {rec}: {error}")
      continue
    rec["tf_dtype"] = dtype.name
    dy = rng.standard_normal(y.shape).astype(np.float32)
    if y.size and x.size:
      with tf.GradientTape() as tape:
        tape.watch([xt, kt])
        loss = tf.reduce_sum(run(xt, kt) * tf.constant(dy, dtype))
      dx, dk = (g.numpy() for g in tape.gradient(loss, [xt, kt]))
    else:  # TF's gradient kernels fail on empty shapes; the true gradient is zeros
      dx, dk = np.zeros_like(x), np.zeros_like(kernel)
    rec["index"] = i
    arrays.update({f"{i}/x": x, f"{i}/kernel": kernel, f"{i}/y": y.astype(np.float32),
                   f"{i}/dy": dy, f"{i}/dx": dx.astype(np.float32),
                   f"{i}/dkernel": dk.astype(np.float32)})
    records.append(rec)
  _fixture.write(OUT, arrays, records, {"tensorflow": tf.__version__})


if __name__ == "__main__":
  main()
