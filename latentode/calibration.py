"""Measuring and correcting the calibration of prediction intervals.

The intervals of :meth:`LatentODERegressor.predict(..., level=...)
<latentode.LatentODERegressor.predict>` are quantiles of predictive samples (z0 drawn from
q(z0|x), decoded, plus the learned observation noise). Whether an 80% interval holds 80% of
held-out values is an empirical question; :func:`interval_coverage` answers it.

When the coverage is off, :func:`fit_interval_scale` fits a per-variable multiplicative factor
for the half-widths on validation series (split conformal calibration: the factor is the
``level``-quantile of how much each interval would have to be stretched about its midpoint to
contain its target), and :func:`apply_interval_scale` applies it to new predictions::

    scale = fit_interval_scale(est, valid_context, valid_targets, level=[80, 95])
    pred = apply_interval_scale(est.predict(context, times=queries, level=[80, 95]), scale)

A factor above 1 means the raw intervals were too narrow, below 1 too wide (the usual case: the
ELBO-trained noise scale is generous; see the Calibration section of BENCHMARKS.md). Fit it on the
task it is used for (imputation and forecasting need different factors) with the same
``n_samples``.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

__all__ = ["apply_interval_scale", "fit_interval_scale", "interval_coverage", "interval_ratios"]


def _levels(level) -> list[float]:
    levels = [level] if isinstance(level, numbers.Real) and not isinstance(level, bool) else list(level)
    if not levels:
        raise ValueError("level is empty; pass e.g. 80 or [80, 95].")
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, numbers.Real) or not 0 < lv < 100:
            raise ValueError(f"level must be numbers in (0, 100), got {level!r}.")
    return [float(lv) for lv in levels]


def _bounds(pred: pd.DataFrame, var: str, lv: float) -> tuple[str, str]:
    lo, hi = f"{var}-lo-{lv:g}", f"{var}-hi-{lv:g}"
    missing = [c for c in (lo, hi) if c not in pred.columns]
    if missing:
        raise ValueError(f"pred lacks the interval columns {missing}; make it with predict(..., level=[{lv:g}]).")
    return lo, hi


def _align(pred: pd.DataFrame, truth: pd.DataFrame, variables, on) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of ``pred`` matching the rows of ``truth``, by index (``on=None``) or by key columns."""
    if not isinstance(pred, pd.DataFrame) or not isinstance(truth, pd.DataFrame):
        raise TypeError("pred and truth must be pandas DataFrames.")
    missing = [v for v in variables if v not in truth.columns]
    if missing:
        raise ValueError(f"truth lacks the variable columns {missing}; found {list(truth.columns)}.")
    if on is None:
        if not truth.index.isin(pred.index).all() or pred.index.has_duplicates:
            raise ValueError("pred's index must be unique and contain truth's index (predict at "
                             "times=truth[[id, time]] keeps it), or pass on=[id_col, time_col].")
        return pred.loc[truth.index], truth
    on = [on] if isinstance(on, str) else list(on)
    for name, frame in (("pred", pred), ("truth", truth)):
        lacking = [c for c in on if c not in frame.columns]
        if lacking:
            raise ValueError(f"{name} lacks the key columns {lacking}; found {list(frame.columns)}.")
    keys = truth[on].reset_index(drop=True)
    merged = keys.merge(pred.drop_duplicates(on), on=on, how="left", validate="many_to_one")
    return merged.set_index(truth.index), truth


