"""Where the window starts: the periodic interpolation task scored with and without the start row.

Rubanova's periodic series share one clock from t = 0 (phase 0 there). latentode places z0 at
each series' earliest row, so a test context whose first observed point is later than 0 shifts
the window start unless an empty row at t = 0 marks it. One fit, scored both ways.

Run: ``python benchmarks/periodic_window_start.py --epochs 40 --seed 1`` (about 4 CPU minutes).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H

from latentode import LatentODERegressor
from latentode.datasets import make_periodic, periodic_task


def main(epochs: int = 40, seed: int = 1, n_series: int = 1000, n_points: int = 100, **params) -> dict:
    """Fit on the first 80% of the series; return the interpolation test MSE both ways, the
    median per-series MSE without the start row and its correlation with the first observed time."""
    torch.set_num_threads(1)
    df = make_periodic(n_series=n_series, n_points=n_points, random_state=seed)
    n_train = int(0.8 * n_series)
    train, test = df[df.unique_id < n_train], df[df.unique_id >= n_train]
    obs, target = periodic_task(test, "interpolation", n_observed=n_points // 2, random_state=seed)
    options = dict(latent_dim=10, encoder_dim=20, width=100, n_layers=2, lr=1e-2, max_epochs=epochs,
                   mask_fraction=0.5, forecast_fraction=0.0, validation_fraction=0, adjoint=False, noise_std=0.01,
                   lr_decay=0.999, random_state=seed)
    est = LatentODERegressor(**{**options, **params}).fit(train)
    out = {"epochs": epochs, "seed": seed}
    for name, context in (("without_start_row", obs), ("with_start_row", H.with_window_start(obs, id_col="unique_id", time_col="time"))):
        pred = est.predict(context, times=target[["unique_id", "time"]])
        err = (pred["y"].to_numpy() - target["y"].to_numpy()) ** 2
        out[name] = float(err.mean())
        if name == "without_start_row":
            codes = target["unique_id"].to_numpy() - n_train
            per_series = np.bincount(codes, weights=err) / np.bincount(codes)
            first = obs.groupby("unique_id")["time"].min().to_numpy()
            out["median_series_mse_without"] = float(np.median(per_series))
            spread = per_series.std() > 0 and first.std() > 0
            out["corr_error_first_time"] = float(np.corrcoef(per_series, first)[0, 1]) if spread else float("nan")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    main(a.epochs, a.seed)
