"""How fast the data move: a pooled semivariogram of the training series.

Used by ``dynamics_init="rotations"`` to place the latent field's initial frequencies
where the data's are, instead of asking the optimiser to find them.
"""

from __future__ import annotations

import numpy as np

from ._frame import SeriesSet

MAX_PAIRS = 200_000
N_BINS = 24


def semivariogram(series: SeriesSet, mean, std, max_pairs: int = MAX_PAIRS, seed: int = 0):
    """Pooled within-series semivariogram of the standardised values.

    Pairs of points ``(i, i + 2**k)`` of the same series (every power-of-two stride, so
    lags reach the longest span at O(n log n) pairs), per variable where both are
    observed; lags are binned by quantiles.

    Returns
    -------
    lags, gamma : numpy.ndarray, shape (n_bins,)
        Bin centres (internal time units) and ``0.5 * mean((x_j - x_i)**2)``; empty when
        there are fewer than 50 pairs.
    """
    vals = (series.values - mean) / std
    own = series.point_series()
    idx = np.arange(len(series.time))
    end = series.offsets[own + 1]
    longest = int(series.lengths.max()) if series.n_series else 0
    lag_parts, sq_parts = [], []
    stride = 1
    while stride < longest:
        j = idx + stride
        ok = j < end
        i, j = idx[ok], j[ok]
        d = vals[j] - vals[i]
        lag = np.broadcast_to((series.time[j] - series.time[i])[:, None], d.shape)
        m = ~np.isnan(d)
        lag_parts.append(lag[m])
        sq_parts.append(d[m] ** 2)
        stride *= 2
    if not lag_parts:
        return np.empty(0), np.empty(0)
    lag, sq = np.concatenate(lag_parts), np.concatenate(sq_parts)
    keep = lag > 0
    lag, sq = lag[keep], sq[keep]
    if len(lag) < 50:
        return np.empty(0), np.empty(0)
    if len(lag) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(lag), max_pairs, replace=False)
        lag, sq = lag[pick], sq[pick]
    edges = np.unique(np.quantile(lag, np.linspace(0, 1, N_BINS + 1)))
    b = np.clip(np.searchsorted(edges, lag, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(b, minlength=len(edges) - 1)
    gamma = 0.5 * np.bincount(b, sq, minlength=len(edges) - 1) / np.maximum(count, 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    return centres[count > 0], gamma[count > 0]


def characteristic_cycles(series: SeriesSet, mean, std, time_scale: float, bounds=(0.25, 8.0)) -> float:
    """Cycles per model time unit of the data's dominant motion (``bounds[0]`` when unknown).

    The lag ``tau`` where the semivariogram first reaches half its largest value is a
    quarter period for a sinusoid (``gamma = s**2 (1 - cos(w tau))`` reaches half of its
    maximum ``2 s**2`` at ``w tau = pi / 2``), so the estimate is ``time_scale / (4 tau)``
    cycles per unit; for decays it is of the order of the inverse decay time. Clipped
    to ``bounds``.
    """
    lags, gamma = semivariogram(series, mean, std)
    if not len(lags) or not np.isfinite(gamma).all() or gamma.max() <= 0:
        return float(bounds[0])
    tau = lags[int(np.argmax(gamma >= 0.5 * gamma.max()))]
    return float(np.clip(time_scale / (4.0 * tau), *bounds))
