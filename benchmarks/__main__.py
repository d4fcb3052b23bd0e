"""Side-by-side benchmark of transposed convolutions, in one process.

    python -m benchmarks [--repeats N] [--only SUBSTRING] [--impls A,B] [--quick]

For each suite layer it times the forward pass and a training step (forward
plus gradients with respect to the input and the kernel) of jconvt (auto and
the dilated reference), flax.linen.ConvTranspose, jax.lax.conv_transpose,
TensorFlow (when installed) and PyTorch (when installed; on CUDA when JAX
runs on a GPU), or the implementations ``--impls`` names (also jconvt with
its algorithm forced: ``jconvt-phase``, ``jconvt-col2im``); reports median
times, GFLOP/s of useful work, percent of a float32 matmul roofline measured
in the same run, ratios to each peer, XLA's peak temporary memory and compile
times. Writes benchmarks/results/latest.md and latest.png.
"""

import os

# PyTorch's and TF's OpenMP threads busy-wait after their work by default,
# stealing the cores from whatever is timed next in this process: let them
# sleep instead (set before either library loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.layers import AFTER, DESCRIPTIONS, SUITES  # noqa: E402
from benchmarks import runners  # noqa: E402

COOLDOWN_S = 1.0  # pause between implementations, so one's threads idle before the next

RESULTS = pathlib.Path(__file__).parent / "results"


def median_ms(fn, repeats: int, min_time: float = 0.2) -> float:
  """Median of ``repeats`` timed calls (more while under ``min_time`` s;
  only 3 for calls over a second, such as XLA:CPU's reversed-window
  kernel gradients)."""
  times = []
  start = time.perf_counter()
  while len(times) < repeats or (time.perf_counter() - start < min_time and len(times) < 50):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
    if times[0] > 1.0:
      repeats = min(repeats, 3)
  return 1e3 * float(np.median(times))


def roofline_size() -> int:
  """The roofline matmul's size: 2048 on a CPU, 8192 on an accelerator (a
  2048 matmul leaves most of a GPU idle)."""
  import jax
  return 2048 if jax.default_backend() == "cpu" else 8192


def matmul_roofline(repeats: int) -> float:
  """GFLOP/s of a float32 matmul through XLA (the practical peak), of
  ``roofline_size()``, at XLA's default precision like the suite."""
  import jax
  import jax.numpy as jnp
  n = roofline_size()
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  ms = median_ms(lambda: jax.block_until_ready(f(a)), repeats)
  return 2 * n ** 3 / ms / 1e6


def machine() -> str:
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  dev = jax.devices()[0]
  return (f"{dev.platform} ({getattr(dev, 'device_kind', '')}), {os.cpu_count()} cores, {cpu}; "
          f"jax {jax.__version__}, python {platform.python_version()}; {allocator()}; "
          f"{xla_flags()}{precision()}")


# What --tune-malloc set (jconvt.tune_malloc), for the header.
_TUNED_MALLOC = []


def allocator() -> str:
  """The malloc settings this process runs under: the environment's (glibc
  reads them at start) and ``jconvt.tune_malloc``'s (--tune-malloc)."""
  tuned = [f"{k}={v}" for k, v in sorted(os.environ.items())
           if k == "GLIBC_TUNABLES" or k.startswith("MALLOC_") or k == "LD_PRELOAD"]
  tuned += _TUNED_MALLOC
  return "malloc: " + (", ".join(tuned) if tuned else "glibc defaults")


def xla_flags() -> str:
  """The XLA flags this process runs under: they can change which library
  runs XLA:CPU's convolutions (``docs/performance.md``, on YNNPACK and Eigen)."""
  flags = os.environ.get("XLA_FLAGS", "").strip()
  return f"XLA_FLAGS: {flags}" if flags else "XLA_FLAGS: none"


def precision() -> str:
  """Off the CPU, the float32 precision the peers run at: JAX's default
  lets XLA use TensorFloat-32 on NVIDIA GPUs, as PyTorch's cuDNN
  convolutions do by default."""
  import jax
  if jax.default_backend() == "cpu":
    return ""
  text = f"; jax_default_matmul_precision: {jax.config.jax_default_matmul_precision}"
  try:
    import torch
  except ImportError:
    return text
  return (text + f", torch allow_tf32: cudnn {torch.backends.cudnn.allow_tf32}, "
          f"matmul {torch.backends.cuda.matmul.allow_tf32}")


