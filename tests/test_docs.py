"""The README's examples and the files the docs name: docs that cannot drift
from the code and the results they describe."""

import doctest
import pathlib
import re

import jax
import pytest

import jconvt

ROOT = pathlib.Path(__file__).parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "performance.md"]


@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="the README's algorithm_plan examples default to the CPU's plan")
def test_readme_examples_give_what_they_show():
  blocks = re.findall(r"```python\n(>>>.*?)```", (ROOT / "README.md").read_text(), re.S)
  test = doctest.DocTestParser().get_doctest("\n".join(blocks), {"jconvt": jconvt},
                                             "README.md", str(ROOT / "README.md"), 0)
  assert len(test.examples) >= 2
  runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
  runner.run(test)
  assert runner.failures == 0, f"{runner.failures} README example(s) give other output"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_files_the_docs_name_exist(doc):
  text = doc.read_text()
  named = set(re.findall(r"(?<![\w./-])((?:benchmarks|tests|examples|notebooks|jconvt|docs)"
                         r"/[\w./-]*\w)", text))
  named |= {str((doc.parent / link).resolve().relative_to(ROOT))
            for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)}
  assert len(named) >= 5
  missing = sorted(name for name in named if not (ROOT / name).exists())
  assert not missing, f"{doc.name} names files that do not exist: {missing}"
  # Shortened names, `...-<end>`: some file of benchmarks/results ends that way.
  results = [f.name for f in (ROOT / "benchmarks" / "results").iterdir()]
  shortened = set(re.findall(r"`\.\.\.(-[\w.-]+)`", text))
  unmatched = sorted(end for end in shortened if not any(f.endswith(end) for f in results))
  assert not unmatched, f"{doc.name} names results no file ends with: {unmatched}"
