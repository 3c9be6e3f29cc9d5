"""Evaluation of a fitted :class:`~latentode.LatentODERegressor` beyond squared error.

:func:`heldout_log_likelihood` estimates log p(x) of each series of a frame with the importance-weighted
(IWAE) bound of Burda et al. (2016), built from the fitted module's parts: the encoder's q(z0|x), the
prior's ``log_prob`` (normal or CNF) and the decoder's Gaussian likelihood of the observed values.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._collate import collate

__all__ = ["heldout_log_likelihood"]


def heldout_log_likelihood(est, X, n_samples=32, random_state=0, batch_size=None) -> pd.Series:
    """IWAE estimate of log p(x) of every series of ``X``, in the units of ``X``.

    For series ``i`` with observed values ``x_i`` and ``K = n_samples`` draws ``z_k ~ q(z0 | x_i)``::

        log p(x_i) ~= logsumexp_k [log p(x_i | z_k) + log p(z_k) - log q(z_k | x_i)] - log K

    The encoder sees every observed value of the series and the likelihood scores every observed value
    (so this is a held-out density when ``X`` holds series not used in ``fit``). It is a lower bound on
    log p(x_i) in expectation, non-decreasing in expectation with ``K``; ``K = 1`` is a one-sample ELBO
    estimate. The model works in standardised units ``(x - mean_j) / std_j``; the density of the original
    values is that of the standardised ones times the Jacobian ``prod 1 / std_j``, so
    ``sum over observed values of log std_j`` is subtracted (add it back for standardised units).

    Parameters
    ----------
    est : LatentODERegressor
        A fitted estimator (any prior: ``"normal"`` or ``"cnf"``).
    X : pandas.DataFrame
        Long frame in the fitted format (id, time, variables; NaN = not observed).
    n_samples : int, default=32
        Importance samples ``K`` per series. More tightens the bound (cost grows linearly: ``K`` decodes
        per series, and with a CNF prior a ``log_prob`` solve over ``K * batch`` points).
    random_state : int, RandomState or None, default=0
        Seed of the draws of z0 (and of Hutchinson's noise if the CNF prior uses it); the same seed gives
        the same estimate at a fixed thread count and device.
    batch_size : int or None, default=None
        Series per chunk; None uses ``max(est.batch_size_, 256)`` (memory grows with
        ``K * batch_size * time * features``).

    Returns
    -------
    pandas.Series, shape (n_series,)
        ``log p(x_i)`` (nats) indexed by series id (in order of first appearance in ``X``), named
        ``"log_likelihood"``. A series with no observed value gets exactly 0. Divide by the number of
        observed values of each series for a per-value figure.

    Only for models fitted with ``center=None``: with a ``center`` the read-out is relative to a
    reference built from the very values being scored, so the bound is not a density of them
    (iid noise scored like real data), and ELBOs are not comparable across ``center`` settings.
    Compare such models on :meth:`~latentode.LatentODERegressor.score` (held-out error, the
    reference built from what the encoder sees).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        ``est`` is not fitted.
    ValueError
        ``est.center`` is not None.
    TypeError, ValueError
        ``n_samples`` or ``batch_size`` is not a positive int, or ``X`` does not match the fitted format.

    Examples
    --------
    >>> from latentode import LatentODERegressor
    >>> from latentode.datasets import make_periodic
    >>> df = make_periodic(n_series=6, n_points=10, random_state=0)
    >>> est = LatentODERegressor(latent_dim=2, encoder_dim=4, width=8, max_epochs=1,
    ...                          validation_fraction=0, random_state=0).fit(df)
    >>> ll = heldout_log_likelihood(est, df, n_samples=4)
    >>> ll.shape, bool(np.isfinite(ll).all())
    ((6,), True)
    """
    check_is_fitted(est)
    if est.center is not None:
        raise ValueError(f"heldout_log_likelihood needs a model fitted with center=None, got center={est.center!r}: "
                         "the reference of a centred model is built from the values scored, so the bound is not a "
                         "density. Compare centred models with est.score(X) instead.")
    n_samples = _check_positive_int("n_samples", n_samples)
    chunk = max(est.batch_size_, 256) if batch_size is None else _check_positive_int("batch_size", batch_size)
    series = est._validate(X).series.observed_only()
    model, solver, device = est.module_, est._solver(), est.device_
    scaling = est.scaling_
    out = np.zeros(series.n_series)
    seed = int(check_random_state(random_state).randint(0, 2**31 - 1))   # as est._generator does
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)   # Hutchinson's noise in a CNF prior's log_prob draws from the global generator
        for start in range(0, series.n_series, chunk):
            idx = np.arange(start, min(start + chunk, series.n_series))
            idx = idx[series.lengths[idx] > 0]
            if not len(idx):
                continue
            batch = collate(series, idx, scaling, device)
            mu, sigma, t0, ref = model.encode(batch.t, batch.x, batch.m)        # (b, latent), (b,), Reference
            z0 = model.sample_z0(mu, sigma, n_samples, generator)               # (K, b, latent)
            xhat = model.decode(z0, batch.t, t0, ref, **solver)                 # (K, b, time, features)
            log_lik = model.log_likelihood(xhat, batch.x, batch.m)              # (K, b)
            log_q = torch.distributions.Normal(mu, sigma).log_prob(z0).sum(-1)  # (K, b)
            log_p = model.prior.log_prob(z0)                                    # (K, b)
            bound = torch.logsumexp(log_lik + log_p - log_q, dim=0) - math.log(n_samples)
            out[idx] = bound.double().cpu().numpy()
    # Jacobian of the standardisation: sum of log std_j over each series' observed values.
    observed = (~np.isnan(series.values)).astype(np.float64) @ np.log(scaling.std)       # (n_points,)
    log_det = np.bincount(series.point_series(), weights=observed, minlength=series.n_series)
    return pd.Series(out - log_det, index=pd.Index(series.ids, name=est.id_col_), name="log_likelihood")


def _check_positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    return int(value)
