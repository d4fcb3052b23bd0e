"""Writes tests/golden/tf_conv2d_transpose.npz with real TensorFlow.

Needs the ``tf`` extra (``pip install -e '.[tf]'``); run from the repository
root::

    TF_USE_LEGACY_KERAS=1 python tests/golden/make_golden.py

For every configuration of a broad grid it builds a tf_keras
``Conv2DTranspose`` (the class behind ``tf.compat.v1.layers.Conv2DTranspose``)
in float64, sets random float32-representable weights, and records the
input, weights, output, a random output cotangent and TF's gradients with
respect to the input, kernel and bias.

Cases TF accepts but whose gradient TF cannot take (empty outputs, where
TF's gradient kernels fail or return wrongly shaped tensors) are stored with
the true gradient, zeros, and ``"tf_grad": false`` in their record.
"""

import itertools
import os
import pathlib

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _fixture  # noqa: E402  (tests/golden/, the script's own folder)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

OUT = pathlib.Path(__file__).with_name("tf_conv2d_transpose.npz")


def grid():
  """Yields config records (JSON-able dicts)."""
  base = dict(output_padding=None, dilation_rate=(1, 1),
              data_format="channels_last", activation=None, use_bias=True,
              x_hw=(3, 4), batch=2, in_channels=2, filters=3)
  # Kernel sizes 1-7 x strides 1-4 x both paddings (incl. stride > kernel).
  for k, s, p in itertools.product(range(1, 8), range(1, 5), ("valid", "same")):
    yield {**base, "kernel_size": (k, k), "strides": (s, s), "padding": p}
  # output_padding: every legal value, both paddings.
  for k, s, p in itertools.product((1, 2, 3, 4, 5), (2, 3), ("valid", "same")):
    for op in range(s):
      if p == "same" and op == 0 and k % 2 == 0:
        continue  # TF rejects this shape (see jconvt._shapes)
      yield {**base, "kernel_size": (k, k), "strides": (s, s), "padding": p,
             "output_padding": (op, op)}
  # Non-square kernels, strides, output paddings.
  for k, s, op, p in [((3, 2), (2, 1), None, "same"), ((1, 4), (3, 2), None, "valid"),
                      ((5, 3), (1, 3), (0, 2), "same"), ((2, 5), (4, 2), (3, 1), "valid"),
                      ((4, 3), (2, 3), (1, 0), "same"), ((7, 1), (3, 1), None, "same")]:
    yield {**base, "kernel_size": k, "strides": s, "padding": p,
           "output_padding": op}
  # Dilation (stride 1, equal rates: TF's atrous path).
  for k, d, p, op in itertools.product((2, 3, 4), (2, 3), ("valid", "same"), (None, 0)):
    yield {**base, "kernel_size": (k, k), "strides": (1, 1), "padding": p,
           "dilation_rate": (d, d),
           "output_padding": None if op is None else (op, op)}
  # channels_first.
  for k, s, p, op in [(3, 2, "same", None), (4, 2, "same", (1, 1)), (2, 3, "valid", None),
                      (3, 1, "valid", None), ((3, 2), (2, 3), "valid", (1, 2))]:
    k2 = k if isinstance(k, tuple) else (k, k)
    s2 = s if isinstance(s, tuple) else (s, s)
    yield {**base, "kernel_size": k2, "strides": s2, "padding": p,
           "output_padding": op, "data_format": "channels_first"}
  yield {**base, "kernel_size": (3, 3), "strides": (1, 1), "padding": "same",
         "dilation_rate": (2, 2), "data_format": "channels_first"}
  # Batch 1, spatial size 1, no bias, activations.
  for hw in ((1, 1), (1, 3), (5, 2)):
    yield {**base, "kernel_size": (3, 3), "strides": (2, 2), "padding": "same",
           "x_hw": hw, "batch": 1}
  yield {**base, "kernel_size": (4, 4), "strides": (2, 2), "padding": "valid",
         "use_bias": False}
  for act in ("relu", "sigmoid", "tanh", "elu", "selu", "softplus", "gelu",
              "swish", "hard_sigmoid", "leaky_relu", "relu6", "softmax"):
    yield {**base, "kernel_size": (3, 3), "strides": (2, 2), "padding": "same",
           "activation": act}
  # Empty dimensions: batch 0, spatial 0, channels 0.
  yield {**base, "kernel_size": (3, 3), "strides": (2, 2), "padding": "same", "batch": 0}
  yield {**base, "kernel_size": (3, 3), "strides": (2, 2), "padding": "valid",
         "x_hw": (0, 3)}
  yield {**base, "kernel_size": (4, 4), "strides": (2, 2), "padding": "same",
         "x_hw": (2, 0)}
  yield {**base, "kernel_size": (3, 3), "strides": (2, 2), "padding": "same",
         "in_channels": 0}