def interval_coverage(pred, truth, variables, level=80, *, on=None) -> pd.DataFrame:
    """Empirical coverage of central prediction intervals on held-out values.

    Parameters
    ----------
    pred : pandas.DataFrame
        From ``predict(..., level=[...])``: columns ``{var}-lo-{level}`` and ``{var}-hi-{level}``.
    truth : pandas.DataFrame
        Held-out observations, one column per variable; NaN (not observed) is ignored.
    variables : list of str
    level : float or sequence of float in (0, 100), default=80
    on : None, str or list of str, default=None
        None matches rows by index (``predict(X, times=truth[[id, time]])`` keeps truth's index);
        otherwise the key columns to merge on, e.g. ``["id", "time"]``.

    Returns
    -------
    pandas.DataFrame
        Index: the variables, then ``"overall"`` (all values pooled). Columns
        ``coverage-{level}`` (fraction of the non-NaN truth in ``[lo, hi]``, NaN where a
        variable has no held-out value) for each level, and ``n`` (number of values).

    Examples
    --------
    >>> import pandas as pd
    >>> pred = pd.DataFrame({"a-lo-80": [0.0, 0.0], "a-hi-80": [1.0, 1.0]})
    >>> interval_coverage(pred, pd.DataFrame({"a": [0.5, 2.0]}), ["a"], 80)
             coverage-80  n
    a                0.5  2
    overall          0.5  2
    """
    variables = list(variables)
    levels = _levels(level)
    for lv in levels:
        for var in variables:
            _bounds(pred, var, lv)
    p, t = _align(pred, truth, variables, on)
    y = t[variables].to_numpy(dtype=np.float64, na_value=np.nan)
    seen = ~np.isnan(y)
    n = seen.sum(axis=0)
    out = {}
    for lv in levels:
        lo = np.stack([p[_bounds(pred, v, lv)[0]].to_numpy(dtype=np.float64) for v in variables], axis=1)
        hi = np.stack([p[_bounds(pred, v, lv)[1]].to_numpy(dtype=np.float64) for v in variables], axis=1)
        inside = seen & (y >= lo) & (y <= hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_var = inside.sum(axis=0) / np.where(n > 0, n, np.nan)
        overall = inside.sum() / n.sum() if n.sum() else np.nan
        out[f"coverage-{lv:g}"] = np.append(per_var, overall)
    out["n"] = np.append(n, n.sum())
    return pd.DataFrame(out, index=pd.Index(variables + ["overall"]))


def interval_ratios(pred, truth, variables, level=80, *, on=None) -> pd.DataFrame:
    """How far each held-out value lies from its interval's midpoint, in half-widths.

    ``ratio = |y - (lo + hi) / 2| / ((hi - lo) / 2)``, so ``y`` is inside the interval stretched
    by a factor ``s`` about its midpoint exactly when ``ratio <= s`` (inside the raw interval
    when ``ratio <= 1``).

    Parameters
    ----------
    pred, truth, variables, level, on : as in :func:`interval_coverage` (one level)

    Returns
    -------
    pandas.DataFrame
        Truth's index, one column per variable (NaN where truth is NaN).
    """
    variables = list(variables)
    (lv,) = _levels(level)
    p, t = _align(pred, truth, variables, on)
    out = {}
    for var in variables:
        lo_c, hi_c = _bounds(pred, var, lv)
        lo, hi = p[lo_c].to_numpy(dtype=np.float64), p[hi_c].to_numpy(dtype=np.float64)
        y = t[var].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[var] = np.abs(y - (lo + hi) / 2) / np.maximum((hi - lo) / 2, 1e-300)
    return pd.DataFrame(out, index=truth.index)


def fit_interval_scale(est, context, targets, level=(80, 95), *, n_samples=200, random_state=0,
                       min_values=20) -> pd.DataFrame:
    """Per-variable factors that make the intervals hold their nominal share on validation data.

    Split conformal calibration of the interval width: on validation series (not used to fit
    ``est``), the factor for a variable and level is the ``level``-quantile (finite-sample
    corrected, ``ceil((n + 1) level) / n``) of :func:`interval_ratios`; stretching every
    interval of that variable by it about its midpoint gives at least ``level``% coverage on the
    validation values, and about that on exchangeable new ones.

    Parameters
    ----------
    est : fitted LatentODERegressor
    context : pandas.DataFrame
        Observed part of the validation series (the encoder's input).
    targets : pandas.DataFrame
        Held-out values of the same series: id and time columns and the variables (NaN = none).
    level : float or sequence of float, default=(80, 95)
    n_samples : int, default=200
        Predictive samples behind the raw intervals (use the same number later).
    random_state : int or None, default=0
    min_values : int, default=20
        A variable with fewer held-out values gets the factor pooled over all variables.

    Returns
    -------
    pandas.DataFrame
        Index: the levels (float); columns: the variables; values: the factors. Pass it to
        :func:`apply_interval_scale`.
    """
    levels = _levels(level)
    variables = [str(v) for v in est.feature_names_in_]
    keys = [c for c in (est.id_col_, est.time_col_) if c is not None]
    missing = [c for c in keys if c not in targets.columns]
    if missing:
        raise ValueError(f"targets lacks the columns {missing}; found {list(targets.columns)}.")
    pred = est.predict(context, times=targets[keys], level=levels, n_samples=n_samples, random_state=random_state)
    rows = {}
    for lv in levels:
        ratios = interval_ratios(pred, targets, variables, lv)
        pooled = _conformal_quantile(ratios.to_numpy().ravel(), lv)
        rows[lv] = [_conformal_quantile(ratios[v].to_numpy(), lv, min_values, pooled) for v in variables]
    return pd.DataFrame.from_dict(rows, orient="index", columns=variables).rename_axis("level")


def _conformal_quantile(r, lv, min_values=1, fallback=np.nan):
    r = np.sort(r[~np.isnan(r)])
    n = len(r)
    if n < min_values or n == 0:
        return float(fallback)
    k = min(int(np.ceil((n + 1) * lv / 100)), n)
    return float(r[k - 1])


def apply_interval_scale(pred, scale) -> pd.DataFrame:
    """Stretch the ``{var}-lo-{level}`` / ``{var}-hi-{level}`` columns by fitted factors.

    With ``m = (lo + hi) / 2``: ``lo' = m - s (m - lo)`` and ``hi' = m + s (hi - m)``, for every
    level and variable in ``scale`` whose columns ``pred`` has.

    Parameters
    ----------
    pred : pandas.DataFrame
        From ``predict(..., level=[...])``.
    scale : pandas.DataFrame
        From :func:`fit_interval_scale` (index levels, columns variables).

    Returns
    -------
    pandas.DataFrame
        A copy of ``pred`` with the interval columns replaced.
    """
    out = pred.copy()
    done = 0
    for lv, row in scale.iterrows():
        for var, s in row.items():
            lo, hi = f"{var}-lo-{float(lv):g}", f"{var}-hi-{float(lv):g}"
            if lo not in out.columns or hi not in out.columns or not np.isfinite(s):
                continue
            a, b = out[lo].to_numpy(dtype=np.float64), out[hi].to_numpy(dtype=np.float64)
            mid, half = (a + b) / 2, s * (b - a) / 2
            out[lo], out[hi] = mid - half, mid + half
            done += 1
    if not done:
        raise ValueError(f"pred has none of the interval columns of scale (levels {list(scale.index)}, "
                         f"variables {list(scale.columns)}).")
    return out
