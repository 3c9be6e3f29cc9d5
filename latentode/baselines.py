"""Per-series baselines on long frames, with the same inputs and outputs as the estimator.

They answer "what does the model buy?": last value carried forward, linear interpolation
in time, and the training mean of each variable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._frame import validate_frame

KINDS = ("locf", "linear", "mean")


def baseline_predict(context: pd.DataFrame, query: pd.DataFrame, kind: str = "linear", *, id_col=None,
                     time_col=None, value_cols=None, fallback=None) -> pd.DataFrame:
    """Predict every variable at the rows of ``query`` from the observations in ``context``.

    Parameters
    ----------
    context : pandas.DataFrame
        Long frame of observed values (NaN = not measured).
    query : pandas.DataFrame
        Rows (id, time) to predict; its index is kept.
    kind : {"locf", "linear", "mean"}
        ``"locf"``: last observed value at or before the query time (the first one
        before it); ``"linear"``: linear interpolation in time, constant beyond the ends;
        ``"mean"``: ``fallback``.
    fallback : array-like of shape (n_features,) or None
        Used where a series never observed a variable (and for ``"mean"``); None uses
        the mean of ``context``.

    Returns
    -------
    pandas.DataFrame
        The query's id and time columns and one column per variable.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {list(KINDS)}.")
    lf = validate_frame(context, id_col, time_col, value_cols, None, "context")
    cols = lf.columns
    if not isinstance(query, pd.DataFrame):
        raise TypeError(f"query must be a DataFrame of (id, time) rows, got {type(query).__name__}.")
    missing = [c for c in (cols.id, cols.time) if c is not None and c not in query.columns]
    if missing:
        raise ValueError(f"query lacks columns {missing}; found {list(query.columns)}.")
    fb = np.nanmean(lf.series.values, axis=0) if fallback is None else np.asarray(fallback, dtype=float)
    qt = lf.time_kind.to_float(query[cols.time], "query time")
    if cols.id is None:
        q_codes = np.zeros(len(query), dtype=np.int64)
    else:
        q_codes = pd.Index(lf.series.ids).get_indexer(query[cols.id])
    out = np.tile(fb, (len(query), 1))
    s = lf.series
    if kind != "mean":
        for i in np.unique(q_codes[q_codes >= 0]):
            rows = np.flatnonzero(q_codes == i)
            t = s.time[s.offsets[i]:s.offsets[i + 1]]
            vals = s.values[s.offsets[i]:s.offsets[i + 1]]
            for j in range(vals.shape[1]):
                ok = ~np.isnan(vals[:, j])
                if not ok.any():
                    continue
                tj, vj = t[ok], vals[ok, j]
                if kind == "linear":
                    out[rows, j] = np.interp(qt[rows], tj, vj)
                else:
                    k = np.searchsorted(tj, qt[rows], side="right") - 1
                    out[rows, j] = vj[np.maximum(k, 0)]
    keys = query[[c for c in (cols.id, cols.time) if c is not None]].copy()
    for j, c in enumerate(cols.values):
        keys[c] = out[:, j]
    return keys