def implementations(names=None):
  """The implementations to time, in ``runners.KNOWN``'s order (JAX first):
  ``names`` (each known; those not installed are left out), or all
  ``runners.available()``."""
  if names is None:
    return runners.available()
  unknown = [n for n in names if n not in runners.KNOWN]
  if unknown:
    raise ValueError(f"`--impls` names unknown implementations {unknown}; "
                     f"known: {', '.join(runners.KNOWN)}.")
  installed = set(runners.available()) | set(runners.FORCED_ALGORITHMS)
  return [i for i in runners.KNOWN if i in names and i in installed]


def run(layers, repeats, impl_names, progress=print, passes=1):
  """Times every implementation on every layer, one implementation at a time
  over all layers: the JAX ones first, TensorFlow and PyTorch last, because
  once loaded their thread pools slow XLA's in the same process (measured:
  jconvt's 32->64 training step 83 ms alone, 117 ms after torch ran).

  With ``passes`` > 1 each implementation goes over all layers that many
  times and keeps, per layer, the fastest pass's median forward and step
  time (memory and compile time from the first): on a VM whose slow spells
  last seconds, one pass could time a layer up to 2.4x slower than the next.
  """
  import jax
  rows = [{"layer": layer, "results": {}} for layer in layers]
  impls = implementations(impl_names)
  # Threads idling between implementations matter on the CPU only.
  cooldown = COOLDOWN_S if jax.default_backend() == "cpu" else 0.0
  for impl in impls:
    for p in range(passes):
      for li, (layer, row) in enumerate(zip(layers, rows)):
        tag = f" pass {p + 1}/{passes}" if passes > 1 else ""
        progress(f"[{impl} {li + 1}/{len(layers)}{tag}] {layer.name} ...", end="", flush=True)
        try:
          res = runners.measure(impl, layer, repeats, median_ms)
        except runners.Unsupported as e:
          progress(f" skipped ({e})")
          continue
        progress(f" fwd {res['fwd_ms']:.1f} ms, step {res['step_ms']:.1f} ms")
        best = row["results"].setdefault(impl, res)
        for key in ("fwd_ms", "step_ms"):
          best[key] = min(best[key], res[key])
        time.sleep(cooldown)
  return rows


def compile_sweep(progress=print):
  """Compile seconds of the training step over kernel sizes and strides
  (small shapes: compile time only), jconvt auto against dilated."""
  import jax
  import jax.numpy as jnp
  import jconvt
  rows = []
  x = jnp.ones((2, 8, 8, 16))
  pairs = [(k, s) for k in (1, 3, 5, 7, 11) for s in (1, 2, 4)]
  pairs += [(16, 8), (17, 8), (32, 16), (64, 32)]  # large strides
  for k, s in pairs:
    row = {"kernel": k, "stride": s}
    for algorithm in ("auto", "dilated"):
      cfg = jconvt.ConvTransposeConfig(s, "same" if (k % 2 or s == 1) else "valid",
                                       algorithm=algorithm)
      kern = jnp.ones((k, k, 16, 16))
      step = jax.jit(jax.grad(lambda kk, x, cfg=cfg: jnp.sum(
          jconvt.conv2d_transpose({"kernel": kk}, x, cfg) ** 2), argnums=(0, 1)))
      t0 = time.perf_counter()
      step.lower(kern, x).compile()
      row[algorithm] = time.perf_counter() - t0
    progress(f"compile k{k} s{s}: auto {row['auto']:.2f} s, dilated {row['dilated']:.2f} s")
    rows.append(row)
  lines = ["", "Training-step compile time (s), 2x8x8x16 -> 16, by kernel size and stride:", "",
           "| kernel | stride | jconvt auto | dilated reference |", "|---|---|---|---|"]
  lines += [f"| {r['kernel']} | {r['stride']} | {r['auto']:.2f} | {r['dilated']:.2f} |"
            for r in rows]
  return "\n".join(lines) + "\n"


def _subject_rows(rows, subject):
  """``(layer, results, the subject's result, its forward GFLOP/s)`` per row
  that has a result of ``subject``."""
  for r in rows:
    j = r["results"].get(subject)
    if j is not None:
      yield r["layer"], r["results"], j, r["layer"].flops / j["fwd_ms"] / 1e6


def _impls(rows):
  """The implementations with a result in any row, in the order they ran."""
  return list(dict.fromkeys(impl for r in rows for impl in r["results"]))


def _mib(n):
  return "—" if n is None else f"{n / 2**20:.0f}"


def _ms(t):
  """A time in ms to three or four significant digits (a GPU's are
  fractions of a millisecond, a CPU's reversed-window gradients seconds)."""
  return f"{t:.0f}" if t >= 100 else f"{t:.1f}" if t >= 10 else f"{t:.2f}" if t >= 1 else f"{t:.3f}"


def _fmt_ratio(a, b):
  return "—" if a is None or b is None else f"{b / a:.2f}x"


