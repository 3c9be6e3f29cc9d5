"""Quickstart: fit on irregular multi-series data, predict at any timestamps, impute.

Irregular timestamps (datetime), string ids and independent NaNs per variable, as a
user's table would have them. Compares the model with per-series linear interpolation
(imputation) and last value carried forward (forecasting) on noise-free truth.

Run: ``python examples/quickstart.py`` (about a minute on 2 CPU cores).
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

VARS = ["v1", "v2", "v3"]


def split_forecast(df: pd.DataFrame, fraction: float = 0.7):
    """Per series: rows before ``fraction`` of the window (context) and after (targets)."""
    start = df.groupby("id")["time"].transform("min")
    end = df.groupby("id")["time"].transform("max")
    cut = start + (end - start) * fraction
    return df[df["time"] <= cut], df[df["time"] > cut]


def _mse(pred: pd.DataFrame, truth: pd.DataFrame, where: np.ndarray) -> float:
    err = pred[VARS].to_numpy() - truth[VARS].to_numpy()
    return float(np.mean(err[where] ** 2))


def main(n_series: int = 300, max_epochs: int = 60, random_state: int = 0, plot: bool | str = True,
         verbose: int = 1, n_obs=(8, 24), **params) -> dict:
    """Run the quickstart; returns the error table as a dict and prints it.

    ``n_obs`` is the range of observation times per series (sparse: 8 to 24 over 1.5 to 2.5 days, each
    variable seen at half of them); ``params`` override the estimator's settings.
    """
    df, truth = make_synthetic(n_series, n_obs=n_obs, random_state=random_state)
    ids = df["id"].unique()
    test_ids = set(ids[int(0.8 * len(ids)):])
    is_test = df["id"].isin(test_ids).to_numpy()
    train, test, test_truth = df[~is_test], df[is_test], truth[is_test]

    # adjoint=False: backpropagating through the solver is ~3x faster than the adjoint on grids this short,
    # and memory is no concern here; mask_fraction=0.4 trains imputation harder than the default 0.2.
    settings = dict(latent_dim=16, encoder_dim=32, width=50, max_epochs=max_epochs, lr=1e-2, batch_size=50,
                    adjoint=False, mask_fraction=0.4, random_state=random_state, verbose=verbose)
    settings.update(params)
    t0 = time.perf_counter()
    model = LatentODERegressor(**settings).fit(train)
    fit_seconds = time.perf_counter() - t0

    # imputation: every NaN of the test series, scored against the noise-free truth
    missing = test[VARS].isna().to_numpy()
    imputed = model.impute(test)
    linear = baseline_predict(test, test[["id", "time"]], "linear")
    # forecasting: observe the first 70% of each test window, predict the rest at its rows
    context, future = split_forecast(test)
    future_truth = test_truth.loc[future.index]
    forecast = model.predict(context, times=future[["id", "time"]])
    locf = baseline_predict(context, future[["id", "time"]], "locf")
    everywhere = np.ones((len(future), len(VARS)), dtype=bool)
    results = {
        "impute_mse_model": _mse(imputed, test_truth, missing),
        "impute_mse_linear_interp": _mse(linear, test_truth, missing),
        "forecast_mse_model": _mse(forecast, future_truth, everywhere),
        "forecast_mse_locf": _mse(locf, future_truth, everywhere),
        "fit_seconds": fit_seconds,
        "epochs": len(model.history_),
    }
    print(f"fit: {results['epochs']} epochs in {fit_seconds:.1f} s on {len(ids) - len(test_ids)} series")
    print(f"imputation MSE   model {results['impute_mse_model']:.4f}   "
          f"linear interpolation {results['impute_mse_linear_interp']:.4f}")
    print(f"forecasting MSE  model {results['forecast_mse_model']:.4f}   "
          f"last value carried forward {results['forecast_mse_locf']:.4f}")
    # arbitrary timestamps: an hourly grid from each context start to 12 h past its last row
    grid = pd.date_range(context["time"].min(), context["time"].max() + pd.Timedelta(hours=12), freq="h")
    hourly = model.predict(context, times=grid)
    print(f"hourly grid: {len(hourly)} predicted rows for {context['id'].nunique()} series, "
          f"{hourly['time'].min()} to {hourly['time'].max()}")
    results["hourly_rows"] = len(hourly)
    if plot:
        results["plot"] = _plot(model, context, future, Path(plot if isinstance(plot, str) else "quickstart.png"))
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
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default="quickstart.png", help="output PNG ('' for none)")
    ap.add_argument("--center", choices=["last", "mean", "interp"], default=None,
                    help="the estimator's `center` (default: none)")
    a = ap.parse_args()
    main(a.n_series, a.max_epochs, a.seed, a.plot or False, center=a.center)
