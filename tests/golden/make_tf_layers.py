"""Writes the TF v1 layer and checkpoint fixtures with real TensorFlow.

Needs the ``tf`` extra; run from the repository root::

    TF_USE_LEGACY_KERAS=1 python tests/golden/make_tf_layers.py

Writes:

* ``tests/golden/tf_layers.npz``: for a grid of ``tf.compat.v1.layers.
  Conv2DTranspose`` argument combinations (regularizers, activations,
  output_padding, dilation, data formats, no bias), the weights TF used, an
  input, TF's output, ``layer.losses`` (in TF's order), the output shape and
  the layer's ``get_config()``.
* ``tests/golden/ckpt_saver/model.ckpt.*``: a ``tf.compat.v1.train.Saver``
  checkpoint of a two-layer TF v1 decoder (``conv2d_transpose`` with names
  ``dec1`` and ``dec2``) plus an int64 ``global_step`` and a float64 and a
  bfloat16 variable, with the graph's input and output in
  ``tests/golden/ckpt_saver/io.npz``.
* ``tests/golden/ckpt_object/ckpt-1.*``: a ``tf.train.Checkpoint`` (object
  based) of a tf_keras ``Conv2DTranspose`` under the attribute ``dec``.
* ``tests/golden/ckpt_sharded/model.ckpt.*``: a Saver checkpoint with its
  variables on two logical CPU devices, so it has two data shards.
"""

import json
import os
import pathlib
import shutil

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

HERE = pathlib.Path(__file__).parent

CASES = [
    dict(filters=3, kernel_size=3),
    dict(filters=4, kernel_size=(4, 3), strides=(2, 1), padding="same", activation="relu"),
    dict(filters=2, kernel_size=3, strides=2, padding="same", kernel_regularizer="l2",
         bias_regularizer="l1", activity_regularizer="l1_l2"),
    dict(filters=3, kernel_size=2, strides=3, padding="valid", output_padding=2,
         activation="tanh", kernel_regularizer={"class_name": "L1L2",
                                                "config": {"l1": 1e-3, "l2": 2e-3}}),
    dict(filters=2, kernel_size=3, padding="same", dilation_rate=2, activity_regularizer="l2"),
    dict(filters=3, kernel_size=4, strides=2, padding="same", data_format="channels_first",
         kernel_regularizer="l1", activation="sigmoid"),
    dict(filters=2, kernel_size=3, strides=2, use_bias=False, activity_regularizer="l1"),
    dict(filters=2, kernel_size=5, strides=2, padding="same", output_padding=1,
         bias_regularizer="l2", activation="elu"),
]


def layer_fixtures(rng):
  arrays, records = {}, []
  for i, kwargs in enumerate(CASES):
    layer = tf.compat.v1.layers.Conv2DTranspose(name=f"case{i}", **kwargs)
    x_shape = (2, 3, 4, 2) if kwargs.get("data_format") != "channels_first" else (2, 2, 3, 4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    layer.build(x_shape)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in layer.get_weights()]
    layer.set_weights(weights)
    y = layer(tf.constant(x)).numpy()
    losses = [float(v) for v in layer.losses]
    arrays[f"{i}/x"] = x
    arrays[f"{i}/y"] = y
    arrays[f"{i}/kernel"] = weights[0]
    if len(weights) > 1:
      arrays[f"{i}/bias"] = weights[1]
    arrays[f"{i}/losses"] = np.asarray(losses, np.float64)
    cfg = layer.get_config()
    records.append({"index": i, "kwargs": kwargs, "y_shape": list(y.shape),
                    "weight_names": [v.name for v in layer.weights],
                    "config": {k: cfg[k] for k in ("name", "filters", "kernel_size", "strides",
                                                   "padding", "data_format", "dilation_rate",
                                                   "use_bias", "output_padding", "activation")}})
  arrays["records"] = np.array(json.dumps(records, default=list))
  np.savez_compressed(HERE / "tf_layers.npz", **arrays)
  print(f"wrote {len(records)} layer cases")


def saver_checkpoint(rng):
  out = HERE / "ckpt_saver"
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir()
  x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(7)
    inputs = tf.compat.v1.placeholder(tf.float32, (None, 4, 4, 3), name="inputs")
    h = tf.compat.v1.layers.conv2d_transpose(inputs, 5, 3, strides=2, padding="same",
                                             activation=tf.nn.relu, name="dec1")
    y = tf.compat.v1.layers.conv2d_transpose(h, 2, 4, strides=2, padding="same", name="dec2")
    tf.compat.v1.train.get_or_create_global_step()
    tf.compat.v1.get_variable("extra/float64", initializer=np.arange(6.0).reshape(2, 3))
    tf.compat.v1.get_variable("extra/bfloat16", initializer=tf.constant(
        [1.5, -2.25, 3.0], tf.bfloat16))
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      sess.run(tf.compat.v1.assign(tf.compat.v1.train.get_global_step(), 1234))
      y_val = sess.run(y, {inputs: x})
      saver.save(sess, str(out / "model.ckpt"), write_meta_graph=False)
      names = {v.name: sess.run(v) for v in tf.compat.v1.global_variables()}
  np.savez(out / "io.npz", x=x, y=y_val,
           **{k.replace(":0", "").replace("/", "__"): v.astype(np.float32)
              if v.dtype == tf.bfloat16.as_numpy_dtype else v for k, v in names.items()})
  print("wrote", sorted(p.name for p in out.iterdir()))


def object_checkpoint(rng):
  out = HERE / "ckpt_object"
  shutil.rmtree(out, ignore_errors=True)
  layer = tf_keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same")
  x = rng.standard_normal((1, 3, 3, 2)).astype(np.float32)
  y = layer(x).numpy()
  ckpt = tf.train.Checkpoint(dec=layer)
  ckpt.save(str(out / "ckpt"))
  np.savez(out / "io.npz", x=x, y=y, kernel=layer.kernel.numpy(), bias=layer.bias.numpy())
  print("wrote", sorted(p.name for p in out.iterdir()))


def sharded_checkpoint(rng):
  out = HERE / "ckpt_sharded"
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir()
  graph = tf.Graph()
  values = {}
  with graph.as_default():
    for i in range(2):
      with tf.device(f"/device:CPU:{i}"):
        v = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
        tf.compat.v1.get_variable(f"shard{i}/kernel", initializer=v)
        values[f"shard{i}/kernel"] = v
    saver = tf.compat.v1.train.Saver(sharded=True)
    with tf.compat.v1.Session(config=tf.compat.v1.ConfigProto(
        device_count={"CPU": 2})) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      saver.save(sess, str(out / "model.ckpt"), write_meta_graph=False)
  np.savez(out / "values.npz", **{k.replace("/", "__"): v for k, v in values.items()})
  print("wrote", sorted(p.name for p in out.iterdir()))


def relative_state_files():
  """TF writes absolute paths into each directory's `checkpoint` state file:
  make them relative, so the fixtures work from any clone."""
  for state in HERE.glob("ckpt_*/checkpoint"):
    state.write_text(state.read_text().replace(str(state.parent) + "/", ""))


def main():
  rng = np.random.default_rng(20261125)
  layer_fixtures(rng)
  saver_checkpoint(rng)
  object_checkpoint(rng)
  sharded_checkpoint(rng)
  relative_state_files()


if __name__ == "__main__":
  main()
