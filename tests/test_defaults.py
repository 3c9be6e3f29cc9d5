"""The default settings, each tested for the behaviour it is there for, and the scoreboard at tiny size."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latentode import LatentODERegressor
from latentode import _training
from latentode._frame import SeriesSet, validate_frame
from latentode._windows import auto_window, cut_windows, query_windows
from latentode.datasets import dynamics
from latentode.decoder import LatentDynamics, rotation_matrix

from conftest import TINY

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------- noise_std="auto"
def test_auto_noise_trains_fixed_then_is_the_heldout_rms(synth, monkeypatch):
    seen = []
    real_step = _training.train_step

    def spy(model, *args, **kwargs):
        seen.append(model.decoder.noise_std.detach().clone())
        assert not model.decoder.log_noise.requires_grad  # the scale cannot absorb the data
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(_training, "train_step", spy)
    df, _ = synth
    est = LatentODERegressor(**dict(TINY, validation_fraction=0.3)).fit(df)
    assert seen and all(torch.allclose(s, torch.full_like(s, 0.05)) for s in seen)
    # afterwards: the RMS error on held-out values of the validation series, per variable
    assert est.noise_std_.shape == (3,)
    assert not np.allclose(est.noise_std_, 0.05)
    assert np.all(est.noise_std_ > 0) and np.all(np.isfinite(est.noise_std_))
    np.testing.assert_allclose(est.module_.decoder.noise_std.detach().numpy(), est.noise_std_, rtol=1e-6)


def test_auto_noise_equals_rms_of_heldout_errors_without_validation(synth):
    df, _ = synth
    est = LatentODERegressor(**TINY).fit(df)  # validation_fraction=0: the training series
    series = est._validate(df).series.observed_only()
    held = _training.HeldOut(series, est.scaling_, est.device_)
    sq, n = _training.heldout_errors(est.module_, held, 256, est._solver(), blend=est._gate())
    np.testing.assert_allclose(est.noise_std_, np.sqrt(sq / n), rtol=1e-4)


def test_fixed_and_learned_noise_are_kept(synth):
    df, _ = synth
    fixed = LatentODERegressor(**dict(TINY, noise_std=0.2)).fit(df)
    np.testing.assert_allclose(fixed.noise_std_, 0.2, rtol=1e-6)
    learned = LatentODERegressor(**dict(TINY, noise_std=None)).fit(df)
    assert learned.module_.decoder.log_noise.requires_grad


# ---------------------------------------------------------------------------- lr_schedule="cosine"
def test_cosine_schedule_warms_up_then_decays_to_the_floor(synth):
    df, _ = synth
    est = LatentODERegressor(**dict(TINY, max_epochs=4, lr=1e-2)).fit(df)
    lrs = [h["lr"] for h in est.history_]
    assert lrs[0] == pytest.approx(1e-2, rel=1e-6)  # the end of the one-epoch warm-up
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(1e-2 * _training.COSINE_FLOOR, rel=1e-6)
    const = LatentODERegressor(**dict(TINY, max_epochs=3, lr_schedule="constant")).fit(df)
    assert [h["lr"] for h in const.history_] == [1e-2] * 3
    with pytest.raises(ValueError, match="lr_schedule"):
        LatentODERegressor(lr_schedule="step").fit(df)


def test_warmup_starts_at_a_tenth(monkeypatch):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = _training.lr_schedule(opt, kind="cosine", total_steps=10, warmup_steps=4)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.1) and seen[4] == pytest.approx(1.0) and seen[2] < seen[3] < seen[4]


# ---------------------------------------------------------------------------- dynamics_init="rotations"
def test_rotation_matrix_holds_the_frequencies():
    a = rotation_matrix(5, cycles=(0.5, 4.0), damping=0.1)
    eig = torch.linalg.eigvals(a)
    freqs = np.sort(np.abs(eig.imag.numpy()))[::2][1:] / (2 * np.pi)
    np.testing.assert_allclose(freqs, [0.5, 4.0], rtol=1e-5)
    np.testing.assert_allclose(eig.real.numpy(), -0.1, atol=1e-6)


def test_rotations_field_oscillates_from_the_start():
    torch.manual_seed(0)
    rot, plain = LatentDynamics(5, 16, 2, "rotations"), LatentDynamics(5, 16, 2, "mlp")
    assert plain.linear is None
    z = torch.randn(7, 5)
    np.testing.assert_allclose((rot(z) - rot.net(z)).detach().numpy(), (z @ rotation_matrix(5).T).numpy(),
                               rtol=1e-5, atol=1e-6)
    params = set(map(id, rot.parameters()))
    assert id(rot.skew) in params and id(rot.log_damping) in params  # the linear part is learned


def test_the_linear_part_stays_stable_whatever_its_parameters():
    rot = LatentDynamics(7, 8, 2, "rotations")
    with torch.no_grad():
        rot.skew.normal_(0, 5.0)
        rot.log_damping.normal_(0, 3.0)
    assert torch.linalg.eigvals(rot.linear).real.max() < 0


def test_estimator_builds_the_field_it_is_asked_for(synth):
    df, _ = synth
    assert LatentODERegressor(**TINY).fit(df).module_.decoder.dynamics.linear is not None
    assert LatentODERegressor(**dict(TINY, dynamics_init="mlp")).fit(df).module_.decoder.dynamics.linear is None
    with pytest.raises(ValueError, match="dynamics_init"):
        LatentODERegressor(dynamics_init="fourier").fit(df)


# ---------------------------------------------------------------------------- readout="auto"
def _own_times(df, n_vars, per_row):
    """``df`` with ``n_vars`` variables (copies of v1..v3, shifted), each row observing ``per_row`` of them in turn:
    every variable is seen at about ``per_row / n_vars`` of the rows."""
    out = df[["id", "time"]].copy()
    base = [df[c] for c in ("v1", "v2", "v3")]
    for j in range(n_vars):
        out[f"x{j}"] = base[j % 3] + 0.1 * (j // 3)
    seen = (np.arange(len(df))[:, None] + np.arange(per_row)[None]) % n_vars  # (n_rows, per_row)
    keep = np.zeros((len(df), n_vars), bool)
    keep[np.arange(len(df))[:, None], seen] = True
    cols = [f"x{j}" for j in range(n_vars)]
    out[cols] = out[cols].where(keep)
    return out


def test_auto_readout_is_per_variable_when_variables_keep_their_own_times(synth, tmp_path):
    from latentode.decoder import PerVariableReadout

    df, _ = synth
    dense = LatentODERegressor(**TINY).fit(df)
    assert dense.readout == "auto" and dense.readout_ == "linear"
    assert not isinstance(dense.module_.decoder.readout, PerVariableReadout)
    sparse_df = _own_times(df.ffill().bfill(), n_vars=6, per_row=1)  # each variable at 1/6 of the rows
    sparse = LatentODERegressor(**TINY).fit(sparse_df)
    assert sparse.readout == "auto" and sparse.readout_ == "per_variable"
    assert isinstance(sparse.module_.decoder.readout, PerVariableReadout)
    # a third of the rows is above the fifth of SPARSE_RATE
    assert LatentODERegressor(**TINY).fit(_own_times(df.ffill().bfill(), 6, per_row=2)).readout_ == "linear"
    assert LatentODERegressor(**dict(TINY, readout="linear")).fit(sparse_df).readout_ == "linear"  # a choice is kept
    sparse.save(tmp_path / "m")
    again = LatentODERegressor.load(tmp_path / "m")
    assert again.readout == "auto" and again.readout_ == "per_variable"
    pd.testing.assert_frame_equal(again.predict(sparse_df), sparse.predict(sparse_df))
    with pytest.raises(ValueError, match="readout"):
        LatentODERegressor(readout="mlp").fit(df)


# ---------------------------------------------------------------------------- n_threads="auto"
def test_threads_are_one_inside_and_restored_after(synth, monkeypatch):
    inside = []
    real = _training.run_epoch

    def spy(*args, **kwargs):
        inside.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(_training, "run_epoch", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        est = LatentODERegressor(**TINY).fit(synth[0])
        assert torch.get_num_threads() == 2
        assert inside and set(inside) == {1}
        LatentODERegressor(**dict(TINY, n_threads=None)).fit(synth[0])
        assert inside[-1] == 2
        est.predict(synth[0])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="n_threads"):
        LatentODERegressor(n_threads=0).fit(synth[0])


# ---------------------------------------------------------------------------- adjoint="auto"
def test_adjoint_auto_backpropagates_through_short_grids_only(synth, monkeypatch):
    import latentode.decoder as decoder
    import latentode.estimator as estimator

    calls = []
    real = decoder.odeint_adjoint

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(decoder, "odeint_adjoint", spy)
    df, _ = synth
    est = LatentODERegressor(**TINY).fit(df)
    assert est.adjoint_ is False and not calls
    monkeypatch.setattr(estimator, "ADJOINT_AUTO_POINTS", 10)
    est = LatentODERegressor(**TINY).fit(df)
    assert est.adjoint_ is True and calls


# ---------------------------------------------------------------------------- batch_size / max_epochs "auto"
def test_training_budget_gives_few_series_more_steps_and_keeps_integers():
    tb = _training.training_budget
    assert tb(270, "auto", "auto") == (50, 20)     # 6 steps an epoch of 50, 20 epochs: 120 steps
    assert tb(250, "auto", "auto") == (41, 20)     # 5 steps of 50 would be too few: 6 of 41
    assert tb(1000, "auto", "auto") == (50, 20)    # large data: the plain defaults
    assert tb(180, "auto", "auto") == (30, 28)     # 180 series: batches of 30, 6 steps an epoch, 28 epochs
    assert tb(90, "auto", "auto") == (15, 56)      # 90 series: batches of 15, 56 epochs: 5,000 series read
    assert tb(3, "auto", "auto") == (8, 100)       # capped at 100 epochs
    assert tb(14, 50, "auto") == (50, 100)         # a given batch is kept
    assert tb(14, "auto", 7) == (8, 7) and tb(14, 4, 3) == (4, 3)


def test_auto_budget_is_used_by_fit_and_kept_by_save(synth, tmp_path, monkeypatch):
    df, _ = synth  # 12 series, no validation
    monkeypatch.setattr(_training, "MIN_STEPS", 30)
    monkeypatch.setattr(_training, "SERIES_VISITS", 120)  # 12 series read 120 times in 10 epochs
    est = LatentODERegressor(**dict(TINY, batch_size="auto", max_epochs="auto")).fit(df)
    assert (est.batch_size_, est.max_epochs_) == (8, 20)  # 12 // 5 < 8 series; 2 steps an epoch reach 30 in 15
    assert len(est.history_) == 20 and all(h["steps"] == 2 for h in est.history_)
    est.save(tmp_path / "m")
    again = LatentODERegressor.load(tmp_path / "m")
    assert (again.batch_size_, again.max_epochs_) == (8, 20)
    with pytest.raises(ValueError, match="max_epochs"):
        LatentODERegressor(max_epochs=0).fit(df)
    with pytest.raises(TypeError, match="batch_size"):
        LatentODERegressor(batch_size="big").fit(df)


def test_windows_start_every_eighth_of_a_window_and_count_as_series():
    long = _long()
    windowed = LatentODERegressor(**dict(TINY, batch_size="auto", max_epochs=1)).fit(long)
    lf = validate_frame(long, None, None, None, None, "X")
    n_windows = cut_windows(lf.series.observed_only(), windowed.window_, windowed.window_ / 8).n_series
    assert n_windows > 40  # 600 points in windows of about 100, every eighth of a window
    # budgeted as that many series: batches shrunk to make 6 steps an epoch
    assert windowed.batch_size_ == _training.training_budget(n_windows, "auto", 1)[0] < 50
    assert windowed.history_[0]["steps"] == -(-n_windows // windowed.batch_size_) >= 6


def test_still_learning_extends_a_fit_leaving_its_plateau_or_still_learning_fast():
    leaving = [1.0, 0.98, 0.97, 0.97, 0.96, 0.96, 0.95, 0.9, 0.86]  # best 0.86 > 0.5; last 2 of 8 lowered it 10%
    assert _training.still_learning(leaving, 8)
    # left the plateau (best < 0.5 of the first): only a gain of over 20% in the last quarter adds a cycle
    assert not _training.still_learning([1.0, 0.6, 0.45, 0.42, 0.4, 0.4, 0.38, 0.36, 0.34], 8)  # 10.5%
    assert _training.still_learning([1.0, 0.6, 0.45, 0.42, 0.4, 0.4, 0.38, 0.36, 0.29], 8)  # 24%
    assert not _training.still_learning([1.0, 0.98, 0.97, 0.97, 0.96, 0.96, 0.95, 0.95, 0.94], 8)  # flat: 1%
    assert not _training.still_learning(leaving[:2], 8)  # no epochs before the last quarter
    assert _training.still_learning([float("nan")] * 2 + leaving[2:], 8) is False  # first epoch unscored


def test_auto_epochs_add_cycles_while_the_fit_is_still_learning(synth, monkeypatch):
    df, _ = synth
    calls = []

    def once(valid, cycle_epochs):  # another cycle after the first only
        calls.append((len(valid), cycle_epochs))
        return len(calls) == 1

    monkeypatch.setattr(_training, "still_learning", once)
    monkeypatch.setattr(_training, "MIN_STEPS", 2)
    monkeypatch.setattr(_training, "SERIES_VISITS", 1)
    monkeypatch.setattr(_training, "AUTO_EPOCHS", 3)
    monkeypatch.setattr(_training, "MAX_AUTO_EPOCHS", 9)
    settings = dict(TINY, validation_fraction=0.3, patience=None, max_epochs="auto")
    est = LatentODERegressor(**settings).fit(df)
    assert calls == [(3, 3)]  # asked at the end of the first cycle; the added one runs to the cap
    assert est.max_epochs_ == 9 and [h["cycle"] for h in est.history_] == [1] * 3 + [2] * 6
    lr = [h["lr"] for h in est.history_]
    assert lr[3] > lr[2] and lr[3] == pytest.approx(lr[0])  # the schedule restarts ...
    assert lr[4] / lr[3] > lr[1] / lr[0]  # ... and decays over the longer cycle more slowly
    calls.clear()
    fixed = LatentODERegressor(**dict(settings, max_epochs=3)).fit(df)  # a number of epochs is kept
    assert calls == [] and len(fixed.history_) == 3
    calls.clear()
    monkeypatch.setattr(_training, "MAX_AUTO_EPOCHS", 6)  # an added cycle as long as the first ...
    assert len(LatentODERegressor(**settings).fit(df).history_) == 6 and calls == [(3, 3)]
    calls.clear()
    monkeypatch.setattr(_training, "MAX_AUTO_EPOCHS", 5)  # ... and none shorter
    assert len(LatentODERegressor(**settings).fit(df).history_) == 3 and calls == []
    monkeypatch.setattr(_training, "MAX_AUTO_EPOCHS", 9)
    windowed = LatentODERegressor(**settings).fit(_long())  # windows cut from long series keep one cycle
    assert windowed.window_ is not None and len(windowed.history_) == 3 and calls == []


def test_patience_counts_from_the_restart_of_a_cycle(synth, monkeypatch):
    df, _ = synth
    scripted = iter([1.0, 1.1, 1.2, 1.3, 1.4, 0.9, 0.95, 0.96, 0.97])  # two epochs worse before the restart
    monkeypatch.setattr(_training, "evaluate_mse", lambda *args, **kwargs: next(scripted))
    monkeypatch.setattr(_training, "still_learning", lambda valid, n: len(valid) == 3)
    monkeypatch.setattr(_training, "MIN_STEPS", 2)
    monkeypatch.setattr(_training, "SERIES_VISITS", 1)
    monkeypatch.setattr(_training, "AUTO_EPOCHS", 3)
    monkeypatch.setattr(_training, "MAX_AUTO_EPOCHS", 9)
    settings = dict(TINY, validation_fraction=0.3, max_epochs="auto", patience=3, kl_warmup=0)
    est = LatentODERegressor(**settings).fit(df)
    # counted on from before the restart, the third worse epoch (1.3) would have stopped the fit at epoch 4
    assert len(est.history_) == 9


def test_ema_decay_reaches_back_at_most_an_epoch():
    assert _training.ema_decay(50) == 0.9 and _training.ema_decay(6) == pytest.approx(5 / 6)
    assert _training.ema_decay(2) == 0.5 and _training.ema_decay(1) == 0.0


def _spy_weights(monkeypatch):
    """``(raw, scored)``: the model's weights after each epoch, and the weights each validation scored with its MSE."""
    raw, scored = [], []
    run_epoch, evaluate_mse = _training.run_epoch, _training.evaluate_mse

    def spy_epoch(net, model, *args, **kwargs):
        out = run_epoch(net, model, *args, **kwargs)
        raw.append({k: v.clone() for k, v in model.state_dict().items()})
        return out

    def spy_eval(model, *args, **kwargs):
        v = evaluate_mse(model, *args, **kwargs)
        scored.append(({k: v.clone() for k, v in model.state_dict().items()}, v))
        return v

    monkeypatch.setattr(_training, "run_epoch", spy_epoch)
    monkeypatch.setattr(_training, "evaluate_mse", spy_eval)
    return raw, scored


