"""TF v1 layer code moved to jconvt, with weights from a TF checkpoint.

The decoder below is TF v1 code as it was written for
``tf.compat.v1.layers`` (two ``conv2d_transpose`` calls in a graph); only
the import changed. Its weights are read from a checkpoint that
``tf.compat.v1.train.Saver`` wrote (``tests/golden/ckpt_saver``, made by
``tests/golden/make_tf_layers.py``), without TensorFlow installed, and the
output is compared with the output TF stored next to it.

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
  print("OK: same output as TensorFlow")
  return {"max_error": err, "output": y}


if __name__ == "__main__":
  main()
