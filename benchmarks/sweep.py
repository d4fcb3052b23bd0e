"""Given algorithm plans' training steps over a grid of layers: the data for
a rule over one dimension (for instance how few filters make ``col2im``
with the tap-window gradients the faster plan on a GPU).

    python -m benchmarks.sweep --filters 1,3,8,32 --in-channels 64,256 \\
        --sizes 32,64 --kernels 4s2,3s2 --batch 16 \\
        --plans auto,reference,col2im/taps/taps [--rounds N] [--timer wall|device] [--out PATH]

Every combination of the lists is a layer (NHWC, 'same', float32); each is
timed under each plan (``benchmarks.plans.Layer.step_ms``: median ms and
temporary MiB of a jitted training step; with ``--timer device`` its
kernels' time instead). ``auto`` is the plan
``jconvt.algorithm_plan`` picks on this backend, ``reference`` the dilated
reference. Prints a line per layer and writes ``PATH.json`` after each (a
run cut short keeps what it measured) and a table ``PATH.md`` at the end.
"""

import argparse
import itertools
import pathlib

import numpy as np

from benchmarks.layers import Layer
from benchmarks.plans import positive_ints


def _kernels(text: str, parser) -> list[tuple[int, int]]:
  pairs = []
  for item in text.split(","):
    k, sep, s = item.partition("s")
    if not (sep and k.isdigit() and s.isdigit() and int(k) > 0 and int(s) > 0):
      parser.error(f"--kernels takes items such as 4s2 (kernel 4, stride 2), got {item!r}")
    pairs.append((int(k), int(s)))
  return pairs


def _plans(text: str, parser) -> list[str]:
  from benchmarks.plans import FORWARDS, INPUT_GRADIENTS, KERNEL_GRADIENTS
  plans = []
  for item in text.split(","):
    fields = item.split("/")
    if item not in ("auto", "reference") and not (
        len(fields) == 3 and fields[0] in FORWARDS + ("phase_gemm",)
        and fields[1] in INPUT_GRADIENTS and fields[2] in KERNEL_GRADIENTS):
      parser.error(f"--plans takes 'auto', 'reference' or forward/input_gradient/"
                   f"kernel_gradient (e.g. col2im/taps/taps), got {item!r}")
    plans.append(item)
  return plans


def layers(filters, in_channels, sizes, kernels, batch):
  """The grid, filters outermost (a run cut short has every size of the
  first filter counts)."""
  return [Layer(f"{b}x{n}x{n}x{c} -> {f} k{k}s{s}", b, n, c, f, k, s)
          for f, c, n, (k, s), b in itertools.product(filters, in_channels, sizes, kernels,
                                                      batch)]


def measure(layer: Layer, plans, progress=print, rounds: int = 1, timer: str = "wall") -> dict:
  """``{plan name: [ms, MiB] or error}`` for one layer, ``auto`` named by
  the plan it stands for as well. With ``rounds`` > 1 the plans are timed
  in turn that many times (interleaved, so a drift of the machine's speed
  reaches each alike) and each keeps its median; ``rounds_ms`` holds every
  round's times. ``timer``: ``"wall"`` or ``"device"`` (``plans.Layer.step_ms``)."""
  from jconvt import AlgorithmPlan
  from jconvt._algorithms import REFERENCE
  from benchmarks.plans import Layer as Timed
  timed = Timed(layer)
  resolved = {}  # plan key -> plan, once each (auto may be another name's plan)
  for name in plans:
    plan = {"auto": timed.auto, "reference": REFERENCE}.get(name)
    plan = plan if plan is not None else AlgorithmPlan(*name.split("/"))
    resolved.setdefault("/".join(plan), plan)
  times, each = {}, {}
  for _ in range(rounds):
    for key, plan in resolved.items():
      if isinstance(times.get(key), str):
        continue  # failed in an earlier round
      try:
        ms, mib, *wall = timed.step_ms(plan, timer)
      except Exception as e:  # a plan this layer cannot run
        times[key] = f"{type(e).__name__}: {e}"[:120]
        continue
      each.setdefault(key, []).append(ms)
      times[key] = [float(np.median(each[key])), mib, *wall]  # device: the wall ms last
  progress(f"{layer.name}: " + "; ".join(
      f"{k} {v[0]:.3f} ms" if isinstance(v, list) else f"{k} {v}" for k, v in times.items()))
  row = {"layer": layer.name, "auto": "/".join(timed.auto), "times": times}
  if rounds > 1:
    row["rounds_ms"] = each
  return row


def markdown(rows, machine: str, timer: str = "wall") -> str:
  """One line per layer: each plan's ms (temporary MiB), and its time over
  ``auto``'s (>1: ``auto`` is faster)."""
  plans = list(dict.fromkeys(k for row in rows for k in row["times"]))
  what = ("Median ms" if timer == "wall"
          else "The kernels' ms per step (device time in a profiler trace)")
  lines = [f"Training steps by plan over a grid ({machine}). {what} (temporary MiB); "
           "in brackets, the plan's time over `auto`'s (>1: `auto` is faster).", "",
           "| layer | auto's plan | " + " | ".join(plans) + " |",
           "|---|---|" + "---|" * len(plans)]
  for row in rows:
    auto = row["times"].get(row["auto"])
    cells = [row["layer"], row["auto"]]
    for plan in plans:
      value = row["times"].get(plan)
      if isinstance(value, list):
        ratio = f", {value[0] / auto[0]:.2f}x" if isinstance(auto, list) else ""
        cells.append(f"{value[0]:.3f} ({value[1]:.0f}{ratio})")
      else:
        cells.append("not run" if value is None else "error")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--filters", default="1,3,8,32")
  parser.add_argument("--in-channels", default="64,256")
  parser.add_argument("--sizes", default="32,64", help="input height = width")
  parser.add_argument("--kernels", default="4s2,3s2", help="kernel and stride, e.g. 4s2,3s2")
  parser.add_argument("--batch", default="16")
  parser.add_argument("--plans", default="auto,reference,col2im/taps/taps")
  parser.add_argument("--rounds", type=int, default=1,
                      help="time the plans in turn this many times, keep each one's median")
  parser.add_argument("--timer", default="wall", choices=("wall", "device"),
                      help="wall: median wall ms per step; device: the kernels' ms per step in a "
                           "profiler trace (on a GPU, without the dispatch's 0.1-0.4 ms)")
  parser.add_argument("--out", default="sweep", help="output path prefix (.json, .md)")
  args = parser.parse_args(argv)
  grid = layers(positive_ints(args.filters, "--filters", parser),
                positive_ints(args.in_channels, "--in-channels", parser),
                positive_ints(args.sizes, "--sizes", parser), _kernels(args.kernels, parser),
                positive_ints(args.batch, "--batch", parser))
  plans = _plans(args.plans, parser)
  if args.rounds < 1:
    parser.error(f"--rounds must be at least 1, got {args.rounds}")

  from benchmarks.__main__ import machine
  from benchmarks.plans import save_rows, save_table
  print(f"machine: {machine()}; {len(grid)} layers x {len(plans)} plans")
  out = pathlib.Path(args.out).with_suffix(".json")
  rows = []
  for layer in grid:
    rows.append(measure(layer, plans, rounds=args.rounds, timer=args.timer))
    save_rows(out, rows)
  save_table(out, markdown(rows, machine(), args.timer))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
