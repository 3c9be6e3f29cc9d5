"""The API reference is current, and the examples in the public docstrings run."""

import doctest
import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))
import build_api  # noqa: E402


def test_api_reference_is_generated_from_the_docstrings():
    assert (REPO / "docs" / "api.md").read_text() == build_api.build(), "run python docs/build_api.py"


def test_api_reference_check_fails_when_stale(tmp_path, monkeypatch):
    stale = tmp_path / "api.md"
    stale.write_text("old\n")
    monkeypatch.setattr(build_api, "OUT", stale)
    assert build_api.main(["--check"]) == 1


MODULES = [m for m in build_api.PUBLIC if m != "latentode.datasets"] + [
    "latentode.estimator", "latentode.datasets.dynamics", "latentode.datasets.synthetic",
    "latentode.datasets.periodic", "latentode.datasets.physionet"]


@pytest.mark.parametrize("modname", MODULES)
def test_docstring_examples_run(modname):
    module = importlib.import_module(modname)
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0


def test_the_examples_are_many():
    """A docstring example that stops being collected (a renamed module, say) is noticed."""
    total = sum(doctest.testmod(importlib.import_module(m)).attempted for m in MODULES)
    assert total >= 40
