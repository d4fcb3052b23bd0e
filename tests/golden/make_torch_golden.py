"""Writes tests/golden/torch_conv_transpose2d.npz with real PyTorch.

Needs torch (``pip install torch``); run from the repository root::

    python tests/golden/make_torch_golden.py

For several ``torch.nn.ConvTranspose2d`` settings it records the module's
settings, weight, bias, an NCHW input and torch's output.
"""

import pathlib

import _fixture  # tests/golden/, the script's own folder
import torch

OUT = pathlib.Path(__file__).with_name("torch_conv_transpose2d.npz")
CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=2, out_channels=3, kernel_size=4, stride=2, padding=1),
    dict(in_channels=3, out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(in_channels=2, out_channels=2, kernel_size=(3, 2), stride=(2, 3), padding=(1, 0),
         output_padding=(1, 2), bias=False),
    dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding=2),
    dict(in_channels=4, out_channels=2, kernel_size=2, stride=2),
]


def main():
  torch.manual_seed(0)
  arrays, records = {}, []
  for i, kwargs in enumerate(CASES):
    module = torch.nn.ConvTranspose2d(**kwargs).double()
    x = torch.randn(2, kwargs["in_channels"], 4, 3, dtype=torch.float64)
    with torch.no_grad():
      y = module(x)
    arrays[f"{i}/x"] = x.numpy()
    arrays[f"{i}/y"] = y.numpy()
    arrays[f"{i}/weight"] = module.weight.detach().numpy()
    if module.bias is not None:
      arrays[f"{i}/bias"] = module.bias.detach().numpy()
    records.append({"index": i, "stride": module.stride, "padding": module.padding,
                    "output_padding": module.output_padding, "dilation": module.dilation})
  _fixture.write(OUT, arrays, records, {"torch": torch.__version__})


if __name__ == "__main__":
  main()
