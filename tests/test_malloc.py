"""``jconvt.tune_malloc``: argument errors, and, in a fresh process (the
setting is process-wide and cannot be undone), that a program with more
scratch than glibc's default threshold stops faulting it in on every call."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import jconvt

# Defined before any probe imports JAX: tune_malloc must come first there.
_HELPERS = r"""
def scratch(n):
  # A program with n x n float32 products (n * n * 4 bytes) in a temporary
  # buffer, and its input: the products' sines, read by two products. With
  # one reader (their sum) jaxlib 0.11's XLA:CPU fused the products away and
  # kept no scratch at all; two products each need them whole.
  import jax, jax.numpy as jnp
  def f(a):
    d = jnp.sin(jnp.dot(a, a.T))
    return jnp.sum(jnp.dot(d, a), axis=0) + jnp.sum(jnp.dot(a.T, d), axis=1)
  a = jnp.ones((n, 64), jnp.float32)
  return jax.jit(f).lower(a).compile(), a


def faults_mib(compiled, a, calls=9):
  # Each call's page faults in MiB, sorted, after two calls that warm up.
  import resource
  import jax
  jax.block_until_ready(compiled(a))
  jax.block_until_ready(compiled(a))
  per_call = []
  for _ in range(calls):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(compiled(a))
    per_call.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * 4096 / 2 ** 20)
  return sorted(per_call)
"""

_PROBE = _HELPERS + r"""
import json
import jconvt

# 36 MiB of scratch: past glibc's 32 MiB ceiling for its dynamic threshold.
compiled, a = scratch(3072)
temp = compiled.memory_analysis().temp_size_in_bytes

default = faults_mib(compiled, a)
applied = jconvt.tune_malloc()
tuned = faults_mib(compiled, a)
print(json.dumps({"temp": temp, "default": default, "applied": applied, "tuned": tuned}))
"""


def _probe(source, *argv):
  """The JSON the last line of ``source``, run in a fresh Python on the CPU
  with ``argv``, prints; skips where the C library is not glibc."""
  if jconvt._malloc._glibc() is None:
    pytest.skip("the C library is not glibc")
  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu")
  env.pop("GLIBC_TUNABLES", None)
  out = subprocess.run([sys.executable, "-c", source, *argv], env=env, capture_output=True,
                       text=True, timeout=300, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def _small_pages() -> bool:
  """Whether freshly faulted memory comes in 4 KiB pages (transparent huge
  pages not ``always``), so a buffer taken afresh counts in full."""
  thp = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
  return thp.exists() and "[always]" not in thp.read_text()


@pytest.mark.parametrize("kwargs,error,match", [
    ({"mmap_threshold": "256M"}, TypeError, r"`mmap_threshold` must be an int .*'256M'.* str"),
    ({"mmap_threshold": 1.5e8}, TypeError, r"`mmap_threshold` must be an int .*float"),
    ({"mmap_threshold": True}, TypeError, r"`mmap_threshold` must be an int .*True"),
    ({"mmap_threshold": 0}, ValueError, r"`mmap_threshold` must be between 1 and 2147483647 .*got 0"),
    ({"mmap_threshold": 2 ** 31}, ValueError, r"`mmap_threshold` .*got 2147483648"),
    ({"trim_threshold": -1}, ValueError, r"`trim_threshold` must be between 1 .*got -1"),
    ({"trim_threshold": "x"}, TypeError, r"`trim_threshold` must be an int"),
    ({"arena_max": "1"}, TypeError, r"`arena_max` must be an int or None, got '1'"),
    ({"arena_max": True}, TypeError, r"`arena_max` must be an int or None, got True"),
    ({"arena_max": 0}, ValueError, r"`arena_max` must be between 1 and 2147483647 arenas, got 0"),
])
def test_bad_thresholds_are_refused_before_anything_changes(monkeypatch, kwargs, error, match):
  calls = []
  monkeypatch.setattr(jconvt._malloc, "_glibc", lambda: calls.append(1))
  with pytest.raises(error, match=match):
    jconvt.tune_malloc(**kwargs)
  assert not calls  # refused before looking for glibc


def test_without_glibc_it_changes_nothing_and_says_so(monkeypatch):
  monkeypatch.setattr(jconvt._malloc, "_glibc", lambda: None)
  assert jconvt.tune_malloc() is False


def test_large_scratch_stops_faulting_in_a_fresh_process():
  r = _probe(_PROBE)
  assert r["temp"] > 32 * 2 ** 20  # past glibc's dynamic threshold, or the check proves nothing
  assert r["applied"] is True
  # The median call (of 9). Alone, every call ran without faults; with other
  # processes busy on the cores (make test's workers), 1-3 calls in 10 still
  # faulted the whole buffer.
  assert r["tuned"][4] < 1.0, r
  if _small_pages():
    assert r["default"][4] > 16.0, r  # 4 KiB pages: the whole buffer, on every call


_ARENA_PROBE = _HELPERS + r"""
import json, sys
import jconvt
applied = jconvt.tune_malloc(arena_max=None if sys.argv[1] == "none" else 1)
# 81 MiB of scratch: past the 64 MiB heaps of glibc's per-thread arenas,
# which XLA's threads allocate from.
compiled, a = scratch(4608)
print(json.dumps({"temp": compiled.memory_analysis().temp_size_in_bytes, "applied": applied,
                  "faults": faults_mib(compiled, a)}))
"""


def test_one_arena_keeps_scratch_past_a_thread_heap_in_a_fresh_process():
  """Scratch over 64 MiB, the most a thread's own glibc arena holds: with
  the thresholds alone (``arena_max=None``) every call faulted it in again;
  with one arena (the default) calls run without faults (all 9 of 9 alone,
  4 of 9 with make test's workers busy on the cores: the rest faulted the
  whole buffer, as the thresholds' test above sees too)."""
  one = _probe(_ARENA_PROBE, "one")
  assert one["temp"] > 64 * 2 ** 20 and one["applied"] is True
  assert one["faults"][0] < 1.0, one
  if _small_pages():
    threads = _probe(_ARENA_PROBE, "none")
    assert threads["faults"][0] > 32.0, threads  # 4 KiB pages: the whole buffer, every call
