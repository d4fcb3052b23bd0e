"""Moving weights into jconvt: from TF checkpoints (by name), from
``torch.nn.ConvTranspose2d`` and from ``flax.linen.ConvTranspose``.

Each converter returns ``(params, config)`` such that
``jconvt.conv2d_transpose(params, x, config)`` equals the source layer's
output on the same input (NCHW for torch, NHWC for flax).
"""

from collections.abc import Mapping

import numpy as np

from jconvt._config import ConvTransposeConfig, normalize_pair
from jconvt.compat._checkpoint import load_tf_checkpoint

_OBJECT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def tf_layer_params(checkpoint, name: str) -> dict[str, np.ndarray]:
  """``{"kernel", "bias"}`` of the TF layer ``name`` in a checkpoint.

  Args:
    checkpoint: a checkpoint prefix/directory, or the dict that
      ``load_tf_checkpoint`` returned.
    name: the layer's variable scope (``Saver`` checkpoints: ``dec`` for
      ``dec/kernel``) or its attribute path (object-based checkpoints: ``dec``
      for ``dec/kernel/.ATTRIBUTES/VARIABLE_VALUE``).

  Raises:
    KeyError: naming the variables looked for and the ones present.
  """
  tensors = checkpoint if isinstance(checkpoint, Mapping) else load_tf_checkpoint(checkpoint)
  out = {}
  for var in ("kernel", "bias"):
    for key in (f"{name}/{var}", f"{name}/{var}{_OBJECT_SUFFIX}"):
      if key in tensors:
        out[var] = np.asarray(tensors[key])
        break
  if "kernel" not in out:
    present = sorted(k for k in tensors if not k.startswith("_"))
    raise KeyError(
        f"no kernel for layer {name!r} in the checkpoint (looked for {name}/kernel and "
        f"{name}/kernel{_OBJECT_SUFFIX}); it holds {present}")
  return out


def load_layer_weights(layer, checkpoint, name: str | None = None) -> None:
  """Loads a ``jconvt.compat.v1.layers.Conv2DTranspose``'s weights by name.

  Builds the layer first if needed (the kernel gives its input channels).
  ``name`` defaults to the layer's own name, as a TF ``Saver`` maps it.
  """
  params = tf_layer_params(checkpoint, name or layer.name)
  if not layer.built:
    in_channels = params["kernel"].shape[3]
    shape = ((None, None, None, in_channels) if layer.get_config()["data_format"] ==
             "channels_last" else (None, in_channels, None, None))
    layer.build(shape)
  if layer.bias is not None and "bias" not in params:
    raise KeyError(f"layer {layer.name!r} has a bias but the checkpoint holds none")
  layer.set_weights([params["kernel"]] + ([params["bias"]] if layer.bias is not None else []))


def from_torch_conv_transpose2d(module=None, *, weight=None, bias=None, stride=1, padding=0,
                                output_padding=0, dilation=1, groups=1):
  """``(params, config)`` equal to a ``torch.nn.ConvTranspose2d``.

  Pass the module, or its ``weight`` (in_channels, out_channels, kh, kw),
  ``bias`` and settings. Torch crops ``padding`` from both sides of the full
  transposed convolution and then adds ``output_padding`` at the end: the
  explicit padding ``((p, p), (p, p))`` with ``output_padding``, in NCHW.

  Raises:
    ValueError: for ``groups != 1``, ``padding_mode != 'zeros'``, string
      padding, or an ``output_padding`` TF's rule (< stride) does not allow.
  """
  if module is not None:
    if getattr(module, "padding_mode", "zeros") != "zeros":
      raise ValueError(f"`padding_mode` (={module.padding_mode!r}) must be 'zeros'.")
    weight = module.weight.detach().cpu().numpy()
    bias = None if module.bias is None else module.bias.detach().cpu().numpy()
    stride, padding = module.stride, module.padding
    output_padding, dilation, groups = module.output_padding, module.dilation, module.groups
  if groups != 1:
    raise ValueError(f"`groups` (={groups}) must be 1: grouped transposed convolutions are "
                     f"not supported.")
  if isinstance(padding, str):
    raise ValueError(f"`padding` (={padding!r}) must be ints for ConvTranspose2d.")
  weight = np.asarray(weight)
  pad = normalize_pair(padding, "padding", 0)
  op = normalize_pair(output_padding, "output_padding", 0)
  config = ConvTransposeConfig(
      strides=stride, padding=((pad[0], pad[0]), (pad[1], pad[1])),
      output_padding=None if op == (0, 0) else op, dilation_rate=dilation,
      data_format="channels_first")
  params = {"kernel": weight.transpose(2, 3, 1, 0)}  # (kh, kw, out, in): TF's layout
  if bias is not None:
    params["bias"] = np.asarray(bias)
  return params, config


def _lax_transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
  """``jax.lax.conv_transpose``'s padding of the stride-dilated input."""
  if padding == "SAME":
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
  elif padding == "VALID":
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  else:
    raise ValueError(f"`padding` (={padding!r}) must be 'SAME', 'VALID' or explicit pairs.")
  return pad_a, pad_len - pad_a


def from_flax_conv_transpose(module, params: Mapping) -> tuple[dict, ConvTransposeConfig]:
  """``(params, config)`` equal to a ``flax.linen.ConvTranspose`` (2-D, NHWC).

  With ``transpose_kernel=True`` flax's kernel already has TF's layout
  ``(kh, kw, features, in)``; with ``False`` it is ``(kh, kw, in, features)``
  applied without a flip, so it is flipped and transposed. Flax's padding
  (lax.conv_transpose's, on the dilated input) becomes explicit crops.

  Args:
    module: the ``flax.linen.ConvTranspose``.
    params: its params, ``{"kernel", "bias"?}`` (``variables["params"]``).

  Raises:
    ValueError: for circular padding, or paddings no crop can express.
  """
  kernel = np.asarray(params["kernel"])
  if kernel.ndim != 4:
    raise ValueError(f"only 2-D ConvTranspose is supported, got a kernel of shape {kernel.shape}")
  if not module.transpose_kernel:
    kernel = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
  strides = normalize_pair(module.strides or 1, "strides", 1)
  dilation = normalize_pair(module.kernel_dilation or 1, "kernel_dilation", 1)
  crops, output_padding = [], []
  for axis in range(2):
    k_eff = (kernel.shape[axis] - 1) * dilation[axis] + 1
    if isinstance(module.padding, str):
      if module.padding.upper() == "CIRCULAR":
        raise ValueError("`padding` (='CIRCULAR') has no transposed-conv crop equivalent.")
      lo, hi = _lax_transpose_padding(k_eff, strides[axis], module.padding.upper())
    else:
      pads = module.padding
      lo, hi = (pads[axis] if isinstance(pads[axis], (tuple, list)) else (pads[axis],) * 2)
    top, bottom = k_eff - 1 - lo, k_eff - 1 - hi
    extra = max(0, -bottom)
    if top < 0 or extra >= max(strides[axis], 1) and extra:
      raise ValueError(
          f"flax padding {(lo, hi)} on axis {axis} pads beyond the full transposed "
          f"convolution; it has no equivalent crop.")
    crops.append((top, max(bottom, 0)))
    output_padding.append(extra)
  config = ConvTransposeConfig(
      strides=strides, padding=tuple(crops),
      output_padding=None if output_padding == [0, 0] else tuple(output_padding),
      dilation_rate=dilation)
  out = {"kernel": kernel.copy()}
  if "bias" in params:
    out["bias"] = np.asarray(params["bias"])
  return out, config
