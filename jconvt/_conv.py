"""The pure transposed convolution: validation, dispatch, bias, activation."""

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jconvt import _activations
from jconvt import _shapes
from jconvt._algorithms import channels as _channels
from jconvt._algorithms import spatial as _spatial
from jconvt._algorithms import AlgorithmPlan
from jconvt._algorithms import dispatch as _dispatch
from jconvt._algorithms import plan as _plan
from jconvt._config import FLOATING as _FLOATING
from jconvt._config import ConvTransposeConfig
from jconvt._config import floating_dtype as _floating_dtype
from jconvt._onednn import spec_axes as _spec_axes


def _check_shapes(x_shape, kernel_shape, config, bias_shape=None) -> None:
  x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
  if len(x_shape) != 4:
    layout = "(batch, height, width, channels)" if config.channels_last else (
        "(batch, channels, height, width)")
    raise ValueError(
        f"`x` must have rank 4 {layout} for data_format="
        f"{config.data_format!r}, got shape {x_shape}; wrap the call in "
        f"jax.vmap for extra leading dimensions.")
  if len(kernel_shape) != 4:
    raise ValueError(
        f"`kernel` must have rank 4 (kernel_h, kernel_w, filters, "
        f"in_channels) as in TensorFlow, got shape {kernel_shape}.")
  if kernel_shape[0] < 1 or kernel_shape[1] < 1:
    raise ValueError(
        f"`kernel` spatial size must be >= 1, got shape {kernel_shape}.")
  in_channels = _channels(x_shape, config)
  if kernel_shape[3] != in_channels:
    raise ValueError(
        f"`kernel` in_channels (={kernel_shape[3]}, its last axis) must equal "
        f"the input's channels (={in_channels}) for x of shape {x_shape} and "
        f"data_format={config.data_format!r}.")
  if bias_shape is not None and tuple(bias_shape) != (kernel_shape[2],):
    raise ValueError(
        f"`bias` must have shape (filters,) = ({kernel_shape[2]},), got "
        f"{tuple(bias_shape)}.")
  if config.padding == "same":
    for axis in range(2):
      _shapes.check_same_padding_is_invertible(
          kernel_shape[axis], config.strides[axis],
          config.dilation_rate[axis],
          None if config.output_padding is None else config.output_padding[axis],
          axis)


def _geometry(x_shape, kernel_shape, config):
  return _shapes.output_spatial_shape(
      _spatial(x_shape, config), kernel_shape[:2], config.strides,
      config.padding, config.output_padding, config.dilation_rate)


def _layout_shape(batch, filters, geometry, config):
  (h, _), (w, _) = geometry
  return (batch, h, w, filters) if config.channels_last else (batch, filters, h, w)


def output_shape(
    x_shape: Sequence[int], kernel_shape: Sequence[int],
    config: ConvTransposeConfig) -> tuple[int, int, int, int]:
  """The output shape TensorFlow would give, computed without running.

  Args:
    x_shape: ``(batch, height, width, in_channels)`` for ``channels_last``,
      ``(batch, in_channels, height, width)`` for ``channels_first``.
    kernel_shape: ``(kh, kw, filters, in_channels)``.
    config: the convolution's settings.

  Returns:
    The output shape, in the input's data format.

  Raises:
    ValueError: for inconsistent shapes.

  >>> output_shape((8, 4, 4, 16), (3, 3, 32, 16), ConvTransposeConfig(2, "same"))
  (8, 8, 8, 32)
  """
  _check_config(config)
  _check_shapes(x_shape, kernel_shape, config)
  return _layout_shape(x_shape[0], kernel_shape[2],
                       _geometry(x_shape, kernel_shape, config), config)


def _empty(x_shape, kernel_shape, out_shape) -> bool:
  """Nothing to sum, or nowhere to put it (an empty output, which "same"
  gives e.g. with output_padding 0 and an even kernel on a one-pixel
  input): XLA would be asked for zero-sized windows. The output (bias
  aside) and every gradient through it are then exactly zero."""
  return 0 in tuple(x_shape) or 0 in tuple(kernel_shape) or 0 in tuple(out_shape)


_PLATFORMS = ("cpu", "gpu", "cuda", "rocm", "tpu")


def _default_platform() -> str:
  """JAX's default backend as ``lax.platform_dependent`` names it: a GPU is
  ``"cuda"`` or ``"rocm"`` by its runtime (JAX calls both ``"gpu"``); any
  other plugin keeps its name (``auto`` runs the reference there)."""
  backend = jax.default_backend()
  if backend != "gpu":
    return backend
  version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
  return "rocm" if "rocm" in version else "cuda"


