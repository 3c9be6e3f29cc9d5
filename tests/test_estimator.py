"""LatentODERegressor: the user's path, sklearn conventions, persistence and every bad input."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, GroupKFold

from latentode import LatentODERegressor

from conftest import TINY, with_time_kind

VARS = ["v1", "v2", "v3"]


@pytest.mark.parametrize("kind", ["float", "int", "datetime", "datetime_tz", "timedelta"])
def test_every_time_kind_fits_predicts_and_imputes(synth, kind):
    df = with_time_kind(synth[0], kind)
    est = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(df)
    # at the rows
    p = est.predict(df)
    assert p.index.equals(df.index) and list(p.columns) == ["id", "time"] + VARS
    assert p["time"].dtype == df["time"].dtype and p["id"].equals(df["id"])
    assert np.isfinite(p[VARS].to_numpy()).all()
    # the same times for every series: between, before and far after the observations
    t = df["time"]
    span = t.max() - t.min()
    times = pd.Series([t.min() - span * 0.5, t.min() + span * 0.37, t.max() + span * 3])
    q = est.predict(df, times=times)
    n_series = df["id"].nunique()
    assert len(q) == 3 * n_series and q["time"].dtype == times.dtype
    assert np.isfinite(q[VARS].to_numpy()).all()
    # per-series query rows keep their index
    rows = df.iloc[[5, 0, 17]][["id", "time"]].set_axis([10, 11, 12])
    r = est.predict(df, times=rows)
    assert list(r.index) == [10, 11, 12]
    # another query set means other adaptive solver steps: agreement to the solver tolerance
    # (dopri5 at rtol=1e-3 controls the local error; the global one is a few times larger)
    np.testing.assert_allclose(r[VARS].to_numpy(), p.loc[[5, 0, 17], VARS].to_numpy(), rtol=1e-3, atol=5e-3)
    # impute: same rows, index, columns; observed untouched; no NaN
    imp = est.impute(df)
    assert imp.index.equals(df.index) and list(imp.columns) == list(df.columns)
    assert imp[VARS].notna().all().all()
    observed = df[VARS].notna().to_numpy()
    np.testing.assert_array_equal(imp[VARS].to_numpy()[observed], df[VARS].to_numpy()[observed])
    np.testing.assert_allclose(imp[VARS].to_numpy()[~observed], p[VARS].to_numpy()[~observed], rtol=1e-5)


def test_input_frames_are_not_modified(synth):
    df = synth[0]
    before = df.copy()
    est = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(df)
    est.predict(df)
    est.impute(df)
    pd.testing.assert_frame_equal(df, before)


def test_rows_in_any_order_and_duplicates(fitted, synth):
    df = synth[0]
    a = fitted.predict(df)
    shuffled = df.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(fitted.predict(shuffled).loc[df.index], a)
    # repeated (id, time) rows are averaged: v1 split into two rows v1 - 1 and v1 + 1, plus an exact copy
    row = df.index[df["v1"].notna()][3]
    low, high = df.loc[[row]].copy(), df.loc[[row]].copy()
    low["v1"] -= 1.0
    high["v1"] += 1.0
    dup = pd.concat([df.drop(index=row), low.set_axis(["low"]), high.set_axis(["high"]),
                     df.iloc[[7]].set_axis(["copy"])])
    assert dup.duplicated(["id", "time"]).sum() == 2
    b = fitted.predict(dup)
    np.testing.assert_allclose(b.loc[df.index.drop(row), VARS].to_numpy(), a.drop(index=row)[VARS].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.loc[["low", "high"], VARS].to_numpy(), a.loc[[row, row], VARS].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.loc[["copy"], VARS].to_numpy(), a.iloc[[7]][VARS].to_numpy(), rtol=1e-5, atol=1e-6)


def test_single_series_without_id_and_short_series():
    t = np.array([0.0, 0.7, 1.1, 2.5, 3.0])
    df = pd.DataFrame({"time": t, "a": np.sin(t), "b": [np.nan, 1.0, np.nan, 0.5, np.nan]})
    est = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(df)
    p = est.predict(df, times=[-1.0, 1.5, 10.0])
    assert list(p.columns) == ["time", "a", "b"] and len(p) == 3
    one = pd.DataFrame({"id": ["x", "y", "y"], "time": [0.0, 0.0, 1.0], "a": [1.0, np.nan, 2.0],
                        "b": [np.nan, np.nan, 3.0]})
    est2 = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(one)
    assert est2.impute(one).notna().all().all()


def test_sklearn_conventions(synth):
    est = LatentODERegressor(latent_dim=3, lr=0.1)
    assert est.get_params()["latent_dim"] == 3
    assert not [k for k in vars(est) if k.endswith("_")]
    c = clone(est.set_params(latent_dim=5))
    assert c.latent_dim == 5 and c.lr == 0.1
    with pytest.raises(NotFittedError):
        est.predict(synth[0])
    fit = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(synth[0])
    assert list(fit.feature_names_in_) == VARS and fit.n_features_in_ == 3
    assert fit.id_col_ == "id" and fit.time_col_ == "time"
    assert len(fit.history_) == 1 and {"loss", "valid_mse", "nfe_forward", "seconds"} <= set(fit.history_[0])


def test_random_state_makes_fits_reproducible(synth):
    df = synth[0]
    a = LatentODERegressor(**TINY).fit(df).predict(df)
    b = LatentODERegressor(**TINY).fit(df).predict(df)
    pd.testing.assert_frame_equal(a, b)
    c = LatentODERegressor(**dict(TINY, random_state=1)).fit(df).predict(df)
    assert not np.allclose(a[VARS], c[VARS])


def test_grid_search_with_group_kfold(synth):
    df = synth[0]
    gs = GridSearchCV(LatentODERegressor(**dict(TINY, max_epochs=1)), {"latent_dim": [2, 4]},
                      cv=GroupKFold(n_splits=2))
    gs.fit(df, groups=df["id"])
    assert np.isfinite(gs.cv_results_["mean_test_score"]).all()
    assert gs.best_params_["latent_dim"] in (2, 4)


def test_score_is_negative_mse_and_reproducible(fitted, synth):
    s1, s2 = fitted.score(synth[0]), fitted.score(synth[0])
    assert s1 == s2 and s1 < 0


def test_score_does_not_depend_on_row_order(fitted, synth):
    df = synth[0]
    assert fitted.score(df.sample(frac=1.0, random_state=3)) == pytest.approx(fitted.score(df), rel=1e-6)


def test_score_without_observed_values_raises_value_error(fitted, synth):
    with pytest.raises(ValueError, match="no held-out values"):
        fitted.score(synth[0].assign(v1=np.nan, v2=np.nan, v3=np.nan))


def test_variable_weight_survives_save_load_and_pickle(synth, tmp_path):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, variable_weight={"v2": 5.0})).fit(df)
    ref = est.score(df)
    loaded = LatentODERegressor.load(est.save(tmp_path / "m"))
    assert loaded.score(df) == ref
    assert pickle.loads(pickle.dumps(est)).score(df) == ref


def test_save_is_atomic(fitted, synth, tmp_path, monkeypatch):
    import torch

    df = synth[0]
    path = fitted.save(tmp_path / "model")
    ref = LatentODERegressor.load(path).predict(df)
    other = LatentODERegressor(**dict(TINY, max_epochs=1, latent_dim=2)).fit(df)   # weights of another shape

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(LatentODERegressor.load(path).predict(df), ref)   # the old model, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]                  # no temporary left
    other.save(path)                                                                  # a save replaces it
    pd.testing.assert_frame_equal(LatentODERegressor.load(path).predict(df), other.predict(df))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a saved"):
        other.save(tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_sample_prior_with_last_anchor_starts_at_the_latest_time(synth):
    est = LatentODERegressor(**dict(TINY, max_epochs=1, anchor="last")).fit(synth[0])
    times = pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-05"])
    many = est.sample_prior(times, n_samples=3, noise=False, random_state=0)
    last = est.sample_prior(times[2:], n_samples=3, noise=False, random_state=0)   # z0 read out directly
    np.testing.assert_allclose(many[many["time"] == times[2]][VARS].to_numpy(), last[VARS].to_numpy(), rtol=1e-6,
                               atol=1e-6)
    origin = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(synth[0])
    many = origin.sample_prior(times, n_samples=3, noise=False, random_state=0)
    first = origin.sample_prior(times[:1], n_samples=3, noise=False, random_state=0)
    np.testing.assert_allclose(many[many["time"] == times[0]][VARS].to_numpy(), first[VARS].to_numpy(), rtol=1e-6,
                               atol=1e-6)


def test_sklearn_tags_declare_a_long_frame():
    tags = LatentODERegressor().__sklearn_tags__()
    assert tags.input_tags.two_d_array is False and tags.input_tags.allow_nan and tags.input_tags.string
    assert tags.target_tags.required is False


def test_frame_based_sklearn_checks(synth):
    """The checks scikit-learn's array-based suite would run, on long frames."""
    import joblib
    import torch

    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, prior_options={"hidden_dim": 8}, prior="cnf"))
    params = {k: joblib.hash(v) for k, v in est.get_params().items()}
    est.fit(df)
    assert {k: joblib.hash(v) for k, v in est.get_params().items()} == params   # fit leaves parameters alone
    first = est.predict(df)
    weights = {k: v.clone() for k, v in est.module_.state_dict().items()}
    est.fit(df)                                                                   # a refit is bit-identical
    pd.testing.assert_frame_equal(est.predict(df), first, check_exact=True)
    assert all(torch.equal(weights[k], v) for k, v in est.module_.state_dict().items())

    def snapshot():
        state = {k: (v if k == "module_" else joblib.hash(v)) for k, v in est.__dict__.items()}
        return state, {k: v.clone() for k, v in est.module_.state_dict().items()}

    before, module_state = snapshot()
    est.predict(df, quantiles=[0.1, 0.9], n_samples=4)
    est.impute(df)
    est.score(df)
    est.sample(df, n_samples=2)
    est.sample_prior(pd.to_datetime(["2024-01-01", "2024-01-02"]), n_samples=2)
    after, module_after = snapshot()
    assert after == before
    assert all(torch.equal(module_state[k], v) for k, v in module_after.items())
    # shuffled rows: identical predictions
    pd.testing.assert_frame_equal(est.predict(df.sample(frac=1.0, random_state=1)).loc[df.index], first,
                                  check_exact=True)


