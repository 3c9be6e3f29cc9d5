"""What training does to the model: KL warm-up, the encoder's masks, early stopping, restoring the best
weights, interruption, the adjoint. Each test fails when its behaviour is removed."""

import copy
import warnings

import numpy as np
import pytest
import torch

import latentode._training as training
from latentode import LatentODERegressor
from latentode.model import LatentODE

from conftest import TINY

VARS = ["v1", "v2", "v3"]


def _spy_loss(monkeypatch):
    """Record the encoder mask, the batch and the KL weight of every training loss."""
    calls, loss = [], LatentODE.loss

    def recording(self, batch, enc_mask, **kw):
        if self.training:
            calls.append((batch, enc_mask.clone(), kw["kl_weight"]))
        return loss(self, batch, enc_mask, **kw)

    monkeypatch.setattr(LatentODE, "loss", recording)
    return calls


def test_kl_warmup_weights_the_kl_of_each_epoch(synth, monkeypatch):
    calls = _spy_loss(monkeypatch)
    est = LatentODERegressor(**dict(TINY, max_epochs=2, kl_warmup=4)).fit(synth[0])
    steps = int(np.ceil(synth[0]["id"].nunique() / TINY["batch_size"]))
    assert [c[2] for c in calls] == [0.25] * steps + [0.5] * steps
    assert [h["kl_weight"] for h in est.history_] == [0.25, 0.5]


def test_the_encoder_is_denied_random_values(synth, monkeypatch):
    calls = _spy_loss(monkeypatch)
    LatentODERegressor(**dict(TINY, max_epochs=1, mask_fraction=0.5, forecast_fraction=0.0)).fit(synth[0])
    m = torch.cat([b.m.flatten() for b, _, _ in calls])
    seen = torch.cat([e.flatten() for _, e, _ in calls])
    assert bool((seen <= m).all())
    assert 0.35 < float(1 - seen.sum() / m.sum()) < 0.65   # about half of the observed values hidden


def test_the_encoder_is_denied_each_series_future_after_a_cut(synth, monkeypatch):
    calls = _spy_loss(monkeypatch)
    LatentODERegressor(**dict(TINY, max_epochs=1, mask_fraction=0.0, forecast_fraction=1.0)).fit(synth[0])
    n_cut = 0
    for batch, enc, _ in calls:
        for i in range(batch.t.shape[0]):
            obs, vis = batch.m[i].amax(-1) > 0, enc[i].amax(-1) > 0
            t_obs = batch.t[i][obs]
            assert bool((enc[i] <= batch.m[i]).all())
            hidden = obs & ~vis
            if hidden.any():  # everything visible lies before everything hidden: a cut in time
                last_seen = float(batch.t[i][vis].max()) if vis.any() else -1.0
                assert last_seen < float(batch.t[i][hidden].min())
                n_cut += 1
            # the cut lies between 25% and 90% of the window
            if vis.any():
                assert float(batch.t[i][vis].max()) <= 0.9 * float(t_obs.max()) + 1e-6
    assert n_cut >= len(calls[0][0].t) // 2


def _scripted_validation(monkeypatch, values):
    """Make the validation MSE of epoch k be ``values[k]`` and remember the weights each epoch had."""
    states = []

    def fake(model, *args, **kwargs):
        states.append(copy.deepcopy(model.state_dict()))
        return values[len(states) - 1]

    monkeypatch.setattr(training, "evaluate_mse", fake)
    return states


def _same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_weights_are_restored(synth, monkeypatch):
    states = _scripted_validation(monkeypatch, [0.5, 0.2, 0.4, 0.3])
    est = LatentODERegressor(**dict(TINY, max_epochs=4, validation_fraction=0.3, patience=None, kl_warmup=0,
                                    noise_std=0.05)).fit(
        synth[0])
    assert [h["valid_mse"] for h in est.history_] == [0.5, 0.2, 0.4, 0.3]
    assert _same_weights(est.module_.state_dict(), states[1])
    assert not _same_weights(est.module_.state_dict(), states[3])


def test_early_stopping_stops_after_patience_epochs_without_improvement(synth, monkeypatch):
    _scripted_validation(monkeypatch, [0.5, 0.4, 0.6, 0.7, 0.8, 0.9])
    est = LatentODERegressor(**dict(TINY, max_epochs=6, validation_fraction=0.3, patience=2, kl_warmup=0)).fit(
        synth[0])
    assert len(est.history_) == 4


