"""Per-series baselines on long frames, with the same inputs and outputs as the estimator.

They answer "what does the model buy?": last value carried forward, linear interpolation
in time, the training mean of each variable, and a GRU fed time gaps (GRU-Δt).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._collate import Scaling, collate
from ._frame import validate_frame
from ._training import train_encoder_mask
from .encoders import mlp

KINDS = ("locf", "linear", "mean", "series_mean")


def baseline_predict(context: pd.DataFrame, query: pd.DataFrame, kind: str = "linear", *, id_col=None,
                     time_col=None, value_cols=None, fallback=None) -> pd.DataFrame:
    """Predict every variable at the rows of ``query`` from the observations in ``context``.

    Parameters
    ----------
    context : pandas.DataFrame
        Long frame of observed values (NaN = not measured).
    query : pandas.DataFrame
        Rows (id, time) to predict; its index is kept.
    kind : {"locf", "linear", "mean", "series_mean"}
        ``"locf"``: last observed value at or before the query time (the first one
        before it); ``"linear"``: linear interpolation in time, constant beyond the ends;
        ``"mean"``: ``fallback``; ``"series_mean"``: the mean of the series' observed
        values of the variable.
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
                if kind == "series_mean":
                    out[rows, j] = vj.mean()
                elif kind == "linear":
                    out[rows, j] = np.interp(qt[rows], tj, vj)
                else:
                    k = np.searchsorted(tj, qt[rows], side="right") - 1
                    out[rows, j] = vj[np.maximum(k, 0)]
    keys = query[[c for c in (cols.id, cols.time) if c is not None]].copy()
    for j, c in enumerate(cols.values):
        keys[c] = out[:, j]
    return keys


