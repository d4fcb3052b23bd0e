"""Shared fixtures: per-dtype tolerances, golden fixtures, strict JAX modes."""

import contextlib
import json
import os
import pathlib

import jax
import numpy as np
import pytest
from hypothesis import settings

import jconvt

# Property tests replay the same examples on every run of the default suite
# (CI included): a red run then points at a change, not at a lucky draw.
# `make explore` draws fresh examples, EXPLORE_SCALE times as many.
settings.register_profile("replay", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile(os.environ.get("JCONVT_HYPOTHESIS", "replay"))
EXPLORE_SCALE = 10


def examples(n: int) -> int:
  """A property test's example count: ``n``, scaled up when exploring."""
  return n * EXPLORE_SCALE if settings.default.derandomize is False else n


GOLDEN = pathlib.Path(__file__).parent / "golden" / "tf_conv2d_transpose.npz"

# The fixture writers need TensorFlow / PyTorch: scripts, not test modules
# (--doctest-modules would import them).
collect_ignore_glob = ["golden/*.py"]

# Relative/absolute tolerances against float64 oracles, per compute dtype
# (float32 at jax.default_matmul_precision("float32")).
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=2e-5, atol=2e-5),
    np.dtype(jax.numpy.bfloat16): dict(rtol=3e-2, atol=3e-2),
    np.dtype(np.float16): dict(rtol=3e-3, atol=3e-3),
}


def assert_close(actual, desired, dtype=np.float32, scale=None):
  """Compares with the dtype's tolerance, scaled by the oracle's magnitude."""
  tol = TOLERANCES[np.dtype(dtype)]
  actual = np.asarray(actual, np.float64)
  desired = np.asarray(desired, np.float64)
  assert actual.shape == desired.shape, (actual.shape, desired.shape)
  if scale is None:
    scale = max(1.0, float(np.abs(desired).max(initial=0.0)))
  np.testing.assert_allclose(actual, desired, rtol=tol["rtol"],
                             atol=tol["atol"] * scale)


@contextlib.contextmanager
def _thresholds_forced(forced):
  """Sets the ``jconvt._algorithms`` thresholds named in ``forced`` to its
  values; restores them on exit."""
  from jconvt import _algorithms
  saved = {name: getattr(_algorithms, name) for name in forced}
  for name, value in forced.items():
    setattr(_algorithms, name, value)
  try:
    yield
  finally:
    for name, value in saved.items():
      setattr(_algorithms, name, value)


def large_input_paths():
  """Forces the paths ``auto`` takes above its size thresholds (phase
  forward, strided-convolution input gradient, GEMM kernel gradient, also
  at stride 1, one GEMM per pair of phase groups, full-canvas stride-1
  convolutions, padded input-gradient convolutions of 'valid' layers) on
  small test inputs, with one image per kernel-gradient chunk; restores the
  thresholds on exit."""
  return _thresholds_forced({
      "SMALL_INPUT_PIXELS": 0, "GEMM_KERNEL_GRAD_PIXELS": 0, "STRIDE1_DEEP_CHANNELS": 0,
      "KERNEL_GRAD_CHUNK_ROWS": 1, "EXACT_TAPS_FILTERS": 0, "TALLER_MAX_CHANNELS": 10**9,
      "UNPADDED_DEEP_CHANNELS": 0})


@contextlib.contextmanager
def onednn_routes(by_phase=True, spatial_batch=True, large_kernels=True, channel_chunks=True):
  """Lowers the thresholds in front of oneDNN (``jconvt._algorithms``) so
  that small test layers take its routes: any channel counts, exact phases
  with any filters, a channels_first input gradient on NCHW ``dy`` with any
  batch and filters and a channels_first phase forward on NCHW with any
  output; with ``by_phase`` the kernel gradient by phase
  whatever the size of ``dy``, with ``spatial_batch`` the kernel
  gradient's three-dimensional form with any filters, with
  ``large_kernels`` the large-kernel rules on any image, with
  ``channel_chunks`` that three-dimensional form 4 output channels at a
  time wherever they are a multiple of 4, on any CPU
  (``_kernel_grad_channel_chunk``). oneDNN itself still runs only where
  ``_onednn.enabled()``. Restores them on exit."""
  from jconvt import _onednn
  forced = {"ONEDNN_MIN_FEATURES": 1, "ONEDNN_MIN_CONTRACTED": 1,
            "EXACT_PHASES_MIN_FILTERS": 1, "NCHW_INPUT_GRAD_MIN_BATCH": 1,
            "NCHW_INPUT_GRAD_MIN_FILTERS": 1, "NCHW_PHASE_FORWARD_MIN_IMAGE_BYTES": 0}
  if by_phase:
    forced["ONEDNN_KERNEL_GRAD_MAX_DY_BYTES"] = 0
  if spatial_batch:
    forced["ONEDNN_KERNEL_GRAD_SPATIAL_BATCH"] = 1
  if large_kernels:
    forced["ONEDNN_LARGE_KERNEL_MIN_SIDE"] = 1
  if channel_chunks:
    forced.update(ONEDNN_KERNEL_GRAD_CHANNEL_CHUNK=4, ONEDNN_KERNEL_GRAD_CHUNKED_MULTIPLE=4,
                  ONEDNN_KERNEL_GRAD_CHUNKED_MAX_BATCH=10**9,
                  ONEDNN_KERNEL_GRAD_CHUNKED_MIN_PIXELS=0)
  saved = _onednn.cpu_has_amx
  if channel_chunks:
    _onednn.cpu_has_amx = lambda: True
  try:
    with _thresholds_forced(forced):
      yield
  finally:
    _onednn.cpu_has_amx = saved