def test_save_load_and_pickle_give_identical_predictions(fitted, synth, tmp_path):
    df = synth[0]
    ref = fitted.predict(df, times=pd.date_range("2024-01-05", periods=7, freq="11h"))
    fitted.save(tmp_path / "model")
    loaded = LatentODERegressor.load(tmp_path / "model")
    pd.testing.assert_frame_equal(loaded.predict(df, times=pd.date_range("2024-01-05", periods=7, freq="11h")), ref)
    assert loaded.get_params() == fitted.get_params()
    unpickled = pickle.loads(pickle.dumps(fitted))
    pd.testing.assert_frame_equal(unpickled.predict(df, times=pd.date_range("2024-01-05", periods=7, freq="11h")),
                                  ref)
    with pytest.raises(FileNotFoundError, match="config.json"):
        LatentODERegressor.load(tmp_path / "nothing")


@pytest.mark.parametrize("encoder, readout", [("attention", "linear"), ("odernn", "per_variable"),
                                             ("attention", "per_variable")])
def test_attention_encoder_and_per_variable_readout_fit_predict_and_reload(synth, tmp_path, encoder, readout):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, encoder=encoder, readout=readout)).fit(df)
    times = pd.date_range("2024-01-05", periods=5, freq="13h")
    ref = est.predict(df, times=times)
    assert np.isfinite(ref[["v1", "v2"]].to_numpy(float)).all()
    assert est.impute(df)[["v1", "v2"]].notna().all().all()
    est.save(tmp_path / "model")
    loaded = LatentODERegressor.load(tmp_path / "model")
    assert loaded.get_params()["readout"] == readout and loaded.get_params()["encoder"] == encoder
    pd.testing.assert_frame_equal(loaded.predict(df, times=times), ref)
    bands = est.predict(df, times=times, level=80, n_samples=20)
    assert (bands["v1-lo-80"] <= bands["v1-hi-80"]).all()
    assert np.isfinite(est.sample_prior(times[:3], n_samples=3)[["v1", "v2"]].to_numpy(float)).all()


