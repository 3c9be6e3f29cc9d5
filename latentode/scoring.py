"""The scoring protocol of the defaults scoreboard and the quickstart, on long frames.

One fitted model answers both tasks a user has, from one frame:

- :func:`forecast_split` cuts each series' window at a share of its span: the rows
  after the cut are the forecasting targets;
- :func:`hide_at_random` hides a seeded random share of the observed values before the
  cut: the imputation targets;
- :func:`standardised_mse` scores predictions on the non-NaN targets, each variable
  divided by its standard deviation, so that a ratio to a baseline is unit-free.

Examples
--------
>>> import numpy as np
>>> from latentode.datasets import make_synthetic
>>> df, _ = make_synthetic(4, random_state=0)
>>> context, future = forecast_split(df, "id", "time", 0.75)
>>> frame, hidden = hide_at_random(context, ["v1", "v2", "v3"], 0.2, random_state=0)
>>> bool(np.isnan(frame[["v1", "v2", "v3"]].to_numpy())[~np.isnan(hidden)].all())
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["forecast_split", "hide_at_random", "standardised_mse"]


def forecast_split(df: pd.DataFrame, id_col, time_col, fraction: float = 0.75, horizon=None):
    """Per series: the rows up to ``fraction`` of the window (context) and after it (future).

    Parameters
    ----------
    df : pandas.DataFrame
        Long frame.
    id_col : str or None
        None: the frame is one series.
    time_col : str
    fraction : float in (0, 1)
        Where the cut lies in each series' window (0 = its first row, 1 = its last).
    horizon : scalar, Timedelta or None
        Instead of ``fraction``: the cut lies ``horizon`` before each series' last row.

    Returns
    -------
    context, future : pandas.DataFrame
        Rows of ``df`` (index reset), in its order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}.")
    t = df[time_col]
    if id_col is None:
        start, end = t.min(), t.max()
    else:
        by = df.groupby(id_col, sort=False)[time_col]
        start, end = by.transform("min"), by.transform("max")
    cut = end - horizon if horizon is not None else start + (end - start) * fraction
    future = (t > cut).to_numpy()
    return df[~future].reset_index(drop=True), df[future].reset_index(drop=True)


def hide_at_random(df: pd.DataFrame, value_cols, fraction: float = 0.2, random_state=None):
    """Hide a random ``fraction`` of the observed values (set them to NaN).

    Returns
    -------
    frame : pandas.DataFrame
        A copy of ``df`` with the hidden values NaN.
    hidden : numpy.ndarray, shape (len(df), len(value_cols))
        The hidden values, NaN elsewhere (the imputation targets).
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}.")
    cols = list(value_cols)
    v = df[cols].to_numpy(dtype=float)
    hide = (np.random.default_rng(random_state).random(v.shape) < fraction) & ~np.isnan(v)
    frame = df.copy()
    frame[cols] = np.where(hide, np.nan, v)
    return frame, np.where(hide, v, np.nan)


def standardised_mse(pred, truth, scale) -> float:
    """MSE over the non-NaN entries of ``truth``, each variable (column) divided by ``scale``.

    pred, truth : array-like (n, n_features); scale : (n_features,) -> float (NaN if nothing to score).
    """
    truth = np.asarray(truth, dtype=float)
    err = ((np.asarray(pred, dtype=float) - truth) / np.asarray(scale, dtype=float)) ** 2
    m = ~np.isnan(truth)
    return float(err[m].mean()) if m.any() else float("nan")