def test_auto_patience_waits_a_quarter_of_a_long_cycle_and_ten_epochs_of_a_short_one(synth, monkeypatch):
    assert training.cycle_patience("auto", 20) == 10 and training.cycle_patience("auto", 93) == 24
    assert training.cycle_patience(3, 93) == 3 and training.cycle_patience(None, 93) is None
    monkeypatch.setattr(training, "MIN_PATIENCE", 2)  # small enough to show both sides in a few epochs
    curve = [0.5, 0.4] + [0.6] * 10
    lengths = {}
    for epochs in (6, 12):   # patience max(2, 2) = 2 and max(2, 3) = 3
        _scripted_validation(monkeypatch, curve)
        est = LatentODERegressor(**dict(TINY, max_epochs=epochs, validation_fraction=0.3, patience="auto",
                                        kl_warmup=0)).fit(synth[0])
        lengths[epochs] = len(est.history_)
    assert lengths == {6: 4, 12: 5}
    with pytest.raises(TypeError, match="patience must be 'auto', None or a positive integer"):
        LatentODERegressor(**dict(TINY, patience="soon")).fit(synth[0])
    with pytest.raises(ValueError, match="patience"):
        LatentODERegressor(**dict(TINY, patience=0)).fit(synth[0])


def test_ctrl_c_keeps_the_best_weights_and_marks_the_history(synth, monkeypatch):
    states = _scripted_validation(monkeypatch, [0.3, 0.5, 0.1])
    step, n = training.train_step, []

    def interrupted(*args, **kwargs):
        n.append(1)
        if len(n) == 3:   # one step per epoch here: during the third epoch
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", interrupted)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        est = LatentODERegressor(**dict(TINY, max_epochs=5, validation_fraction=0.3, kl_warmup=0, noise_std=0.05)).fit(synth[0])
    assert len(est.history_) == 2 and est.history_[-1]["interrupted"] and "interrupted" not in est.history_[0]
    assert _same_weights(est.module_.state_dict(), states[0])
    assert np.isfinite(est.predict(synth[0])[VARS].to_numpy()).all()
    n.clear()
    n.extend([1, 1])   # interrupted in the first epoch: nothing learned, still usable
    with pytest.warns(RuntimeWarning, match="0 complete"):
        est = LatentODERegressor(**dict(TINY, max_epochs=5)).fit(synth[0])
    assert est.history_ == [{"epoch": 1, "interrupted": True}]
    assert np.isfinite(est.predict(synth[0])[VARS].to_numpy()).all()


@pytest.mark.parametrize("adjoint", [True, False])
def test_adjoint_solves_the_backward_ode(synth, adjoint):
    est = LatentODERegressor(**dict(TINY, max_epochs=1, adjoint=adjoint)).fit(synth[0])
    nfe = est.history_[0]["nfe_backward"]
    assert (nfe > 0) if adjoint else (nfe == 0)   # backprop through the solver evaluates no field


def test_validation_fraction_always_leaves_a_training_series(synth):
    df = synth[0][synth[0]["id"].isin(synth[0]["id"].unique()[:3])]
    est = LatentODERegressor(**dict(TINY, max_epochs=1, validation_fraction=0.9)).fit(df)
    assert np.isfinite(est.history_[0]["loss"]) and np.isfinite(est.history_[0]["valid_mse"])


def test_a_non_finite_loss_stops_the_fit_at_the_end_of_its_epoch_with_finite_weights(synth, monkeypatch):
    """No step reads the loss back; the epoch's statistics say a step went non-finite, and fit raises then."""
    df, _ = synth
    real = LatentODE.loss
    calls = []

    def poisoned(self, *args, **kwargs):
        loss, stats = real(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), stats) if len(calls) == 2 else (loss, stats)

    monkeypatch.setattr(LatentODE, "loss", poisoned)
    est = LatentODERegressor(**dict(TINY, max_epochs=3, batch_size=4))  # 3 steps per epoch
    with pytest.raises(FloatingPointError, match="1 step"):
        est.fit(df)
    assert len(calls) == 3  # the epoch finished, and no later one started
    assert all(torch.isfinite(p).all() for p in est.module_.parameters())


def test_history_records_the_optimiser_steps_of_each_epoch(synth):
    df = synth[0]
    est = LatentODERegressor(**dict(TINY, max_epochs=2, validation_fraction=0, batch_size=3)).fit(df)
    n_series = df["id"].nunique()
    assert [h["steps"] for h in est.history_] == [-(-n_series // 3)] * 2