def x_shape(rec):
  h, w = rec["x_hw"]
  if rec["data_format"] == "channels_last":
    return (rec["batch"], h, w, rec["in_channels"])
  return (rec["batch"], rec["in_channels"], h, w)


def main():
  rng = np.random.default_rng(20261125)
  arrays, records = {}, []
  for i, rec in enumerate(grid()):
    rec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in rec.items()}
    xs = x_shape(rec)
    kh, kw = rec["kernel_size"]
    x = rng.standard_normal(xs).astype(np.float32)
    kernel = rng.standard_normal((kh, kw, rec["filters"], rec["in_channels"])).astype(np.float32)
    bias = rng.standard_normal((rec["filters"],)).astype(np.float32)
    layer = tf_keras.layers.Conv2DTranspose(
        rec["filters"], tuple(rec["kernel_size"]), strides=tuple(rec["strides"]),
        padding=rec["padding"],
        output_padding=None if rec["output_padding"] is None else tuple(rec["output_padding"]),
        dilation_rate=tuple(rec["dilation_rate"]), data_format=rec["data_format"],
        activation=rec["activation"], use_bias=rec["use_bias"], dtype="float64")
    layer.build(xs)
    layer.set_weights([kernel, bias] if rec["use_bias"] else [kernel])
    xt = tf.constant(x, tf.float64)
    try:
      y = layer(xt).numpy()
    except tf.errors.OpError as e:
      # TF refuses some shapes it could define (e.g. its atrous path needs the
      # padded size divisible by the rate): jconvt defines them, see _shapes.
      print(f"skipped, TF refuses {rec}: {str(e).splitlines()[-1][:120]}")
      continue
    dy_shape = layer.compute_output_shape(xs)
    dy = rng.standard_normal(tuple(dy_shape)).astype(np.float32)
    try:
      with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(y * tf.constant(dy, tf.float64))
      grads = tape.gradient(loss, [xt] + layer.trainable_weights)
      grads = [g.numpy() if g is not None else None for g in grads]
      ok = all(g is not None and g.shape == v.shape
               for g, v in zip(grads, [x, kernel] + ([bias] if rec["use_bias"] else [])))
      rec["tf_grad"] = bool(ok)
    except (tf.errors.OpError, ValueError):
      rec["tf_grad"] = False
    if not (x.size and kernel.size and dy.size):
      # Empty input, kernel or output: the true gradient of sum(y * dy) is
      # zeros for x and kernel, and dy summed over all but the channel axis
      # for the bias. TF's gradient kernels crash, mis-shape or return
      # uninitialised memory here, so store the true gradient and record
      # whether TF agreed.
      axis = (0, 1, 2) if rec["data_format"] == "channels_last" else (0, 2, 3)
      true = [np.zeros_like(x), np.zeros_like(kernel)] + (
          [dy.astype(np.float64).sum(axis=axis)] if rec["use_bias"] else [])
      rec["tf_grad"] = rec["tf_grad"] and all(
          np.array_equal(g, t) for g, t in zip(grads, true))
      grads = true
      y = layer(xt)
    elif not rec["tf_grad"]:
      raise RuntimeError(f"TF gradient failed on a non-empty case {rec}")
    rec["index"] = i
    rec["y_shape"] = list(y.shape)
    arrays[f"{i}/x"] = x
    arrays[f"{i}/kernel"] = kernel
    if rec["use_bias"]:
      arrays[f"{i}/bias"] = bias
      arrays[f"{i}/dbias"] = np.asarray(grads[2], np.float32)
    arrays[f"{i}/y"] = np.asarray(y, np.float32)
    arrays[f"{i}/dy"] = dy
    arrays[f"{i}/dx"] = np.asarray(grads[0], np.float32)
    arrays[f"{i}/dkernel"] = np.asarray(grads[1], np.float32)
    records.append(rec)
  _fixture.write(OUT, arrays, records,
                 {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__})


if __name__ == "__main__":
  main()
