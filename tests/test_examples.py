"""Examples run at tiny size, so they cannot rot."""

import pathlib
import runpy
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
  sys.path.insert(0, str(EXAMPLES))
  try:
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=name)
  finally:
    sys.path.remove(str(EXAMPLES))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_demo(capsys):
  demo = _load("demo")
  assert demo["main"](["--batch", "2", "--size", "6", "--in-channels", "4",
                       "--filters", "3", "--repeats", "1"]) == 0
  out = capsys.readouterr().out
  assert "output y      (2, 12, 12, 3)" in out
  assert "OK" in out.splitlines()[-1]


def _png_shape(path):
  import matplotlib.image
  return matplotlib.image.imread(path).shape


def test_train_autoencoder(tmp_path):
  ex = _load("train_autoencoder")
  result = ex["main"](["--epochs", "3", "--limit", "256", "--batch-size", "32",
                       "--no-progress", "--out", str(tmp_path)])
  history = result["history"]
  assert len(history) == 3 and history[-1] < history[0]
  h, w, _ = _png_shape(result["png"])
  assert h > 50 and w > 300  # two rows of ten digits
  assert result["restored_equal"] and result["checkpoint"].exists()
  assert result["params"]["up2"]["kernel"].shape == (4, 4, 1, 16)  # TF layout


def test_generator(tmp_path):
  ex = _load("generator")
  result = ex["main"](["--steps", "40", "--samples", "8", "--features", "8",
                       "--out", str(tmp_path)])
  assert result["images"].shape == (8, 32, 32, 1)
  assert result["losses"][-1] < 0.5 * result["losses"][0]
  assert result["nchw_max_diff"] < 1e-5
  assert _png_shape(result["png"])[0] > 50


def test_port_tf_v1():
  ex = _load("port_tf_v1")
  result = ex["main"]([])
  assert result["max_error"] < 1e-5
  assert result["max_error_ops"] < 1e-5
  assert result["output"].shape == (2, 16, 16, 2)


def test_data_parallel_matches_single_device():
  import os
  import re
  import subprocess
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, str(EXAMPLES / "data_parallel.py"), "--simulate-devices",
                        "8", "--steps", "5", "--batch-size", "32"], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("8 devices (cpu)")
  losses, params = map(float, re.search(r"losses ([\d.e+-]+), params ([\d.e+-]+)",
                                        out.stdout).groups())
  assert losses < 1e-5 and params < 1e-5