class GRUDeltaTRegressor(BaseEstimator):
    """GRU-Δt: a GRU run forward over each series' observations (values, mask, time gap),
    predicting every variable at a query time from the last hidden state before it and the gap
    to it, through an MLP on ``[h, Δt]``.

    Same long-frame API as :class:`~latentode.LatentODERegressor` (``fit(df)``,
    ``predict(context, times=query_df)``) and the same scaling. Training hides values as the
    estimator does (a random share of values and, for some series, everything after a random
    cut) and scores every observed value from the state *before* it was read, so hidden values
    train imputation and forecasting and visible ones one-step-ahead prediction.

    Parameters
    ----------
    hidden_dim, width : int, default=40, 50
        GRU state size; width of the two-layer output MLP.
    mask_fraction, forecast_fraction : float, default=0.2, 0.5
        As in :class:`~latentode.LatentODERegressor`.
    max_epochs, batch_size, lr : int, int, float, default=30, 50, 1e-2
    random_state : int or None

    Examples
    --------
    >>> from latentode.datasets import make_synthetic
    >>> df, _ = make_synthetic(n_series=4, random_state=0)
    >>> est = GRUDeltaTRegressor(hidden_dim=8, max_epochs=1, random_state=0).fit(df)
    >>> est.predict(df, times=df[["id", "time"]]).shape == df.shape
    True
    """

    def __init__(self, *, id_col=None, time_col=None, value_cols=None, hidden_dim=40, width=50, mask_fraction=0.2,
                 forecast_fraction=0.5, max_epochs=30, batch_size=50, lr=1e-2, random_state=None):
        self.id_col, self.time_col, self.value_cols = id_col, time_col, value_cols
        self.hidden_dim, self.width = hidden_dim, width
        self.mask_fraction, self.forecast_fraction = mask_fraction, forecast_fraction
        self.max_epochs, self.batch_size, self.lr = max_epochs, batch_size, lr
        self.random_state = random_state

    def _run(self, batch, seen_mask):
        """States before each step: (batch, time + 1, hidden) and last-read times (batch, time + 1)."""
        gru, t = self.module_["gru"], batch.t
        h = t.new_zeros(t.shape[0], self.hidden_dim)
        last = torch.zeros_like(t[:, 0])
        hs, lasts = [h], [last]
        for j in range(t.shape[1]):
            read = seen_mask[:, j].amax(-1) > 0
            inp = torch.cat([batch.x[:, j] * seen_mask[:, j], seen_mask[:, j], (t[:, j] - last)[:, None]], -1)
            h = torch.where(read[:, None], gru(inp, h), h)
            last = torch.where(read, t[:, j], last)
            hs.append(h)
            lasts.append(last)
        return torch.stack(hs, 1), torch.stack(lasts, 1)

    def _head(self, h, dt):
        return self.module_["head"](torch.cat([h, dt.unsqueeze(-1)], -1))

    def fit(self, X, y=None):
        """Fit on a long frame (as :meth:`LatentODERegressor.fit`); returns ``self``."""
        lf = validate_frame(X, self.id_col, self.time_col, self.value_cols, None, "X")
        self.id_col_, self.time_col_, self.time_kind_ = lf.columns.id, lf.columns.time, lf.time_kind
        self.feature_names_in_ = np.asarray(lf.columns.values, dtype=object)
        n_f = self.n_features_in_ = len(self.feature_names_in_)
        series = lf.series.observed_only()
        self.scaling_ = Scaling.fit(series, lf.columns.values)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
            torch.manual_seed(seed)
            self.module_ = nn.ModuleDict({"gru": nn.GRUCell(2 * n_f + 1, self.hidden_dim),
                                          "head": mlp(self.hidden_dim + 1, self.width, n_f, 2)})
        opt = torch.optim.Adam(self.module_.parameters(), lr=self.lr)
        self.history_ = []
        for epoch in range(self.max_epochs):
            t0, losses, order = time.perf_counter(), [], rng.permutation(series.n_series)
            for start in range(0, len(order), self.batch_size):
                batch = collate(series, order[start:start + self.batch_size], self.scaling_)
                seen = train_encoder_mask(batch, self.mask_fraction, self.forecast_fraction, gen)
                hs, lasts = self._run(batch, seen)
                pred = self._head(hs[:, :-1], batch.t - lasts[:, :-1])  # state before each step
                loss = ((pred - batch.x) ** 2 * batch.m).sum() / batch.m.sum().clamp_min(1.0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            self.history_.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                                  "train_seconds": time.perf_counter() - t0})
        return self

    def predict(self, X, times):
        """Predicted variables at the (id, time) rows of the DataFrame ``times``, from the
        observations in ``X`` at or before each query time (index of ``times`` kept)."""
        check_is_fitted(self)
        lf = validate_frame(X, self.id_col_, self.time_col_, list(self.feature_names_in_), self.time_kind_, "X")
        ctx = lf.series.observed_only()
        if not isinstance(times, pd.DataFrame):
            raise TypeError(f"times must be a DataFrame of (id, time) rows, got {type(times).__name__}.")
        qt = self.time_kind_.to_float(times[self.time_col_], "time column of times")
        codes = (pd.Index(ctx.ids).get_indexer(times[self.id_col_]) if self.id_col_ is not None
                 else np.zeros(len(times), dtype=np.int64))
        if (codes < 0).any():
            raise ValueError("times has ids with no rows in X (so nothing to condition on).")
        out = np.empty((len(times), self.n_features_in_))
        with torch.no_grad():
            for start in range(0, ctx.n_series, 256):
                idx = np.arange(start, min(start + 256, ctx.n_series))
                batch = collate(ctx, idx, self.scaling_)
                hs, lasts = self._run(batch, batch.m)
                rows = np.flatnonzero((codes >= idx[0]) & (codes <= idx[-1]))
                b = codes[rows] - idx[0]
                k = np.array([np.searchsorted(ctx.time[ctx.offsets[i]:ctx.offsets[i + 1]], t, side="right")
                              for i, t in zip(codes[rows], qt[rows])], dtype=np.int64)
                tq = torch.as_tensor((qt[rows] - ctx.origin[codes[rows]]) / self.scaling_.time_scale,
                                     dtype=torch.float32)
                pred = self._head(hs[b, k], tq - lasts[b, k])
                out[rows] = pred.double().numpy() * self.scaling_.std + self.scaling_.mean
        keys = times[[c for c in (self.id_col_, self.time_col_) if c is not None]].copy()
        for j, c in enumerate(self.feature_names_in_):
            keys[c] = out[:, j]
        return keys
