"""The TF v1 compat shim, TF checkpoints without TF, and weight converters."""

import json
import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jconvt
from jconvt import compat
from jconvt.compat.v1 import layers as tf_layers
from conftest import assert_close

GOLDEN = pathlib.Path(__file__).parent / "golden"


def _layer_cases():
  data = np.load(GOLDEN / "tf_layers.npz")
  out = []
  for rec in json.loads(str(data["records"])):
    i = rec["index"]
    out.append((rec, {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}))
  return out


LAYER_CASES = _layer_cases()


@pytest.fixture(autouse=True)
def _fresh_names():
  compat.v1.reset_default_graph()
  compat.v1.set_random_seed(0)
  yield


@pytest.mark.parametrize("rec,arrays", LAYER_CASES, ids=[str(r["kwargs"]) for r, _ in LAYER_CASES])
def test_shim_matches_tf_outputs_losses_and_config(rec, arrays):
  kwargs = dict(rec["kwargs"])
  layer = tf_layers.Conv2DTranspose(name=f"case{rec['index']}", **kwargs)
  x = arrays["x"]
  layer.build(x.shape)
  layer.set_weights([arrays["kernel"]] + ([arrays["bias"]] if "bias" in arrays else []))
  y = layer(jnp.asarray(x))
  assert y.shape == tuple(rec["y_shape"])
  assert_close(y, arrays["y"])
  losses = layer.losses
  assert len(losses) == len(arrays["losses"])
  for got, want in zip(losses, arrays["losses"]):
    assert_close(got, want)  # same values, in TF's order
  assert [v.name for v in layer.weights] == rec["weight_names"]
  assert layer.compute_output_shape((None,) + x.shape[1:]) == (None,) + tuple(rec["y_shape"][1:])
  cfg = layer.get_config()
  for key, want in rec["config"].items():
    got = cfg[key]
    assert (list(got) if isinstance(got, tuple) else got) == want, key


def test_shim_signature_is_tfs():
  import inspect
  params = list(inspect.signature(tf_layers.Conv2DTranspose).parameters)
  assert params == ["filters", "kernel_size", "strides", "padding", "data_format", "activation",
                    "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",
                    "bias_regularizer", "activity_regularizer", "kernel_constraint",
                    "bias_constraint", "trainable", "name", "kwargs"]
  fn = list(inspect.signature(tf_layers.conv2d_transpose).parameters)
  assert fn == ["inputs"] + params[:-1] + ["reuse"]


def test_shim_rejects_bad_arguments_by_name():
  with pytest.raises(TypeError, match=r"Keyword argument not understood: 'foo'"):
    tf_layers.Conv2DTranspose(4, 3, foo=1)
  with pytest.raises(ValueError, match=r"`output_padding` \(=1\) must be smaller than `strides`"):
    tf_layers.Conv2DTranspose(4, 3, output_padding=1)
  with pytest.raises(ValueError, match=r"`padding` \(='full'\)"):
    tf_layers.Conv2DTranspose(4, 3, padding="full")
  layer = tf_layers.Conv2DTranspose(4, 3, name="dec")
  with pytest.raises(ValueError, match=r"Layer 'dec' has no weights yet"):
    layer.get_weights() or layer.kernel
  layer.build((1, 5, 5, 3))
  with pytest.raises(ValueError, match=r"weight list of length 1, but the layer was expecting 2"):
    layer.set_weights([np.zeros((3, 3, 4, 3))])
  with pytest.raises(ValueError, match=r"weight shape \(3, 3, 4, 3\) is not compatible with "
                                       r"provided weight shape \(3, 3, 3, 4\)"):
    layer.set_weights([np.zeros((3, 3, 3, 4)), np.zeros(4)])


