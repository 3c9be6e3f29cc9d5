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
                coverage={"50": 0.4, "80": 0.7, "95": 0.9}, coverage_calibrated={"50": 0.5, "80": 0.78, "95": 0.96},
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
    cal = [ln for ln in figures.calibration(res).axes[0].lines if ln.get_marker() == "s"][0]
    assert cal.get_ydata().tolist() == [0.5, 0.78, 0.96]
    (tmp_path / "bands.json").write_text(json.dumps(res))
    speed, ref = _speed_results()
    (tmp_path / "speed.json").write_text(json.dumps(speed))
    (tmp_path / "reference_speed.json").write_text(json.dumps(ref))
    written = figures.main(["--results", str(tmp_path), "--out", str(tmp_path / "out")])
    assert [p.name for p in written] == ["forecast_bands.png", "calibration.png", "speed.png"]
    assert all(p.stat().st_size > 5000 for p in written)


def _speed_results():
    """speed.json and reference_speed.json of their programs' shape, by hand."""
    recs = [dict(adjoint=adj, query_factor=k, threads=th, batch=50, cpu_seconds_per_step=c, peak_rss_mb=m)
            for adj, k, th, c, m in ((True, 1, 1, 0.8, 480), (False, 1, 1, 0.3, 520), (True, 10, 1, 7.0, 500),
                                     (False, 10, 1, 2.6, 860), (True, 1, 2, 1.6, 480))]
    return {"records": recs}, {"records": [dict(union_grid=1871, cpu_seconds_per_step=100.0, peak_rss_mb=1500)]}


def test_speed_figure_sets_the_reference_beside_each_one_thread_configuration():
    import matplotlib

    matplotlib.use("Agg")
    import figures

    speed, ref = _speed_results()
    labels, cpu, rss = figures._speed_bars(speed, ref)
    assert labels[0].startswith("reference") and len(labels) == 5  # the 2-thread row is left out
    assert cpu == [100.0, 0.8, 0.3, 7.0, 2.6] and rss == [1500, 480, 520, 500, 860]
    fig = figures.speed(speed, ref)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == cpu and fig.axes[0].get_yscale() == "log"
