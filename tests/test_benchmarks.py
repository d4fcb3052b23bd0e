"""The benchmark suite's bookkeeping (tables, page-fault counter, machine
line, arguments): the timings themselves are not tests (one small layer is
timed once, to check what a run writes)."""

import json
import mmap
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import runners
from benchmarks.__main__ import allocator, implementations, main, markdown, xla_flags
from benchmarks.layers import SUITE, Layer

LAYER = Layer("k4s2 test", 2, 8, 16, 8, 4, 2)


def _result(fwd, step, **extra):
  return {"fwd_ms": fwd, "step_ms": step, "compile_s": 0.5, "step_mem_bytes": 3 * 2**20,
          "fwd_mem_bytes": 2**20, **extra}


def test_markdown_tables():
  rows = [{"layer": LAYER, "results": {
              "jconvt": _result(2.0, 10.0, algorithms=["phase", "conv", "taps"],
                                step_faults_mib=34.0),
              "jconvt-dilated": _result(3.0, 100.0, step_faults_mib=0.0),
              "tensorflow": _result(4.0, 5.0, step_faults_mib=0.0)}},
          {"layer": SUITE[0], "results": {"jconvt": _result(1.0, 4.0)}}]
  table = markdown(rows, 200.0, "### header")
  summary, full = table.split("Full table:")
  assert "| layer | auto runs (fwd / dx / dk) | jconvt fwd ms |" in summary
  gflops = LAYER.flops / 2.0 / 1e6
  assert (f"| k4s2 test | phase / conv / taps | 2.00 | {gflops:.0f} ({100 * gflops / 200:.0f}%) "
          f"| 10.0 | 1 / 3 (1 / 3) | 2.00x | 0.50x |") in summary
  # A row without a peer, algorithms or faults (an older run's json) shows dashes.
  assert f"| {SUITE[0].name} | — | 1.00 |" in summary and "| — | — |" in summary
  header = full.splitlines()[2]
  for column in ("jconvt step faults MiB", "jconvt-dilated step faults MiB",
                 "tensorflow step faults MiB", "step speedup vs tensorflow"):
    assert f"| {column} |" in header
  assert "| 34 | 0 | 0 |" in full


def test_markdown_without_jconvt_is_relative_to_the_first_implementation():
  """A run of named implementations without ``jconvt`` (``--impls``) still
  gets its tables, relative to the first one; times keep their digits."""
  rows = [{"layer": LAYER, "results": {"jconvt-dilated": _result(0.2468, 3.613),
                                       "jconvt-phase": _result(0.3, 1.8065),
                                       "torch": _result(0.1, 1234.5)}}]
  summary, full = markdown(rows, 3e5, "### gpu").split("Full table:")
  assert "| jconvt-dilated fwd ms |" in summary and "| step vs torch |" in summary
  assert "| k4s2 test | — | 0.247 |" in summary and "| 3.61 |" in summary
  assert "| 0.41x | 341.68x |" in summary  # fwd vs torch, step vs torch
  assert "| jconvt-phase step | torch step |" in full and "| 1.81 | 1234 |" in full
  assert "`speedup vs X` is X's time over jconvt-dilated's" in summary


def test_page_faults_count_fresh_memory():
  """Touching a fresh anonymous mapping faults it in; doing nothing faults
  (almost) nothing. 4 KiB pages make 64 MiB; transparent huge pages fewer."""
  def touch():
    with mmap.mmap(-1, 64 * 2**20) as m:
      for offset in range(0, len(m), 4096):
        m[offset] = 1

  assert runners.page_faults_mib(touch, calls=2) > 0.1
  assert runners.page_faults_mib(lambda: None, calls=2) < 0.5


def test_page_faults_count_a_slow_call_once():
  """Past ``max_s`` no further call is made (a reference step of over a
  second is counted once); a quick one is called ``calls`` times."""
  calls = []
  runners.page_faults_mib(lambda: calls.append(1), calls=5, max_s=0.0)
  assert len(calls) == 1
  runners.page_faults_mib(lambda: calls.append(1), calls=5, max_s=60.0)
  assert len(calls) == 6