def test_shim_tf_object_behaviour():
  a = tf_layers.Conv2DTranspose(4, 3)
  b = tf_layers.Conv2DTranspose(4, 3)
  assert (a.name, b.name) == ("conv2d_transpose", "conv2d_transpose_1")
  assert not a.built and a.weights == []
  y = a(jnp.ones((2, 5, 5, 3)))
  assert a.built and y.shape == (2, 7, 7, 4) and a.scope_name == a.name
  assert [v.name for v in a.variables] == ["conv2d_transpose/kernel:0", "conv2d_transpose/bias:0"]
  assert a.kernel.shape == (3, 3, 4, 3) and a.bias.shape == (4,)
  assert len(a.trainable_variables) == 2 and a.non_trainable_variables == []
  a.trainable = False
  assert a.trainable_variables == [] and len(a.non_trainable_variables) == 2
  with pytest.warns(DeprecationWarning, match="graph"):
    assert a.graph is None
  with pytest.warns(DeprecationWarning, match="apply"):
    assert_close(a.apply(jnp.ones((2, 5, 5, 3))), y)
  clone = tf_layers.Conv2DTranspose.from_config({**a.get_config(), "name": "clone"})
  assert clone.get_config() == {**a.get_config(), "name": "clone"}
  assert a.dtype == "float32" and a.get_weights()[0].dtype == np.float32


def test_shim_randomness_is_seedable():
  compat.v1.set_random_seed(42)
  k1 = tf_layers.Conv2DTranspose(4, 3)(jnp.ones((1, 3, 3, 2)))
  compat.v1.reset_default_graph()
  compat.v1.set_random_seed(42)
  k2 = tf_layers.Conv2DTranspose(4, 3)(jnp.ones((1, 3, 3, 2)))
  np.testing.assert_array_equal(k1, k2)
  layer = tf_layers.Conv2DTranspose(4, 3)
  layer.build((1, 3, 3, 2), key=jax.random.key(5))
  other = tf_layers.Conv2DTranspose(4, 3)
  other.build((1, 3, 3, 2), key=jax.random.key(5))
  np.testing.assert_array_equal(layer.kernel.numpy(), other.kernel.numpy())
  # default kernel initializer: TF's glorot_uniform with TF's fans
  big = tf_layers.Conv2DTranspose(64, 5)
  big.build((1, 3, 3, 32))
  limit = np.sqrt(6 / (25 * 64 + 25 * 32))
  assert 0.98 * limit < np.abs(big.kernel.numpy()).max() <= limit


def test_functional_form_and_reuse():
  x = jnp.ones((1, 3, 3, 2))
  y = tf_layers.conv2d_transpose(x, 5, 3, strides=2, padding="same", name="up")
  assert y.shape == (1, 6, 6, 5)
  y2 = tf_layers.conv2d_transpose(x, 5, 3, strides=2, padding="same", name="up", reuse=True)
  np.testing.assert_array_equal(y, y2)
  with pytest.raises(ValueError, match=r"Variable up/kernel already exists, disallowed"):
    tf_layers.conv2d_transpose(x, 5, 3, name="up")
  with pytest.raises(ValueError, match=r"Variable nope/kernel does not exist"):
    tf_layers.conv2d_transpose(x, 5, 3, name="nope", reuse=True)
  assert [v.name for v in compat.v1.global_variables()] == ["up/kernel:0", "up/bias:0"]


def test_shim_trains_with_jax_grad_and_optax():
  layer = tf_layers.Conv2DTranspose(3, 3, strides=2, padding="same", kernel_regularizer="l2",
                                    kernel_constraint="non_neg")
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4, 4, 2)), jnp.float32)
  target = jnp.asarray(np.random.default_rng(1).standard_normal((4, 8, 8, 3)), jnp.float32)
  layer.build(x.shape)
  tx = optax.adam(5e-2)
  params, state = layer.params, tx.init(layer.params)

  @jax.jit
  def step(params, state):
    def loss_fn(p):
      y = layer.functional_call(p, x)
      return jnp.mean((y - target) ** 2) + layer.regularization_loss(p, y)
    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(20):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  layer.set_weights([params["kernel"], params["bias"]])
  layer.apply_constraints()
  assert np.all(layer.kernel.numpy() >= 0)


# ---------------------------------------------------------------- checkpoints