def test_inference_chunks_bound_the_per_variable_readouts_hidden_layer(synth):
    from latentode.estimator import INFER_ELEMENTS
    for readout in ("linear", "per_variable"):
        est = LatentODERegressor(**dict(TINY, max_epochs=1, readout=readout)).fit(synth[0])
        n_samples, q_max = 200, 50
        chunk = est._infer_chunk(n_samples, q_max)
        hidden = est.n_features_in_ * est.width if readout == "per_variable" else 0
        assert chunk * n_samples * q_max * (est.n_features_in_ + est.latent_dim + hidden) <= INFER_ELEMENTS
        assert chunk >= 1


def test_per_variable_readout_with_the_cnf_prior(synth):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, encoder="attention", readout="per_variable",
                                    prior="cnf")).fit(df)
    assert np.isfinite(est.sample_prior(pd.date_range("2024-01-05", periods=3, freq="5h"), n_samples=2)
                       [["v1", "v2", "v3"]].to_numpy(float)).all()
    assert np.isfinite(est.score(df))


@pytest.mark.parametrize("params, exc, match", [
    (dict(encoder="lstm"), ValueError, r"encoder='lstm' is not one of \['attention', 'gru', 'odernn'\]"),
    (dict(readout="mlp"), ValueError, r"readout='mlp' is not one of"),
    (dict(method="rk45"), ValueError, "method='rk45'"),
    (dict(method="explicit_adams"), ValueError, r"method='explicit_adams' is not one of .*'rk4'"),
    (dict(method="implicit_adams"), ValueError, "method='implicit_adams'"),
    (dict(step_size=0.0), ValueError, "step_size"),
    (dict(prior="flow"), ValueError, "prior='flow'"),
    (dict(latent_dim=0), ValueError, "latent_dim"),
    (dict(latent_dim=2.5), TypeError, "latent_dim"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(mask_fraction=1.5), ValueError, "mask_fraction"),
    (dict(adjoint="yes"), TypeError, "adjoint"),
    (dict(loss_on="visible"), ValueError, "loss_on='visible'"),
    (dict(anchor="end"), ValueError, "anchor='end'"),
    (dict(center="median"), ValueError, "center='median'"),
    (dict(center=1), ValueError, "center=1"),
    (dict(lr_decay=1.5), ValueError, "lr_decay"),
    (dict(lr_decay=0.0), ValueError, "lr_decay"),
    (dict(max_grad_norm=0.0), ValueError, "max_grad_norm"),
    (dict(max_grad_norm="1"), TypeError, "max_grad_norm"),
    (dict(loss_on="hidden", mask_fraction=0, forecast_fraction=0), ValueError, "loss_on='hidden'"),
    (dict(prior_options=[1]), TypeError, "prior_options"),
    (dict(time_col="when"), ValueError, "time_col='when'"),
    (dict(value_cols=["v1", "zz"]), ValueError, "zz"),
])
def test_bad_parameters_raise_at_fit(synth, params, exc, match):
    with pytest.raises(exc, match=match):
        LatentODERegressor(**dict(TINY, **params)).fit(synth[0])