def algorithm_plan(
    x_shape: Sequence[int], kernel_shape: Sequence[int], config: ConvTransposeConfig,
    dtype=jnp.float32, platform: str | None = None) -> AlgorithmPlan:
  """Which algorithms ``conv2d_transpose`` runs for this layer, without running.

  ``algorithm="auto"`` picks the forward pass and the two gradients per
  platform, shape and dtype by measured rules (``docs/performance.md``); this
  reports the choice, e.g. to see why a layer is slow or to pin a forward
  with ``config.replace(algorithm=...)``.

  Args:
    x_shape: ``(batch, height, width, in_channels)`` for ``channels_last``,
      ``(batch, in_channels, height, width)`` for ``channels_first``.
    kernel_shape: ``(kh, kw, filters, in_channels)``.
    config: the convolution's settings.
    dtype: the input's floating dtype (the rules differ for bfloat16).
    platform: ``"cpu"``, ``"gpu"`` (NVIDIA's, as ``"cuda"``), ``"cuda"``,
      ``"rocm"`` or ``"tpu"``; ``None`` for JAX's default backend (whatever
      its name). ``auto`` has rules for CPU and CUDA; elsewhere it runs the
      dilated reference.

  Returns:
    An ``AlgorithmPlan(forward, input_gradient, kernel_gradient)`` of
    algorithm names (its docstring lists them).

  Raises:
    ValueError, TypeError: for inconsistent shapes, a non-floating dtype or
      an unknown platform.

  >>> algorithm_plan((16, 16, 16, 256), (4, 4, 128, 256),
  ...                ConvTransposeConfig(2, "same"), platform="cpu")
  AlgorithmPlan(forward='phase', input_gradient='conv', kernel_gradient='conv')
  """
  _check_config(config)
  _check_shapes(x_shape, kernel_shape, config)
  dtype = _floating_dtype(dtype, "dtype")
  if platform is None:
    platform = _default_platform()
  elif platform not in _PLATFORMS:
    raise ValueError(f"`platform` must be one of {_PLATFORMS} or None, got {platform!r}.")
  elif platform == "gpu":
    platform = "cuda"
  geometry = _geometry(x_shape, kernel_shape, config)
  if _empty(x_shape, kernel_shape, _layout_shape(x_shape[0], kernel_shape[2], geometry, config)):
    return AlgorithmPlan("zeros", "zeros", "zeros")
  return _plan(config, tuple(x_shape), tuple(kernel_shape), dtype, geometry, platform)


def _check_config(config) -> None:
  if not isinstance(config, ConvTransposeConfig):
    raise TypeError(
        f"`config` must be a jconvt.ConvTransposeConfig, got "
        f"{type(config).__name__}.")


def _check_floating(name: str, value) -> None:
  dtype = getattr(value, "dtype", None)
  if dtype is None:
    raise TypeError(
        f"`{name}` must be an array with a floating dtype, got "
        f"{type(value).__name__}.")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"`{name}` must have a floating dtype {_FLOATING}, got {np.dtype(dtype)}.")


def _unpack_params(params):
  if not isinstance(params, Mapping):
    raise TypeError(
        f"`params` must be a mapping {{'kernel': ..., 'bias': ...}}, got "
        f"{type(params).__name__}.")
  unknown = set(params) - {"kernel", "bias"}
  if unknown:
    raise ValueError(
        f"`params` has unknown keys {sorted(unknown)}; expected 'kernel' and "
        f"optionally 'bias'.")
  if "kernel" not in params:
    raise ValueError("`params` must contain 'kernel' (kh, kw, filters, "
                     "in_channels).")
  return params["kernel"], params.get("bias")


