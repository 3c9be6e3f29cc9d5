"""Plots of observed series, predictive means and prediction intervals (matplotlib, optional).

Install the extra with ``pip install 'latentode[plot]'``.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from ._frame import ID_CANDIDATES, TIME_CANDIDATES, _find

__all__ = ["plot_series", "time_grid"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("latentode.plotting needs matplotlib: pip install 'latentode[plot]'") from err
    return plt


def _column(frame, given, candidates, role, required):
    if given is not None:
        if given not in frame.columns:
            raise ValueError(f"{role} column {given!r} is not in df; found {list(frame.columns)}.")
        return given
    found = _find(frame.columns, candidates)
    if found is None and required:
        raise ValueError(f"df has no {role} column (looked for {list(candidates)}); pass {role}_col=.")
    return found


def _per_id(df, id_col, time_col, forecast_start, ids):
    """The forecast-start time of each plotted id (None: no line)."""
    if forecast_start is False:
        return dict.fromkeys(ids)
    if forecast_start is None:
        if id_col is None:
            return {ids[0]: df[time_col].max()}
        return df.groupby(id_col, sort=False)[time_col].max().reindex(ids).to_dict()
    if isinstance(forecast_start, (dict, pd.Series)):
        return {i: forecast_start.get(i) for i in ids}
    return dict.fromkeys(ids, forecast_start)


def time_grid(df, *, n_points=100, extend=None, id_col=None, time_col=None) -> pd.DataFrame:
    """A dense per-series query frame: ``n_points`` evenly spaced times over each series' window.

    Pass it as ``times=`` to ``predict`` to draw smooth means and bands with :func:`plot_series`.

    Parameters
    ----------
    df : pandas.DataFrame
        Long frame; each series' window runs from its first to its last time.
    n_points : int, default=100
    extend : None, a time span (``pd.Timedelta`` or number) or a frame of later rows, default=None
        Extends each window: by a fixed span past its last time, or to the last time each id has
        in the given frame (e.g. held-out future rows).
    id_col, time_col : str or None, default=None
        As in :func:`plot_series`.

    Returns
    -------
    pandas.DataFrame
        Columns id (if any) and time, ``n_points`` rows per series.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"id": ["a", "a", "b"], "time": [0.0, 2.0, 1.0], "v": [1.0, 2.0, 3.0]})
    >>> time_grid(df, n_points=3, extend=1.0)["time"].tolist()
    [0.0, 1.5, 3.0, 1.0, 1.5, 2.0]
    """
    if isinstance(n_points, bool) or not isinstance(n_points, numbers.Integral) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}.")
    id_col = _column(df, id_col, ID_CANDIDATES, "id", required=False)
    time_col = _column(df, time_col, TIME_CANDIDATES, "time", required=True)
    if id_col is None:
        first, last = pd.Series([df[time_col].min()]), pd.Series([df[time_col].max()])
    else:
        g = df.groupby(id_col, sort=False)[time_col]
        first, last = g.min(), g.max()
    if isinstance(extend, pd.DataFrame):
        later = extend[time_col].max() if id_col is None else extend.groupby(id_col)[time_col].max()
        later = pd.Series([later]) if id_col is None else later.reindex(last.index)
        last = pd.concat([last, later.fillna(last)], axis=1).max(axis=1)
    elif extend is not None:
        last = last + extend
    frac = np.linspace(0.0, 1.0, n_points)
    span = (last - first).to_numpy()
    times = np.repeat(first.to_numpy(), n_points) + np.tile(frac, len(first)) * np.repeat(span, n_points)
    out = {time_col: pd.Series(times, dtype=df[time_col].dtype)}
    if id_col is not None:
        out = {id_col: pd.Series(np.repeat(first.index.to_numpy(), n_points), dtype=df[id_col].dtype), **out}
    return pd.DataFrame(out)


def plot_series(df, pred, *, ids=None, variables=None, level=80, forecast_start=None, truth=None, id_col=None,
                time_col=None, max_ids=4):
    """Observed points, predictive mean and a shaded interval, one panel per (series, variable).

    Parameters
    ----------
    df : pandas.DataFrame
        The observed long frame (the context given to the model); NaN values are not drawn.
    pred : pandas.DataFrame
        From ``est.predict(df, times=grid, level=[level])``, ideally on a dense time grid: the
        id and time columns, ``{var}`` (the mean) and ``{var}-lo-{level}``/``{var}-hi-{level}``.
    ids : list or None, default=None
        Series to draw; None takes the first ``max_ids`` ids of ``df``.
    variables : list of str or None, default=None
        Variables to draw; None takes every column of ``df`` that ``pred`` also has (besides
        the id and time).
    level : float or None, default=80
        Interval to shade; None draws no band.
    forecast_start : None, False, a time, or a dict / Series id -> time, default=None
        Where to draw a vertical dashed line; None: each series' last time in ``df``;
        False: no line.
    truth : pandas.DataFrame or None, default=None
        Held-out observations (same columns as ``df``), drawn as crosses.
    id_col, time_col : str or None, default=None
        None finds ``unique_id``/``id`` and ``ds``/``time``/``timestamp``; a frame without an
        id column is one series.
    max_ids : int, default=4
        Cap on the number of rows of panels when ``ids`` is None.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(ids)`` rows by ``len(variables)`` columns of axes (``fig.axes`` in row order).

    Raises
    ------
    ImportError
        Without matplotlib.
    ValueError
        For a missing column (the message names it) or an id absent from ``df``.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd
    >>> from latentode.plotting import plot_series
    >>> df = pd.DataFrame({"id": "a", "time": [0.0, 1.0], "v": [0.0, 1.0]})
    >>> pred = pd.DataFrame({"id": "a", "time": [0.0, 1.0, 2.0], "v": [0.0, 1.0, 2.0],
    ...                      "v-lo-80": [-1.0, 0.0, 1.0], "v-hi-80": [1.0, 2.0, 3.0]})
    >>> len(plot_series(df, pred).axes)
    1
    """
    plt = _pyplot()
    for name, frame in (("df", df), ("pred", pred)) + ((("truth", truth),) if truth is not None else ()):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}.")
    id_col = _column(df, id_col, ID_CANDIDATES, "id", required=False)
    time_col = _column(df, time_col, TIME_CANDIDATES, "time", required=True)
    keys = [c for c in (id_col, time_col) if c is not None]
    for name, frame in (("pred", pred),) + ((("truth", truth),) if truth is not None else ()):
        missing = [c for c in keys if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks the columns {missing}; found {list(frame.columns)}.")
    if variables is None:
        variables = [c for c in df.columns if c not in keys and c in pred.columns]
        if not variables:
            raise ValueError("df and pred share no variable column; pass variables=.")
    else:
        variables = [variables] if isinstance(variables, str) else list(variables)
    need = list(variables)
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 100:
            raise ValueError(f"level must be a number in (0, 100) or None, got {level!r}.")
        need += [f"{v}-{side}-{level:g}" for v in variables for side in ("lo", "hi")]
    missing = [c for c in need if c not in pred.columns]
    if missing:
        raise ValueError(f"pred lacks the columns {missing}; make it with est.predict(..., level=[{level}]).")
    missing = [v for v in variables if v not in df.columns]
    if missing:
        raise ValueError(f"df lacks the variable columns {missing}; found {list(df.columns)}.")

    if id_col is None:
        ids = [None]
    elif ids is None:
        ids = list(pd.unique(df[id_col]))[:max_ids]
    else:
        ids = list(np.atleast_1d(ids))
        unknown = [i for i in ids if not (df[id_col] == i).any()]
        if unknown:
            raise ValueError(f"ids not in df: {unknown[:5]}.")
    starts = _per_id(df, id_col, time_col, forecast_start, ids)

    def rows(frame, i):
        part = frame if id_col is None else frame[frame[id_col] == i]
        return part.sort_values(time_col, kind="stable")

    n_r, n_c = len(ids), len(variables)
    fig, axes = plt.subplots(n_r, n_c, figsize=(3.6 * n_c, 2.6 * n_r), squeeze=False, sharex="row")
    for r, i in enumerate(ids):
        obs, p = rows(df, i), rows(pred, i)
        tru = rows(truth, i) if truth is not None else None
        for c, var in enumerate(variables):
            ax = axes[r, c]
            if level is not None:
                ax.fill_between(p[time_col].to_numpy(), p[f"{var}-lo-{level:g}"].to_numpy(dtype=float),
                                p[f"{var}-hi-{level:g}"].to_numpy(dtype=float), color="C0", alpha=0.25,
                                linewidth=0, label=f"{level:g}% interval")
            ax.plot(p[time_col].to_numpy(), p[var].to_numpy(dtype=float), color="C0", lw=1.5, label="mean")
            seen = obs[var].notna().to_numpy()
            ax.plot(obs[time_col].to_numpy()[seen], obs[var].to_numpy(dtype=float)[seen], "o", color="k", ms=3,
                    label="observed")
            if tru is not None and var in tru.columns:
                held = tru[var].notna().to_numpy()
                ax.plot(tru[time_col].to_numpy()[held], tru[var].to_numpy(dtype=float)[held], "x", color="C3",
                        ms=4, label="held out")
            if starts.get(i) is not None:
                ax.axvline(starts[i], color="0.4", ls="--", lw=1)
            ax.set_title(var if i is None else f"{i}: {var}", fontsize=9)
            ax.tick_params(labelsize=7)
            if c == 0 and r == 0:
                ax.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
