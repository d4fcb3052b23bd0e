"""The main job: a short end-to-end demonstration of jconvt (``make demo``).

Builds a TF-style transposed convolution, checks it against the independent
NumPy reference, trains it for a few optax steps, and prints shapes and
timings of the forward pass and the training step for each algorithm.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jconvt


def _median_ms(fn, *args, repeats):
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(times))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=16, help="input height and width")
  parser.add_argument("--in-channels", type=int, default=64)
  parser.add_argument("--filters", type=int, default=32)
  parser.add_argument("--kernel", type=int, default=4)
  parser.add_argument("--stride", type=int, default=2)
  parser.add_argument("--padding", default="same")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)

  cfg = jconvt.ConvTransposeConfig(strides=args.stride, padding=args.padding,
                                   activation="relu")
  rng = np.random.default_rng(0)
  x = rng.standard_normal((args.batch, args.size, args.size, args.in_channels)).astype(np.float32)
  kernel_shape = (args.kernel, args.kernel, args.filters, args.in_channels)
  params = {
      "kernel": jnp.asarray(rng.standard_normal(kernel_shape) / np.sqrt(np.prod(kernel_shape[:3])),
                            jnp.float32),
      "bias": jnp.zeros(args.filters, jnp.float32),
  }
  out_shape = jconvt.output_shape(x.shape, kernel_shape, cfg)
  print(f"jconvt {jconvt.__version__} on {jax.devices()[0].platform}: {cfg}")
  print(f"input  x      {x.shape}  (batch, height, width, in_channels)")
  print(f"kernel        {kernel_shape}  (kh, kw, filters, in_channels), TF layout")
  print(f"output y      {out_shape}")

  y = jax.jit(jconvt.conv2d_transpose)(params, jnp.asarray(x), cfg)
  with jax.default_matmul_precision("float32"):
    y32 = jax.jit(jconvt.conv2d_transpose)(params, jnp.asarray(x), cfg)
  ref = jconvt.reference_conv2d_transpose(x, params["kernel"], params["bias"], cfg)
  err = float(np.max(np.abs(np.asarray(y32, np.float64) - ref)))
  print(f"max |jconvt - NumPy reference| = {err:.2e}")
  if y.shape != out_shape or err > 1e-4 * max(1.0, float(np.abs(ref).max())):
    print("MISMATCH against the NumPy reference")
    return 1

  # A few optax steps fitting the layer to a target: the loss must fall.
  target = jnp.asarray(rng.standard_normal(out_shape), jnp.float32) * 0.1
  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state, x):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean((jconvt.conv2d_transpose(p, x, cfg) - target) ** 2))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  p, state, losses = params, opt.init(params), []
  for _ in range(20):
    p, state, loss = step(p, state, jnp.asarray(x))
    losses.append(float(loss))
  print(f"optax adam, 20 steps: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
  if not losses[-1] < losses[0]:
    print("training did not reduce the loss")
    return 1

  flops = 2 * x.size * args.filters * args.kernel ** 2
  print(f"\n{'algorithm':10s} {'forward ms':>11s} {'GFLOP/s':>8s} {'train step ms':>14s}")
  xj = jnp.asarray(x)
  for algorithm in ("dilated", "phase", "auto"):
    c = cfg.replace(algorithm=algorithm)
    fwd = jax.jit(lambda p, x, c=c: jconvt.conv2d_transpose(p, x, c))
    grad = jax.jit(jax.grad(lambda p, x, c=c: jnp.sum(jconvt.conv2d_transpose(p, x, c) ** 2),
                            argnums=(0, 1)))
    t_f = _median_ms(fwd, params, xj, repeats=args.repeats)
    t_g = _median_ms(grad, params, xj, repeats=args.repeats)
    print(f"{algorithm:10s} {t_f:11.2f} {flops / t_f / 1e6:8.1f} {t_g:14.2f}")
  print("\nOK")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