def _on_auto_axes(fn, x, kernel, config, geometry):
  """``fn(x, kernel, config, geometry)``, with any explicitly sharded mesh
  axes of ``x`` or ``kernel`` (JAX's sharding in types, the default of
  ``jax.make_mesh``) made automatic inside (``jax.sharding.auto_axes``): the
  algorithms' reshapes, and JAX's own transpose of a convolution, need output
  shardings that explicit axes would make every operation state. The
  output is sharded like ``x`` on its batch and spatial axes and like the
  kernel's filters on its channels, as ``lax.conv_general_dilated`` shards a
  convolution's output."""
  x_sharding, k_sharding = jax.typeof(x).sharding, jax.typeof(kernel).sharding
  mesh = x_sharding.mesh if x_sharding.mesh.explicit_axes else k_sharding.mesh
  if not mesh.explicit_axes:
    return fn(x, kernel, config, geometry)
  x_spec = tuple(x_sharding.spec) + (None,) * (4 - len(x_sharding.spec))
  filters = (tuple(k_sharding.spec) + (None,) * 4)[2] if k_sharding.mesh == mesh else None
  batch, (h, w) = x_spec[0], _spatial(x_spec, config)
  if set(_spec_axes(filters)) & {a for d in (batch, h, w) for a in _spec_axes(d)}:
    filters = None  # a mesh axis shards one dimension at most
  spec = (batch, h, w, filters) if config.channels_last else (batch, filters, h, w)
  return jax.sharding.auto_axes(
      lambda x, kernel: fn(x, kernel, config, geometry), axes=mesh.explicit_axes,
      out_sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)))(
          x, kernel)


def _add_bias(y, b, config):
  """``y + b``, ``b`` (filters,) broadcast over ``y``'s channels axis.

  For 16-bit floats the sum is formed in float32 and rounded once, the
  value XLA computes for a 16-bit add, so the forward is unchanged, but the
  bias gradient, which transposes the broadcast into a sum of ``dy`` over
  every output pixel, then sums in float32. In the 16-bit type XLA:CPU
  accumulates in it: bfloat16 sums of 8 x 32 x 32 standard normal
  cotangents came out -8.9 for -25.1 and -55.3 for -61.1 (TF's
  ``BiasAddGrad`` gave the same -55.3)."""
  b = b.reshape((1, 1, 1, -1) if config.channels_last else (1, -1, 1, 1))
  if jnp.finfo(y.dtype).bits >= 32:
    return y + b
  return (y.astype(jnp.float32) + b.astype(jnp.float32)).astype(y.dtype)


def conv2d_transpose(params: Mapping[str, jax.Array], x: jax.Array,
                     config: ConvTransposeConfig = ConvTransposeConfig()
                     ) -> jax.Array:
  """TensorFlow's 2-D transposed convolution ("deconvolution"), pure.

  Equal in shape and values to ``tf.keras.layers.Conv2DTranspose`` /
  ``tf.nn.conv2d_transpose`` with the same weights, for every configuration
  TF accepts (see ``ConvTransposeConfig`` for the few it refuses that jconvt
  defines). Works under ``jax.jit`` (the config is static), ``jax.grad``,
  ``jax.vmap`` and with sharded inputs.

  Args:
    params: ``{"kernel": (kh, kw, filters, in_channels), "bias": (filters,)}``;
      ``"bias"`` may be missing or ``None``. Cast to the input's dtype.
    x: ``(batch, height, width, in_channels)`` for ``channels_last``, or
      ``(batch, in_channels, height, width)`` for ``channels_first``; any
      floating dtype.
    config: the static settings.

  Returns:
    ``(batch, out_h, out_w, filters)`` (or NCHW), with
    ``out_h, out_w`` from ``jconvt.output_shape``, in the input's dtype (or
    ``config.preferred_element_type``).

  Raises:
    ValueError, TypeError: eagerly, at trace time, for bad shapes, dtypes or
      params.

  >>> import jax.numpy as jnp
  >>> params = {"kernel": jnp.ones((3, 3, 4, 2)), "bias": jnp.zeros(4)}
  >>> y = conv2d_transpose(params, jnp.ones((1, 5, 5, 2)),
  ...                      ConvTransposeConfig(strides=2, padding="same"))
  >>> y.shape
  (1, 10, 10, 4)
  """
  _check_config(config)
  kernel, bias = _unpack_params(params)
  _check_floating("x", x)
  _check_floating("kernel", kernel)
  if bias is not None:
    _check_floating("bias", bias)
  _check_shapes(x.shape, kernel.shape, config,
                None if bias is None else bias.shape)
  geometry = _geometry(x.shape, kernel.shape, config)
  out_shape = _layout_shape(x.shape[0], kernel.shape[2], geometry, config)
  out_dtype = config.preferred_element_type or x.dtype
  kernel = jnp.asarray(kernel).astype(x.dtype)

  if _empty(x.shape, kernel.shape, out_shape):
    y = jnp.zeros(out_shape, out_dtype)
  else:
    y = _on_auto_axes(_dispatch, x, kernel, config, geometry)
    y = y.astype(out_dtype)

  if bias is not None:
    y = _add_bias(y, jnp.asarray(bias).astype(out_dtype), config)
  act = _activations.get_activation(config.activation)
  return y if act is None else act(y)