def test_added_cycles_score_and_keep_the_average_of_the_steps(synth, monkeypatch):
    df, _ = synth
    raw, scored = _spy_weights(monkeypatch)
    monkeypatch.setattr(_training, "still_learning", lambda valid, n: len(valid) == 2)  # one more cycle
    monkeypatch.setattr(_training, "MIN_STEPS", 2)
    monkeypatch.setattr(_training, "SERIES_VISITS", 1)
    monkeypatch.setattr(_training, "AUTO_EPOCHS", 2)
    monkeypatch.setattr(_training, "MAX_AUTO_EPOCHS", 6)
    # a fixed noise: "auto" sets the decoder's noise after training
    settings = dict(TINY, validation_fraction=0.3, batch_size=2, max_epochs="auto", patience=None, noise_std=0.05)
    steps = []
    train_step = _training.train_step

    def spy_step(net, model, *args, **kwargs):
        out = train_step(net, model, *args, **kwargs)
        steps.append({k: v.clone() for k, v in model.state_dict().items()})
        return out

    monkeypatch.setattr(_training, "train_step", spy_step)
    est = LatentODERegressor(**settings).fit(df)  # 8 training series: 4 steps an epoch, decay 0.75
    assert len(raw) == len(scored) == 6 and est.max_epochs_ == 6 and len(steps) == 24
    key = "decoder.readout.weight" if "decoder.readout.weight" in raw[0] else next(iter(raw[0]))
    same = [torch.equal(r[key], s[key]) for r, (s, _) in zip(raw, scored)]
    # the first cycle scores the weights; the added one an average that lags them
    assert same == [True, True, False, False, False, False]
    ema = steps[8][key]  # the first step of cycle 2 is copied, then each moves the average a quarter of the way
    for step in steps[9:12]:
        ema = ema + 0.25 * (step[key] - ema)
    torch.testing.assert_close(scored[2][0][key], ema)
    best = min(range(6), key=lambda i: scored[i][1])
    kept = est.module_.state_dict()
    assert all(torch.equal(kept[k], scored[best][0][k]) for k in kept)  # the best scored weights are kept
    raw.clear(), scored.clear(), steps.clear()
    LatentODERegressor(**dict(settings, batch_size=8)).fit(df)  # one step an epoch: no average
    assert len(raw) == 6 and all(torch.equal(r[key], s[key]) for r, (s, _) in zip(raw, scored))


