"""The boundary: column detection, time kinds, validation errors, frame -> tensors -> frame."""

import numpy as np
import pandas as pd
import pytest

from latentode._collate import Scaling, collate
from latentode._frame import TimeKind, resolve_columns, validate_frame

from conftest import with_time_kind


def small():
    return pd.DataFrame({
        "unique_id": ["b", "a", "b", "a", "b"],
        "ds": [2.0, 0.5, 0.0, 0.0, 2.0],
        "x": [1.0, np.nan, 3.0, 4.0, 5.0],
        "y": [np.nan, 2.0, 1.0, np.nan, 7.0],
    })


def test_detects_usual_names_and_orders_rows():
    lf = validate_frame(small())
    assert lf.columns.id == "unique_id" and lf.columns.time == "ds" and lf.columns.values == ("x", "y")
    s = lf.series
    assert list(s.ids) == ["b", "a"]  # order of first appearance
    # b: times 0, 2 (two rows at t=2 averaged per variable, NaN ignored); a: times 0, 0.5
    np.testing.assert_array_equal(s.time, [0.0, 2.0, 0.0, 0.5])
    np.testing.assert_array_equal(s.offsets, [0, 2, 4])
    np.testing.assert_array_equal(s.values[1], [3.0, 7.0])
    assert np.isnan(s.values[2, 1]) and s.values[2, 0] == 4.0
    # every row maps to its point
    np.testing.assert_array_equal(s.row_point, [1, 3, 0, 2, 1])


def test_no_id_column_is_one_series():
    df = small().drop(columns="unique_id")
    lf = validate_frame(df)
    assert lf.columns.id is None and lf.series.n_series == 1


@pytest.mark.parametrize("kind", ["float", "int", "datetime", "datetime_tz", "timedelta"])
def test_time_kinds_convert_to_consistent_units(synth, kind):
    df = with_time_kind(synth[0], kind)
    lf = validate_frame(df)
    t = lf.time_kind.to_float(df["time"], "t")
    hours = (synth[0]["time"] - pd.Timestamp("2024-01-01")) / pd.Timedelta(hours=1)
    per_unit = {"float": 1.0, "int": 1 / 60, "datetime": 3600.0, "datetime_tz": 3600.0, "timedelta": 3600.0}[kind]
    gaps = np.diff(t) * (1 / per_unit if kind != "int" else 1 / 60)
    np.testing.assert_allclose(gaps, np.diff(hours.to_numpy()), atol=1e-6)


def test_time_kind_mismatch_is_a_type_error(synth):
    kind = TimeKind.of(synth[0]["time"], "time")
    with pytest.raises(TypeError, match="datetime"):
        kind.to_float(pd.Series([1.0, 2.0]), "times")
    with pytest.raises(TypeError, match="tz"):
        kind.to_float(synth[0]["time"].dt.tz_localize("UTC"), "times")


@pytest.mark.parametrize("mutate, exc, match", [
    (lambda d: d.assign(ds=[1.0, np.nan, 2, 3, 4]), ValueError, "'ds'"),
    (lambda d: d.assign(x=[1.0, np.inf, 2, 3, 4]), ValueError, "'x'"),
    (lambda d: d.assign(x=list("abcde")), TypeError, "'x'"),
    (lambda d: d.assign(ds=list("abcde")), TypeError, "'ds'"),
    (lambda d: d.assign(unique_id=["a", None, "b", "a", "b"]), ValueError, "'unique_id'"),
    (lambda d: d.rename(columns={"ds": "when"}), ValueError, "columns found"),
    (lambda d: d.iloc[:0], ValueError, "no rows"),
])
def test_bad_frames_name_the_column(mutate, exc, match):
    with pytest.raises(exc, match=match):
        validate_frame(mutate(small()))


def test_bad_column_arguments():
    with pytest.raises(ValueError, match="time_col='nope'"):
        resolve_columns(small(), time_col="nope")
    with pytest.raises(ValueError, match="id_col='nope'"):
        resolve_columns(small(), id_col="nope")
    with pytest.raises(ValueError, match=r"\['z'\]"):
        resolve_columns(small(), value_cols=["x", "z"])
    with pytest.raises(TypeError, match="DataFrame"):
        validate_frame(small().to_numpy())


def test_all_nan_variable_in_training_is_rejected():
    lf = validate_frame(small().assign(y=np.nan))
    with pytest.raises(ValueError, match="'y'"):
        Scaling.fit(lf.series, lf.columns.values)