def test_bad_inputs_at_predict(fitted, synth):
    df = synth[0]
    with pytest.raises(TypeError, match="DataFrame"):
        fitted.predict(df.to_numpy())
    with pytest.raises(ValueError, match="v2"):
        fitted.predict(df.drop(columns="v2"))
    with pytest.raises(TypeError, match="datetime"):
        fitted.predict(df, times=[1.0, 2.0])
    with pytest.raises(ValueError, match="no rows in X"):
        fitted.predict(df, times=pd.DataFrame({"id": ["nobody"], "time": [pd.Timestamp("2024-01-02")]}))
    with pytest.raises(ValueError, match="lacks columns"):
        fitted.predict(df, times=pd.DataFrame({"time": [pd.Timestamp("2024-01-02")]}))
    with pytest.raises(ValueError, match="quantiles or level"):
        fitted.predict(df, quantiles=[0.5], level=[80])
    with pytest.raises(ValueError, match="quantiles"):
        fitted.predict(df, quantiles=[1.5])
    with pytest.raises(ValueError, match="level"):
        fitted.predict(df, level=[120])
    with pytest.raises(ValueError, match="'time'"):
        fitted.predict(df.assign(time=pd.NaT))
    with pytest.raises(TypeError, match="'v1'"):
        fitted.impute(df.assign(v1="x"))


def test_extra_columns_are_ignored_and_kept_by_impute(fitted, synth):
    df = synth[0].assign(note="ok")
    out = fitted.impute(df)
    assert (out["note"] == "ok").all() and list(out.columns) == list(df.columns)


@pytest.mark.parametrize("params", [dict(n_samples=3), dict(encoder="gru"), dict(adjoint=False, method="rk4"),
                                    dict(loss_on="hidden", mask_fraction=0, forecast_fraction=1),
                                    dict(anchor="last"), dict(anchor="last", encoder="gru"), dict(center="mean"),
                                    dict(prior="cnf", n_samples=2, prior_options={"hidden_dim": 8})])