@pytest.mark.parametrize("env,expected", [
    ({}, "malloc: glibc defaults"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "malloc: GLIBC_TUNABLES=glibc.malloc.hugetlb=1"),
    ({"MALLOC_TRIM_THRESHOLD_": "1", "MALLOC_TOP_PAD_": "2"},
     "malloc: MALLOC_TOP_PAD_=2, MALLOC_TRIM_THRESHOLD_=1"),
])
def test_allocator_line_names_the_malloc_settings(monkeypatch, env, expected):
  for key in ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
              "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX"):
    monkeypatch.delenv(key, raising=False)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  assert allocator() == expected


@pytest.mark.parametrize("value,expected", [
    (None, "XLA_FLAGS: none"), ("  ", "XLA_FLAGS: none"),
    ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
     "XLA_FLAGS: --xla_cpu_experimental_ynn_fusion_type=-individual_convolution"),
])
def test_xla_flags_line(monkeypatch, value, expected):
  if value is None:
    monkeypatch.delenv("XLA_FLAGS", raising=False)
  else:
    monkeypatch.setenv("XLA_FLAGS", value)
  assert xla_flags() == expected


@pytest.mark.usefixtures("without_onednn")  # the bfloat16 plan without oneDNN
def test_algorithms_of_a_suite_layer():
  """``runners.algorithms`` asks ``algorithm_plan`` with the layer's own
  shapes, data format and dtype."""
  bf16 = next(layer for layer in SUITE if layer.dtype == "bfloat16")
  assert tuple(runners.algorithms(bf16, "cpu")) == ("phase_gemm",) * 3
  assert tuple(runners.algorithms(bf16, "cuda")) == ("dilated", "autodiff", "conv")
  nchw = next(layer for layer in SUITE if layer.data_format == "channels_first")
  assert runners.algorithms(nchw, "cpu").forward == "phase"


def test_every_suite_layer_is_a_layer_jconvt_takes():
  """Each layer of each suite (``--suite``) is one TF accepts (its config
  validates, e.g. no 'same' with an even kernel and output padding 0) with a
  distinct name, and ``auto`` has a CPU plan for it: a typo in a suite
  fails here, not after minutes of timing."""
  import jconvt
  from benchmarks.layers import DESCRIPTIONS, SUITES
  assert set(DESCRIPTIONS) == set(SUITES)
  for layers in SUITES.values():
    assert len({layer.name for layer in layers}) == len(layers)
    for layer in layers:
      out = jconvt.output_shape(layer.x_shape, layer.kernel_shape, runners._config(layer))
      assert out[0] == layer.batch
      assert runners.algorithms(layer, "cpu").forward in ("phase", "col2im", "phase_gemm")


def test_implementations_named_run_in_the_suite_order():
  """``--impls`` keeps the suite's order (JAX first, TF and PyTorch last),
  takes the forced jconvt paths, leaves out what is not installed and
  refuses unknown names."""
  names = ["torch", "jconvt-phase", "flax", "jconvt", "jconvt-col2im"]
  got = implementations(names)
  expected = ["jconvt", "jconvt-phase", "jconvt-col2im", "flax"]
  assert got[:4] == expected
  assert got[4:] == (["torch"] if "torch" in runners.available() else [])
  assert implementations() == runners.available()
  assert "jconvt-phase" not in runners.available()  # forced paths only when named
  with pytest.raises(ValueError, match=r"unknown implementations \['jax'\]; known: jconvt, "):
    implementations(["jconvt", "jax"])


@pytest.mark.parametrize("argv,message", [
    (["--impls", "jconvt,foo"], "unknown implementations ['foo']"),
    (["--batch-scale", "0"], "--batch-scale must be at least 1, got 0"),
    (["--passes", "0"], "--passes must be at least 1, got 0"),
    (["--suite", "tiny"], "invalid choice: 'tiny'"),
])
def test_bad_arguments_are_refused_before_any_timing(argv, message, capsys):
  with pytest.raises(SystemExit):
    main(argv)
  err = capsys.readouterr().err
  assert message in err


