"""Where a layer's time goes: the kernels (GPU) or XLA operations (CPU) of
each implementation's forward pass and training step, from a profiler trace.

    python -m benchmarks.profile [--suite main] [--only SUBSTRING] [--batch-scale N]
                                 [--impls jconvt,torch] [--calls N] [--top N] [--out PATH]

For every suite layer and implementation it compiles and warms the forward
pass and the training step the suite times (``benchmarks.runners``), then
traces ``--calls`` calls of each: JAX's with ``jax.profiler`` (a Perfetto
trace; on a GPU its device streams, else the host's operations), PyTorch's
with ``torch.profiler`` (CUDA kernels on a GPU, else each operator's own
CPU time). It prints, per program, the median wall time per call
(untraced), the traced time per call and the ``--top`` kernels by time, and
writes them to ``PATH.json`` and ``PATH.md``, with the optimized HLO of
every JAX program in
``PATH.hlo.txt`` (the convolutions' custom calls, layouts and fusions). A
diagnosis tool: the suite (``python -m benchmarks``) gives the times to
report.
"""

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import pathlib
import tempfile
import time

from benchmarks.layers import SUITES
from benchmarks import runners

# The trace's own bookkeeping on the host, not work of the program.
_HOST_WRAPPERS = ("$", "end:", "Threadpool", "Pjit", "ThunkExecutor", "PjRt", "ExecuteHelper",
                  "Thunk::", "ParseArguments", "pjit", "jit_", "CommonPjRt")


def kernel_table(events, calls: int, top: int):
  """``events``: ``(name, microseconds, count, nested)`` over ``calls``
  calls (``nested``: inside another event, so left out of the total).
  Returns the traced microseconds per call and the ``top`` names by time,
  each as ``(name, us per call, count per call)``."""
  total = collections.defaultdict(float)
  count = collections.Counter()
  for name, us, n, _ in events:
    total[name] += us
    count[name] += n
  ranked = sorted(total, key=lambda n: -total[n])[:top]
  return (sum(us for _, us, _, nested in events if not nested) / calls,
          [(name, total[name] / calls, count[name] / calls) for name in ranked])


def perfetto_events(trace: dict):
  """A Perfetto trace's complete events as ``(name, us, 1, nested)``: those
  of its device processes (a GPU's streams) where it has any, else the
  host's, less the runtime's bookkeeping; ``nested`` where the event lies
  inside an earlier one of its thread (XLA:CPU's operations in a loop)."""
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  device = {pid for pid, name in names.items() if "/device:" in name}
  complete = sorted((e for e in events if e.get("ph") == "X" and "dur" in e),
                    key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
  if device:
    complete = [e for e in complete if e["pid"] in device]
  else:
    complete = [e for e in complete if not e["name"].startswith(_HOST_WRAPPERS)]
  out, end = [], {}
  for e in complete:
    thread = (e["pid"], e["tid"])
    nested = e["ts"] + e["dur"] <= end.get(thread, float("-inf"))
    if not nested:
      end[thread] = e["ts"] + e["dur"]
    out.append((e["name"], float(e["dur"]), 1, nested))
  return out


def trace_jax(fn, calls: int):
  """The events of ``calls`` calls of ``fn`` under ``jax.profiler``."""
  import jax
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d, create_perfetto_trace=True)
    try:
      for _ in range(calls):
        fn()
    finally:
      jax.profiler.stop_trace()
    paths = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)
    if not paths:
      return []
    with gzip.open(paths[0]) as f:
      return perfetto_events(json.load(f))


def trace_torch(fn, calls: int):
  """The events of ``calls`` calls of ``fn`` under ``torch.profiler``: per
  kernel (CUDA) or operator (its own CPU time), its total and count."""
  import torch
  from torch.profiler import ProfilerActivity, profile
  cuda = runners.torch_device(torch) == "cuda"
  activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
  with profile(activities=activities) as prof:
    for _ in range(calls):
      fn()
  events = []
  for e in prof.key_averages():
    if cuda:  # the kernels alone: an operator's device time is its kernels'
      if "CUDA" not in str(getattr(e, "device_type", "")):
        continue
      us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
    else:
      us = e.self_cpu_time_total
    if us > 0:
      events.append((e.key, float(us), e.count, False))
  return events


