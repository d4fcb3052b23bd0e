"""Which algorithm plan trains each suite layer fastest on this backend: the
measurements behind ``auto``'s rules (calibration for a new machine).

    python -m benchmarks.plans [--batch-scale 8,1] [--only SUBSTRING] [--out PATH]

``benchmarks/gpu_check.sh`` runs it on a GPU.

For every suite layer (each batch scale in turn) it times whole training
steps (forward, input and kernel gradients; jitted, median ms) of the
dilated reference and of candidate ``jconvt.AlgorithmPlan``s through the
fast path's custom gradient, searching one field at a time: the kernel gradient
first (with the reference's forward and input gradient), then the input
gradient, then the forward. It also times the plan ``auto`` picks here.
Prints a line per layer and writes every time to ``PATH.json`` after each
layer (so a run cut short keeps what it measured), and a table to
``PATH.md`` at the end.
"""

import argparse
import dataclasses
import json
import pathlib

import numpy as np

from benchmarks.layers import SUITE

FORWARDS = ("dilated", "phase", "col2im")
INPUT_GRADIENTS = ("autodiff", "conv", "phase_gemm", "taps")
KERNEL_GRADIENTS = ("conv", "phase_gemm", "taps")


class Layer:
  """One suite layer's data and its training step under any plan."""

  def __init__(self, layer):
    import jax.numpy as jnp
    import jconvt
    from jconvt import _conv
    from benchmarks.runners import _config, _data, _out_shape

    dtype = jnp.dtype(layer.dtype)
    x, kernel = _data(layer)
    self.x, self.kernel = jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)
    self.target = jnp.asarray(
        np.random.default_rng(1).standard_normal(_out_shape(layer)), dtype)
    self.config = _config(layer)
    self.geometry = _conv._geometry(self.x.shape, self.kernel.shape, self.config)
    self.auto = jconvt.algorithm_plan(self.x.shape, self.kernel.shape, self.config, dtype)

  def step_ms(self, plan, timer: str = "wall"):
    """Median ms (the suite's ``median_ms``, 7 calls or 0.1 s) and temporary
    MiB of a training step running ``plan``. ``timer="device"``: the
    milliseconds per call of its kernels (a GPU's) or outermost XLA
    operations (a CPU's) in a trace of 10 calls (``benchmarks.profile``),
    steadier on a GPU than the wall clock of a sub-millisecond step, which
    adds the dispatch's 0.1-0.4 ms; it leaves out the gaps between kernels.
    The wall-clock median then follows as a third value."""
    import jax
    import jax.numpy as jnp
    from jconvt import _algorithms
    from benchmarks.__main__ import median_ms
    from benchmarks.runners import _temp_bytes

    on_cpu = jax.default_backend() == "cpu"  # the gradients' Eigen route (XLA:CPU)

    def loss(k, x, t):
      y = _algorithms._fast(x, k, self.config, self.geometry, lambda *_: plan, on_cpu)
      return 0.5 * jnp.sum((y.astype(jnp.float32) - t.astype(jnp.float32)) ** 2)

    args = (self.kernel, self.x, self.target)
    step = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile()
    jax.block_until_ready(step(*args))
    temp = _temp_bytes(step)
    call = lambda: jax.block_until_ready(step(*args))  # noqa: E731
    mib = None if temp is None else temp / 2 ** 20
    wall = median_ms(call, 7, min_time=0.1)
    if timer == "device":
      from benchmarks.profile import kernel_table, trace_jax
      return kernel_table(trace_jax(call, 10), 10, 0)[0] / 1e3, mib, wall
    return wall, mib


def search(layer: Layer, progress=print):
  """Times the reference, a one-field-at-a-time search and ``auto``'s plan;
  returns ``{plan string: (ms, MiB) or error}`` and the best plan."""
  from jconvt import AlgorithmPlan
  from jconvt._algorithms import REFERENCE
  times = {}

  def timed(plan):
    key = "/".join(plan)
    if key not in times:
      try:
        times[key] = layer.step_ms(plan)
      except Exception as e:  # a plan this layer cannot run (e.g. taps at stride 1)
        times[key] = f"{type(e).__name__}: {e}"[:120]
    value = times[key]
    return value[0] if isinstance(value, tuple) else float("inf")

  def best(plans):
    return min(plans, key=timed)

  reference = timed(REFERENCE)
  dk = best([AlgorithmPlan("dilated", "autodiff", g) for g in KERNEL_GRADIENTS]).kernel_gradient
  dx = best([AlgorithmPlan("dilated", g, dk) for g in INPUT_GRADIENTS]).input_gradient
  winner = best([REFERENCE] + [AlgorithmPlan(f, dx, dk) for f in FORWARDS])
  timed(layer.auto)
  progress(f"reference {reference:.3f} ms; best {'/'.join(winner)} {timed(winner):.3f} ms "
           f"({reference / timed(winner):.2f}x); auto {'/'.join(layer.auto)} "
           f"{timed(layer.auto):.3f} ms ({reference / timed(layer.auto):.2f}x)")
  return times, winner


