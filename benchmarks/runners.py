"""One runner per implementation: builds the forward pass and a training step
(gradients with respect to the input and the kernel) for a suite layer."""

import importlib.util
import os
import resource
import time

import numpy as np

from benchmarks.layers import Layer


class Unsupported(Exception):
  """This implementation cannot run this layer (dtype, layout, ...)."""


# jconvt with its algorithm forced (``--impls`` names them): on GPU, where
# ``auto`` runs the dilated reference, they show what the fast paths would do.
FORCED_ALGORITHMS = {"jconvt-dilated": "dilated", "jconvt-phase": "phase",
                     "jconvt-col2im": "col2im"}
KNOWN = ("jconvt", "jconvt-dilated", "jconvt-phase", "jconvt-col2im", "flax",
         "lax.conv_transpose", "tensorflow", "torch")


def available():
  """The implementations a plain run times: every one installed, less the
  forced fast paths (name those with ``--impls``)."""
  impls = ["jconvt", "jconvt-dilated", "flax", "lax.conv_transpose"]
  if importlib.util.find_spec("tensorflow") is not None:
    impls.append("tensorflow")
  if importlib.util.find_spec("torch") is not None:
    impls.append("torch")
  return impls


def _data(layer: Layer):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(layer.x_shape).astype(np.float32)
  kernel = (rng.standard_normal(layer.kernel_shape)
            / np.sqrt(layer.kernel ** 2 * layer.in_channels)).astype(np.float32)
  return x, kernel


def _config(layer: Layer, algorithm: str = "auto"):
  """The layer's ``jconvt.ConvTransposeConfig``."""
  import jconvt
  return jconvt.ConvTransposeConfig(layer.stride, layer.padding, data_format=layer.data_format,
                                    algorithm=algorithm)


def _out_shape(layer: Layer):
  import jconvt
  return jconvt.output_shape(layer.x_shape, layer.kernel_shape, _config(layer))


def page_faults_mib(fn, calls: int = 5, max_s: float = 1.0) -> float:
  """Minor page faults per call of ``fn``, in MiB of 4 KiB pages: memory the
  process touched fresh from the kernel. glibc hands buffers over 32 MiB
  (``mmap_threshold``'s ceiling) back to the kernel when freed, so a
  program whose scratch exceeds that faults it all in again on every call;
  allocators that keep their memory (TensorFlow's) fault nothing.

  ``fn`` is warm (timed just before), so every call counts: up to
  ``calls`` of them, but no more once ``max_s`` has passed (a reference
  step of over a second is counted once, not six times)."""
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  start, n = time.perf_counter(), 0
  while n < calls and (n == 0 or time.perf_counter() - start < max_s):
    fn()
    n += 1
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  return faults / n * 4096 / 2 ** 20


# --------------------------------------------------------------------- JAX ---

EPS = 1e-5  # the batch norm's (``Layer.after``)


def _jax_after(layer: Layer, y):
  """``layer.after`` applied to a JAX output ``y``: nothing, or a batch
  norm without scale (statistics over all but the channel axis) and a
  ReLU, computed in float32 for a 16-bit ``y`` and rounded back, as flax's
  ``BatchNorm`` (float32 statistics, which promote the normalization),
  Keras' under mixed precision and torch's ``batch_norm`` compute it.
  Computed in bfloat16, XLA:CPU took 27 ms for the batch norm's forward and
  backward on the bfloat16 layer's 16x32x32x128 output, 3.5 in float32 (an
  Intel Xeon, 2026-11-28), and the suite timed that instead of the layer."""
  if not layer.after:
    return y
  import jax
  import jax.numpy as jnp
  z = y.astype(jnp.promote_types(y.dtype, jnp.float32))
  mean = jnp.mean(z, layer.norm_axes, keepdims=True)
  var = jnp.var(z, layer.norm_axes, keepdims=True)
  return jax.nn.relu((z - mean) * jax.lax.rsqrt(var + EPS)).astype(y.dtype)


def _jax_forward(impl: str, layer: Layer):
  """``f(kernel_or_params, x) -> y`` (``layer.after`` applied) and its
  first argument."""
  f, params, x = _jax_layer(impl, layer)
  return (lambda p, x: _jax_after(layer, f(p, x))), params, x