def test_other_configurations_fit(synth, params):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, **params)).fit(df)
    assert np.isfinite(est.history_[0]["loss"])
    assert np.isfinite(est.predict(df)[VARS].to_numpy()).all()


def test_fit_leaves_the_global_rng_alone_and_hutchinson_cnf_is_reproducible(synth):
    import torch

    df = synth[0]
    params = dict(TINY, max_epochs=1, prior="cnf", n_samples=2,
                  prior_options={"hidden_dim": 8, "trace": "hutchinson"})
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = LatentODERegressor(**params).fit(df)
    assert torch.equal(torch.get_rng_state(), state)
    b = LatentODERegressor(**params).fit(df)
    assert a.history_[0]["loss"] == b.history_[0]["loss"]


def test_sample_prior_and_predict_reject_2d_times(fitted):
    grid = np.zeros((2, 2))
    with pytest.raises(TypeError, match="times"):
        fitted.sample_prior(grid)
    with pytest.raises(ValueError, match="times is empty"):
        fitted.sample_prior([])


def test_fixed_noise_std_stays_fixed_and_round_trips(synth, tmp_path):
    import torch

    est = LatentODERegressor(**dict(TINY, max_epochs=1, noise_std=0.05)).fit(synth[0])
    torch.testing.assert_close(est.module_.decoder.noise_std, torch.full((3,), 0.05))
    loaded = LatentODERegressor.load(est.save(tmp_path / "m"))
    torch.testing.assert_close(loaded.module_.decoder.noise_std, torch.full((3,), 0.05))
    with pytest.raises(ValueError, match="noise_std"):
        LatentODERegressor(**dict(TINY, noise_std=0.0)).fit(synth[0])


def test_periodic_noise_benchmark_runs_tiny():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "periodic_noise.py"
    spec = importlib.util.spec_from_file_location("periodic_noise", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(epochs=1, n_series=20, n_points=10)
    assert len(out) == 2 and all(np.isfinite(r["test_mse_all_points"]) for r in out)
    assert out[1]["final_noise"] == pytest.approx(mod.FIXED)


def test_last_anchor_round_trips_and_forecasts_beyond_the_window(synth, tmp_path):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, anchor="last")).fit(df)
    ids = df["id"].unique()[:2]
    last = df.groupby("id")["time"].max()
    query = pd.DataFrame({"id": np.repeat(ids, 2), "time": [last[i] + pd.Timedelta(hours=h) for i in ids
                                                            for h in (1, 30)]})
    pred = est.predict(df, times=query)
    assert np.isfinite(pred[VARS].to_numpy()).all()
    est.save(tmp_path / "m")
    loaded = LatentODERegressor.load(tmp_path / "m")
    assert loaded.anchor == "last"
    pd.testing.assert_frame_equal(loaded.predict(df, times=query), pred)


def test_lr_decay_per_step_down_to_a_tenth(synth):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=3, lr=1e-2, lr_decay=0.5, validation_fraction=0)).fit(df)
    n_steps = int(np.ceil(df["id"].nunique() / TINY["batch_size"]))
    expected = [max(0.5 ** (n_steps * (e + 1)), 0.1) * 1e-2 for e in range(3)]
    assert [h["lr"] for h in est.history_] == pytest.approx(expected)
    flat = LatentODERegressor(**dict(TINY, max_epochs=1, validation_fraction=0)).fit(df)
    assert flat.history_[0]["lr"] == pytest.approx(1e-2)


def _norms_at_step(monkeypatch):
    """Record the total gradient norm the optimiser sees at every step."""
    import torch

    seen, step = [], torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    return seen


def test_max_grad_norm_clips_every_step_and_history_records_the_norm(synth, monkeypatch):
    df = synth[0]
    seen = _norms_at_step(monkeypatch)
    free = LatentODERegressor(**dict(TINY, max_epochs=2, validation_fraction=0, random_state=0)).fit(df)
    n_steps = int(np.ceil(df["id"].nunique() / TINY["batch_size"]))
    assert len(seen) == 2 * n_steps
    for e, h in enumerate(free.history_):  # unclipped: the history holds the norms the optimiser used
        epoch = seen[e * n_steps:(e + 1) * n_steps]
        assert h["grad_norm"] == pytest.approx(np.mean(epoch), rel=1e-5)
        assert h["grad_norm_max"] == pytest.approx(max(epoch), rel=1e-5)
    seen.clear()
    cap = 0.5 * min(h["grad_norm"] for h in free.history_)
    clipped = LatentODERegressor(**dict(TINY, max_epochs=2, validation_fraction=0, random_state=0,
                                        max_grad_norm=cap)).fit(df)
    assert max(seen) <= cap * (1 + 1e-5)
    assert clipped.history_[0]["grad_norm_max"] > cap  # the norm before clipping is what is recorded
    assert not np.allclose(free.predict(df)["v1"], clipped.predict(df)["v1"])


