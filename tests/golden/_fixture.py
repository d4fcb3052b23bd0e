"""The fixture file the writers here share, in the format
``tests/conftest.load_golden`` reads: each case's arrays under
``<index>/``, the cases' records as JSON (``records``) and the versions of
the framework that wrote them (``versions``). Needs only NumPy, so each
writer still imports no framework but its own."""

import json
import pathlib

import numpy as np


def write(path: pathlib.Path, arrays: dict, records: list, versions: dict) -> None:
  """Writes ``arrays`` with ``records`` and ``versions`` to ``path`` (a
  compressed ``.npz``) and says so."""
  np.savez_compressed(path, **arrays, records=np.array(json.dumps(records)),
                      versions=np.array(json.dumps(versions)))
  print(f"wrote {len(records)} cases to {path} ({path.stat().st_size} bytes)")