# ---------------------------------------------------------------------------- windows
def test_windowed_fits_score_and_keep_the_average_of_the_steps_from_the_start(monkeypatch):
    raw, scored = _spy_weights(monkeypatch)
    settings = dict(TINY, batch_size="auto", max_epochs=2, validation_fraction=0.2, patience=None, noise_std=0.05)
    key = "decoder.readout.weight"
    est = LatentODERegressor(**settings).fit(_long())
    assert est.window_ is not None and est.history_[0]["steps"] > 1
    assert len(raw) == len(scored) == 2 and not any(torch.equal(r[key], s[key]) for r, (s, _) in zip(raw, scored))
    raw.clear(), scored.clear()
    LatentODERegressor(**dict(settings, window=None)).fit(_long())  # whole series: the weights themselves
    assert len(raw) == 2 and all(torch.equal(r[key], s[key]) for r, (s, _) in zip(raw, scored))


def _long(n_points=600, span=60.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, span, n_points))
    return pd.DataFrame({"time": t, "y": np.sin(2 * np.pi * t) + 0.05 * rng.standard_normal(n_points)})


def _series(t, n_f=1):
    t = np.asarray(t, float)
    return SeriesSet(np.array(["a"], dtype=object), t, np.ones((len(t), n_f)), np.array([0, len(t)]),
                     t[:1], np.empty(0, np.int64))