def test_variable_weight_balanced_dict_and_errors(synth):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, variable_weight="balanced")).fit(df)
    counts = df[VARS].notna().sum().to_numpy(dtype=float)
    np.testing.assert_allclose(est.variable_weight_, counts.sum() / (3 * counts))
    assert est.module_.variable_weight.tolist() == pytest.approx(est.variable_weight_.tolist())
    est = LatentODERegressor(**dict(TINY, max_epochs=1, variable_weight={"v2": 3.0})).fit(df)
    assert est.variable_weight_.tolist() == [1.0, 3.0, 1.0]
    assert LatentODERegressor(**dict(TINY, max_epochs=1)).fit(df).variable_weight_.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="zz"):
        LatentODERegressor(**dict(TINY, variable_weight={"zz": 1.0})).fit(df)
    with pytest.raises(ValueError, match="variable_weight"):
        LatentODERegressor(**dict(TINY, variable_weight={"v1": -1.0})).fit(df)
    with pytest.raises(TypeError, match="variable_weight"):
        LatentODERegressor(**dict(TINY, variable_weight="equal")).fit(df)


def test_a_zero_weight_removes_a_variable_from_the_loss(fitted, synth):
    import torch

    from latentode._collate import collate

    df = synth[0]
    series = fitted._validate(df).series.observed_only()
    batch = collate(series, np.arange(series.n_series), fitted.scaling_, fitted.device_)
    enc_mask = batch.m.clone()
    enc_mask[..., 1:] = 0  # the encoder sees v1 only; v2 and v3 are scored as hidden values
    model = fitted.module_
    model.variable_weight = torch.tensor([1.0, 0.0, 1.0])
    try:
        def loss(x):
            b = type(batch)(batch.t, x, batch.m)
            with torch.no_grad():
                return float(model.loss(b, enc_mask, generator=torch.Generator().manual_seed(0),
                                        solver=fitted._solver(), loss_on="hidden")[0])
        base = loss(batch.x)
        bump = torch.zeros_like(batch.x)
        bump[..., 1] = 3.0
        assert loss(batch.x + bump * batch.m) == pytest.approx(base, rel=1e-6)  # v2 weighs nothing
        bump = torch.zeros_like(batch.x)
        bump[..., 2] = 3.0
        assert loss(batch.x + bump * batch.m) != pytest.approx(base, rel=1e-3)  # v3 does
    finally:
        model.variable_weight = torch.ones(3)


def test_an_empty_earliest_row_sets_the_window_start(fitted, synth):
    """A row with every variable NaN observes nothing, but as a series' earliest row it is where the
    window (and z0) starts; later empty rows change nothing."""
    df = synth[0]
    ctx = df[df["id"].isin(df["id"].unique()[:3])]
    ctx = ctx[ctx[VARS].notna().any(axis=1)].reset_index(drop=True)
    first = ctx.groupby("id")["time"].min()
    query = ctx[["id", "time"]]
    base = fitted.predict(ctx, times=query)

    def with_rows(times):
        empty = pd.DataFrame({"id": first.index, "time": times})
        return pd.concat([empty, ctx], ignore_index=True)

    earlier = fitted.predict(with_rows(first.to_numpy() - pd.Timedelta(hours=12)), times=query)
    assert not np.allclose(earlier[VARS].to_numpy(), base[VARS].to_numpy())
    later = ctx.groupby("id")["time"].max().to_numpy() + pd.Timedelta(hours=1)
    pd.testing.assert_frame_equal(fitted.predict(with_rows(later), times=query), base)


