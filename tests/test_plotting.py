"""latentode.plotting.plot_series on the Agg backend."""

import sys

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from latentode.plotting import plot_series, time_grid  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def frames(n_ids=3, level=80):
    """Observed points, a dense prediction with bands and held-out truth, by hand (no model)."""
    obs, pred, truth = [], [], []
    for k in range(n_ids):
        t = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(6) * 2, unit="h") + pd.Timedelta(days=k)
        obs.append(pd.DataFrame({"id": f"s{k}", "time": t, "a": np.sin(np.arange(6.0)),
                                 "b": [1.0, np.nan, 2.0, np.nan, 3.0, 4.0]}))
        g = pd.date_range(t[0], t[-1] + pd.Timedelta(hours=6), periods=30)
        p = pd.DataFrame({"id": f"s{k}", "time": g, "a": 0.0, "b": 1.0})
        for v in ("a", "b"):
            p[f"{v}-lo-{level}"], p[f"{v}-hi-{level}"] = p[v] - 1, p[v] + 1
        pred.append(p)
        truth.append(pd.DataFrame({"id": f"s{k}", "time": t[-1] + pd.to_timedelta([2, 4], unit="h"),
                                   "a": [0.1, 0.2], "b": [np.nan, 1.0]}))
    return pd.concat(obs, ignore_index=True), pd.concat(pred, ignore_index=True), pd.concat(truth, ignore_index=True)


def test_grid_of_panels_with_bands_lines_and_truth():
    df, pred, truth = frames(3)
    fig = plot_series(df, pred, level=80, truth=truth)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 3 * 2  # rows = ids, columns = variables
    assert [ax.get_title() for ax in fig.axes[:2]] == ["s0: a", "s0: b"]
    for ax in fig.axes:
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1  # the 80% band
        # mean, observed points, held-out points, forecast-start line
        assert len(ax.lines) == 4
    last = df.loc[df["id"] == "s0", "time"].max()
    vline = fig.axes[0].lines[-1]
    assert pd.Timestamp(vline.get_xdata()[0]) == last
    assert fig.axes[1].lines[1].get_xdata().size == 4  # observed b values (NaN not drawn)
    assert fig.axes[0].get_legend() is not None


def test_ids_variables_max_ids_and_options():
    df, pred, _ = frames(5)
    assert len(plot_series(df, pred).axes) == 4 * 2  # max_ids=4
    fig = plot_series(df, pred, ids=["s3"], variables="b", level=None, forecast_start=False)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "s3: b"
    assert not fig.axes[0].collections and len(fig.axes[0].lines) == 2  # no band, no line
    assert len(plot_series(df, pred, max_ids=2).axes) == 4


def test_single_series_numeric_time():
    df = pd.DataFrame({"t": [0.0, 1.0, 2.0], "x": [0.0, 1.0, 0.5]})
    pred = pd.DataFrame({"t": np.linspace(0, 3, 10), "x": 0.5, "x-lo-95": 0.0, "x-hi-95": 1.0})
    fig = plot_series(df, pred, level=95, time_col="t", forecast_start=2.5)
    assert len(fig.axes) == 1 and fig.axes[0].lines[-1].get_xdata()[0] == 2.5


def test_time_grid_per_series_windows():
    df, _, truth = frames(2)
    g = time_grid(df, n_points=5)
    assert list(g.columns) == ["id", "time"] and len(g) == 10 and g["time"].dtype == df["time"].dtype
    win = df.groupby("id")["time"].agg(["min", "max"])
    assert (g.groupby("id")["time"].min() == win["min"]).all() and (g.groupby("id")["time"].max() == win["max"]).all()
    assert (time_grid(df, n_points=5, extend=truth).groupby("id")["time"].max()
            == truth.groupby("id")["time"].max()).all()
    assert (time_grid(df, n_points=2, extend=pd.Timedelta(hours=1)).groupby("id")["time"].max()
            == win["max"] + pd.Timedelta(hours=1)).all()
    with pytest.raises(ValueError, match="n_points"):
        time_grid(df, n_points=1)


def test_with_a_fitted_model():
    torch = pytest.importorskip("torch")
    from latentode import LatentODERegressor
    from latentode.datasets import make_synthetic

    torch.set_num_threads(1)
    df, _ = make_synthetic(4, n_obs=(8, 10), random_state=0)
    est = LatentODERegressor(latent_dim=4, encoder_dim=8, width=16, max_epochs=1, validation_fraction=0,
                             random_state=0).fit(df)
    pred = est.predict(df, times=time_grid(df, n_points=20, extend=pd.Timedelta(hours=12)), level=[80],
                       n_samples=20)
    fig = plot_series(df, pred, level=80, ids=list(df["id"].unique()[:2]))
    assert len(fig.axes) == 2 * 3


def test_errors():
    df, pred, _ = frames(1)
    with pytest.raises(ValueError, match="a-lo-95"):
        plot_series(df, pred, level=95)
    with pytest.raises(ValueError, match="ids not in df"):
        plot_series(df, pred, ids=["nope"])
    with pytest.raises(ValueError, match="'zzz'"):
        plot_series(df, pred, time_col="zzz")
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_series(df, pred.drop(columns="id"))
    with pytest.raises(TypeError, match="DataFrame"):
        plot_series(df, pred.to_numpy())


def test_missing_matplotlib_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    df, pred, _ = frames(1)
    with pytest.raises(ImportError, match=r"latentode\[plot\]"):
        plot_series(df, pred)