def test_cut_windows_covers_the_series_with_overlap():
    s = _series(np.arange(0, 100, 1.0))
    w = cut_windows(s, length=20.0, stride=10.0)
    assert w.n_series == 9  # starts 0, 10, ..., 80
    np.testing.assert_array_equal(w.origin, np.arange(0, 81, 10.0))
    assert all(w.time[w.offsets[i + 1] - 1] - w.origin[i] <= 20.0 for i in range(w.n_series))
    # a short series stays whole
    assert cut_windows(_series([0, 1, 2.0]), 20.0, 10.0).n_series == 1


def test_query_windows_surround_or_end_at_the_query():
    s = _series(np.arange(0, 100, 1.0))
    q_t = np.array([50.0, 2.0, 150.0, 99.5])
    w, codes = query_windows(s, np.zeros(4, np.int64), q_t, length=20.0)
    start = w.origin[codes]
    end = np.array([w.time[w.offsets[c + 1] - 1] for c in codes])
    assert start[0] <= 50 <= end[0] and abs((start[0] + end[0]) / 2 - 50) <= 5.0  # centred near the query
    assert start[1] == 0.0  # moved inside the data
    assert end[2] == 99.0 and end[3] == 99.0 and start[2] >= 79.0  # forecasts read the window ending at the data