def measure(layer, batch_scale: int = 1, progress=print) -> dict:
  """One table row: ``search`` over ``layer`` (a ``benchmarks.layers.Layer``,
  its batch already scaled), with ``auto``'s plan here and the winner."""
  timed = Layer(layer)
  times, winner = search(timed, progress)
  return {"layer": dataclasses.asdict(layer), "batch_scale": batch_scale,
          "auto": list(timed.auto), "winner": list(winner), "times": times}


def markdown(rows, machine: str, auto=None) -> str:
  """A table per run: the reference's step, the plan ``auto`` picks (its
  rows' own, or ``auto(row)``'s when given: the rules as they are now) and
  the fastest plan found, with their ms and temporary MiB."""
  lines = [f"Training steps by algorithm plan ({machine}).", "",
           "Median ms (temporary MiB of the compiled step); `x ref` is the reference's time over "
           "the plan's (>1: faster than the dilated reference). Plans are `forward/input "
           "gradient/kernel gradient`.", "",
           "| batch | layer | reference ms | auto's plan | auto ms (x ref) | fastest plan | "
           "fastest ms (x ref) |", "|---|---|---|---|---|---|---|"]
  for row in rows:
    times = row["times"]
    ref_ms, ref_mib = times["dilated/autodiff/autodiff"]
    plan = "/".join(auto(row) if auto is not None else row["auto"])
    winner = "/".join(row["winner"])
    cells = [f"x{row['batch_scale']} ({row['layer']['batch']})", row["layer"]["name"],
             f"{ref_ms:.3f} ({ref_mib:.0f})"]
    for name in (plan, winner):
      value = times.get(name)
      if isinstance(value, list | tuple):
        cells += [name, f"{value[0]:.3f} ({value[1]:.0f}), {ref_ms / value[0]:.2f}x"]
      else:
        cells += [name, "not timed"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def positive_ints(text: str, name: str, parser) -> list[int]:
  """The comma-separated integers of option ``name``, each at least 1; else
  ``parser.error`` saying which option and what it got."""
  try:
    values = [int(v) for v in text.split(",")]
  except ValueError:
    parser.error(f"{name} must be comma-separated integers, got {text!r}")
  if min(values) < 1:
    parser.error(f"{name} must be integers of at least 1, got {text!r}")
  return values


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch-scale", default="1",
                      help="comma-separated multipliers of every layer's batch, run in turn")
  parser.add_argument("--only", default=None, help="layers whose name contains this")
  parser.add_argument("--out", default="plans", help="output path prefix (.json)")
  args = parser.parse_args(argv)
  scales = positive_ints(args.batch_scale, "--batch-scale", parser)

  from benchmarks.__main__ import machine
  print(f"machine: {machine()}")
  out = pathlib.Path(args.out).with_suffix(".json")
  rows = []
  for scale in scales:
    for suite_layer in SUITE:
      if args.only is not None and args.only not in suite_layer.name:
        continue
      layer = dataclasses.replace(suite_layer, batch=suite_layer.batch * scale)
      print(f"[x{scale}] {layer.name}: ", end="", flush=True)
      rows.append(measure(layer, scale))
      save_rows(out, rows)
  save_table(out, markdown(rows, machine()))
  return 0


def save_rows(out: pathlib.Path, rows) -> None:
  """``rows`` with this machine and backend as ``out`` (.json): written
  after every layer, so a run cut short keeps what it measured."""
  import jax
  from benchmarks.__main__ import machine
  out.write_text(json.dumps({"machine": machine(), "backend": jax.default_backend(),
                             "rows": rows}, indent=1))


def save_table(out: pathlib.Path, table: str) -> None:
  """Writes ``table`` beside ``out`` (.md) and prints it."""
  out.with_suffix(".md").write_text(table)
  print()
  print(table)
  print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
  raise SystemExit(main())