def _jax_layer(impl: str, layer: Layer):
  """The layer alone: ``f(kernel_or_params, x) -> y`` and its first argument."""
  import jax
  import jax.numpy as jnp
  from jax import lax
  import jconvt

  dtype = jnp.dtype(layer.dtype)
  x, kernel = _data(layer)
  x, kernel = jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)
  if impl.startswith("jconvt"):
    cfg = _config(layer, FORCED_ALGORITHMS.get(impl, "auto"))
    return (lambda k, x: jconvt.conv2d_transpose({"kernel": k}, x, cfg)), kernel, x
  io = "NHWC" if layer.data_format == "channels_last" else "NCHW"
  if impl == "lax.conv_transpose":
    return (lambda k, x: lax.conv_transpose(
        x, k, (layer.stride,) * 2, layer.padding.upper(), dimension_numbers=(io, "HWIO", io),
        transpose_kernel=True)), kernel, x  # TF kernel, as lax documents
  if impl == "flax":
    import flax.linen as nn
    module = nn.ConvTranspose(layer.filters, (layer.kernel,) * 2, strides=(layer.stride,) * 2,
                              padding=layer.padding.upper(), use_bias=False,
                              transpose_kernel=True, dtype=dtype, param_dtype=dtype)
    nhwc = layer.data_format == "channels_last"
    x_nhwc = x if nhwc else jnp.transpose(x, (0, 2, 3, 1))
    params = module.init(jax.random.key(0), x_nhwc)

    def f(params, x):
      # flax is channels-last only: a channels_first user transposes around it.
      if nhwc:
        return module.apply(params, x)
      return jnp.transpose(module.apply(params, jnp.transpose(x, (0, 2, 3, 1))), (0, 3, 1, 2))

    return f, params, x
  raise ValueError(impl)


def jax_programs(impl, layer):
  """A JAX implementation's jitted forward ``fwd(params, x)`` and training
  step ``step(params, x, target)`` (gradients for the kernel or params and
  the input), with their arguments ``(params, x, target)``."""
  import jax
  import jax.numpy as jnp

  f, params, x = _jax_forward(impl, layer)
  target = jnp.asarray(np.random.default_rng(1).standard_normal(_out_shape(layer)), x.dtype)
  # A training step: the loss needs the forward output (no dead-code
  # elimination of the forward pass), gradients for the input and kernel.
  # The target is an argument: as a constant XLA would fold its reshapes
  # into the program at compile time (seconds on a GPU's large layers).
  step = jax.jit(jax.grad(lambda p, x, t: 0.5 * jnp.sum((f(p, x) - t) ** 2), argnums=(0, 1)))
  return jax.jit(f), step, (params, x, target)


def _measure_jax(impl, layer, repeats, median_ms):
  import jax

  fwd, step, (params, x, target) = jax_programs(impl, layer)
  t0 = time.perf_counter()
  compiled = step.lower(params, x, target).compile()
  compile_s = time.perf_counter() - t0
  fwd_compiled = fwd.lower(params, x).compile()
  jax.block_until_ready(fwd(params, x))
  jax.block_until_ready(compiled(params, x, target))
  result = {
      "fwd_ms": median_ms(lambda: jax.block_until_ready(fwd(params, x)), repeats),
      "step_ms": median_ms(lambda: jax.block_until_ready(compiled(params, x, target)), repeats),
      "step_faults_mib": page_faults_mib(
          lambda: jax.block_until_ready(compiled(params, x, target))),
      "compile_s": compile_s,
      "step_mem_bytes": _temp_bytes(compiled),
      "fwd_mem_bytes": _temp_bytes(fwd_compiled),
  }
  if impl == "jconvt":
    result["algorithms"] = list(algorithms(layer))
  return result


def algorithms(layer: Layer, platform=None):
  """What jconvt's ``auto`` runs for this layer on ``platform`` (None: this
  backend): ``jconvt.AlgorithmPlan(forward, input_gradient, kernel_gradient)``."""
  import jconvt
  return jconvt.algorithm_plan(layer.x_shape, layer.kernel_shape, _config(layer), layer.dtype,
                               platform)


def _temp_bytes(compiled):
  """XLA's temporary buffers of a compiled computation (its peak scratch)."""
  try:
    mem = compiled.memory_analysis()
  except (AttributeError, NotImplementedError):
    return None
  return None if mem is None else int(mem.temp_size_in_bytes)


# -------------------------------------------------------------- TensorFlow ---

