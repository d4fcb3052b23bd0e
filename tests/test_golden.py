"""Output and gradient parity with real TensorFlow, from committed fixtures.

The fixture is written by tests/golden/make_golden.py (needs TensorFlow).
"""

import jax
import jax.numpy as jnp
import pytest

import jconvt
from conftest import (assert_close, case_id, config_from_record, gemm_forward,
                      gemm_input_gradient, gpu_rules, large_input_paths, load_golden,
                      taps_input_gradient, taps_kernel_gradient)

CASES = load_golden()
ALGORITHMS = ("dilated", "phase", "col2im", "auto")


def _params(arrays):
  p = {"kernel": jnp.asarray(arrays["kernel"])}
  if "bias" in arrays:
    p["bias"] = jnp.asarray(arrays["bias"])
  return p


def test_fixture_is_broad():
  recs = [r for r, _ in CASES]
  assert len(recs) >= 150
  assert {tuple(r["kernel_size"]) for r in recs} >= {(k, k) for k in range(1, 8)}
  assert {r["strides"][0] for r in recs} >= {1, 2, 3, 4}
  assert {r["data_format"] for r in recs} == {"channels_last", "channels_first"}
  assert any(r["dilation_rate"] != [1, 1] for r in recs)
  assert any(0 in r["y_shape"] or r["batch"] == 0 for r in recs)


@pytest.mark.parametrize("rec,arrays", CASES, ids=[case_id(r) for r, _ in CASES])
def test_output_shape_matches_tf(rec, arrays):
  cfg = config_from_record(rec)
  assert jconvt.output_shape(arrays["x"].shape, arrays["kernel"].shape, cfg) == tuple(rec["y_shape"])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("rec,arrays", CASES, ids=[case_id(r) for r, _ in CASES])
def test_forward_and_gradients_match_tf(rec, arrays, algorithm):
  if algorithm == "phase" and rec["dilation_rate"] != [1, 1]:
    with pytest.raises(ValueError, match="needs `dilation_rate`"):
      config_from_record(rec, algorithm=algorithm)
    return
  cfg = config_from_record(rec, algorithm=algorithm)
  params = _params(arrays)
  x = jnp.asarray(arrays["x"])

  @jax.jit
  def loss(params, x):
    y = jconvt.conv2d_transpose(params, x, cfg)
    return jnp.sum(y * arrays["dy"]), y

  (_, y), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
  assert y.dtype == jnp.float32
  assert_close(y, arrays["y"])
  assert_close(dx, arrays["dx"])
  assert_close(dparams["kernel"], arrays["dkernel"])
  if "bias" in arrays:
    assert_close(dparams["bias"], arrays["dbias"])


@pytest.mark.parametrize("rec,arrays", CASES[1::3], ids=[case_id(r) for r, _ in CASES[1::3]])
def test_gemm_input_gradient_of_auto_matches_tf(rec, arrays):
  """"auto"'s GEMM input gradient, which its rule keeps to deep small inputs
  (the golden grid's are shallow), forced wherever it applies."""
  with gemm_input_gradient():
    test_forward_and_gradients_match_tf(rec, arrays, "auto")


@pytest.mark.parametrize("rec,arrays", CASES[2::3], ids=[case_id(r) for r, _ in CASES[2::3]])
def test_taps_kernel_gradient_of_auto_matches_tf(rec, arrays):
  """"auto"'s tap-window kernel gradient, which its rule keeps to the
  smallest deep inputs, forced wherever it applies."""
  with taps_kernel_gradient():
    test_forward_and_gradients_match_tf(rec, arrays, "auto")


@pytest.mark.parametrize("rec,arrays", CASES[::3], ids=[case_id(r) for r, _ in CASES[::3]])
def test_taps_input_gradient_of_auto_matches_tf(rec, arrays):
  """"auto"'s tap-window input gradient, which its rule keeps to small
  inputs with many filters, forced wherever it applies."""
  with taps_input_gradient():
    test_forward_and_gradients_match_tf(rec, arrays, "auto")


@pytest.mark.parametrize("rec,arrays", CASES[3::4], ids=[case_id(r) for r, _ in CASES[3::4]])
def test_gemm_forward_of_auto_matches_tf(rec, arrays):
  """"auto"'s one-GEMM phase forward, which its rule keeps to bfloat16
  inputs, forced wherever it applies (float32 here)."""
  with gemm_forward():
    test_forward_and_gradients_match_tf(rec, arrays, "auto")


@pytest.mark.parametrize("rec,arrays", CASES[::2], ids=[case_id(r) for r, _ in CASES[::2]])
def test_gpu_plan_of_auto_matches_tf(rec, arrays):
  """What "auto" runs on NVIDIA GPUs (the dilated forward and input
  gradient, the kernel gradient as ``grad_kernel``'s convolution inside the
  custom VJP at stride > 1), run here on the golden grid."""
  with gpu_rules():
    test_forward_and_gradients_match_tf(rec, arrays, "auto")


@pytest.mark.parametrize("rec,arrays", CASES[::5], ids=[case_id(r) for r, _ in CASES[::5]])
def test_numpy_reference_matches_tf(rec, arrays):
  y = jconvt.reference_conv2d_transpose(
      arrays["x"], arrays["kernel"], arrays.get("bias"), config_from_record(rec))
  assert_close(y, arrays["y"])


@pytest.mark.parametrize("rec,arrays", CASES[::3], ids=[case_id(r) for r, _ in CASES[::3]])
def test_large_input_paths_of_auto_match_tf(rec, arrays):
  """"auto" takes the phase forward, the strided-convolution input gradient
  and the GEMM kernel gradient (at stride 1 too, and chunked over the batch)
  above its size thresholds; force them on the golden grid's small inputs
  (which otherwise take col2im or phase, the GEMM input gradient and the
  convolution kernel gradient). One-pixel chunks put every image in its own
  chunk."""
  with large_input_paths():
    test_forward_and_gradients_match_tf(rec, arrays, "auto")
