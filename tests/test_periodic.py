"""Tests for the synthetic periodic task of Rubanova et al. (2019)."""

import re

import numpy as np
import pandas as pd
import pytest

from latentode.datasets.periodic import TASKS, make_periodic, periodic_task


def as_matrix(df, column="y"):
    """(n_series, n_points) array of ``column``; the frame is sorted by id then time."""
    n_series = df["unique_id"].nunique()
    return df[column].to_numpy().reshape(n_series, -1)


def recovered_frequencies(df):
    """Without noise or offset spread y - 1 = sin(2 pi f t): read f off the first point t > 0."""
    t, y = as_matrix(df, "time")[:, 1], as_matrix(df)[:, 1]
    assert (t < 0.3).all()  # 2 pi f t < pi / 2 for f < 0.83, so arcsin inverts the sine
    return np.arcsin(y - 1) / (2 * np.pi * t)


def test_layout_and_dtypes():
    df = make_periodic(n_series=4, n_points=7, random_state=0)
    assert list(df.columns) == ["unique_id", "time", "y"]
    assert df.dtypes.tolist() == [np.int64, np.float64, np.float64]
    assert isinstance(df.index, pd.RangeIndex) and len(df) == 28
    assert df["unique_id"].tolist() == [i for i in range(4) for _ in range(7)]


def test_shared_grid_starts_at_zero_and_is_sorted():
    df = make_periodic(n_series=5, n_points=50, t_max=3.0, random_state=1)
    grid = as_matrix(df, "time")
    assert (grid == grid[0]).all()
    assert grid[0, 0] == 0.0 and (np.diff(grid[0]) > 0).all() and grid[0, -1] < 3.0


def test_matches_the_documented_process_draw_for_draw():
    df = make_periodic(n_series=3, n_points=6, t_max=5.0, random_state=42)
    rng = np.random.default_rng(42)
    t = np.sort(np.r_[0.0, rng.uniform(0, 5.0, 5)])
    f = rng.uniform(0.4, 0.8, 3)
    z0 = 1 + rng.normal(0, 0.1, 3)
    y = np.sin(2 * np.pi * f[:, None] * t) + z0[:, None]
    y[:, 1:] += 0.01 * rng.random((3, 5))
    np.testing.assert_array_equal(as_matrix(df, "time"), np.tile(t, (3, 1)))
    np.testing.assert_array_equal(as_matrix(df), y)


def test_frequencies_lie_in_range():
    df = make_periodic(n_series=500, n_points=200, offset_std=0.0, noise=0.0, random_state=2)
    f = recovered_frequencies(df)
    assert f.min() >= 0.4 - 1e-9 and f.max() < 0.8 + 1e-9
    assert f.min() < 0.42 and f.max() > 0.78  # the whole range is used


def test_bimodal_frequency_mixture():
    ranges = [(0.3, 0.4), (0.7, 0.8)]
    df = make_periodic(n_series=400, n_points=200, freq_range=ranges, offset_std=0.0, noise=0.0,
                       random_state=3)  # fmt: skip
    f = recovered_frequencies(df)
    low = (f >= 0.3 - 1e-9) & (f < 0.4 + 1e-9)
    high = (f >= 0.7 - 1e-9) & (f < 0.8 + 1e-9)
    assert (low | high).all()
    # Equal weights: the count in one component is Binomial(400, 1/2), sd 10.
    assert abs(low.sum() - 200) < 50


def test_a_list_of_one_range_equals_the_range():
    a = make_periodic(n_series=3, n_points=5, freq_range=(0.4, 0.8), random_state=4)
    b = make_periodic(n_series=3, n_points=5, freq_range=[(0.4, 0.8)], random_state=4)
    pd.testing.assert_frame_equal(a, b)


def test_offset_statistics():
    n = 4000
    df = make_periodic(n_series=n, n_points=2, noise=0.0, random_state=5)
    z0 = as_matrix(df)[:, 0]  # sin(0) = 0, so y(0) is the offset
    assert abs(z0.mean() - 1.0) < 4 * 0.1 / np.sqrt(n)  # 4 standard errors
    assert abs(z0.std() - 0.1) < 4 * 0.1 / np.sqrt(2 * n)


def test_noise_is_one_sided_and_spares_the_first_point():
    clean = make_periodic(n_series=50, n_points=30, noise=0.0, random_state=6)
    noisy = make_periodic(n_series=50, n_points=30, noise=0.01, random_state=6)
    added = as_matrix(noisy) - as_matrix(clean)  # the noise is drawn last: same grid, f and z0
    assert (added[:, 0] == 0).all()
    assert (added[:, 1:] >= 0).all() and (added[:, 1:] < 0.01 + 1e-12).all()
    assert added[:, 1:].max() > 0.009


