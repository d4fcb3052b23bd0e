"""A convolutional autoencoder on scikit-learn's digits, with a jconvt decoder.

Encoder: two strided ``flax.linen.Conv`` (8x8 -> 4x4 -> 2x2); decoder: two
``jconvt.Conv2DTranspose`` (2x2 -> 4x4 -> 8x8), trained with optax. Prints
the loss per epoch with a progress bar, writes a PNG of inputs next to
their reconstructions and an Orbax checkpoint of the trained params.

    python examples/train_autoencoder.py --epochs 30 --out /tmp/autoencoder
"""

import argparse
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jconvt


class Autoencoder(nn.Module):
  """(batch, 8, 8, 1) in [0, 1] -> the same shape."""

  features: int = 16

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(self.features, (3, 3), strides=2, padding="SAME")(x))      # 4x4
    h = nn.relu(nn.Conv(2 * self.features, (3, 3), strides=2, padding="SAME")(h))  # 2x2
    h = jconvt.Conv2DTranspose(self.features, 4, strides=2, padding="same",
                               activation="relu", name="up1")(h)                  # 4x4
    return jconvt.Conv2DTranspose(1, 4, strides=2, padding="same", activation="sigmoid",
                                  name="up2")(h)                                  # 8x8


def load_digits() -> np.ndarray:
  """scikit-learn's 1797 8x8 digits (shipped with the package), in [0, 1]."""
  from sklearn.datasets import load_digits as sk_load_digits
  images = sk_load_digits().images.astype(np.float32) / 16.0
  return images[..., None]


def make_step(model: nn.Module, tx: optax.GradientTransformation):
  """A pure training step ``(params, opt_state, batch) -> (params, opt_state, loss)``."""

  def loss_fn(params, batch):
    recon = model.apply({"params": params}, batch)
    return jnp.mean((recon - batch) ** 2)

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def save_reconstructions(path: pathlib.Path, inputs: np.ndarray, recon: np.ndarray) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  n = len(inputs)
  fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.1))
  for i in range(n):
    for row, img in enumerate((inputs[i], recon[i])):
      axes[row, i].imshow(img[..., 0], cmap="gray_r", vmin=0, vmax=1)
      axes[row, i].axis("off")
  axes[0, 0].set_title("input", fontsize=7, loc="left")
  axes[1, 0].set_title("reconstruction", fontsize=7, loc="left")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def save_checkpoint(directory: pathlib.Path, params) -> pathlib.Path:
  import orbax.checkpoint as ocp
  path = (directory / "checkpoint").resolve()
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, params, force=True)
  checkpointer.wait_until_finished()
  return path


def restore_checkpoint(path: pathlib.Path, like):
  import orbax.checkpoint as ocp
  return ocp.StandardCheckpointer().restore(path, like)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--limit", type=int, default=None, help="use only this many images")
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("--out", default="autoencoder_out")
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  from tqdm import tqdm

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  data = load_digits()[:args.limit]
  rng = np.random.default_rng(0)
  model = Autoencoder()
  params = model.init(jax.random.key(0), jnp.asarray(data[:1]))["params"]
  tx = optax.adam(args.lr)
  opt_state = tx.init(params)
  step = jax.jit(make_step(model, tx))
  history = []
  batches = max(1, len(data) // args.batch_size)
  for epoch in range(args.epochs):
    order = rng.permutation(len(data))
    losses = []
    for b in tqdm(range(batches), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False,
                  disable=args.no_progress):
      batch = jnp.asarray(data[order[b * args.batch_size:(b + 1) * args.batch_size]])
      params, opt_state, loss = step(params, opt_state, batch)
      losses.append(float(loss))
    history.append(float(np.mean(losses)))
    print(f"epoch {epoch + 1:3d}  loss {history[-1]:.5f}")

  sample = data[:10]
  recon = np.asarray(model.apply({"params": params}, jnp.asarray(sample)))
  png = out / "reconstructions.png"
  save_reconstructions(png, sample, recon)
  ckpt = save_checkpoint(out, params)
  restored = restore_checkpoint(ckpt, params)
  same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                  jax.tree_util.tree_leaves(restored)))
  print(f"wrote {png} and the Orbax checkpoint {ckpt} (restores identically: {same})")
  return {"history": history, "png": png, "checkpoint": ckpt, "restored_equal": same,
          "params": params}


if __name__ == "__main__":
  main()