@contextlib.contextmanager
def eigen_route():
  """Forces ``_convolve``'s Eigen route (``jconvt._algorithms``) on every
  gradient convolution it can take on XLA:CPU, whatever its channels and
  size (the rule's thresholds at zero), with oneDNN off (``JCONVT_ONEDNN=0``:
  it would take them first); restores both on exit."""
  saved = os.environ.get("JCONVT_ONEDNN")
  os.environ["JCONVT_ONEDNN"] = "0"
  try:
    with _thresholds_forced(
        {"EIGEN_MIN_CONTRACTED": 0, "EIGEN_MIN_FEATURES": 0, "EIGEN_MIN_MACS": 0}):
      yield
  finally:
    if saved is None:
      del os.environ["JCONVT_ONEDNN"]
    else:
      os.environ["JCONVT_ONEDNN"] = saved


@contextlib.contextmanager
def _strided_rule_forced(rule):
  """Replaces the ``_algorithms`` rule named ``rule`` by one that holds
  wherever its path applies (dilation 1, stride > 1); restores it on exit."""
  from jconvt import _algorithms
  saved = getattr(_algorithms, rule)
  setattr(_algorithms, rule, lambda config, *_: config.dilation_rate == (1, 1)
          and config.strides != (1, 1))
  try:
    yield
  finally:
    setattr(_algorithms, rule, saved)


def gemm_input_gradient():
  """Forces ``auto``'s GEMM input gradient (``grad_input_phase``) wherever
  it applies, which by its rule it takes only on deep small inputs or with
  a kernel no larger than the stride."""
  return _strided_rule_forced("_input_grad_is_gemm")


def taps_input_gradient():
  """Forces ``auto``'s tap-window input gradient (``grad_input_taps``)
  wherever it applies (but not where the phase GEMMs take it: a kernel no
  larger than the stride), which by its rule it takes only on small inputs
  with many filters."""
  return _strided_rule_forced("_input_grad_is_taps")


def taps_kernel_gradient():
  """Forces ``auto``'s tap-window kernel gradient (``grad_kernel_taps``)
  wherever it applies, which by its rule it takes only on the smallest deep
  inputs."""
  return _strided_rule_forced("_kernel_grad_is_taps")


def gemm_forward():
  """Forces ``auto``'s one-GEMM phase forward (``conv_phase_gemm``) wherever
  it applies, which by its rule it takes only for bfloat16 inputs."""
  return _strided_rule_forced("_forward_is_gemm")


@contextlib.contextmanager
def gpu_rules():
  """Makes ``auto`` on this machine run the plan it runs on NVIDIA GPUs
  (``gpu_plan``: the dilated forward and input gradient, ``grad_kernel`` at
  stride > 1; the phase forward from 16 phases on, and with the strided
  input gradient for few filters at k = 2s), whatever the backend; restores
  the rules on exit."""
  from jconvt import _algorithms
  saved = dict(_algorithms._AUTO_RULES)
  _algorithms._AUTO_RULES.update({name: _algorithms.gpu_plan for name in saved})
  try:
    yield
  finally:
    _algorithms._AUTO_RULES.update(saved)


@pytest.fixture
def without_onednn(monkeypatch):
  """XLA:CPU's own convolutions, not oneDNN's (``JCONVT_ONEDNN=0``): what the
  tests of their layouts, windows and Eigen route look at, and what runs
  where oneDNN is off (not x86-64, an unverified jaxlib)."""
  monkeypatch.setenv("JCONVT_ONEDNN", "0")


@pytest.fixture(autouse=True)
def _strict_jax():
  with jax.default_matmul_precision("float32"), jax.numpy_rank_promotion("raise"):
    yield


def config_from_record(rec, **overrides) -> jconvt.ConvTransposeConfig:
  return jconvt.ConvTransposeConfig(
      strides=tuple(rec["strides"]), padding=rec["padding"],
      output_padding=None if rec["output_padding"] is None else tuple(rec["output_padding"]),
      dilation_rate=tuple(rec["dilation_rate"]), data_format=rec["data_format"],
      activation=rec["activation"], **overrides)


def load_golden(path=GOLDEN):
  """[(record, {name: array})] from a committed fixture (TF's layer grid by
  default): its JSON ``records``, each with the arrays under ``<index>/``."""
  data = np.load(path)
  cases = []
  for rec in json.loads(str(data["records"])):
    i = rec["index"]
    arrays = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
    cases.append((rec, arrays))
  return cases


def case_id(rec) -> str:
  parts = [f"k{rec['kernel_size'][0]}x{rec['kernel_size'][1]}",
           f"s{rec['strides'][0]}x{rec['strides'][1]}", rec["padding"]]
  if rec["output_padding"] is not None:
    parts.append(f"op{rec['output_padding'][0]}x{rec['output_padding'][1]}")
  if rec["dilation_rate"] != [1, 1]:
    parts.append(f"d{rec['dilation_rate'][0]}")
  if rec["data_format"] == "channels_first":
    parts.append("nchw")
  if rec["activation"]:
    parts.append(rec["activation"])
  if not rec["use_bias"]:
    parts.append("nobias")
  parts.append(f"x{rec['batch']}x{rec['x_hw'][0]}x{rec['x_hw'][1]}x{rec['in_channels']}")
  return "-".join(parts)
