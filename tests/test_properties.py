"""Property-based tests (hypothesis) of the whole estimator on generated long frames.

Whatever the frame, ``fit``, ``predict``, ``impute`` and ``score`` either succeed with finite
output or raise ``ValueError``/``TypeError`` naming a column or an argument; the input is never
modified and ``impute`` never changes an observed value. Kept fast: few, tiny examples.
"""

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from latentode import LatentODERegressor  # noqa: E402

TINY = dict(latent_dim=2, encoder_dim=8, width=8, n_layers=1, max_epochs=1, batch_size=4, encoder="gru",
            random_state=0)
VARS = ["v1", "v2"]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@st.composite
def long_frames(draw):
    """A long frame with random ids, times, gaps, duplicates, row order and extra columns, plus fit kwargs."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    lengths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))  # single-row series included
    id_kind = draw(st.sampled_from(["int", "str", "category"]))
    time_kind = draw(st.sampled_from(["float", "int", "datetime", "datetime_tz"]))
    nan_p = draw(st.sampled_from([0.0, 0.3, 0.7]))
    n = sum(lengths)
    ids = np.repeat(np.arange(len(lengths)), lengths)
    steps = rng.integers(1, 5, size=n).astype(float)
    t = np.concatenate([np.cumsum(steps[ids == i]) - steps[ids == i][0] for i in range(len(lengths))])
    values = rng.normal(size=(n, len(VARS)))
    values[rng.uniform(size=values.shape) < nan_p] = np.nan
    if draw(st.booleans()) and n > 1:
        values[:, 1] = np.nan if draw(st.booleans()) else values[:, 1]  # a variable never observed
    df = pd.DataFrame({"id": ids, "time": t, "v1": values[:, 0], "v2": values[:, 1]})
    n_dup = draw(st.integers(0, 3))
    if n_dup:  # repeated (id, time) rows with other values
        extra = df.sample(n_dup, replace=True, random_state=seed % 1000).assign(v1=lambda d: d["v1"] + 1.0)
        df = pd.concat([df, extra], ignore_index=True)
    flaw = draw(st.sampled_from(["none", "none", "inf_value", "inf_time", "nan_time", "text_column",
                                 "number_column"]))
    if flaw == "inf_value":
        df.loc[df.index[-1], "v1"] = np.inf
    elif flaw == "inf_time" and time_kind == "float":
        df.loc[df.index[0], "time"] = np.inf
    elif flaw == "nan_time" and time_kind in ("float", "datetime"):
        df.loc[df.index[0], "time"] = np.nan
    elif flaw == "text_column":
        df["note"] = "x"
    elif flaw == "number_column":
        df["batch"] = rng.normal(size=len(df))
    if time_kind == "int":
        df["time"] = df["time"].round().astype("Int64" if df["time"].isna().any() else np.int64) \
            if np.isfinite(df["time"].fillna(0)).all() else df["time"]
    elif time_kind.startswith("datetime"):
        when = pd.Timestamp("2024-03-30") + pd.to_timedelta(df["time"].where(np.isfinite(df["time"])), unit="h")
        df["time"] = when.dt.tz_localize("Europe/Paris") if time_kind == "datetime_tz" else when
    if id_kind == "str":
        df["id"] = "s" + df["id"].astype(str)
    elif id_kind == "category":
        df["id"] = df["id"].map({i: f"c{i}" for i in range(len(lengths))}).astype("category")
    df = df.sample(frac=1.0, random_state=seed % 997).reset_index(drop=True)  # any row order
    kwargs = dict(validation_fraction=draw(st.sampled_from([0.0, 0.3])))
    if draw(st.booleans()):
        kwargs["value_cols"] = VARS
    return df, kwargs


def assert_named(err, df, kwargs):
    """A ValueError/TypeError names a column or an argument (not only the "X: " it starts with)."""
    message = str(err).removeprefix("X: ")
    names = [repr(str(c)) for c in df.columns] + ["X has", "value_cols", "id_col", "time_col", "times"]
    assert any(name in message for name in names), message


@SETTINGS
@given(long_frames())
def test_fit_predict_impute_score_succeed_or_name_the_problem(case):
    df, kwargs = case
    before = df.copy(deep=True)
    try:
        est = LatentODERegressor(**TINY, **kwargs).fit(df)
    except (ValueError, TypeError) as err:
        event(f"fit refused: {type(err).__name__}")
        assert_named(err, df, kwargs)
        pd.testing.assert_frame_equal(df, before)
        return
    event("fitted")
    pd.testing.assert_frame_equal(df, before)
    variables = list(est.feature_names_in_)

    pred = est.predict(df)
    assert len(pred) == len(df) and np.isfinite(pred[variables].to_numpy(dtype=float)).all()
    pred = est.predict(df, level=[80], n_samples=3)
    assert np.isfinite(pred.drop(columns=["id", "time"]).to_numpy(dtype=float)).all()

    filled = est.impute(df)
    assert filled.shape == df.shape and list(filled.columns) == list(df.columns)
    observed = df[variables].notna().to_numpy()
    np.testing.assert_array_equal(filled[variables].to_numpy(dtype=float)[observed],
                                  df[variables].to_numpy(dtype=float)[observed])
    assert np.isfinite(filled[variables].to_numpy(dtype=float)).all()
    others = [c for c in df.columns if c not in variables]
    pd.testing.assert_frame_equal(filled[others], df[others])

    try:
        assert np.isfinite(est.score(df))
    except ValueError as err:
        event("score refused")
        assert_named(err, df, kwargs)
    pd.testing.assert_frame_equal(df, before)
