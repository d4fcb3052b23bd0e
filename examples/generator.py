"""A DCGAN-style generator stack built from jconvt layers.

latent (z) -> Dense -> 4x4x4f -> Conv2DTranspose k4 s2 'same' -> 8x8x2f
-> Conv2DTranspose k3 s2 'same' output_padding=1 -> 16x16xf
-> Conv2DTranspose k4 s2 'same' -> 32x32x1 (tanh)

Shows Flax composition, ``output_padding`` and both data formats (the
``channels_first`` stack gives the same images from the same weights). So
that the sample grid shows something recognisable without a GAN's long
training, the generator is fitted (a few hundred optax steps, as in
"generative latent optimisation") to map fixed latents to scikit-learn's
digits upsampled to 32x32; the grid then shows the generator's own outputs.

    python examples/generator.py --steps 300 --out /tmp/generator
"""

import argparse
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jconvt


class Generator(nn.Module):
  features: int = 32
  data_format: str = "channels_last"

  @nn.compact
  def __call__(self, z, *, verbose: bool = False):
    f, fmt = self.features, self.data_format
    h = nn.Dense(4 * 4 * 4 * f)(z).reshape(z.shape[0], 4, 4, 4 * f)
    if fmt == "channels_first":
      h = jnp.transpose(h, (0, 3, 1, 2))
    blocks = [
        jconvt.Conv2DTranspose(2 * f, 4, strides=2, padding="same", activation="relu",
                               data_format=fmt, name="up8"),
        jconvt.Conv2DTranspose(f, 3, strides=2, padding="same", output_padding=1,
                               activation="relu", data_format=fmt, name="up16"),
        jconvt.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh",
                               data_format=fmt, name="up32"),
    ]
    for block in blocks:
      before = h.shape
      h = block(h)
      if verbose:
        print(f"  {block.name:5s} {str(before):22s} -> {h.shape}")
    return h


def target_images(count: int) -> np.ndarray:
  """``count`` scikit-learn digits upsampled to 32x32, in [-1, 1]."""
  from sklearn.datasets import load_digits
  digits = load_digits().images[:count].astype(np.float32) / 16.0
  big = jax.image.resize(jnp.asarray(digits), (count, 32, 32), "cubic")
  return np.clip(np.asarray(big), 0, 1)[..., None] * 2 - 1


def save_grid(path: pathlib.Path, images: np.ndarray, columns: int = 8) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = int(np.ceil(len(images) / columns))
  fig, axes = plt.subplots(rows, columns, figsize=(columns, rows))
  for ax, img in zip(np.ravel(axes), images):
    ax.imshow(img[..., 0], cmap="gray_r", vmin=-1, vmax=1)
  for ax in np.ravel(axes):
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=70)
  plt.close(fig)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", type=int, default=16)
  parser.add_argument("--latent", type=int, default=32)
  parser.add_argument("--features", type=int, default=32)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--out", default="generator_out")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)

  z = jax.random.normal(jax.random.key(0), (args.samples, args.latent))
  model = Generator(args.features)
  print("generator blocks (channels_last):")
  params = model.init(jax.random.key(1), z)["params"]
  model.apply({"params": params}, z, verbose=True)

  targets = jnp.asarray(target_images(args.samples))
  tx = optax.adam(2e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean((model.apply({"params": p}, z) - targets) ** 2))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for i in range(args.steps):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
    if (i + 1) % max(1, args.steps // 5) == 0:
      print(f"step {i + 1:4d}  loss {losses[-1]:.4f}")

  images = np.asarray(model.apply({"params": params}, z))
  nchw = Generator(args.features, data_format="channels_first")
  images_nchw = np.asarray(nchw.apply({"params": params}, z))
  max_diff = float(np.abs(images_nchw.transpose(0, 2, 3, 1) - images).max())
  print(f"channels_first stack, same weights: output {images_nchw.shape}, "
        f"max |difference| after transposing = {max_diff:.2e}")
  png = out / "samples.png"
  save_grid(png, images)
  print(f"wrote {png}")
  return {"images": images, "losses": losses, "png": png, "nchw_max_diff": max_diff}


if __name__ == "__main__":
  main()
