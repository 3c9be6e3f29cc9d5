"""A small synthetic generator: irregular multivariate series with shared dynamics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state


def make_synthetic(n_series=100, *, n_obs=(20, 60), span_hours=(36.0, 60.0), missing=0.5, noise=0.05,
                   period_hours=24.0, decay_per_hour=0.01, start="2024-01-01", random_state=None):
    """Damped oscillations seen through three variables at irregular times, with NaNs.

    Every series follows the same dynamics (a damped rotation with period
    ``period_hours``) from its own amplitude ``a ~ U(0.5, 1.5)`` and phase ``phi ~ U(0, 2 pi)``::

        x(t) = a exp(-decay t) sin(2 pi t / period + phi),  y(t) = ... cos(...)
        v1 = x,  v2 = y,  v3 = tanh(x + y)

    Parameters
    ----------
    n_series : int
    n_obs : (int, int)
        Each series has a number of observation times drawn uniformly from this range
        (inclusive), placed uniformly at random (minute resolution) in its window.
    span_hours : (float, float)
        Window length range; each series' window starts at its own random timestamp.
    missing : float in [0, 1)
        Each variable is unobserved (NaN) independently with this probability; every row
        keeps at least one observed variable.
    noise : float
        Standard deviation of Gaussian observation noise.
    start : str
        Earliest window start; series start within 30 days after it.
    random_state : int, RandomState or None

    Returns
    -------
    df : pandas.DataFrame
        Columns ``id`` (str), ``time`` (datetime64), ``v1``, ``v2``, ``v3`` (float, NaN = missing).
    truth : pandas.DataFrame
        Same rows and index, noise-free values with no NaN (to score imputation).
    """
    if not 0 <= missing < 1:
        raise ValueError(f"missing must be in [0, 1), got {missing!r}.")
    if n_series < 1:
        raise ValueError(f"n_series must be >= 1, got {n_series!r}.")
    rs = check_random_state(random_state)
    lo, hi = n_obs
    counts = rs.randint(lo, hi + 1, size=n_series)
    spans = rs.uniform(*span_hours, size=n_series)
    amp = rs.uniform(0.5, 1.5, size=n_series)
    phase = rs.uniform(0, 2 * np.pi, size=n_series)
    starts = pd.Timestamp(start) + pd.to_timedelta(rs.randint(0, 30 * 24 * 60, size=n_series), unit="min")
    owner = np.repeat(np.arange(n_series), counts)
    minutes = np.floor(rs.uniform(0, 1, size=owner.size) * spans[owner] * 60)
    minutes[np.r_[0, np.cumsum(counts)[:-1]]] = 0.0  # each window starts with an observation
    hours = minutes / 60.0
    env = amp[owner] * np.exp(-decay_per_hour * hours)
    angle = 2 * np.pi * hours / period_hours + phase[owner]
    x, y = env * np.sin(angle), env * np.cos(angle)
    clean = np.stack([x, y, np.tanh(x + y)], axis=1)
    observed = rs.uniform(size=clean.shape) >= missing
    none = ~observed.any(axis=1)
    observed[none, rs.randint(0, 3, size=none.sum())] = True
    noisy = np.where(observed, clean + noise * rs.standard_normal(clean.shape), np.nan)
    ids = np.array([f"s{i:04d}" for i in range(n_series)], dtype=object)[owner]
    times = starts[owner] + pd.to_timedelta(minutes, unit="min")
    order = np.lexsort((minutes, owner))
    cols = ["v1", "v2", "v3"]
    base = {"id": pd.Series(ids[order], dtype="str"), "time": pd.Series(times[order])}
    df = pd.DataFrame({**base, **{c: noisy[order, j] for j, c in enumerate(cols)}})
    truth = pd.DataFrame({**base, **{c: clean[order, j] for j, c in enumerate(cols)}})
    return df, truth