def test_center_last_adds_each_series_last_value_and_round_trips(synth, tmp_path):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, anchor="last", center="last", blend=None)).fit(df)
    query = pd.DataFrame({"id": df["id"].unique()[:3]}).merge(
        pd.DataFrame({"time": pd.date_range("2024-01-05", periods=3, freq="9h")}), how="cross")
    pred = est.predict(df, times=query)
    est.save(tmp_path / "m")
    loaded = LatentODERegressor.load(tmp_path / "m")
    assert loaded.center == "last"
    pd.testing.assert_frame_equal(loaded.predict(df, times=query), pred)
    # the same weights without the centring: the difference is each series' last value minus the training mean
    est.module_.center = None
    plain = est.predict(df, times=query)
    last = df.sort_values("time").groupby("id")[VARS].last()     # last non-NaN value per series and variable
    expected = last.loc[query["id"]].to_numpy() - est.scaling_.mean
    np.testing.assert_allclose(pred[VARS].to_numpy() - plain[VARS].to_numpy(), expected, rtol=1e-4, atol=1e-4)


def test_center_interp_adds_the_linear_interpolation_of_each_series(synth, tmp_path):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, center="interp", blend=None)).fit(df)
    ids = df["id"].unique()[:4]
    ctx = df[df["id"].isin(ids)]
    query = ctx[["id", "time"]]
    pred = est.predict(ctx, times=query)
    est.save(tmp_path / "m")
    pd.testing.assert_frame_equal(LatentODERegressor.load(tmp_path / "m").predict(ctx, times=query), pred)
    est.module_.center = None
    plain = est.predict(ctx, times=query)
    # pandas' own time interpolation, the nearest value carried outside each variable's observed span
    parts = [g.set_index("time")[VARS].interpolate(method="time").ffill().bfill().assign(id=key).reset_index()
             for key, g in ctx.sort_values("time").groupby("id")]
    interp = query.merge(pd.concat(parts), on=["id", "time"], how="left")
    expected = interp[VARS].to_numpy() - est.scaling_.mean
    np.testing.assert_allclose(pred[VARS].to_numpy() - plain[VARS].to_numpy(), expected, rtol=1e-4, atol=1e-4)


def test_validation_data_selects_the_weights_and_is_checked(synth):
    df = synth[0]
    ids = df["id"].unique()
    train, valid = df[~df["id"].isin(ids[:4])], df[df["id"].isin(ids[:4])]
    before = valid.copy()
    est = LatentODERegressor(**dict(TINY, max_epochs=3, kl_warmup=0, patience=None)).fit(train, validation_data=valid)
    pd.testing.assert_frame_equal(valid, before)
    v = [h["valid_mse"] for h in est.history_]
    assert len(v) == 3 and np.isfinite(v).all()
    # every training series is trained on: the fit differs from one holding out a fraction
    held = LatentODERegressor(**dict(TINY, max_epochs=3, kl_warmup=0, patience=None)).fit(train)
    assert not np.allclose(est.predict(train)[VARS], held.predict(train)[VARS])
    # the weights kept are those of the best validation epoch: scoring them on valid gives its minimum
    from latentode._training import HeldOut, evaluate_mse
    held_out = HeldOut(est._validate(valid).series.observed_only(), est.scaling_, est.device_)
    best = evaluate_mse(est.module_, held_out, est.batch_size, est._solver())
    assert best == pytest.approx(min(v), rel=1e-4)
    with pytest.raises(ValueError, match="validation_data"):
        LatentODERegressor(**dict(TINY, max_epochs=1)).fit(train, validation_data=valid.drop(columns=[VARS[0]]))
    with pytest.raises(TypeError, match="validation_data"):
        LatentODERegressor(**dict(TINY, max_epochs=1)).fit(train, validation_data=valid.to_numpy())


def test_new_user_messages(fitted, synth):
    """Levels are percentages; a missing fitted variable and numbers for a datetime model are said plainly."""
    df, _ = synth
    with pytest.raises(ValueError, match=r"level is in percent \(e.g. 80 for an 80% interval\).*\[80.0\]"):
        fitted.predict(df, level=[0.8])
    with pytest.raises(ValueError, match="percent"):
        fitted.predict(df, level=1)
    assert "v1-lo-80" in fitted.predict(df.iloc[:20], level=[80], n_samples=4)
    with pytest.raises(ValueError, match="the frame lacks the fitted variable v3;") as err:
        fitted.impute(df.drop(columns="v3"))
    assert "value_cols" not in str(err.value)
    with pytest.raises(TypeError, match=r"the model was fitted on datetime \(tz-naive\) times \(datetimes\), "
                                        r"but times holds numeric ones"):
        fitted.predict(df, times=[0.0, 1.0])
