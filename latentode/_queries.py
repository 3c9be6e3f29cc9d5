"""Query times for predictions, and the names of uncertainty columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._validation import InputTypeError, InputValueError


def time_values(times) -> pd.Series:
    """A 1-D sequence of times (list, array, Index, Series) as a Series; TypeError/ValueError name ``times``."""
    if isinstance(times, (str, bytes, pd.DataFrame)) or np.ndim(times) > 1:
        raise InputTypeError(f"times must be a 1-D sequence of times here, got {type(times).__name__} "
                        f"with {np.ndim(times)} dimensions.")
    tvals = pd.Series(times.array) if isinstance(times, (pd.Index, pd.Series)) else pd.Series(np.atleast_1d(times))
    if len(tvals) == 0:
        raise InputValueError("times is empty.")
    return tvals


def resolve_queries(lf, times, time_kind, id_col, time_col):
    """Resolve ``times`` (see ``LatentODERegressor.predict``) against the context ``lf``.

    Returns
    -------
    codes : (n_query,) int
        Series index (into ``lf.series``) of each query.
    t : (n_query,) float
        Internal time of each query.
    keys : pandas.DataFrame
        The id and time columns of the output, one row per query, with the output's index.
    """
    ids = lf.series.ids
    if times is None:
        keys = lf.frame[[c for c in (id_col, time_col) if c is not None]]
        t = time_kind.to_float(lf.frame[time_col], f"time column {time_col!r}")
        return lf.codes, t, keys
    if isinstance(times, pd.DataFrame):
        need = [c for c in (id_col, time_col) if c is not None]
        missing = [c for c in need if c not in times.columns]
        if missing:
            raise InputValueError(f"times is a DataFrame but lacks columns {missing}; found {list(times.columns)}.")
        t = time_kind.to_float(times[time_col], f"column {time_col!r} of times")
        if id_col is None:
            codes = np.zeros(len(times), dtype=np.int64)
        else:
            codes = pd.Index(ids).get_indexer(times[id_col])
            if (codes < 0).any():
                unknown = pd.unique(times[id_col][codes < 0])[:5].tolist()
                raise InputValueError(f"times has ids with no rows in X (so nothing to condition on): {unknown}.")
        return codes, t, times[need]
    tvals = time_values(times)
    t1 = time_kind.to_float(tvals, "times")
    n_s, n_t = len(ids), len(t1)
    codes = np.repeat(np.arange(n_s), n_t)
    keys = {time_col: tvals.take(np.tile(np.arange(n_t), n_s)).reset_index(drop=True)}
    if id_col is not None:
        keys = {id_col: pd.Series(ids, dtype=lf.frame[id_col].dtype).take(codes).reset_index(drop=True), **keys}
    return codes, np.tile(t1, n_s), pd.DataFrame(keys)


def interval_columns(quantiles, level):
    """Probabilities to compute and their column suffixes, from ``quantiles`` or ``level``."""
    if quantiles is not None and level is not None:
        raise InputValueError("pass quantiles or level, not both.")
    if quantiles is not None:
        q = np.atleast_1d(np.asarray(quantiles, dtype=float))
        if q.ndim != 1 or not len(q) or ((q <= 0) | (q >= 1)).any():
            raise InputValueError(f"quantiles must be a non-empty list of numbers in (0, 1), got {quantiles!r}.")
        return list(q), ["median" if v == 0.5 else f"q-{100 * v:g}" for v in q]
    if level is not None:
        lv = np.atleast_1d(np.asarray(level, dtype=float))
        if lv.ndim != 1 or not len(lv) or ((lv <= 0) | (lv >= 100)).any():
            raise InputValueError(f"level must be a non-empty list of numbers in (0, 100), got {level!r}.")
        if (lv <= 1).any():
            raise InputValueError(f"level is in percent (e.g. 80 for an 80% interval), got {level!r}: a level of "
                                  f"{lv[lv <= 1][0]:g} would be a {lv[lv <= 1][0]:g}% interval. Pass "
                                  f"{[float(f'{100 * v:g}') if v <= 1 else float(v) for v in lv]}, or use quantiles= "
                                  "for probabilities in (0, 1).")
        probs, names = [], []
        for v in lv:
            probs += [0.5 - v / 200, 0.5 + v / 200]
            names += [f"lo-{v:g}", f"hi-{v:g}"]
        return probs, names
    return [], []