def test_edge_suite_writes_its_own_table(tmp_path, capsys):
  """``--suite edge`` times the layers whose kernels exceed their input and
  says so in its table's header; the main suite's compile sweep is left
  out."""
  from benchmarks.layers import EDGE
  layer = next(l for l in EDGE if "valid 16->64" in l.name)
  out = tmp_path / "edge"
  assert main(["--suite", "edge", "--only", layer.name, "--impls", "jconvt,jconvt-dilated",
               "--repeats", "1", "--out", str(out)]) == 0
  table = out.with_suffix(".md").read_text()
  assert "The 'edge' suite" in table and f"| {layer.name} |" in table
  assert "Training-step compile time" not in table
  rows = json.loads(out.with_suffix(".json").read_text())["rows"]
  assert [r["layer"]["name"] for r in rows] == [layer.name]
  assert set(rows[0]["results"]) == {"jconvt", "jconvt-dilated"}


def _batch_norm_relu(z, axes):
  """The runners' batch norm (no scale) and ReLU in NumPy, statistics over
  ``axes``."""
  return np.maximum((z - z.mean(axes, keepdims=True))
                    / np.sqrt(z.var(axes, keepdims=True) + runners.EPS), 0)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_after_batch_norm_times_the_layer_with_its_reader(tmp_path, data_format):
  """``--after batch_norm`` puts a batch norm (no scale, statistics over all
  but the channel axis) and a ReLU between every implementation's layer
  and the loss, and says so in the table: the JAX runners' forward is that
  of the layer alone, normalized per channel."""
  import dataclasses
  from benchmarks.layers import EDGE
  layer = dataclasses.replace(next(l for l in EDGE if "valid 16->64" in l.name),
                              data_format=data_format, after="batch_norm")
  for impl in ("jconvt", "flax"):
    f, params, x = runners._jax_forward(impl, layer)
    g, _, _ = runners._jax_layer(impl, layer)
    y, z = np.asarray(f(params, x)), np.asarray(g(params, x))
    axes = (0, 1, 2) if data_format == "channels_last" else (0, 2, 3)  # all but the channels
    np.testing.assert_allclose(y, _batch_norm_relu(z, axes), rtol=1e-4, atol=1e-4)
    assert (y == 0).any() and (y > 0).any()
  out = tmp_path / "bn"
  assert main(["--suite", "edge", "--only", layer.name, "--impls", "jconvt,jconvt-dilated",
               "--repeats", "1", "--after", "batch_norm", "--out", str(out)]) == 0
  assert "read by a batch norm" in out.with_suffix(".md").read_text()
  rows = json.loads(out.with_suffix(".json").read_text())["rows"]
  assert rows[0]["layer"]["after"] == "batch_norm"


def test_tune_malloc_flag_calls_jconvt_and_says_so(tmp_path, monkeypatch):
  """``--tune-malloc`` calls ``jconvt.tune_malloc`` before timing anything
  and names it in the machine line; it refuses to run where that changes
  nothing. (A stand-in records the call: the real one is process-wide.)"""
  import jconvt
  import benchmarks.__main__ as bench
  monkeypatch.setattr(bench, "_TUNED_MALLOC", [])
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  calls = []
  monkeypatch.setattr(jconvt, "tune_malloc", lambda: calls.append(1) or True)
  from benchmarks.layers import EDGE
  out = tmp_path / "tuned"
  assert main(["--suite", "edge", "--only", EDGE[0].name, "--impls", "jconvt", "--repeats", "1",
               "--tune-malloc", "--out", str(out)]) == 0
  assert calls == [1]
  assert "malloc: jconvt.tune_malloc() (its defaults)" in out.with_suffix(".md").read_text()
  monkeypatch.setattr(jconvt, "tune_malloc", lambda: False)
  with pytest.raises(SystemExit):
    main(["--tune-malloc", "--out", str(out)])


