"""Predictive samples, quantiles, intervals and their calibration (latentode.calibration)."""

import numpy as np
import pandas as pd
import pytest

from latentode import LatentODERegressor
from latentode.calibration import apply_interval_scale, fit_interval_scale, interval_coverage, interval_ratios
from latentode.datasets import make_synthetic

VARS = ["v1", "v2", "v3"]


@pytest.fixture(scope="module")
def fitted():
    df, _ = make_synthetic(6, n_obs=(8, 12), random_state=0)
    est = LatentODERegressor(latent_dim=4, encoder_dim=8, width=16, max_epochs=2, validation_fraction=0,
                             random_state=0).fit(df)
    return est, df


def grid_queries(df, n=5):
    last = df.groupby("id")["time"].max()
    rows = [(i, t + pd.Timedelta(hours=h)) for i, t in last.items() for h in np.linspace(-20, 10, n)]
    return pd.DataFrame(rows, columns=["id", "time"])


# ---------------------------------------------------------------------- samples
def test_sample_frame_and_reproducible_by_seed(fitted):
    est, df = fitted
    q = grid_queries(df)
    a = est.sample(df, times=q, n_samples=7, random_state=3)
    assert list(a.columns) == ["sample", "id", "time"] + VARS
    assert len(a) == 7 * len(q)
    assert (a.groupby("sample").size() == len(q)).all()
    pd.testing.assert_frame_equal(a, est.sample(df, times=q, n_samples=7, random_state=3))
    b = est.sample(df, times=q, n_samples=7, random_state=4)
    assert not np.allclose(a[VARS].to_numpy(), b[VARS].to_numpy())


def test_samples_independent_across_series(fitted):
    """Two series with identical observations get the same distribution but independent draws."""
    est, df = fitted
    one = df[df["id"] == df["id"].iloc[0]]
    twin = pd.concat([one, one.assign(id="twin")], ignore_index=True)
    t = one["time"].iloc[[0, -1]].to_numpy()
    s = est.sample(twin, times=t, n_samples=400, random_state=0)
    a = s[s["id"] != "twin"].sort_values(["sample", "time"])[VARS].to_numpy()
    b = s[s["id"] == "twin"].sort_values(["sample", "time"])[VARS].to_numpy()
    assert not np.allclose(a, b)
    corr = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(len(VARS))]
    assert np.max(np.abs(corr)) < 0.2
    assert (np.abs(a.mean(0) - b.mean(0)) < 4 * a.std(0) * np.sqrt(2 / len(a))).all()


# ---------------------------------------------------------------------- quantiles and intervals
def test_quantile_columns_monotone(fitted):
    est, df = fitted
    q = grid_queries(df)
    p = est.predict(df, times=q, quantiles=[0.1, 0.5, 0.9], n_samples=50)
    for v in VARS:
        assert [f"{v}-q-10", f"{v}-median", f"{v}-q-90"] == [c for c in p.columns if c.startswith(f"{v}-")]
        assert (p[f"{v}-q-10"] <= p[f"{v}-median"]).all() and (p[f"{v}-median"] <= p[f"{v}-q-90"]).all()


def test_level_columns_nested_and_std(fitted):
    est, df = fitted
    p = est.predict(df, times=grid_queries(df), level=[80, 95], return_std=True, n_samples=50)
    for v in VARS:
        assert {f"{v}-lo-80", f"{v}-hi-80", f"{v}-lo-95", f"{v}-hi-95", f"{v}-std"} <= set(p.columns)
        assert (p[f"{v}-lo-95"] <= p[f"{v}-lo-80"]).all() and (p[f"{v}-lo-80"] <= p[f"{v}-hi-80"]).all()
        assert (p[f"{v}-hi-80"] <= p[f"{v}-hi-95"]).all() and (p[f"{v}-std"] > 0).all()


def test_intervals_are_quantiles_of_the_samples(fitted):
    """Same seed and sample count: predict's interval columns are quantiles of sample()'s draws."""
    est, df = fitted
    q = grid_queries(df, 3)
    p = est.predict(df, times=q, level=[80], return_std=True, n_samples=40, random_state=5)
    s = est.sample(df, times=q, n_samples=40, random_state=5)
    draws = s[VARS].to_numpy().reshape(40, len(q), len(VARS))
    np.testing.assert_allclose(p[[f"{v}-lo-80" for v in VARS]], np.quantile(draws, 0.1, axis=0))
    np.testing.assert_allclose(p[[f"{v}-hi-80" for v in VARS]], np.quantile(draws, 0.9, axis=0))
    np.testing.assert_allclose(p[[f"{v}-std" for v in VARS]], draws.std(0, ddof=1))


def test_quantiles_and_level_are_exclusive(fitted):
    est, df = fitted
    with pytest.raises(ValueError, match="not both"):
        est.predict(df, quantiles=[0.5], level=[80])