def profile_layer(impl: str, layer, calls: int, top: int, hlo=None):
  """``{what: {"wall_ms", "traced_us", "top"}}`` for one implementation on
  one layer; appends each JAX program's optimized HLO to ``hlo``."""
  import jax
  from benchmarks.__main__ import median_ms
  out = {}
  if impl == "torch":
    fwd, step = runners.torch_programs(layer)
    programs = {"forward": fwd, "step": step}
    tracer = trace_torch
  else:
    fwd, step, (params, x, target) = runners.jax_programs(impl, layer)
    compiled = {"forward": (fwd.lower(params, x).compile(), (params, x)),
                "step": (step.lower(params, x, target).compile(), (params, x, target))}
    programs = {what: (lambda c=c, a=a: jax.block_until_ready(c(*a)))
                for what, (c, a) in compiled.items()}
    if hlo is not None:
      for what, (c, _) in compiled.items():
        hlo.append(f"=== {layer.name} / {impl} / {what}\n{c.as_text()}\n")
    tracer = trace_jax
  for what, fn in programs.items():
    fn()
    wall = median_ms(fn, calls, min_time=0)
    traced, kernels = kernel_table(tracer(fn, calls), calls, top)
    out[what] = {"wall_ms": wall, "traced_us": traced, "top": kernels}
  return out


def markdown(rows, machine: str) -> str:
  lines = [f"### Profile ({time.strftime('%Y-%m-%d')}; {machine})", "",
           "Per call: the median wall ms (untraced), the trace's total (its outermost events) "
           "and its largest kernels or operations (us per call, x how many per call).", "",
           "| layer | implementation | program | wall ms | traced us | largest |",
           "|---|---|---|---|---|---|"]
  for row in rows:
    for impl, res in row["results"].items():
      for what, r in res.items():
        top = "; ".join(f"{name[:60]} {us:.1f} (x{n:g})" for name, us, n in r["top"])
        lines.append(f"| {row['layer']['name']} | {impl} | {what} | {r['wall_ms']:.3f} | "
                     f"{r['traced_us']:.1f} | {top} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  from benchmarks.__main__ import implementations, machine
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--suite", default="main", choices=sorted(SUITES))
  parser.add_argument("--only", default=None, help="profile layers whose name contains this")
  parser.add_argument("--impls", default="jconvt,torch",
                      help=f"comma-separated implementations, of: {', '.join(runners.KNOWN)} "
                           f"but tensorflow")
  parser.add_argument("--batch-scale", type=int, default=1)
  parser.add_argument("--calls", type=int, default=10, help="calls traced per program")
  parser.add_argument("--top", type=int, default=6, help="kernels listed per program")
  parser.add_argument("--out", default="benchmarks/results/latest-profile")
  args = parser.parse_args(argv)
  names = args.impls.split(",")
  if "tensorflow" in names:
    parser.error("--impls: tensorflow is not profiled here")
  try:
    impls = implementations(names)
  except ValueError as e:
    parser.error(str(e))
  for flag in ("batch_scale", "calls", "top"):
    if getattr(args, flag) < 1:
      parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
  layers = [dataclasses.replace(l, batch=l.batch * args.batch_scale)
            for l in SUITES[args.suite] if args.only is None or args.only in l.name]
  print(f"machine: {machine()}")
  rows = [{"layer": dataclasses.asdict(layer), "results": {}} for layer in layers]
  hlo = []
  # One implementation over all layers at a time, in ``runners.KNOWN``'s
  # order (PyTorch last): once torch.profiler has traced CUDA, jax.profiler's
  # CUPTI tracer fails in that process (jax 0.11.2, torch 2.11, an H200).
  for impl in impls:
    for layer, row in zip(layers, rows):
      try:
        res = profile_layer(impl, layer, args.calls, args.top, hlo)
      except runners.Unsupported as e:
        print(f"{layer.name} / {impl}: skipped ({e})")
        continue
      row["results"][impl] = res
      for what, r in res.items():
        print(f"{layer.name} / {impl} / {what}: wall {r['wall_ms']:.3f} ms, "
              f"traced {r['traced_us']:.1f} us")
        for name, us, n in r["top"]:
          print(f"    {us:9.1f} us  x{n:<4g} {name[:110]}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
  out.with_suffix(".md").write_text(markdown(rows, machine()))
  pathlib.Path(str(out) + ".hlo.txt").write_text("".join(hlo))
  print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')} and {out}.hlo.txt")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