def test_plan_search_on_a_tiny_layer():
  """``benchmarks.plans`` times the reference, one field at a time, and
  ``auto``'s plan; every timed plan computes (none errs on a strided
  layer), and the row makes a table line."""
  from benchmarks import plans
  layer = Layer("tiny k4s2", 1, 4, 4, 4, 4, 2)
  row = plans.measure(layer, progress=lambda *_: None)
  times = row["times"]
  assert row["auto"] == list(runners.algorithms(layer))
  assert "dilated/autodiff/autodiff" in times and "/".join(row["auto"]) in times
  assert {"dilated/autodiff/conv", "dilated/autodiff/phase_gemm",
          "dilated/autodiff/taps"} <= set(times)
  assert all(isinstance(v, tuple) and v[0] > 0 for v in times.values()), times
  # The last round includes the reference: the winner is never slower.
  assert times["/".join(row["winner"])][0] <= times["dilated/autodiff/autodiff"][0]
  assert f"| x1 (1) | tiny k4s2 | {times['dilated/autodiff/autodiff'][0]:.3f} (" \
      in plans.markdown([row], "here")


def test_plan_table():
  from benchmarks import plans
  row = {"layer": {"name": "unet k3s2", "batch": 64}, "batch_scale": 8,
         "auto": ["dilated", "autodiff", "conv"], "winner": ["phase", "conv", "conv"],
         "times": {"dilated/autodiff/autodiff": [8.0, 2717.0],
                   "dilated/autodiff/conv": [0.5, 264.0], "phase/conv/conv": [0.4, 268.0]}}
  table = plans.markdown([row], "gpu")
  assert ("| x8 (64) | unet k3s2 | 8.000 (2717) | dilated/autodiff/conv | 0.500 (264), 16.00x "
          "| phase/conv/conv | 0.400 (268), 20.00x |") in table
  # Rules given as a function rename auto's plan; one never timed says so.
  table = plans.markdown([row], "gpu", auto=lambda r: ("dilated", "conv", "conv"))
  assert "| dilated/conv/conv | not timed |" in table


@pytest.mark.parametrize("argv,message", [
    (["--batch-scale", "8,x"], "--batch-scale must be comma-separated integers, got '8,x'"),
    (["--batch-scale", "0"], "--batch-scale must be integers of at least 1, got '0'"),
])
def test_plan_search_refuses_bad_scales(argv, message, capsys):
  from benchmarks import plans
  with pytest.raises(SystemExit):
    plans.main(argv)
  assert message in capsys.readouterr().err


def test_sweep_times_each_plan_on_each_layer(tmp_path):
  """``benchmarks.sweep`` builds the grid's layers, times every plan on each
  (``auto`` under the name of the plan it stands for) and tabulates them
  against ``auto``'s time."""
  from benchmarks import sweep
  out = tmp_path / "sweep"
  assert sweep.main(["--filters", "3", "--in-channels", "4", "--sizes", "4", "--kernels",
                     "4s2,3s1", "--batch", "1", "--plans", "auto,reference,col2im/taps/taps",
                     "--out", str(out)]) == 0
  rows = json.loads(out.with_suffix(".json").read_text())["rows"]
  assert [r["layer"] for r in rows] == ["1x4x4x4 -> 3 k4s2", "1x4x4x4 -> 3 k3s1"]
  strided, stride1 = rows
  assert strided["auto"] == "/".join(runners.algorithms(Layer("", 1, 4, 4, 3, 4, 2)))
  assert set(strided["times"]) == {strided["auto"], "dilated/autodiff/autodiff",
                                   "col2im/taps/taps"}
  for row in rows:
    assert all(isinstance(v, list) and v[0] > 0 for v in row["times"].values()), row
  assert stride1["auto"] == "/".join(runners.algorithms(Layer("", 1, 4, 4, 3, 3, 1)))
  table = out.with_suffix(".md").read_text()
  auto_ms = strided["times"][strided["auto"]][0]
  assert f"| 1x4x4x4 -> 3 k4s2 | {strided['auto']} |" in table
  assert f"{auto_ms:.3f} (" in table and ", 1.00x)" in table


def test_sweep_rounds_keep_each_plans_median():
  """With ``rounds`` the plans are timed in turn; each keeps every round's
  time and their median, ``auto`` and the plan it names once a round."""
  from benchmarks import sweep
  layer = Layer("tiny", 1, 4, 4, 3, 4, 2)
  row = sweep.measure(layer, ["auto", "reference", "auto"], progress=lambda *_: None, rounds=3)
  assert set(row["rounds_ms"]) == set(row["times"]) == {row["auto"], "dilated/autodiff/autodiff"}
  for plan, rounds in row["rounds_ms"].items():
    assert len(rounds) == 3 and row["times"][plan][0] == float(np.median(rounds))


