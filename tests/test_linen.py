"""The Flax linen and NNX layers: params, initializers, penalties, constraints,
trainable, composition."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jconvt
from jconvt import linen as jl
from jconvt import nnx as jn
from conftest import assert_close

X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 4, 3)), jnp.float32)


def test_params_in_tf_layout_and_output_matches_pure_function():
  layer = jconvt.Conv2DTranspose(8, (3, 2), strides=2, padding="same", activation="relu")
  variables = layer.init(jax.random.key(0), X)
  p = variables["params"]
  assert p["kernel"].shape == (3, 2, 8, 3) and p["bias"].shape == (8,)
  y = layer.apply(variables, X)
  cfg = jconvt.ConvTransposeConfig(2, "same", activation="relu")
  assert_close(y, jconvt.conv2d_transpose(p, X, cfg))
  assert y.shape == jconvt.output_shape(X.shape, p["kernel"].shape, cfg)


def test_channels_first_and_no_bias():
  layer = jconvt.Conv2DTranspose(4, 3, data_format="channels_first", use_bias=False)
  x = jnp.transpose(X, (0, 3, 1, 2))
  variables = layer.init(jax.random.key(1), x)
  assert set(variables["params"]) == {"kernel"}
  assert layer.apply(variables, x).shape == (2, 4, 7, 6)


def test_default_init_is_tf_glorot_uniform_with_tf_fans():
  layer = jconvt.Conv2DTranspose(64, 5)
  x = jnp.zeros((1, 4, 4, 32))
  kernel = layer.init(jax.random.key(0), x)["params"]["kernel"]
  fan_in, fan_out = 5 * 5 * 64, 5 * 5 * 32  # (kh, kw, filters, in): TF's fans
  limit = np.sqrt(6 / (fan_in + fan_out))
  k = np.asarray(kernel)
  assert np.abs(k).max() <= limit and np.abs(k).max() > 0.98 * limit
  assert abs(k.std() - limit / np.sqrt(3)) < 0.02 * limit


@pytest.mark.parametrize("name,std_fn,bound_fn", [
    ("glorot_normal", lambda fi, fo: np.sqrt(2 / (fi + fo)), None),
    ("he_normal", lambda fi, fo: np.sqrt(2 / fi), None),
    ("lecun_normal", lambda fi, fo: np.sqrt(1 / fi), None),
    ("he_uniform", None, lambda fi, fo: np.sqrt(6 / fi)),
    ("lecun_uniform", None, lambda fi, fo: np.sqrt(3 / fi)),
    ("GlorotUniform", None, lambda fi, fo: np.sqrt(6 / (fi + fo))),
    ("truncated_normal", lambda fi, fo: 0.05 * 0.8796, None),
    ("random_normal", lambda fi, fo: 0.05, None),
    ("random_uniform", None, lambda fi, fo: 0.05),
])
def test_keras_initializers_have_tf_distributions(name, std_fn, bound_fn):
  shape = (4, 4, 48, 24)
  fan_in, fan_out = 16 * 48, 16 * 24
  k = np.asarray(jconvt.initializers.get(name)(jax.random.key(3), shape, jnp.float32))
  if std_fn is not None:
    assert abs(k.std() - std_fn(fan_in, fan_out)) < 0.03 * std_fn(fan_in, fan_out)
    if name != "random_normal":  # truncated at two (untruncated) stddevs, as Keras
      untruncated = std_fn(fan_in, fan_out) / 0.8796256610342398
      assert np.abs(k).max() <= 2 * untruncated + 1e-6
  else:
    bound = bound_fn(fan_in, fan_out)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.98 * bound


def test_orthogonal_zeros_ones_and_errors():
  k = np.asarray(jconvt.initializers.get("orthogonal")(jax.random.key(0), (3, 3, 4, 8)))
  flat = k.reshape(-1, 8)
  np.testing.assert_allclose(flat.T @ flat, np.eye(8), atol=1e-5)
  assert not np.any(jconvt.initializers.get("zeros")(jax.random.key(0), (3,)))
  assert np.all(jconvt.initializers.get("ones")(jax.random.key(0), (3,)) == 1)
  with pytest.raises(ValueError, match=r"`kernel_init` \(='glorot'\) is not a known Keras initializer"):
    jconvt.Conv2DTranspose(4, 3, kernel_init="glorot")
  with pytest.raises(TypeError, match=r"`bias_init` must be a Keras initializer name"):
    jconvt.Conv2DTranspose(4, 3, bias_init=3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(features=0, kernel_size=3), r"`features` \(filters\) must be a positive int, got 0"),
    (dict(features=4, kernel_size=0), r"`kernel_size` values must be >= 1, got 0"),
    (dict(features=4, kernel_size=3, padding="full"), r"`padding` \(='full'\)"),
    (dict(features=4, kernel_size=3, kernel_regularizer="l3"), r"`kernel_regularizer` \(='l3'\) is not a Keras regularizer"),
    (dict(features=4, kernel_size=3, kernel_constraint="positive"), r"`kernel_constraint` \(='positive'\) is not a Keras constraint"),
])
def test_bad_arguments_fail_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jconvt.Conv2DTranspose(**kwargs)


def test_regularization_penalties_match_keras_formulas():
  layer = jconvt.Conv2DTranspose(
      4, 3, strides=2, kernel_regularizer=jconvt.regularizers.l2(1e-3), bias_regularizer="l1",
      activity_regularizer={"class_name": "L1L2", "config": {"l1": 0.01, "l2": 0.02}},
      bias_init="ones")
  variables = layer.init(jax.random.key(0), X)
  # Apply with the params only: init's own sown losses are not carried over.
  y, state = layer.apply({"params": variables["params"]}, X, mutable=["losses"])
  k, b = variables["params"]["kernel"], variables["params"]["bias"]
  losses = state["losses"]
  assert_close(losses["kernel_regularizer"][0], 1e-3 * jnp.sum(k ** 2))
  assert_close(losses["bias_regularizer"][0], 0.01 * jnp.sum(jnp.abs(b)))
  expected_activity = (0.01 * jnp.sum(jnp.abs(y)) + 0.02 * jnp.sum(y ** 2)) / X.shape[0]
  assert_close(losses["activity_regularizer"][0], expected_activity)
  assert_close(jl.total_loss(state), 1e-3 * jnp.sum(k ** 2) + 0.01 * jnp.sum(jnp.abs(b))
               + expected_activity)


class Decoder(nn.Module):
  frozen_second: bool = False

  @nn.compact
  def __call__(self, x):
    x = jconvt.Conv2DTranspose(6, 4, strides=2, padding="same", activation="relu",
                               kernel_regularizer="l2", kernel_constraint="max_norm",
                               name="up1")(x)
    x = jconvt.Conv2DTranspose(2, 3, padding="same", trainable=not self.frozen_second,
                               bias_constraint="non_neg", name="up2")(x)
    return x


def _train(model, steps=15, tx=None):
  variables = model.init(jax.random.key(0), X)
  target = jnp.asarray(np.random.default_rng(1).standard_normal((2, 10, 8, 2)), jnp.float32)
  project = jl.constraint_projection(model, X)
  tx = jl.constrained(tx or optax.adam(3e-2), project)
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k not in ("params", jl.LOSSES)}
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    def loss_fn(params):
      y, mutated = model.apply({"params": params, **rest}, X, mutable=["losses"])
      return jnp.mean((y - target) ** 2) + jl.total_loss(mutated)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(steps):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  return variables, params, losses


def test_trains_with_optax_constraints_hold_after_each_step():
  variables, params, losses = _train(Decoder())
  assert losses[-1] < 0.7 * losses[0]
  norms = np.sqrt(np.sum(np.asarray(params["up1"]["kernel"]) ** 2, axis=0))
  assert norms.max() <= 2.0 + 1e-5  # MaxNorm(2, axis=0), Keras' default
  assert np.all(np.asarray(params["up2"]["bias"]) >= 0)
  assert not np.allclose(params["up1"]["kernel"], variables["params"]["up1"]["kernel"])


def test_trainable_false_params_never_change():
  model = Decoder(frozen_second=True)
  variables, params, _ = _train(model)
  assert "up2" not in params
  frozen = variables[jl.NON_TRAINABLE]["up2"]
  assert set(frozen) == {"kernel", "bias"}
  y = model.apply({"params": params, jl.NON_TRAINABLE: variables[jl.NON_TRAINABLE]}, X)
  assert y.shape == (2, 10, 8, 2)


def test_composes_in_sequential_and_tabulates():
  model = nn.Sequential([jconvt.Conv2DTranspose(5, 3, strides=2), nn.relu,
                         jconvt.Conv2DTranspose(2, 2, strides=2, padding="same")])
  variables = model.init(jax.random.key(0), X)
  assert model.apply(variables, X).shape == (2, 22, 18, 2)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    table = model.tabulate(jax.random.key(0), X,
                           console_kwargs={"width": 200, "force_terminal": False})
  # The layer's helper takes an initializer and its spec: wrapped as a module
  # method, flax's summary tried jnp.shape on them (a DeprecationWarning each).
  assert not [w for w in caught if "shape requires ndarray" in str(w.message)]
  assert "Conv2DTranspose" in table and "kernel: float32[3,3,5,3]" in table
  assert "float32[2,11,9,5]" in table


def test_nnx_layer_matches_linen_and_sows_losses():
  layer = jn.Conv2DTranspose(3, 4, 3, strides=2, padding="same", kernel_regularizer="l2",
                             rngs=nnx.Rngs(0))
  assert layer.kernel[...].shape == (3, 3, 4, 3)
  y, captured = nnx.capture(layer, jn.RegularizationLoss)(X)
  linen_layer = jconvt.Conv2DTranspose(4, 3, strides=2, padding="same")
  y_linen = linen_layer.apply({"params": {"kernel": layer.kernel[...], "bias": layer.bias[...]}}, X)
  assert_close(y, y_linen)
  assert_close(jn.total_loss(captured), 0.01 * jnp.sum(layer.kernel[...] ** 2))
  with pytest.raises(ValueError, match="in_features=3"):
    layer(jnp.zeros((1, 4, 4, 5)))


def test_nnx_optimizer_skips_non_trainable_and_constraints_apply():
  class Model(nnx.Module):
    def __init__(self, rngs):
      self.a = jn.Conv2DTranspose(3, 4, 3, strides=2, padding="same", kernel_constraint="non_neg",
                                  rngs=rngs)
      self.b = jn.Conv2DTranspose(4, 2, 1, trainable=False, rngs=rngs)

    def __call__(self, x):
      return self.b(self.a(x))

  model = Model(nnx.Rngs(0))
  frozen = np.asarray(model.b.kernel[...])
  opt = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(X) ** 2))(model)
    opt.update(model, grads)
    jn.apply_constraints(model)
    return loss

  for _ in range(3):
    step(model, opt)
  np.testing.assert_array_equal(model.b.kernel[...], frozen)
  assert np.all(np.asarray(model.a.kernel[...]) >= 0)


@pytest.mark.parametrize("name,kwargs", [
    ("max_norm", dict(max_value=1.5, axis=(0, 1, 2))), ("unit_norm", dict(axis=(0, 1, 2))),
    ("min_max_norm", dict(min_value=0.5, max_value=1.0, rate=0.7, axis=0)), ("non_neg", {})])
def test_constraints_follow_keras_formulas_and_axes(name, kwargs):
  w = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32)
  c = jconvt.constraints.get({"class_name": name, "config": kwargs})
  got = np.asarray(c(jnp.asarray(w)))
  if name == "non_neg":
    expected = w * (w >= 0)
  else:
    axis = kwargs["axis"]
    norms = np.sqrt(np.sum(w ** 2, axis=axis, keepdims=True))
    if name == "max_norm":
      desired = np.clip(norms, 0, kwargs["max_value"])
    elif name == "unit_norm":
      desired = np.ones_like(norms)
    else:
      desired = (kwargs["rate"] * np.clip(norms, kwargs["min_value"], kwargs["max_value"])
                 + (1 - kwargs["rate"]) * norms)
    expected = w * desired / (1e-7 + norms)
  assert_close(got, expected)
  if name in ("max_norm", "unit_norm"):  # per in-channel filter (axis 0, 1, 2), as Keras
    norms = np.sqrt(np.sum(got ** 2, axis=(0, 1, 2)))
    assert norms.max() <= kwargs.get("max_value", 1.0) + 1e-5