def test_saver_checkpoint_loads_without_tf():
  tensors = compat.load_tf_checkpoint(GOLDEN / "ckpt_saver" / "model.ckpt")
  io = np.load(GOLDEN / "ckpt_saver" / "io.npz")
  assert set(tensors) == {"dec1/kernel", "dec1/bias", "dec2/kernel", "dec2/bias", "global_step",
                          "extra/float64", "extra/bfloat16"}
  for name in ("dec1/kernel", "dec1/bias", "dec2/kernel", "dec2/bias"):
    np.testing.assert_array_equal(tensors[name], io[name.replace("/", "__")])
  assert tensors["global_step"] == 1234 and tensors["global_step"].dtype == np.int64
  np.testing.assert_array_equal(tensors["extra/float64"], np.arange(6.0).reshape(2, 3))
  np.testing.assert_array_equal(tensors["extra/bfloat16"].astype(np.float32), [1.5, -2.25, 3.0])
  # a directory resolves through its `checkpoint` state file
  assert set(compat.load_tf_checkpoint(GOLDEN / "ckpt_saver")) == set(tensors)


def test_tf_v1_graph_ported_with_checkpoint_weights():
  io = np.load(GOLDEN / "ckpt_saver" / "io.npz")
  ckpt = compat.load_tf_checkpoint(GOLDEN / "ckpt_saver" / "model.ckpt")
  # The TF v1 code, unchanged but for the import:
  h = tf_layers.conv2d_transpose(jnp.asarray(io["x"]), 5, 3, strides=2, padding="same",
                                 activation="relu", name="dec1")
  dec2 = tf_layers.Conv2DTranspose(2, 4, strides=2, padding="same", name="dec2")
  dec2.build(h.shape)
  dec1 = compat.v1.layers._LAYERS["dec1"]
  compat.load_layer_weights(dec1, ckpt)
  compat.load_layer_weights(dec2, ckpt)
  y = dec2(dec1(jnp.asarray(io["x"])))
  assert_close(y, io["y"])


def test_object_and_sharded_checkpoints():
  io = np.load(GOLDEN / "ckpt_object" / "io.npz")
  tensors = compat.load_tf_checkpoint(GOLDEN / "ckpt_object")
  assert "dec/kernel/.ATTRIBUTES/VARIABLE_VALUE" in tensors
  assert isinstance(tensors["_CHECKPOINTABLE_OBJECT_GRAPH"].item(), bytes)
  params = compat.tf_layer_params(tensors, "dec")
  np.testing.assert_array_equal(params["kernel"], io["kernel"])
  y = jconvt.conv2d_transpose(params, jnp.asarray(io["x"]), jconvt.ConvTransposeConfig(2, "same"))
  assert_close(y, io["y"])
  sharded = compat.load_tf_checkpoint(GOLDEN / "ckpt_sharded" / "model.ckpt")
  values = np.load(GOLDEN / "ckpt_sharded" / "values.npz")
  assert len(list((GOLDEN / "ckpt_sharded").glob("*.data-*"))) == 2
  for key in values.files:
    np.testing.assert_array_equal(sharded[key.replace("__", "/")], values[key])
  with pytest.raises(KeyError, match=r"no kernel for layer 'enc'"):
    compat.tf_layer_params(tensors, "enc")


def _copy(tmp_path, name="ckpt_saver"):
  dst = tmp_path / name
  shutil.copytree(GOLDEN / name, dst)
  return dst


def _flip_byte(path, offset, mask):
  raw = bytearray(path.read_bytes())
  raw[offset] ^= mask
  path.write_bytes(bytes(raw))
  return raw


def test_corrupt_or_missing_checkpoints_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"TF checkpoint index not found: .*nothing.index"):
    compat.load_tf_checkpoint(tmp_path / "nothing")
  d = _copy(tmp_path)
  data = d / "model.ckpt.data-00000-of-00001"
  raw = _flip_byte(data, 40, 0xFF)
  with pytest.raises(compat.CheckpointError, match=r"checksum mismatch for tensor"):
    compat.load_tf_checkpoint(d / "model.ckpt")
  data.write_bytes(bytes(raw[:100]))
  with pytest.raises(compat.CheckpointError, match=r"past the end of data shard 0"):
    compat.load_tf_checkpoint(d / "model.ckpt")
  data.unlink()
  with pytest.raises(FileNotFoundError, match=r"data shard not found"):
    compat.load_tf_checkpoint(d / "model.ckpt")
  d2 = _copy(tmp_path, "ckpt_object")
  index = d2 / "ckpt-1.index"
  _flip_byte(index, 20, 0x01)
  with pytest.raises(compat.CheckpointError, match=r"checksum mismatch in the block"):
    compat.load_tf_checkpoint(d2 / "ckpt-1")
  index.write_bytes(b"not a checkpoint at all, just some bytes to fill the footer...")
  with pytest.raises(compat.CheckpointError, match=r"bad table magic number"):
    compat.load_tf_checkpoint(d2 / "ckpt-1")


