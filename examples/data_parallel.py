"""The autoencoder's training step, data-parallel over every device.

The batch is sharded over a 1-D ``jax.sharding.Mesh`` (axis ``"data"``) and
the params and optimizer state are replicated; ``jax.jit`` inserts the
gradient all-reduce. The same steps are run on one device and the results
compared. On one CPU, simulate 8 devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/data_parallel.py
    python examples/data_parallel.py --simulate-devices 8      # the same

On a multi-GPU or TPU host the same code uses every accelerator as is; across
hosts, call ``jax.distributed.initialize()`` first on every host and build
the mesh from ``jax.devices()`` (all hosts' devices), feeding each host its
part of the batch (``jax.make_array_from_process_local_data``).
"""

import os
import sys

if __name__ == "__main__" and "--simulate-devices" in sys.argv:  # before jax starts
  count = sys.argv[sys.argv.index("--simulate-devices") + 1]
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={count}")

import argparse  # noqa: E402
import pathlib  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from train_autoencoder import Autoencoder, load_digits, make_step  # noqa: E402


def train(params, data, steps, batch_size, step_fn, put_batch):
  opt_state = TX.init(params)
  losses = []
  for i in range(steps):
    start = (i * batch_size) % (len(data) - batch_size + 1)
    batch = put_batch(data[start:start + batch_size])
    params, opt_state, loss = step_fn(params, opt_state, batch)
    losses.append(float(loss))
  return params, losses


TX = optax.adam(3e-3)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch-size", type=int, default=64, help="global batch, split over devices")
  parser.add_argument("--simulate-devices", type=int, default=None,
                      help="fake this many CPU devices (set before jax starts)")
  args = parser.parse_args(argv)

  devices = jax.devices()
  if args.batch_size % len(devices):
    raise SystemExit(f"--batch-size {args.batch_size} must divide over {len(devices)} devices")
  mesh = Mesh(np.array(devices), ("data",))
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P("data"))
  print(f"{len(devices)} devices ({devices[0].platform}); mesh {dict(mesh.shape)}; "
        f"per-device batch {args.batch_size // len(devices)}")

  data = load_digits()
  model = Autoencoder()
  params = model.init(jax.random.key(0), jnp.asarray(data[:1]))["params"]
  step = make_step(model, TX)

  parallel_step = jax.jit(step, in_shardings=(replicated, replicated, sharded),
                          out_shardings=(replicated, replicated, replicated))
  p_par, l_par = train(jax.device_put(params, replicated), data, args.steps, args.batch_size,
                       parallel_step, lambda b: jax.device_put(b, sharded))
  single = devices[0]
  p_one, l_one = train(jax.device_put(params, single), data, args.steps, args.batch_size,
                       jax.jit(step), lambda b: jax.device_put(b, single))

  max_param_diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
      jax.tree_util.tree_leaves(p_par), jax.tree_util.tree_leaves(p_one)))
  max_loss_diff = float(np.max(np.abs(np.array(l_par) - np.array(l_one))))
  print(f"loss {l_par[0]:.5f} -> {l_par[-1]:.5f} (data-parallel), "
        f"{l_one[0]:.5f} -> {l_one[-1]:.5f} (one device)")
  print(f"max |difference|: losses {max_loss_diff:.2e}, params {max_param_diff:.2e}")
  kernel = p_par["up1"]["kernel"]
  print(f"decoder kernel sharding: {kernel.sharding}")
  return {"devices": len(devices), "losses_parallel": l_par, "losses_single": l_one,
          "max_param_diff": max_param_diff, "max_loss_diff": max_loss_diff}


if __name__ == "__main__":
  main()