def test_frame_tensors_frame_round_trip(synth):
    df = synth[0]
    lf = validate_frame(df)
    series = lf.series.observed_only()
    sc = Scaling.fit(series, lf.columns.values)
    batch = collate(series, np.arange(series.n_series), sc)
    assert batch.t.shape == batch.x.shape[:2] and batch.x.shape == batch.m.shape
    assert not any(bool(v.isnan().any()) for v in batch)
    rows = []
    for i in range(series.n_series):
        n = series.lengths[i]
        t = batch.t[i, :n].double().numpy() * sc.time_scale + series.origin[i]
        m = batch.m[i, :n].bool().numpy()
        x = np.where(m, batch.x[i, :n].double().numpy() * sc.std + sc.mean, np.nan)
        when = pd.to_datetime(np.round(t).astype("int64"), unit="s")
        rows.append(pd.DataFrame({"id": series.ids[i], "time": when, "v1": x[:, 0], "v2": x[:, 1], "v3": x[:, 2]}))
    back = pd.concat(rows, ignore_index=True)
    expect = df.sort_values(["id", "time"], kind="stable").reset_index(drop=True)
    pd.testing.assert_series_equal(back["id"], expect["id"].astype(object), check_dtype=False)
    assert (back["time"].astype("datetime64[s]") == expect["time"].astype("datetime64[s]")).all()
    np.testing.assert_allclose(back[["v1", "v2", "v3"]].to_numpy(), expect[["v1", "v2", "v3"]].to_numpy(),
                               rtol=1e-5, atol=1e-5)
    # padding: zero-length steps and no observation
    assert (batch.m.sum(-1)[:, :][np.arange(batch.t.shape[1])[None, :] >= series.lengths[:, None]] == 0).all()


# ---------------------------------------------------------------- what a new user tripped over
def test_mixed_utc_offsets_in_text_or_objects_become_utc():
    text = ["2024-03-31T00:30:00+01:00", "2024-03-31T01:30:00+01:00", "2024-03-31T03:30:00+02:00"]
    df = pd.DataFrame({"id": ["a", "a", "a"], "time": text, "x": [1.0, 2.0, 3.0]})
    before = df.copy()
    lf = validate_frame(df)
    assert lf.time_kind == TimeKind("datetime", "UTC")
    np.testing.assert_allclose(np.diff(lf.series.time), [3600.0, 3600.0])  # an hour apart, across the change
    pd.testing.assert_frame_equal(df, before)  # parsed on the side, the input is kept
    objects = df.assign(time=pd.Series([pd.Timestamp(t) for t in text], dtype=object))
    np.testing.assert_array_equal(validate_frame(objects).series.time, lf.series.time)
    naive = validate_frame(df.assign(time=["2024-01-01", "2024-01-02", "2024-01-03 12:00"]))
    assert naive.time_kind == TimeKind("datetime", None)
    with pytest.raises(TypeError, match=r"^X: |time column 'time'"):
        validate_frame(df.assign(time=["1", "2", "3"]))  # numbers as text are not dates


def test_input_errors_are_value_and_type_errors():
    """Boundary checks raise latentode.InputError subclasses, still ValueError / TypeError for callers."""
    from latentode import InputError

    for mutate, exc in [(lambda d: d.iloc[:0], ValueError), (lambda d: d.assign(x=list("abcde")), TypeError)]:
        with pytest.raises(exc) as err:
            validate_frame(mutate(small()))
        assert isinstance(err.value, InputError)


def test_time_type_error_names_the_column_once():
    with pytest.raises(TypeError) as err:
        validate_frame(small().assign(ds=list("abcde")))
    assert str(err.value).startswith("time column 'ds' must hold numbers") and "time column \"" not in str(err.value)


def test_times_in_the_index_are_pointed_out():
    df = small().set_index("ds")
    with pytest.raises(ValueError, match=r"index level 'ds', not in a column: pass df.reset_index\(\)"):
        validate_frame(df)
    wide = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.date_range("2024-01-01", periods=2, freq="h"))
    with pytest.raises(ValueError, match=r"held in the index \(DatetimeIndex\)"):
        validate_frame(wide)
    with pytest.raises(ValueError, match="index level 'ds'"):
        validate_frame(df, time_col="ds")


def test_unnamed_id_column_warns_with_the_candidate():
    rng = np.random.default_rng(0)
    n, per = 6, 5
    df = pd.DataFrame({"patient": np.repeat(np.arange(n), per), "time": np.tile(np.arange(per, dtype=float), n),
                       "x": rng.normal(size=n * per)})
    with pytest.warns(UserWarning, match=r"column 'patient' \(int64, 6 distinct values\) looks like a series id: "
                                         r"pass id_col='patient'"):
        validate_frame(df)
    with pytest.warns(UserWarning, match="column 'ward'.*id_col='ward'"):
        with pytest.raises(TypeError, match="'ward'"):
            validate_frame(df.rename(columns={"patient": "ward"}).astype({"ward": str}))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_frame(df, id_col="patient")  # named: no hint
        validate_frame(df, fitted=True)  # a fitted model's columns: decided at fit
        one = df[df["patient"] == 0].assign(patient=[1, 1, 2, 2, 3])  # one series, an integer variable
        validate_frame(one)
    with pytest.warns(UserWarning, match="id_col='patient'"):
        validate_frame(df, value_cols=["x"])  # not a variable, still a candidate
    with pytest.warns(UserWarning, match="all 30 rows are one series, yet they hold only 5 distinct times"):
        validate_frame(df.astype({"patient": float}))  # a float id: no candidate, but times repeat
    wide = pd.DataFrame({"time": np.arange(4.0), **{f"v{j}": rng.normal(size=4) for j in range(20)}})
    with pytest.warns(UserWarning, match="one series with 20 variables.*melt it to long format"):
        validate_frame(wide)


def test_all_nan_variable_suggests_dropping_it():
    lf = validate_frame(small().assign(y=np.nan))
    with pytest.raises(ValueError, match=r"\['y'\].*drop them \(df.drop\(columns=\['y'\]\)\)"):
        Scaling.fit(lf.series, lf.columns.values)
