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

  @property
  def flops(self) -> float:
    """Useful multiply-adds of the forward pass, times two."""
    return 2.0 * self.batch * self.size ** 2 * self.in_channels * self.filters * self.kernel ** 2

  @property
  def kernel_shape(self):
    """TF's layout: (kh, kw, filters, in_channels)."""
    return (self.kernel, self.kernel, self.filters, self.in_channels)

  @property
  def x_shape(self):
    if self.data_format == "channels_last":
      return (self.batch, self.size, self.size, self.in_channels)
    return (self.batch, self.in_channels, self.size, self.size)


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