def test_sweep_by_device_time(tmp_path, monkeypatch):
  """``--timer device`` times each plan's step by its trace's kernels (on a
  CPU, its outermost XLA operations), not by the wall clock, and says so."""
  import benchmarks.__main__ as suite
  from benchmarks import profile, sweep
  traced = []
  real = profile.trace_jax
  monkeypatch.setattr(profile, "trace_jax",
                      lambda fn, calls: traced.append(calls) or real(fn, calls))
  monkeypatch.setattr(suite, "median_ms", lambda *a, **k: 1234.5)  # the wall clock's, kept apart
  out = tmp_path / "sweep"
  assert sweep.main(["--filters", "3", "--in-channels", "4", "--sizes", "4", "--kernels", "4s2",
                     "--batch", "1", "--plans", "auto,reference", "--timer", "device",
                     "--out", str(out)]) == 0
  assert traced == [10, 10]
  (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
  assert all(isinstance(v, list) and 0 < v[0] < 1234.5 and v[2] == 1234.5
             for v in row["times"].values()), row
  assert "The kernels' ms per step" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--filters", "3,x"], "--filters must be comma-separated integers, got '3,x'"),
    (["--sizes", "0"], "--sizes must be integers of at least 1, got '0'"),
    (["--kernels", "4x2"], "--kernels takes items such as 4s2 (kernel 4, stride 2), got '4x2'"),
    (["--plans", "col2im/taps"], "got 'col2im/taps'"),
    (["--rounds", "0"], "--rounds must be at least 1, got 0"),
])
def test_sweep_refuses_bad_arguments(argv, message, capsys):
  from benchmarks import sweep
  with pytest.raises(SystemExit):
    sweep.main(argv)
  assert message in capsys.readouterr().err


def _gpu_check(tmp_path, **env):
  """``benchmarks/gpu_check.sh`` run with its logs in ``tmp_path``, every
  timed step off (each limit 0) but those ``env`` sets."""
  script = pathlib.Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh"
  steps = {f"{step}_S": "0" for step in ("BENCH", "UPSAMPLE", "PLANS", "SWEEP", "TEST", "ONEDNN",
                                         "PROFILE")}
  env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), **steps, **env}
  return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                        timeout=120)


def test_gpu_check_script_runs_its_bookkeeping(tmp_path):
  """``benchmarks/gpu_check.sh`` with every timed step off (each limit 0)
  still runs: it parses, writes its versions file and exits 0, so a lent
  GPU machine's one call is not lost to a shell error."""
  run = _gpu_check(tmp_path)
  assert run.returncode == 0, run.stderr
  versions = (tmp_path / "versions.txt").read_text()
  assert "jax " in versions and "devices:" in versions
  assert "exit:" not in run.stdout  # no step ran


def test_gpu_check_script_profiles_the_suite(tmp_path):
  """Its profile step (``PROFILE_S``) runs ``benchmarks.profile`` with the
  suite's arguments and keeps each program's line."""
  run = _gpu_check(tmp_path, PROFILE_S="100", PROFILE_IMPLS="jconvt",
                   BENCH_ARGS="--suite edge --only 16->64 --calls 2")
  assert run.returncode == 0 and "profile exit: 0" in run.stdout, (run.stdout, run.stderr)
  lines = (tmp_path / "profile.log").read_text().splitlines()
  assert [line.split(":")[0] for line in lines] == [
      "stride 1 valid 16->64 k3 / jconvt / forward", "stride 1 valid 16->64 k3 / jconvt / step"]
  assert (tmp_path / "profile.hlo.txt").exists()