# ---------------------------------------------------------------- converters


def test_torch_weights_convert_to_equal_outputs():
  data = np.load(GOLDEN / "torch_conv_transpose2d.npz")
  for rec in json.loads(str(data["records"])):
    i = rec["index"]
    bias = data[f"{i}/bias"] if f"{i}/bias" in data.files else None
    params, cfg = compat.from_torch_conv_transpose2d(
        weight=data[f"{i}/weight"], bias=bias, stride=rec["stride"], padding=rec["padding"],
        output_padding=rec["output_padding"], dilation=rec["dilation"])
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    y = jconvt.conv2d_transpose(params, jnp.asarray(data[f"{i}/x"], jnp.float32), cfg)
    assert_close(y, data[f"{i}/y"])


def test_torch_live_module_when_installed():
  torch = pytest.importorskip("torch")
  module = torch.nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, output_padding=1).double()
  x = torch.randn(1, 3, 5, 4, dtype=torch.float64)
  params, cfg = compat.from_torch_conv_transpose2d(module)
  y = jconvt.conv2d_transpose({k: jnp.asarray(v, jnp.float32) for k, v in params.items()},
                              jnp.asarray(x.numpy(), jnp.float32), cfg)
  with torch.no_grad():
    assert_close(y, module(x).numpy())
  with pytest.raises(ValueError, match=r"`groups` \(=2\) must be 1"):
    compat.from_torch_conv_transpose2d(torch.nn.ConvTranspose2d(4, 2, 3, groups=2))


@pytest.mark.parametrize("transpose_kernel", [True, False])
@pytest.mark.parametrize("kernel,strides,padding", [
    (3, 2, "SAME"), (4, 2, "SAME"), (3, 1, "VALID"), (2, 3, "VALID"), (5, 2, "VALID"),
    ((3, 2), (2, 1), "SAME"), (3, 2, ((1, 2), (0, 1)))])
def test_flax_weights_convert_to_equal_outputs(transpose_kernel, kernel, strides, padding):
  module = nn.ConvTranspose(3, kernel if isinstance(kernel, tuple) else (kernel, kernel),
                            strides=strides if isinstance(strides, tuple) else (strides, strides),
                            padding=padding, transpose_kernel=transpose_kernel)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 4, 2)), jnp.float32)
  variables = module.init(jax.random.key(0), x)
  variables = jax.tree_util.tree_map(lambda a: a + 0.1, variables)  # non-zero bias
  params, cfg = compat.from_flax_conv_transpose(module, variables["params"])
  y = jconvt.conv2d_transpose(params, x, cfg)
  assert_close(y, module.apply(variables, x))


def test_v1_initializer_constructors_have_v1_defaults():
  key, shape = jax.random.key(0), (64, 64, 4, 4)
  tn = np.asarray(compat.v1.truncated_normal_initializer(stddev=0.02)(key, shape))
  assert abs(tn.std() - 0.02 * 0.8796) < 0.002 and np.abs(tn).max() <= 0.04 + 1e-6
  rn = np.asarray(compat.v1.random_normal_initializer()(key, shape))
  assert abs(rn.std() - 1.0) < 0.02  # TF v1's default stddev is 1.0
  ru = np.asarray(compat.v1.random_uniform_initializer()(key, shape))
  assert ru.min() >= 0 and ru.max() < 1 and ru.max() > 0.99
  assert np.all(np.asarray(compat.v1.constant_initializer(0.5)(key, (3,))) == 0.5)
  layer = tf_layers.Conv2DTranspose(4, 3, kernel_initializer=compat.v1.zeros_initializer(),
                                    bias_initializer=compat.v1.ones_initializer())
  layer.build((1, 3, 3, 2))
  assert not layer.kernel.numpy().any() and np.all(layer.bias.numpy() == 1)
