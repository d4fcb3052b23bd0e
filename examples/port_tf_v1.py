"""TF v1 layer code moved to jconvt, with weights from a TF checkpoint.

The decoder below is TF v1 code as it was written for
``tf.compat.v1.layers`` (two ``conv2d_transpose`` calls in a graph); only
the import changed. ``decoder_ops`` is the same decoder written with
``tf.nn.conv2d_transpose`` and weights of its own. The weights are read
from a checkpoint that ``tf.compat.v1.train.Saver`` wrote
(``tests/golden/ckpt_saver``, made by ``tests/golden/make_tf_layers.py``),
without TensorFlow installed, and both outputs are compared with the
output TF stored next to it.

    python examples/port_tf_v1.py
"""

import argparse
import pathlib

import jax.numpy as jnp
import numpy as np

from jconvt import compat
from jconvt.compat import v1 as tf_v1   # was: import tensorflow as tf; tf_v1 = tf.compat.v1

CKPT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "golden" / "ckpt_saver"


def decoder(inputs, reuse=None):
  """Unchanged TF v1 code (``tf.nn.relu`` becomes its TF name, "relu")."""
  h = tf_v1.layers.conv2d_transpose(inputs, 5, 3, strides=2, padding="same",
                                    activation="relu", name="dec1", reuse=reuse)
  return tf_v1.layers.conv2d_transpose(h, 2, 4, strides=2, padding="same", name="dec2",
                                       reuse=reuse)


def decoder_ops(inputs, weights):
  """The same decoder as TF v1 code written with ``tf.nn`` ops and weights of
  its own (as DCGAN generators were): ``tf.nn.conv2d_transpose`` with an
  explicit ``output_shape``, then the bias and the activation."""
  b, h, w, _ = inputs.shape
  y = tf_v1.nn.conv2d_transpose(inputs, weights["dec1/kernel"], output_shape=[b, 2 * h, 2 * w, 5],
                                strides=[1, 2, 2, 1], padding="SAME")
  y = jnp.maximum(y + weights["dec1/bias"].reshape(1, 1, 1, -1), 0.0)  # relu(bias_add(...))
  y = tf_v1.nn.conv2d_transpose(y, weights["dec2/kernel"], output_shape=[b, 4 * h, 4 * w, 2],
                                strides=[1, 2, 2, 1], padding="SAME")
  return y + weights["dec2/bias"].reshape(1, 1, 1, -1)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default=str(CKPT / "model.ckpt"))
  parser.add_argument("--io", default=str(CKPT / "io.npz"), help="TF's stored input and output")
  args = parser.parse_args(argv)

  io = np.load(args.io)
  x = jnp.asarray(io["x"])
  tf_v1.reset_default_graph()
  decoder(x)  # builds the variables, as building the TF graph did

  # What Saver.restore did: every variable takes the checkpoint's value of its name.
  tensors = compat.load_tf_checkpoint(args.checkpoint)
  print(f"checkpoint {args.checkpoint}:")
  for name, value in sorted(tensors.items()):
    print(f"  {name:18s} {str(value.dtype):9s} {value.shape}")
  for var in tf_v1.global_variables():
    var.assign(tensors[var.name.removesuffix(":0")])

  y = np.asarray(decoder(x, reuse=True))  # sess.run(y, {inputs: x})
  err = float(np.abs(y - io["y"]).max())
  print(f"output {y.shape}; max |jconvt - TF| = {err:.2e}")
  if err > 1e-4:
    raise SystemExit("MISMATCH with TensorFlow's stored output")
  y_ops = np.asarray(decoder_ops(x, tensors))
  err_ops = float(np.abs(y_ops - io["y"]).max())
  print(f"written with tf.nn.conv2d_transpose: max |jconvt - TF| = {err_ops:.2e}")
  if err_ops > 1e-4:
    raise SystemExit("MISMATCH with TensorFlow's stored output (tf.nn ops)")
  print("OK: same output as TensorFlow")
  return {"max_error": err, "max_error_ops": err_ops, "output": y}


if __name__ == "__main__":
  main()