def test_reproducible_with_a_seed_and_different_with_another():
    pd.testing.assert_frame_equal(make_periodic(10, 20, random_state=7),
                                  make_periodic(10, 20, random_state=7))  # fmt: skip
    assert not make_periodic(10, 20, random_state=7).equals(make_periodic(10, 20, random_state=8))
    rng = np.random.default_rng(9)
    first, second = make_periodic(2, 5, random_state=rng), make_periodic(2, 5, random_state=rng)
    assert not first.equals(second)  # a Generator is advanced in place


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_series": 0}, ValueError, "n_series must be at least 1, got 0"),
        ({"n_series": 2.5}, TypeError, "n_series must be an int, got float"),
        ({"n_points": 1}, ValueError, "n_points must be at least 2, got 1"),
        ({"t_max": 0.0}, ValueError, "t_max must be finite and positive, got 0.0"),
        ({"t_max": float("inf")}, ValueError, "t_max must be finite and positive"),
        ({"noise": -0.1}, ValueError, "noise must be finite and non-negative, got -0.1"),
        ({"offset_std": "0.1"}, TypeError, "offset_std must be a real number, got str"),
        ({"freq_range": (0.8, 0.4)}, ValueError, r"need finite 0 <= low < high, got \(0.8, 0.4\)"),
        ({"freq_range": [(0.3, 0.4), (1.0,)]}, ValueError, "freq_range must be a"),
        ({"freq_range": []}, ValueError, "freq_range must be a"),
        ({"random_state": "seed"}, TypeError, "random_state must be None, an int"),
    ],
)
def test_make_periodic_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        make_periodic(**kwargs)


# --------------------------------------------------------------------------- periodic_task


@pytest.fixture(scope="module")
def frame():
    return make_periodic(n_series=20, n_points=100, random_state=10)


def test_interpolation_observes_a_random_subset_and_targets_everything(frame):
    observed, target = periodic_task(frame, "interpolation", n_observed=50, random_state=0)
    pd.testing.assert_frame_equal(target, frame)
    assert (observed.groupby("unique_id").size() == 50).all()
    assert len(observed.merge(frame)) == len(observed)  # every observed row is a row of frame
    assert observed.equals(observed.sort_values(["unique_id", "time"], ignore_index=True))
    times = [set(g["time"]) for _, g in observed.groupby("unique_id")]
    assert len({frozenset(s) for s in times}) > 1  # each series draws its own points


def test_extrapolation_splits_each_series_at_half(frame):
    observed, target = periodic_task(frame, "extrapolation", random_state=0)
    grid = np.sort(frame["time"].unique())
    assert (as_matrix(observed, "time") == grid[:50]).all()
    assert (as_matrix(target, "time") == grid[50:]).all()
    assert len(observed) + len(target) == len(frame)


def test_extrapolation_subsamples_the_first_half(frame):
    observed, target = periodic_task(frame, "extrapolation", n_observed=20, random_state=0)
    assert (observed.groupby("unique_id").size() == 20).all()
    assert observed["time"].max() < target["time"].min()
    assert len(target) == 20 * 50


def test_odd_lengths_and_all_points():
    df = make_periodic(n_series=2, n_points=5, random_state=0)
    observed, target = periodic_task(df, "extrapolation", n_observed=None)
    assert len(observed) == 2 * 2 and len(target) == 2 * 3
    observed, _ = periodic_task(df, "interpolation", n_observed=None)
    pd.testing.assert_frame_equal(observed, df)


def test_task_is_reproducible(frame):
    a, _ = periodic_task(frame, n_observed=10, random_state=3)
    b, _ = periodic_task(frame, n_observed=10, random_state=3)
    c, _ = periodic_task(frame, n_observed=10, random_state=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_periodic_task_rejects_bad_arguments(frame):
    with pytest.raises(ValueError, match=re.escape(f"task must be one of {TASKS}, got 'forecast'")):
        periodic_task(frame, "forecast")
    message = "n_observed=60 exceeds the 50 points that series 0 can observe"
    with pytest.raises(ValueError, match=message):
        periodic_task(frame, "extrapolation", n_observed=60)
    with pytest.raises(ValueError, match="n_observed must be at least 1, got 0"):
        periodic_task(frame, n_observed=0)
    with pytest.raises(TypeError, match="n_observed must be an int, got float"):
        periodic_task(frame, n_observed=5.0)
    with pytest.raises(ValueError, match=r"df lacks the column\(s\) \['y'\]"):
        periodic_task(frame.drop(columns="y"))
    with pytest.raises(ValueError, match="df has no rows"):
        periodic_task(frame.iloc[:0])
    with pytest.raises(TypeError, match="df must be a pandas DataFrame, got ndarray"):
        periodic_task(frame.to_numpy())