def _measure_tf(layer, repeats, median_ms):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tensorflow as tf

  dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16}[layer.dtype]
  x, kernel = _data(layer)
  x, kernel = tf.cast(tf.constant(x), dtype), tf.Variable(tf.cast(tf.constant(kernel), dtype))
  out_shape = _out_shape(layer)
  target = tf.cast(tf.constant(np.random.default_rng(1).standard_normal(out_shape)), dtype)
  fmt = "NHWC" if layer.data_format == "channels_last" else "NCHW"

  @tf.function
  def fwd(x):
    y = tf.nn.conv2d_transpose(x, kernel, out_shape, layer.stride, layer.padding.upper(),
                               data_format=fmt)
    if not layer.after:
      return y
    z = tf.cast(y, tf.float32) if y.dtype in (tf.bfloat16, tf.float16) else y  # as _jax_after
    mean, var = tf.nn.moments(z, list(layer.norm_axes), keepdims=True)
    return tf.cast(tf.nn.relu((z - mean) * tf.math.rsqrt(var + EPS)), y.dtype)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = 0.5 * tf.reduce_sum((fwd(x) - target) ** 2)
    return tape.gradient(loss, [x, kernel])

  try:
    t0 = time.perf_counter()
    step(x)
    compile_s = time.perf_counter() - t0
    fwd(x)
  except (tf.errors.OpError, TypeError, ValueError) as e:
    raise Unsupported(f"TF: {type(e).__name__}") from None
  return {
      "fwd_ms": median_ms(lambda: fwd(x).numpy(), repeats),
      "step_ms": median_ms(lambda: [g.numpy() for g in step(x)], repeats),
      "step_faults_mib": page_faults_mib(lambda: [g.numpy() for g in step(x)]),
      "compile_s": compile_s,
      "step_mem_bytes": None,
  }


# ----------------------------------------------------------------- PyTorch ---

def torch_programs(layer):
  """PyTorch's forward ``fwd()`` (no gradients) and training step ``step()``
  on the layer's data, each waiting for its kernels."""
  import torch
  import torch.nn.functional as F

  device = torch_device(torch)
  if device == "cpu":
    torch.set_num_threads(os.cpu_count() or 1)
  # CUDA runs asynchronously: each timed call waits for its kernels.
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[layer.dtype]
  x, kernel = _data(layer)
  if layer.data_format == "channels_last":
    x = x.transpose(0, 3, 1, 2)
  k, s = layer.kernel, layer.stride
  if layer.padding == "same":  # output n * s: k - 2p + op = s
    op = (k - s) % 2
    pad = (k - s + op) // 2
  else:
    op, pad = 0, 0
  if op >= s and s > 1 or pad < 0:
    raise Unsupported("torch padding")
  memory_format = (torch.channels_last if layer.data_format == "channels_last"
                   else torch.contiguous_format)
  xt = (torch.tensor(x, dtype=dtype, device=device).contiguous(memory_format=memory_format)
        .requires_grad_(True))
  w = torch.tensor(kernel.transpose(3, 2, 0, 1), dtype=dtype,  # (in, out, kh, kw)
                   device=device).requires_grad_(True)
  conv = lambda: F.conv_transpose2d(xt, w, stride=s, padding=pad, output_padding=op)  # noqa: E731
  f = conv if not layer.after else (  # NCHW to torch, whatever the memory format
      lambda: F.relu(F.batch_norm(conv(), None, None, training=True, eps=EPS)))
  with torch.no_grad():
    target = torch.randn_like(f())

  def step():
    xt.grad, w.grad = None, None
    (0.5 * ((f() - target) ** 2).sum()).backward()
    sync()

  def fwd():
    with torch.no_grad():
      f()
    sync()

  return fwd, step


def _measure_torch(layer, repeats, median_ms):
  fwd, step = torch_programs(layer)
  t0 = time.perf_counter()
  step()
  compile_s = time.perf_counter() - t0
  return {"fwd_ms": median_ms(fwd, repeats), "step_ms": median_ms(step, repeats),
          "step_faults_mib": page_faults_mib(step), "compile_s": compile_s,
          "step_mem_bytes": None}


def torch_device(torch) -> str:
  """PyTorch's device: CUDA when JAX runs on a GPU too (the peers then share
  the accelerator), else the CPU."""
  import jax
  on_gpu = jax.default_backend() in ("gpu", "cuda", "rocm")
  return "cuda" if on_gpu and torch.cuda.is_available() else "cpu"


def measure(impl: str, layer: Layer, repeats: int, median_ms):
  if impl == "tensorflow":
    return _measure_tf(layer, repeats, median_ms)
  if impl == "torch":
    return _measure_torch(layer, repeats, median_ms)
  return _measure_jax(impl, layer, repeats, median_ms)