def test_auto_window_only_for_few_long_series():
    assert auto_window(_series(np.arange(0, 1000, 1.0))) == pytest.approx(100.0)
    assert auto_window(_series(np.arange(0, 100, 1.0))) is None


def test_long_series_fit_in_windows_and_predict_beyond(monkeypatch):
    df = _long()
    est = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(df)
    assert est.window_ is not None and 5 < est.window_ < 20
    assert est.scaling_.time_scale < 20  # the time unit is a window, not the whole series
    future = pd.DataFrame({"time": [60.5, 61.0, 70.0]})
    p = est.predict(df, times=future)
    assert np.isfinite(p["y"].to_numpy()).all() and len(p) == 3
    imp = est.impute(df.assign(y=df["y"].where(np.arange(len(df)) % 7 != 0)))
    assert imp["y"].notna().all()
    assert np.isfinite(est.score(df))
    whole = LatentODERegressor(**dict(TINY, max_epochs=1, window=None)).fit(df)
    assert whole.window_ is None and whole.scaling_.time_scale > 50
    with pytest.raises(TypeError, match="window"):
        LatentODERegressor(**dict(TINY, window="30D")).fit(df)  # a duration for float times


def test_window_as_a_duration_for_datetimes():
    df = _long(n_points=300, span=30.0)
    df["time"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(df["time"], unit="D")
    est = LatentODERegressor(**dict(TINY, max_epochs=1, window="5D")).fit(df)
    assert est.window_ == pytest.approx(5 * 86400.0)


# ---------------------------------------------------------------------------- the scoreboard
def test_scoreboard_runs_at_tiny_size(tmp_path):
    board = _load_benchmark("defaults")
    out = tmp_path / "board.json"
    rows = board.main(["--size", "tiny", "--seeds", "0", "--datasets", "oscillator,long_oscillator",
                       "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["dataset"] for r in saved["rows"]] == ["oscillator", "long_oscillator"] == [r["dataset"] for r in rows]
    for r in saved["rows"]:
        for task in ("impute", "forecast"):
            assert np.isfinite(r[task]["ratio"]) and r[task]["best_baseline"] in ("linear", "locf", "series_mean")
            assert r[task]["ratio"] == pytest.approx(r[task]["model"] / r[task][r[task]["best_baseline"]])
        assert r["fit_cpu_s"] > 0 and r["epochs"] == 2
    assert "| oscillator | 0 |" in board.table(rows)


def test_scoreboard_protocol_hides_and_cuts():
    board = _load_benchmark("defaults")
    df, _ = dynamics.make_oscillator(10, random_state=0)
    frame, hidden, future, values = board.split(df, "id", "time", seed=0)
    observed = df[values].notna().to_numpy().sum()
    assert len(frame) + len(future) == len(df)
    span = df.groupby("id")["time"].agg(["min", "max"])
    cut = span["min"] + 0.75 * (span["max"] - span["min"])
    assert (future["time"].to_numpy() > cut.loc[future["id"]].to_numpy()).all()
    assert (frame["time"].to_numpy() <= cut.loc[frame["id"]].to_numpy()).all()
    n_hidden = (~np.isnan(hidden)).sum()
    assert 0.1 < n_hidden / observed < 0.3
    assert frame[values].isna().to_numpy()[~np.isnan(hidden)].all()  # hidden values are NaN in the frame


# ---------------------------------------------------------------------------- max_grad_norm="auto"
def test_auto_clipping_caps_a_spike_at_five_medians(synth, monkeypatch):
    caps = []
    real = _training.clip_gradients

    def spy(params, cap):
        caps.append(float(cap))
        return real(params, cap)

    monkeypatch.setattr(_training, "clip_gradients", spy)
    df, _ = synth
    est = LatentODERegressor(**dict(TINY, max_epochs=4)).fit(df)  # 2 steps per epoch
    assert caps[:5] == [float("inf")] * 5
    norms = []
    for h in est.history_:
        norms += [h["grad_norm"]]  # epoch means only; the caps are checked against the rule itself
    assert all(np.isfinite(c) and c > 0 for c in caps[5:]) and len(caps) == 8
    assert _training.clip_threshold("auto", [1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(15.0)
    assert float(_training.clip_threshold("auto", torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0, 6.0]))) == \
        pytest.approx(17.5)  # the interpolated median, as numpy's, on the device
    assert _training.clip_threshold(None, [1.0] * 10) == float("inf")
    assert _training.clip_threshold(2.5, []) == 2.5


# ---------------------------------------------------------------------------- blend="auto"
def test_fit_blend_recovers_the_least_squares_gate():
    from latentode._blend import N_BINS, fit_blend, gate_at

    rng = np.random.default_rng(0)
    n = 4000
    r, m = rng.standard_normal(n), rng.standard_normal(n)
    outside = rng.random(n) < 0.5
    feature = rng.integers(0, 2, n)
    distance = rng.random(n)
    true = np.where(outside, 0.8, 0.3)
    y = r + true * (m - r) + 0.01 * rng.standard_normal(n)
    alpha, edges = fit_blend(y, m, r, outside, distance, feature)
    assert alpha.shape == (2, N_BINS, 2) and edges.shape == (2, N_BINS - 1)
    np.testing.assert_allclose(alpha[0], 0.3, atol=0.02)
    np.testing.assert_allclose(alpha[1], 0.8, atol=0.02)
    np.testing.assert_allclose(edges, np.quantile(distance, [0.25, 0.5, 0.75])[None].repeat(2, 0), atol=0.03)
    assert fit_blend(y, m, r + 5 * (m - r), outside, distance, feature)[0].max() <= 1.0  # clipped
    # the gate follows the distance: the model counts only far from the nearest observation
    far = distance > 0.5
    y = r + np.where(far, 1.0, 0.0) * (m - r)
    alpha, edges = fit_blend(y, m, r, outside, distance, feature)
    g = gate_at(alpha, edges, outside, distance, feature)
    assert g[~far & (distance < 0.45)].max() < 0.15 and g[far & (distance > 0.55)].min() > 0.85
    # a bin with no held-out value falls back on its regime's single weight
    few = fit_blend(y[:150], m[:150], r[:150], outside[:150], distance[:150], feature[:150])
    assert np.isinf(few[1]).all()  # fewer than 100 values per bin per regime: one bin


def test_gate_distance_is_the_time_to_the_nearest_visible_value():
    from latentode.model import reference_and_regime

    t = torch.tensor([[0.0, 1.0, 2.0, 4.0]])
    x = torch.tensor([[[1.0], [0.0], [3.0], [0.0]]])
    m = torch.tensor([[[1.0], [0.0], [1.0], [0.0]]])
    tq = torch.tensor([[-0.5, 0.5, 1.5, 2.0, 3.0, 5.0]])
    r, outside, distance = reference_and_regime(t, x, m, tq)
    np.testing.assert_allclose(distance[0, :, 0].numpy(), [0.5, 0.5, 0.5, 0.0, 1.0, 3.0])
    np.testing.assert_allclose(r[0, :, 0].numpy(), [1.0, 1.5, 2.5, 3.0, 3.0, 3.0])
    assert outside[0, :, 0].tolist() == [True, False, False, False, True, True]
    none = reference_and_regime(t, x, torch.zeros_like(m), tq)[2]
    assert torch.isinf(none).all()


def test_blend_pulls_predictions_towards_interpolation(synth):
    df, _ = synth
    est = LatentODERegressor(**dict(TINY, validation_fraction=0.3)).fit(df)
    assert est.blend_.shape == (2, 4, 3) and ((0 <= est.blend_) & (est.blend_ <= 1)).all()
    assert est.blend_edges_.shape == (2, 3)
    raw = LatentODERegressor(**dict(TINY, validation_fraction=0.3, blend=None)).fit(df)
    assert raw.blend_ is None
    # the same weights with the gate set by hand to 0: the prediction is linear interpolation (constant beyond)
    from latentode.baselines import baseline_predict

    est.blend_ = np.zeros((2, 4, 3))
    one = df[df["id"] == df["id"].iloc[0]]
    t = one["time"]
    inner = pd.DataFrame({"id": one["id"].iloc[0], "time": t.min() + (t.max() - t.min()) * np.array([0.3, 0.6])})
    pred = est.predict(one, times=inner)
    lin = baseline_predict(one, inner, "linear")
    np.testing.assert_allclose(pred[["v1", "v2", "v3"]].to_numpy(), lin[["v1", "v2", "v3"]].to_numpy(), rtol=1e-4,
                               atol=1e-4)
    est.blend_ = np.ones((2, 4, 3))
    far = est.predict(one, times=inner)
    raw_pred = far[["v1", "v2", "v3"]].to_numpy()
    assert not np.allclose(raw_pred, lin[["v1", "v2", "v3"]].to_numpy(), atol=1e-3)


def test_gate_reads_the_heldout_values_of_training_and_validation_series(synth, monkeypatch):
    from latentode import estimator as est_module

    df, _ = synth
    seen = {}
    real = est_module.fit_blend

    def spy(*arrays, **kw):
        seen["n"] = len(arrays[0])
        return real(*arrays, **kw)

    monkeypatch.setattr(est_module, "fit_blend", spy)
    est = LatentODERegressor(**dict(TINY, validation_fraction=0.3)).fit(df)
    series = est._validate(df).series.observed_only()
    assert seen["n"] == _training.holdout_mask(series).sum()  # every series' held-out values, not the 30% only


def test_windowed_gate_is_fitted_on_forecasts_a_window_ahead(monkeypatch):
    """A windowed model predicts a window past the data from the window that ends there; its gate must
    have seen such forecasts, not only the fifth of a window that the training windows' tails reach."""
    from latentode import estimator as est_module

    seen = {}
    real = est_module.fit_blend

    def spy(y, m, r, outside, distance, *rest, **kw):
        seen.update(outside=outside, distance=distance)
        return real(y, m, r, outside, distance, *rest, **kw)

    monkeypatch.setattr(est_module, "fit_blend", spy)
    est = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(_long())
    window = est.window_ / est.scaling_.time_scale  # model time units
    far = seen["distance"][seen["outside"]]
    assert far.max() > 0.8 * window and (far > 0.5 * window).sum() >= 100
    edges = est.blend_edges_[1][np.isfinite(est.blend_edges_[1])]
    assert len(edges) and edges.max() > 0.3 * window  # the forecast bins reach out that far
    assert (seen["distance"][~seen["outside"]] < 0.5 * window).all()  # the backtest adds forecasts only


def test_holdout_tail_is_the_late_fraction_of_each_series():
    s = _series(np.arange(0, 100, 1.0))
    s = SeriesSet(s.ids, s.time, np.arange(100.0)[:, None], s.offsets, s.origin, s.row_point)
    late = _training.holdout_mask(s, tail=0.5)[:, 0]
    assert late[51:].all() and late[:50].mean() < 0.3  # the second half, and about a tenth of the first
    assert _training.holdout_mask(s)[:, 0][81:].all() and not _training.holdout_mask(s)[:, 0][60:80].all()


def test_blend_survives_save_and_load(synth, tmp_path):
    df, _ = synth
    est = LatentODERegressor(**dict(TINY, validation_fraction=0.3)).fit(df)
    est.save(tmp_path / "m")
    back = LatentODERegressor.load(tmp_path / "m")
    np.testing.assert_allclose(back.blend_, est.blend_)
    np.testing.assert_allclose(back.blend_edges_, est.blend_edges_)
    np.testing.assert_allclose(back.predict(df)[["v1"]].to_numpy(), est.predict(df)[["v1"]].to_numpy(), rtol=1e-5)
