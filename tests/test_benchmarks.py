"""The benchmark suite's bookkeeping (tables, page-fault counter, machine
line), without timing anything: the timings themselves are not tests."""

import mmap

import pytest

from benchmarks import runners
from benchmarks.__main__ import allocator, markdown, xla_flags
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
  assert (f"| k4s2 test | phase / conv / taps | 2.0 | {gflops:.0f} ({100 * gflops / 200:.0f}%) "
          f"| 10.0 | 1 / 3 (1 / 3) | 2.00x | 0.50x |") in summary
  # A row without a peer, algorithms or faults (an older run's json) shows dashes.
  assert f"| {SUITE[0].name} | — | 1.0 |" in summary and "| — | — |" in summary
  header = full.splitlines()[2]
  for column in ("jconvt step faults MiB", "jconvt-dilated step faults MiB",
                 "tensorflow step faults MiB", "step speedup vs tensorflow"):
    assert f"| {column} |" in header
  assert "| 34 | 0 | 0 |" in full


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


def test_algorithms_of_a_suite_layer():
  """``runners.algorithms`` asks ``algorithm_plan`` with the layer's own
  shapes, data format and dtype."""
  bf16 = next(layer for layer in SUITE if layer.dtype == "bfloat16")
  assert tuple(runners.algorithms(bf16)) == ("phase_gemm",) * 3
  nchw = next(layer for layer in SUITE if layer.data_format == "channels_first")
  assert runners.algorithms(nchw).forward == "phase"
