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