# ---------------------------------------------------------------------- coverage: exact cases
def test_interval_coverage_exact():
    pred = pd.DataFrame({"a-lo-80": [0.0, 0.0, 0.0, 0.0], "a-hi-80": [1.0, 1.0, 1.0, 1.0],
                         "b-lo-80": [0.0] * 4, "b-hi-80": [2.0] * 4}, index=[10, 11, 12, 13])
    truth = pd.DataFrame({"a": [0.0, 1.0, 1.5, np.nan], "b": [3.0, np.nan, np.nan, np.nan]}, index=[13, 12, 11, 10])
    cov = interval_coverage(pred, truth, ["a", "b"], 80)
    assert cov.loc["a", "coverage-80"] == pytest.approx(2 / 3)  # bounds count as inside
    assert cov.loc["b", "coverage-80"] == 0.0
    assert cov.loc["overall", "coverage-80"] == pytest.approx(2 / 4)
    assert cov["n"].tolist() == [3, 1, 4]


def test_interval_coverage_on_keys_and_errors():
    pred = pd.DataFrame({"id": ["x", "x"], "t": [1, 2], "a-lo-80": [0.0, 0.0], "a-hi-80": [1.0, 1.0]})
    truth = pd.DataFrame({"id": ["x", "x"], "t": [2, 1], "a": [0.5, 5.0]}, index=[7, 8])
    assert interval_coverage(pred, truth, ["a"], 80, on=["id", "t"]).loc["a", "coverage-80"] == 0.5
    with pytest.raises(ValueError, match="index"):
        interval_coverage(pred, truth, ["a"], 80)
    with pytest.raises(ValueError, match="a-lo-95"):
        interval_coverage(pred, truth, ["a"], 95, on=["id", "t"])
    with pytest.raises(ValueError, match="level"):
        interval_coverage(pred, truth, ["a"], 100, on=["id", "t"])
    with pytest.raises(ValueError, match=r"truth lacks the variable columns \['b'\]"):
        interval_coverage(pred.assign(**{"b-lo-80": 0.0, "b-hi-80": 1.0}), truth, ["b"], 80, on=["id", "t"])


def test_interval_ratios_and_scaling_exact():
    pred = pd.DataFrame({"a": [0.0, 0.0, 0.0], "a-lo-80": [-1.0, -2.0, -1.0], "a-hi-80": [1.0, 2.0, 3.0]})
    truth = pd.DataFrame({"a": [0.5, -3.0, 3.0]})
    np.testing.assert_allclose(interval_ratios(pred, truth, ["a"], 80)["a"], [0.5, 1.5, 1.0])
    scaled = apply_interval_scale(pred, pd.DataFrame({"a": [2.0]}, index=[80.0]))
    np.testing.assert_allclose(scaled["a-lo-80"], [-2.0, -4.0, -3.0])
    np.testing.assert_allclose(scaled["a-hi-80"], [2.0, 4.0, 5.0])
    assert interval_coverage(scaled, truth, ["a"], 80).loc["a", "coverage-80"] == 1.0
    with pytest.raises(ValueError, match="none of the interval columns"):
        apply_interval_scale(pred, pd.DataFrame({"a": [2.0]}, index=[95.0]))


# ---------------------------------------------------------------------- coverage: the model's own process
@pytest.fixture(scope="module")
def own_process(fitted):
    """Truth drawn from the model's predictive distribution itself: 40 independent draws."""
    est, df = fitted
    q = grid_queries(df, 6)
    draws = est.sample(df, times=q, n_samples=40, random_state=123)
    truth = draws.drop(columns="sample").reset_index(drop=True)
    pred = est.predict(df, times=truth[["id", "time"]], level=[80, 95], n_samples=300, random_state=0)
    return est, df, truth, pred


def test_coverage_of_own_samples_is_nominal(own_process):
    _, _, truth, pred = own_process
    cov = interval_coverage(pred, truth, VARS, [80, 95])
    assert cov.loc["overall", "n"] == len(truth) * 3
    assert cov.loc["overall", "coverage-80"] == pytest.approx(0.80, abs=0.06)
    assert cov.loc["overall", "coverage-95"] == pytest.approx(0.95, abs=0.04)


def test_fit_interval_scale_near_one_on_own_samples(own_process):
    est, df, truth, _ = own_process
    scale = fit_interval_scale(est, df, truth, level=[80, 95], n_samples=300)
    assert list(scale.index) == [80.0, 95.0] and list(scale.columns) == VARS
    assert ((scale > 0.75) & (scale < 1.3)).all(axis=None)


def test_fit_interval_scale_reaches_level_on_its_own_data(fitted):
    """Conformal factor: on the calibration values themselves coverage is at least nominal."""
    est, df = fitted
    targets = df.assign(**{v: df[v] * 3.0 for v in VARS})  # far off: the raw intervals under-cover
    scale = fit_interval_scale(est, df, targets, level=80, n_samples=50, min_values=1)
    pred = est.predict(df, times=targets[["id", "time"]], level=[80], n_samples=50, random_state=0)
    cov = interval_coverage(apply_interval_scale(pred, scale), targets, VARS, 80)
    assert (cov["coverage-80"] >= 0.8).all()
