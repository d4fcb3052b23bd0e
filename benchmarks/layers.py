"""The suite's layers: typical decoder blocks (NHWC unless said)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Layer:
  name: str
  batch: int
  size: int          # input height = width
  in_channels: int
  filters: int
  kernel: int
  stride: int
  padding: str = "same"
  data_format: str = "channels_last"
  dtype: str = "float32"
  large: bool = False  # counts towards the roofline target
  # What reads the output before the loss: "" nothing, or "batch_norm" (a
  # batch norm without scale and a ReLU, a DCGAN block's: three readers).
  after: str = ""

  @property
  def flops(self) -> float:
    """Useful multiply-adds of the forward pass, times two."""
    return 2.0 * self.batch * self.size ** 2 * self.in_channels * self.filters * self.kernel ** 2

  @property
  def kernel_shape(self):
    """TF's layout: (kh, kw, filters, in_channels)."""
    return (self.kernel, self.kernel, self.filters, self.in_channels)

  @property
  def norm_axes(self) -> tuple[int, ...]:
    """The output's axes but the channels': a batch norm's statistics."""
    return (0, 1, 2) if self.data_format == "channels_last" else (0, 2, 3)

  @property
  def x_shape(self):
    if self.data_format == "channels_last":
      return (self.batch, self.size, self.size, self.in_channels)
    return (self.batch, self.in_channels, self.size, self.size)


AFTER = ("batch_norm",)  # what --after takes

SUITE = (
    # The four layers of the performance issue.
    Layer("dcgan 8->16 k4s2", 16, 8, 512, 256, 4, 2, large=True),
    Layer("dcgan 32->64 k4s2", 16, 32, 128, 64, 4, 2, large=True),
    Layer("unet k3s2", 8, 32, 128, 128, 3, 2, large=True),
    Layer("unet k2s2 valid", 8, 32, 256, 128, 2, 2, "valid", large=True),
    # More decoder shapes.
    Layer("dcgan 4->8 k4s2", 16, 4, 1024, 512, 4, 2),
    Layer("dcgan 16->32 k4s2", 16, 16, 256, 128, 4, 2, large=True),
    Layer("stride 1 k3", 8, 32, 64, 64, 3, 1),
    # Output layers to RGB (3 filters): few channels, where the rules differ.
    Layer("dcgan 32->64 to RGB k4s2", 16, 32, 64, 3, 4, 2),
    Layer("stride 1 to RGB k3", 8, 64, 32, 3, 3, 1),
    Layer("k4s2 channels_first", 16, 16, 256, 128, 4, 2, data_format="channels_first"),
    Layer("batch 1 latency k4s2", 1, 16, 256, 128, 4, 2),
    Layer("k4s2 bfloat16", 16, 16, 256, 128, 4, 2, dtype="bfloat16"),
)

# Kernels larger than their input: tiny images, where a convolution's
# kernel exceeds its input and XLA:CPU (jaxlib 0.10) runs it 10-30x slower
# (``jconvt._algorithms``, the note above SMALL_INPUT_PIXELS); see also
# DESCRIPTIONS below.
EDGE = (
    Layer("latent 1x1->4x4 k4 valid", 64, 1, 100, 512, 4, 1, "valid"),
    Layer("latent 1x1->7x7 k7 valid", 64, 1, 100, 256, 7, 1, "valid"),
    Layer("2x2->4x4 k5s2", 64, 2, 256, 128, 5, 2),
    Layer("4x4->8x8 k9s2", 16, 4, 256, 128, 9, 2),
    Layer("8x8 k9 stride 1", 4, 8, 128, 128, 9, 1),
    Layer("stride 1 valid 16->64 k3", 8, 32, 16, 64, 3, 1, "valid"),
)

# Large strides: segmentation heads upsampling class scores by 2-32
# (FCN-32s, -16s and -8s on a 512x512 image: 21 classes, kernel 2s),
# where a program per tap or phase once took minutes to compile.
UPSAMPLE = (
    Layer("FCN-32s k64 s32", 1, 16, 21, 21, 64, 32),
    Layer("FCN-16s k32 s16", 1, 32, 21, 21, 32, 16),
    Layer("FCN-8s k16 s8", 1, 64, 21, 21, 16, 8),
    Layer("FCN upscore2 k4 s2", 1, 16, 21, 21, 4, 2),
    Layer("FCN-32s batch 4", 4, 16, 21, 21, 64, 32),
    Layer("k8 s4 64 channels", 4, 32, 64, 64, 8, 4),
)

# U-Net decoder blocks on 8 images with 256 and more input channels, 32x32
# inputs and larger, where oneDNN's kernel gradient needs chunks of the
# channels on some CPUs (``_algorithms._kernel_grad_channel_chunk``).
DEEP = (
    Layer("unet 256->128 k3s2", 8, 32, 256, 128, 3, 2, large=True),
    Layer("unet 256->256 k3s2", 8, 32, 256, 256, 3, 2, large=True),
    Layer("256->64 k4s2", 8, 32, 256, 64, 4, 2, large=True),
    Layer("256->256 k3 stride 1", 8, 32, 256, 256, 3, 1, large=True),
    Layer("512->256 k4s2 16x16", 8, 16, 512, 256, 4, 2, large=True),
    Layer("unet 64->64 k3s2 64x64", 8, 64, 64, 64, 3, 2, large=True),
)

# bfloat16 layers on 8 to 32 images: oneDNN's bfloat16 takes only multiples of
# 16 contracted channels (``jconvt._onednn.bfloat16_miscomputed``), and the
# kernel gradient contracts the images (padded to 16 at stride 1).
BFLOAT16 = (
    Layer("k4s2 16x16 8 images", 8, 16, 256, 128, 4, 2, dtype="bfloat16"),
    Layer("k4s2 32x32 8 images", 8, 32, 128, 64, 4, 2, dtype="bfloat16"),
    Layer("k4s2 32x32 16 images", 16, 32, 128, 64, 4, 2, dtype="bfloat16"),
    Layer("k3s2 32x32 8 images", 8, 32, 128, 128, 3, 2, dtype="bfloat16"),
    Layer("k4s2 8x8 32 images", 32, 8, 512, 256, 4, 2, dtype="bfloat16"),
    Layer("k3 stride 1 8 images", 8, 32, 64, 64, 3, 1, dtype="bfloat16"),
    Layer("k3 stride 1 16 images", 16, 32, 64, 64, 3, 1, dtype="bfloat16"),
    Layer("k3 stride 1 256->128 8 images", 8, 32, 256, 128, 3, 1, dtype="bfloat16"),
)

SUITES = {"main": SUITE, "edge": EDGE, "upsample": UPSAMPLE, "deep": DEEP, "bfloat16": BFLOAT16}
DESCRIPTIONS = {  # for --suite's help and a table's header
    "main": "decoder layers",
    "edge": ("tiny images whose kernels exceed them; GFLOP/s count every tap of every input "
             "pixel, also those TF's 'same' crop drops"),
    "upsample": "large strides (2-32) with kernels twice the stride, as segmentation heads use",
    "deep": "U-Net decoder blocks on 8 images with 256 or more input channels (and one 64x64)",
    "bfloat16": "bfloat16 layers on 8 to 32 images, strided and at stride 1",
}
