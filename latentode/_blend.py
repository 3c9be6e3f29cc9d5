"""A learned gate between the latent read-out and each series' own interpolation.

Dense, smooth data are hard to beat by linear interpolation, and a latent ODE trained for
a few epochs may not; sparse data are the reverse. Rather than one of them by rule, the
prediction of variable ``j`` at a query is

    xhat = r + alpha[k, b, j] * (m - r)

with ``m`` the model's read-out, ``r`` the linear interpolation in time of the values the
encoder saw (the nearest value outside their span, i.e. the last value past the end),
``k`` the regime of the query (0 *inside* the variable's observed span: imputation; 1
*outside* it: forecasting, backcasting) and ``b`` the bin of its distance to the nearest
observed value of the variable. Interpolation is hard to beat next to an observation and
poor far from one, so the gate may grow with the distance: a value hidden just past the
last observation is not treated like one a week ahead.

``alpha`` is fitted after training by least squares on held-out values of the validation and
training series (values the encoder did not see) and clipped to [0, 1] (1 is the model alone,
0 interpolation alone). The distance bins of each regime are the quantiles of its held-out
distances (up to ``N_BINS`` bins of at least ``MIN_BIN`` values); each bin's weight is shrunk
towards its regime's single weight by ``PRIOR_VALUES`` pseudo-values, so a thin bin does not
swing the prediction.

A model trained on windows cut from a few long series is asked for forecasts up to a window
and more past the window that ends at the data, while the tails of its training windows
reach a fifth of a window. Its forecast bins are therefore also fitted on forecasts cut from
the series themselves (``LatentODERegressor._backtest``): context windows, each followed by a
window of held-out values. Past the largest distance fitted, the last bin's weight holds.
"""

from __future__ import annotations

import numpy as np
import torch


N_BINS = 4          # distance bins per regime, at most
MIN_BIN = 100       # held-out values per bin, at least
PRIOR_VALUES = 20   # pseudo-values pulling a bin's weight towards its regime's


def as_gate(alpha, edges=None):
    """``(alpha, edges)`` as arrays of shapes (2, n_bins, n_features) and (2, n_bins - 1).

    A gate without distance bins, ``alpha`` of shape (2, n_features), becomes one bin.
    """
    alpha = np.asarray(alpha, dtype=float)
    if alpha.ndim == 2:
        alpha = alpha[:, None, :]
    if alpha.ndim != 3 or alpha.shape[0] != 2:
        raise ValueError(f"the gate must have shape (2, n_features) or (2, n_bins, n_features), got {alpha.shape}")
    edges = np.full((2, alpha.shape[1] - 1), np.inf) if edges is None else np.asarray(edges, dtype=float)
    if edges.shape != (2, alpha.shape[1] - 1):
        raise ValueError(f"the gate's distance edges must have shape {(2, alpha.shape[1] - 1)}, got {edges.shape}")
    return alpha, edges


def gate_weights(alpha, edges, outside, distance):
    """The gate at each value of a grid: ``alpha[regime, bin of distance, variable]``.

    alpha (2, n_bins, n_features), edges (2, n_bins - 1); outside, distance: tensors
    (..., n_features) -> (..., n_features).
    """
    a = torch.as_tensor(alpha, dtype=distance.dtype, device=distance.device)
    e = torch.as_tensor(edges, dtype=distance.dtype, device=distance.device)
    b = torch.where(outside, torch.bucketize(distance, e[1].contiguous(), right=True),
                    torch.bucketize(distance, e[0].contiguous(), right=True))
    j = torch.arange(a.shape[-1], device=a.device).expand_as(b)
    return a[outside.long(), b, j]


def gate_at(alpha, edges, outside, distance, feature):
    """The gate at flat held-out values (numpy): outside, distance, feature (n,) -> (n,)."""
    outside = np.asarray(outside, dtype=bool)
    b = np.where(outside, np.searchsorted(edges[1], distance, side="right"),
                 np.searchsorted(edges[0], distance, side="right"))
    return alpha[outside.astype(int), b, feature]


def apply_blend(xhat, r, outside, distance, gate):
    """``r + alpha * (xhat - r)``; xhat (..., batch, Q, features); gate ``(alpha, edges)`` of
    :func:`as_gate`, or None."""
    if gate is None:
        return xhat
    return r + gate_weights(*gate, outside, distance) * (xhat - r)


def _least_squares(num, den, prior=None, weight=0.0):
    """``clip((num + weight * prior) / (den + weight), 0, 1)``; 1 where there is nothing to fit."""
    p = 1.0 if prior is None else prior
    top, bottom = num + weight * p, den + weight
    ok = bottom > 1e-12
    return np.where(ok, np.clip(np.divide(top, np.where(ok, bottom, 1.0)), 0.0, 1.0), 1.0)


def fit_blend(y, m, r, outside, distance, feature, n_features=None):
    """Least-squares gate per (regime, distance bin, variable) from held-out values.

    y, m, r : (n,) target, model and interpolation at held-out values (standardised);
    outside : (n,) bool; distance : (n,) to the nearest visible value; feature : (n,) int
    variable index. A (regime, variable) with no held-out value gets 1 (the model).

    Returns
    -------
    alpha : ndarray, shape (2, N_BINS, n_features)
    edges : ndarray, shape (2, N_BINS - 1)
        Distance edges of the bins of each regime (bin ``b`` holds ``edges[b-1] <= d <
        edges[b]``); infinite edges leave the bins above them empty.
    """
    n_f = n_features if n_features is not None else (int(feature.max()) + 1 if len(feature) else 0)
    alpha = np.ones((2, N_BINS, n_f))
    edges = np.full((2, N_BINS - 1), np.inf)
    d, e = m - r, y - r
    for k, sel in enumerate((~outside, outside)):
        f, dd, ed, dist = feature[sel], d[sel], e[sel], distance[sel]
        num = np.bincount(f, weights=ed * dd, minlength=n_f)
        den = np.bincount(f, weights=dd * dd, minlength=n_f)
        count = np.bincount(f, minlength=n_f)
        pooled = _least_squares(num, den)  # the regime's single weight per variable
        finite = dist[np.isfinite(dist)]
        n_bins = int(min(N_BINS, len(finite) // MIN_BIN))
        if n_bins > 1:
            inner = np.unique(np.quantile(finite, np.arange(1, n_bins) / n_bins))
            edges[k, :len(inner)] = inner
        b = np.searchsorted(edges[k], dist, side="right")
        weight = PRIOR_VALUES * np.where(count > 0, den / np.maximum(count, 1), 0.0)  # pseudo-values x mean d^2
        for i in range(N_BINS):
            in_bin = b == i
            nb = np.bincount(f[in_bin], weights=(ed * dd)[in_bin], minlength=n_f)
            db = np.bincount(f[in_bin], weights=(dd * dd)[in_bin], minlength=n_f)
            alpha[k, i] = np.where(count > 0, _least_squares(nb, db, pooled, weight), 1.0)
    return alpha, edges
