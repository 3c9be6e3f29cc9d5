"""Tests for latentode.evaluation (IWAE held-out log-likelihood), the fitted prior and prior sampling."""

import copy
import doctest
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state

from latentode import LatentODERegressor, evaluation
from latentode._collate import Scaling, collate
from latentode.datasets import make_periodic
from latentode.evaluation import heldout_log_likelihood
from latentode.model import Reference

PRIORS = ["normal", "cnf"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    return make_periodic(n_series=6, n_points=12, t_max=2.0, freq_range=[(0.3, 0.45), (0.9, 1.05)], random_state=0)


@pytest.fixture(scope="module", params=PRIORS)
def fitted(request, data):
    est = LatentODERegressor(latent_dim=2, encoder="gru", encoder_dim=4, width=8, n_layers=1, max_epochs=2,
                             validation_fraction=0.0, random_state=0, device="cpu", prior=request.param,
                             prior_options={"hidden_dim": 8} if request.param == "cnf" else None)
    return est.fit(data)


def _training_bound(est, df, n_samples, random_state):
    """The training objective's bound (standardised units) on all series at once, with the same draws."""
    series = est._validate(df).series.observed_only()
    batch = collate(series, np.arange(series.n_series), est.scaling_, est.device_)
    seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
    with torch.no_grad():
        loss, _ = est.module_.loss(batch, batch.m, n_samples=n_samples, kl_weight=1.0,
                                   generator=torch.Generator().manual_seed(seed), solver=est._solver())
    return -float(loss) * float(batch.m.sum())


# ------------------------------------------------------------------------------------------------------------
# heldout_log_likelihood
# ------------------------------------------------------------------------------------------------------------
def test_finite_one_value_per_series(fitted, data):
    ll = heldout_log_likelihood(fitted, data, n_samples=4)
    assert isinstance(ll, pd.Series) and ll.name == "log_likelihood"
    assert list(ll.index) == list(data["unique_id"].unique()) and ll.index.name == "unique_id"
    assert np.isfinite(ll.to_numpy()).all()


def test_deterministic_for_a_seed(fitted, data):
    a = heldout_log_likelihood(fitted, data, n_samples=4, random_state=3)
    b = heldout_log_likelihood(fitted, data, n_samples=4, random_state=3)
    c = heldout_log_likelihood(fitted, data, n_samples=4, random_state=4)
    pd.testing.assert_series_equal(a, b)
    assert not np.allclose(a, c)


def test_small_chunks(fitted, data):
    # Chunks draw in turn from one generator, so the draws (not the estimand) depend on batch_size.
    ll = heldout_log_likelihood(fitted, data, n_samples=2, batch_size=4)
    assert ll.shape == (6,) and np.isfinite(ll.to_numpy()).all()


@pytest.mark.parametrize("n_samples", [1, 4])
def test_equals_the_training_bound_with_the_same_draws(fitted, data, n_samples):
    """Sum over series in standardised units == -loss * n_observed of LatentODE.loss (MC KL for K > 1 or CNF)."""
    if fitted.prior == "normal" and n_samples == 1:
        pytest.skip("the training loss uses the analytic KL for the normal prior at K=1")
    ll = heldout_log_likelihood(fitted, data, n_samples=n_samples, random_state=5)
    n_obs = data["y"].notna().sum()
    standardised = ll.sum() + n_obs * math.log(fitted.scaling_.std[0])
    assert standardised == pytest.approx(_training_bound(fitted, data, n_samples, 5), rel=1e-4, abs=1e-3)


def test_normal_prior_one_sample_averages_to_the_analytic_elbo(fitted, data):
    """K=1 with the normal prior: the Monte Carlo KL averages to the training loss's analytic KL."""
    if fitted.prior != "normal":
        pytest.skip("only the normal prior has an analytic KL")
    est = fitted
    mc = np.mean([heldout_log_likelihood(est, data, n_samples=1, random_state=s).sum() for s in range(40)])
    analytic = np.mean([_training_bound(est, data, 1, s) for s in range(40)])   # same draws of the likelihood
    n_obs = data["y"].notna().sum()
    assert mc + n_obs * math.log(est.scaling_.std[0]) == pytest.approx(analytic, rel=0.02)


def test_increases_with_the_number_of_importance_samples_on_average(fitted, data):
    one = np.mean([heldout_log_likelihood(fitted, data, n_samples=1, random_state=s).mean() for s in range(6)])
    many = np.mean([heldout_log_likelihood(fitted, data, n_samples=16, random_state=s).mean() for s in range(6)])
    assert many > one


def test_original_units_subtract_the_log_std_of_each_observed_value(fitted, data):
    """Data times 10 with the scaler times 10: same standardised values, log p shifts by -n_obs log 10."""
    scaled = copy.deepcopy(fitted)
    s = fitted.scaling_
    scaled.scaling_ = Scaling(s.mean * 10, s.std * 10, s.time_scale)
    data10 = data.assign(y=data["y"] * 10)
    data10.loc[data10.index[::5], "y"] = np.nan   # unobserved values count for nothing
    ref = data.copy()
    ref.loc[ref.index[::5], "y"] = np.nan
    n_obs = ref.groupby("unique_id")["y"].count()
    ll = heldout_log_likelihood(fitted, ref, n_samples=4)
    ll10 = heldout_log_likelihood(scaled, data10, n_samples=4)
    np.testing.assert_allclose(ll10, ll - n_obs.to_numpy() * math.log(10), rtol=1e-5)


def test_bad_arguments(fitted, data):
    with pytest.raises(ValueError, match="n_samples"):
        heldout_log_likelihood(fitted, data, n_samples=0)
    with pytest.raises(TypeError, match="batch_size"):
        heldout_log_likelihood(fitted, data, batch_size=2.5)
    with pytest.raises(ValueError):
        heldout_log_likelihood(fitted, data.drop(columns="y"))
    with pytest.raises(NotFittedError):
        heldout_log_likelihood(LatentODERegressor(), data)


def test_docstring_example_runs():
    assert doctest.testmod(evaluation).failed == 0


# ------------------------------------------------------------------------------------------------------------
# The fitted prior and sampling from it (LatentODERegressor.prior_ and .sample_prior)
# ------------------------------------------------------------------------------------------------------------
def test_prior_is_exposed_with_log_prob_and_sample(fitted):
    prior = fitted.prior_
    assert prior is fitted.module_.prior
    z = torch.randn(5, fitted.latent_dim)
    log_p = prior.log_prob(z)
    assert log_p.shape == (5,) and torch.isfinite(log_p).all()
    draws = prior.sample(7, torch.Generator().manual_seed(0))
    assert draws.shape == (7, fitted.latent_dim) and torch.isfinite(draws).all()
    assert not hasattr(LatentODERegressor(), "prior_")   # NotFittedError is an AttributeError


def test_sample_prior_returns_generated_trajectories(fitted):
    times = np.linspace(0.0, 2.0, 9)
    out = fitted.sample_prior(times, n_samples=3, random_state=0)
    assert list(out.columns) == ["sample", "time", "y"]
    assert len(out) == 3 * len(times)
    np.testing.assert_array_equal(out["sample"], np.repeat(np.arange(3), len(times)))
    np.testing.assert_allclose(out["time"], np.tile(times, 3))
    assert np.isfinite(out["y"]).all()
    pd.testing.assert_frame_equal(out, fitted.sample_prior(times, n_samples=3, random_state=0))
    assert not np.allclose(out["y"], fitted.sample_prior(times, n_samples=3, random_state=1)["y"])
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample_prior(times, n_samples=0)


# ------------------------------------------------------------------------------------------------------------
# The benchmark runs at tiny size
# ------------------------------------------------------------------------------------------------------------
def test_benchmark_main_runs_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_priors", ROOT / "benchmarks" / "priors.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "priors.json"
    rows = bench.main(n_series=5, epochs=1, seeds=(0,), n_points=12, latent_dim=2, encoder_dim=4, width=8,
                      n_importance=2, n_observed=4, out=str(out))
    assert [r["prior"] for r in rows] == ["normal", "cnf"] and out.is_file()
    assert all(np.isfinite(r[k]) for r in rows for k in ("ll_series", "impute_mse", "forecast_mse"))


def test_loss_on_hidden_scores_only_what_the_encoder_did_not_see(fitted, data):
    """loss_on="hidden": the bound is the likelihood of the hidden values minus the KL, per hidden value."""
    est = fitted
    if est.prior != "normal":
        pytest.skip("the analytic KL makes the hand computation exact")
    series = est._validate(data).series.observed_only()
    batch = collate(series, np.arange(series.n_series), est.scaling_, est.device_)
    enc_mask = batch.m.clone()
    enc_mask[:, batch.m.shape[1] // 2:] = 0  # the encoder sees the first half of the steps
    hidden = batch.m * (1 - enc_mask)
    assert 0 < hidden.sum() < batch.m.sum()
    model, solver = est.module_, est._solver()
    with torch.no_grad():
        loss, stats = model.loss(batch, enc_mask, generator=torch.Generator().manual_seed(3), solver=solver,
                                 loss_on="hidden")
        mu, sigma = model.encoder(batch.t, batch.x * enc_mask, enc_mask)
        z0 = model.sample_z0(mu, sigma, 1, torch.Generator().manual_seed(3))
        seen = Reference(model.center, batch.t, batch.x * enc_mask, enc_mask)  # what the read-out may read
        xhat = model.decoder(z0, batch.t, context=seen.context(batch.t) if model.decoder.uses_context else None,
                             **solver)
        ll = model.log_likelihood(xhat, batch.x, hidden)[0]
        expected = -(ll - model.prior.analytic_kl(mu, sigma)).sum() / hidden.sum()
        mse = ((xhat[0] - batch.x).pow(2) * hidden).sum() / hidden.sum()
        # a visible value's target no longer matters once the encoder's input is fixed
        shifted = batch.x + 5.0 * enc_mask
        ll_shift = model.log_likelihood(xhat, shifted, hidden)[0]
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert stats["mse"] == pytest.approx(float(mse), rel=1e-5)
    assert torch.allclose(ll, ll_shift)
    with torch.no_grad():
        loss_all, _ = model.loss(batch, enc_mask, generator=torch.Generator().manual_seed(3), solver=solver)
    assert float(loss_all) != pytest.approx(float(loss))


def test_centred_models_are_refused(synth):
    from latentode import LatentODERegressor
    from conftest import TINY

    est = LatentODERegressor(**dict(TINY, max_epochs=1, center="interp")).fit(synth[0])
    with pytest.raises(ValueError, match="center=None.*center='interp'"):
        heldout_log_likelihood(est, synth[0], n_samples=2)
