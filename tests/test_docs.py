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


# ---------------------------------------------------------------------------- README figures
def _bands_result():
    """A result of benchmarks/bands.py's shape, by hand: two variables, a grid, coverage at 3 levels."""
    import numpy as np

    grid = np.linspace(0.0, 48.0, 20).tolist()
    fc = {"Time": grid}
    for v in ("HR", "MAP"):
        fc[v] = [80.0] * 20
        for lv, w in ((80, 5.0), (95, 9.0)):
            fc[f"{v}-lo-{lv}"], fc[f"{v}-hi-{lv}"] = [80.0 - w] * 20, [80.0 + w] * 20
    return dict(stay=1, variables=["HR", "MAP"], cut=36.0, n_train=9, n_held=1, n_values=12,
                coverage={"50": 0.4, "80": 0.7, "95": 0.9},
                context={"Time": [0.0, 12.0, 30.0], "HR": [78.0, None, 82.0], "MAP": [None, 70.0, 75.0]},
                future={"Time": [40.0, 46.0], "HR": [85.0, 81.0], "MAP": [72.0, None]}, forecast=fc)


def test_figures_draw_both_bands_and_the_coverage(tmp_path):
    import json

    import matplotlib
    from matplotlib.collections import PolyCollection

    matplotlib.use("Agg")
    import figures

    res = _bands_result()
    fig = figures.forecast_bands(res)
    assert len(fig.axes) == 2
    for ax in fig.axes:  # the 95% band of plot_series and the 80% band drawn over it
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2
    line = [ln for ln in figures.calibration(res).axes[0].lines if ln.get_marker() == "o"][0]
    assert line.get_xdata().tolist() == [0.5, 0.8, 0.95] and line.get_ydata().tolist() == [0.4, 0.7, 0.9]
    path = tmp_path / "bands.json"
    path.write_text(json.dumps(res))
    written = figures.main(["--results", str(path), "--out", str(tmp_path)])
    assert [p.name for p in written] == ["forecast_bands.png", "calibration.png"]
    assert all(p.stat().st_size > 5000 for p in written)
