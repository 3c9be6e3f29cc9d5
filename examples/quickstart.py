"""Quickstart: fit on irregular multi-series data with the default settings, impute, forecast, plot.

Irregular timestamps (datetime), string ids and independent NaNs per variable, as a
user's table would have them. One frame, one fit: each series' last 25% is cut off
(to forecast) and 20% of the remaining observed values are hidden (to impute), exactly
as the ``quickstart`` row of the defaults scoreboard (``benchmarks/defaults.py``).
The model is compared with per-series linear interpolation, the last value carried
forward and the series mean, on the observed (noisy) values.

Run: ``python examples/quickstart.py`` (the fit took 30-58 CPU s on one thread of a 2-core machine, idle or beside
another job: BENCHMARKS.md, "Defaults scoreboard", quickstart rows).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from latentode import LatentODERegressor
from latentode.baselines import baseline_predict
from latentode.datasets import make_synthetic
from latentode.scoring import forecast_split, hide_at_random, standardised_mse

VARS = ["v1", "v2", "v3"]
BASELINES = ("linear", "locf", "series_mean")


def main(n_series: int = 300, random_state: int = 0, plot: bool | str = True, verbose: int = 1, n_obs=(8, 24),
         **params) -> dict:
    """Run the quickstart; returns the error table as a dict and prints it.

    ``n_obs`` is the range of observation times per series (sparse: 8 to 24 over 1.5 to 2.5 days, each
    variable seen at half of them); ``params`` override the estimator's settings (the quickstart uses none).
    """
    df, _ = make_synthetic(n_series, n_obs=n_obs, random_state=random_state)
    context, future = forecast_split(df, "id", "time", 0.75)
    frame, hidden = hide_at_random(context, VARS, 0.2, random_state=random_state)

    t0, c0 = time.perf_counter(), time.process_time()
    model = LatentODERegressor(id_col="id", time_col="time", random_state=random_state, verbose=verbose,
                               **params).fit(frame)
    fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0

    scale = np.nanstd(frame[VARS].to_numpy(dtype=float), axis=0)
    imputed = model.impute(frame)                                   # every NaN filled
    forecast = model.predict(frame, times=future[["id", "time"]])   # any (id, time) rows
    results = {"fit_wall_s": fit_wall, "fit_cpu_s": fit_cpu, "epochs": len(model.history_)}
    for task, pred, truth, query in (("impute", imputed, hidden, frame),
                                     ("forecast", forecast, future[VARS].to_numpy(dtype=float), future)):
        results[f"{task}_mse_model"] = standardised_mse(pred[VARS], truth, scale)
        for kind in BASELINES:
            base = baseline_predict(frame, query[["id", "time"]], kind)
            results[f"{task}_mse_{kind}"] = standardised_mse(base[VARS], truth, scale)
    print(f"fit: {results['epochs']} epochs, {fit_cpu:.0f} CPU s ({fit_wall:.0f} s wall) on {n_series} series")
    print("MSE (each variable in units of its standard deviation)")
    print(f"{'':12s}{'model':>9s}" + "".join(f"{k:>13s}" for k in BASELINES))
    for task in ("impute", "forecast"):
        print(f"{task:12s}{results[f'{task}_mse_model']:9.4f}"
              + "".join(f"{results[f'{task}_mse_{k}']:13.4f}" for k in BASELINES))
    # arbitrary timestamps: an hourly grid from each series' start to 12 h past its last row
    grid = pd.date_range(frame["time"].min(), frame["time"].max() + pd.Timedelta(hours=12), freq="h")
    hourly = model.predict(frame, times=grid)
    print(f"hourly grid: {len(hourly)} predicted rows for {frame['id'].nunique()} series")
    results["hourly_rows"] = len(hourly)
    if plot:
        results["plot"] = _plot(model, frame, future, Path(plot if isinstance(plot, str) else "quickstart.png"))
    return results


def _plot(model, context, future, path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        from latentode.plotting import plot_series, time_grid
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'latentode[plot]')")
        return None
    ids = context["id"].drop_duplicates().iloc[:3]
    ctx, fut = context[context["id"].isin(ids)], future[future["id"].isin(ids)]
    grid = time_grid(pd.concat([ctx, fut]), n_points=150)  # dense (id, time) rows over each whole window
    pred = model.predict(ctx, times=grid, level=[80])
    fig = plot_series(ctx, pred, level=80, truth=fut)
    fig.savefig(path, dpi=110)
    print(f"plot saved to {path}")
    return str(path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-series", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default="quickstart.png", help="output PNG ('' for none)")
    a = ap.parse_args()
    main(a.n_series, a.seed, a.plot or False)