def test_batch_norm_of_a_16_bit_layer_is_computed_in_float32():
  """The JAX runners' batch norm of a bfloat16 output is computed in float32
  and rounded once, as flax's ``BatchNorm``, Keras' and torch's are: the
  suite times the layer, not XLA:CPU's bfloat16 arithmetic (27 against 3.5
  ms for the batch norm alone on the bfloat16 layer's output)."""
  import dataclasses
  import jax.numpy as jnp
  layer = dataclasses.replace(next(l for l in SUITE if l.dtype == "bfloat16"),
                              after="batch_norm")
  z = np.random.default_rng(0).standard_normal((4, 6, 6, 8)).astype(np.float32) * 3 + 1
  y = jnp.asarray(z, jnp.bfloat16)
  got = runners._jax_after(layer, y)
  assert got.dtype == jnp.bfloat16
  want = _batch_norm_relu(np.asarray(y, np.float32), (0, 1, 2))
  # One rounding to bfloat16: within half its spacing (2**-8 relative).
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2 ** -8, atol=1e-6)


def test_profile_totals_the_outermost_events_and_ranks_kernels():
  """``benchmarks.profile``: a trace's device streams where it has any (else
  the host's operations less the runtime's bookkeeping), events inside an
  earlier one of their thread listed but not added to the total."""
  from benchmarks.profile import kernel_table, perfetto_events

  def event(name, pid, ts, dur, tid=1):
    return {"ph": "X", "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}

  meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
          {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}}]
  host = [event("convolution", 1, 0, 50), event("PjitFunction(f)", 1, 0, 60)]
  gpu = [event("dgrad_kernel", 2, 0, 30), event("dgrad_kernel", 2, 100, 34),
         event("slice", 2, 40, 6, tid=2)]
  events = perfetto_events({"traceEvents": meta + host + gpu})
  assert sorted(name for name, *_ in events) == ["dgrad_kernel", "dgrad_kernel", "slice"]
  traced, top = kernel_table(events, calls=2, top=1)
  assert traced == 35.0 and top == [("dgrad_kernel", 32.0, 1.0)]

  cpu = perfetto_events({"traceEvents": [  # no device: the host's, a loop's body nested
      event("while", 1, 0, 100), event("conv", 1, 10, 40), event("conv", 1, 60, 30),
      event("ThunkExecutor::Execute", 1, 0, 120, tid=2), event("copy", 1, 100, 5)]})
  traced, top = kernel_table(cpu, calls=1, top=3)
  assert traced == 105.0
  assert top == [("while", 100.0, 1.0), ("conv", 70.0, 2.0), ("copy", 5.0, 1.0)]


def test_profile_writes_each_programs_kernels(tmp_path, capsys):
  """``python -m benchmarks.profile`` on one small layer: both programs of
  each implementation traced, their table, JSON and optimized HLO written."""
  from benchmarks.layers import EDGE
  from benchmarks.profile import main as profile
  layer = next(l for l in EDGE if "valid 16->64" in l.name)
  out = tmp_path / "prof"
  assert profile(["--suite", "edge", "--only", layer.name, "--impls", "jconvt,jconvt-dilated",
                  "--calls", "2", "--top", "3", "--out", str(out)]) == 0
  rows = json.loads(out.with_suffix(".json").read_text())["rows"]
  assert [r["layer"]["name"] for r in rows] == [layer.name]
  for impl in ("jconvt", "jconvt-dilated"):
    for what in ("forward", "step"):
      r = rows[0]["results"][impl][what]
      assert r["wall_ms"] > 0 and r["traced_us"] > 0 and 1 <= len(r["top"]) <= 3
  table = out.with_suffix(".md").read_text()
  assert table.count(f"| {layer.name} |") == 4
  hlo = pathlib.Path(f"{out}.hlo.txt").read_text()
  assert hlo.count(f"=== {layer.name} / ") == 4 and "ENTRY" in hlo


@pytest.mark.parametrize("argv,message", [
    (["--impls", "tensorflow"], "not profiled here"),
    (["--impls", "nope"], "unknown implementations"),
    (["--calls", "0"], "--calls must be at least 1"),
])
def test_profile_refuses_bad_arguments(argv, message, capsys):
  from benchmarks.profile import main as profile
  with pytest.raises(SystemExit):
    profile(argv)
  assert message in capsys.readouterr().err