def markdown(rows, roofline, header, roofline_n=2048) -> str:
  """The summary and full tables, relative to jconvt (``auto``), or to the
  first implementation that ran when jconvt did not (``--impls``)."""
  impls = _impls(rows)
  subject = "jconvt" if "jconvt" in impls or not impls else impls[0]
  lines = [header, "",
           f"Matmul roofline ({roofline_n}x{roofline_n} float32, same run, the faster of before and after the "
           f"suite): **{roofline:.0f} GFLOP/s**.", "",
           "Times are medians in ms; GFLOP/s counts useful work only (a training step, forward plus "
           f"gradients for input and kernel, is 3x the forward FLOPs); `speedup vs X` is X's time over "
           f"{subject}'s (>1: {subject} faster). Peak memory is XLA's temporary buffers of the compiled "
           "training step; compile is the training step's compile time; faults are the minor "
           "page faults of one training step, in MiB (memory the allocator took fresh from the "
           "kernel: see the README on glibc's malloc). `auto runs` names "
           "the forward, input-gradient and kernel-gradient algorithms jconvt's `auto` chose "
           "(`jconvt.algorithm_plan`).", ""]
  peers = [i for i in impls if i != subject]
  # A compact summary first: jconvt against the anchors users compare with.
  summary_peers = [p for p in ("flax", "tensorflow", "torch") if p in impls]
  header = ["layer", "auto runs (fwd / dx / dk)", f"{subject} fwd ms", "fwd GFLOP/s (% roof)",
            f"{subject} step ms", "temp MiB fwd / step (dilated ref)"]
  header += [f"fwd vs {p}" for p in summary_peers] + [f"step vs {p}" for p in summary_peers]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "---|" * len(header))
  for layer, res, j, gf in _subject_rows(rows, subject):
    ref = res.get("jconvt-dilated", {})
    cells = [layer.name, " / ".join(j["algorithms"]) if "algorithms" in j else "—",
             _ms(j["fwd_ms"]), f"{gf:.0f} ({100 * gf / roofline:.0f}%)",
             _ms(j["step_ms"]),
             f"{_mib(j.get('fwd_mem_bytes'))} / {_mib(j.get('step_mem_bytes'))} "
             f"({_mib(ref.get('fwd_mem_bytes'))} / {_mib(ref.get('step_mem_bytes'))})"]
    cells += [_fmt_ratio(j["fwd_ms"], res[p]["fwd_ms"]) if p in res else "—" for p in summary_peers]
    cells += [_fmt_ratio(j["step_ms"], res[p]["step_ms"]) if p in res else "—"
              for p in summary_peers]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Full table:", ""]
  cols = ["layer", f"{subject} fwd", "GFLOP/s", "% roof", f"{subject} step", "step GFLOP/s",
          "mem MiB", "compile s"]
  cols += [f"{p} fwd" for p in peers] + [f"{p} step" for p in peers]
  cols += [f"{p} step faults MiB" for p in impls]
  cols += [f"fwd speedup vs {p}" for p in peers] + [f"step speedup vs {p}" for p in peers]
  lines.append("| " + " | ".join(cols) + " |")
  lines.append("|" + "---|" * len(cols))
  for layer, res, j, gf in _subject_rows(rows, subject):
    sgf = 3 * layer.flops / j["step_ms"] / 1e6
    mem = j.get("step_mem_bytes")
    cells = [f"{layer.name} ({'x'.join(map(str, layer.x_shape))}->{layer.filters}, {layer.dtype})",
             _ms(j["fwd_ms"]), f"{gf:.0f}", f"{100 * gf / roofline:.0f}%",
             _ms(j["step_ms"]), f"{sgf:.0f}",
             "—" if mem is None else f"{mem / 2**20:.0f}", f"{j['compile_s']:.2f}"]
    cells += [_ms(res[p]["fwd_ms"]) if p in res else "—" for p in peers]
    cells += [_ms(res[p]["step_ms"]) if p in res else "—" for p in peers]
    cells += [f"{res[p]['step_faults_mib']:.0f}" if "step_faults_mib" in res.get(p, {}) else "—"
              for p in impls]
    cells += [_fmt_ratio(j["fwd_ms"], res[p]["fwd_ms"]) if p in res else "—" for p in peers]
    cells += [_fmt_ratio(j["step_ms"], res[p]["step_ms"]) if p in res else "—" for p in peers]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(rows, path):
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("matplotlib not installed: no plot", file=sys.stderr)
    return False
  impls = _impls(rows)
  names = [r["layer"].name for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(15, 6))
  width = 0.8 / max(len(impls), 1)
  for ax, key, title in ((axes[0], "fwd_ms", "forward"), (axes[1], "step_ms", "training step")):
    for i, impl in enumerate(impls):
      vals = [r["results"][impl][key] if impl in r["results"] else np.nan for r in rows]
      ax.bar(np.arange(len(rows)) + i * width, vals, width, label=impl)
    ax.set_yscale("log")
    ax.set_ylabel("median time, ms (log)")
    ax.set_title(f"{title}: lower is better")
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  return True


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--suite", default="main", choices=sorted(SUITES),
                      help=". ".join(f"{name}: {DESCRIPTIONS[name]}" for name in sorted(SUITES)))
  parser.add_argument("--only", default=None, help="run layers whose name contains this")
  parser.add_argument("--impls", default=None,
                      help=f"comma-separated implementations, of: {', '.join(runners.KNOWN)}")
  parser.add_argument("--quick", action="store_true", help="first 2 layers, 3 repeats")
  parser.add_argument("--passes", type=int, default=1,
                      help="time every layer this many times per implementation, keep the fastest")
  parser.add_argument("--batch-scale", type=int, default=1,
                      help="multiply every layer's batch (an accelerator needs more work than a CPU)")
  parser.add_argument("--tune-malloc", action="store_true",
                      help="call jconvt.tune_malloc() first: glibc keeps freed blocks up to 256 "
                           "MiB (default output: results/latest-malloc-tuned)")
  parser.add_argument("--after", default="", choices=("",) + AFTER,
                      help="what reads each layer's output before the loss: batch_norm, a "
                           "batch norm without scale and a ReLU (default output: "
                           "results/latest-batch-norm)")
  parser.add_argument("--out", default=None,
                      help="output path prefix (default: results/latest, results/latest-edge)")
  args = parser.parse_args(argv)
  if args.tune_malloc:
    import jconvt
    if not jconvt.tune_malloc():
      parser.error("--tune-malloc: the C library is not glibc, nothing to tune")
    _TUNED_MALLOC[:] = ["jconvt.tune_malloc() (its defaults)"]
  impl_names = None if args.impls is None else args.impls.split(",")
  try:
    implementations(impl_names)
  except ValueError as e:
    parser.error(str(e))
  if args.passes < 1:
    parser.error(f"--passes must be at least 1, got {args.passes}")
  if args.batch_scale < 1:
    parser.error(f"--batch-scale must be at least 1, got {args.batch_scale}")

  layers = [dataclasses.replace(l, batch=l.batch * args.batch_scale, after=args.after)
            for l in SUITES[args.suite] if args.only is None or args.only in l.name]
  repeats = args.repeats
  if args.quick:
    layers, repeats = layers[:2], 3
  print(f"machine: {machine()}")
  print(f"implementations: {', '.join(implementations(impl_names))}")
  roofline = matmul_roofline(repeats)
  print(f"matmul roofline: {roofline:.0f} GFLOP/s")
  rows = run(layers, repeats, impl_names, passes=args.passes)
  # Measured again after the suite, keeping the faster: one measurement in a
  # slow spell (162 against 206 GFLOP/s) put layers above 100% of it.
  roofline = max(roofline, matmul_roofline(repeats))
  print(f"matmul roofline (best of before and after): {roofline:.0f} GFLOP/s")
  header = f"### Benchmark ({time.strftime('%Y-%m-%d')}; {machine()})"
  if args.passes > 1:
    header += f"\n\nEach time is the fastest of {args.passes} passes' medians."
  if args.batch_scale > 1:
    header += f"\n\nEvery layer's batch is {args.batch_scale}x the suite's."
  if args.after:
    header += (f"\n\nEvery layer's output is read by a {args.after.replace('_', ' ')} (no "
               f"scale, statistics over the batch and the image) and a ReLU before the loss, in "
               f"every implementation: times include it, GFLOP/s count the layer's work only.")
  if args.suite != "main":
    header += (f"\n\nThe {args.suite!r} suite (`benchmarks.layers.{args.suite.upper()}`): "
               f"{DESCRIPTIONS[args.suite]}.")
  table = markdown(rows, roofline, header, roofline_size())
  if not args.quick and args.suite == "main":
    table += compile_sweep()
  default_name = "latest" if args.suite == "main" else f"latest-{args.suite}"
  if args.after:
    default_name += "-" + args.after.replace("_", "-")
  if args.tune_malloc:
    default_name += "-malloc-tuned"
  out = pathlib.Path(args.out or RESULTS / default_name)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".md").write_text(table)
  out.with_suffix(".json").write_text(json.dumps(
      {"machine": machine(), "roofline_gflops": roofline,
       "rows": [{"layer": dataclasses.asdict(r["layer"]), "results": r["results"]} for r in rows]},
      indent=1))
  print()
  print(table)
  if plot(rows, out.with_suffix(".png")):
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
