"""Pins the public surface (as optax_test.py does)."""

import jconvt


def test_public_names():
  assert set(jconvt.__all__) == {
      "AlgorithmPlan", "Conv2DTranspose", "ConvTransposeConfig", "algorithm_plan",
      "conv2d_transpose", "output_shape", "reference_conv2d_transpose", "tune_malloc",
  }
  for name in jconvt.__all__:
    assert getattr(jconvt, name) is not None
  public = {n for n in dir(jconvt) if not n.startswith("_")}
  assert public - set(jconvt.__all__) <= {"compat", "nnx", "linen", "regularizers",
                                          "constraints", "initializers"}


def test_version_is_a_string():
  assert isinstance(jconvt.__version__, str) and jconvt.__version__
