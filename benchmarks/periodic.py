"""Periodic synthetic task, the Rubanova et al. (2019) protocol, section 4.1.

Per seed: :func:`~latentode.datasets.make_periodic` draws 1,000 noisy sine waves on one shared
grid of 100 points in [0, 5] (data seed = the seed); ids 0..799 train, 800..999 test. The models
fit on the training series' 100 points (their training hides values: interpolation hides half of
them, ``mask_fraction=0.5, forecast_fraction=0``; extrapolation cuts every series' window at a
random point, ``forecast_fraction=1``). On the test series, :func:`periodic_task` gives the
observed points: interpolation, a random 50 of the 100, target all 100 (``test``) and the 50 not
observed (``heldout``); extrapolation, the first 50, target the last 50. Latent 10. Each test
context also gets an empty row at t = 0, the shared window start (:func:`_harness.with_window_start`).

Run: ``python benchmarks/periodic.py --epochs 100 --seeds 0,1,2``.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H

from latentode.datasets import make_periodic, periodic_task

DEFAULTS = dict(latent_dim=10, encoder_dim=20, width=100, n_layers=2, batch_size=50, lr=1e-2,
                validation_fraction=0.0)
TASK_PARAMS = {"interpolation": dict(mask_fraction=0.5, forecast_fraction=0.0),
               "extrapolation": dict(mask_fraction=0.2, forecast_fraction=1.0)}


def _cases(test: pd.DataFrame, task: str, n_observed: int, seed: int) -> dict:
    observed, target = periodic_task(test, task, n_observed=n_observed, random_state=seed)
    # the series share one clock from t = 0 (phase 0 there); the reference encoder always runs back to
    # it, so the contexts carry that window start (without it: 0.153 vs 0.023, periodic_window_start.py)
    observed = H.with_window_start(observed, id_col="unique_id", time_col="time")
    cases = {"test": (observed, target)}
    if task == "interpolation":
        key = ["unique_id", "time"]
        seen = target.merge(observed.dropna(subset=["y"])[key], on=key, how="left",
                            indicator=True)["_merge"].eq("both").to_numpy()
        cases["heldout"] = (observed, target[~seen].reset_index(drop=True))
    return cases


def main(n_series=1000, n_points=100, epochs=100, seeds=(0, 1, 2), tasks=("interpolation", "extrapolation"),
         models=("odernn", "locf", "linear", "mean"), name="periodic", out_dir=None, estimator_defaults=False,
         **params) -> dict:
    """Run the protocol; returns the result dict (also written to ``<out_dir>/<name>.json``).

    Parameters
    ----------
    n_series, n_points : int
        Size of each seed's data set (80% of the series train).
    epochs : int
        Training epochs of the neural models (each of ``ceil(0.8 n_series / 50)`` steps).
    seeds, tasks, models : sequences
    estimator_defaults : bool
        Fit the latent ODE with the estimator's own defaults (only the column names and
        ``random_state`` given, as a user would), instead of the protocol's settings
        (``DEFAULTS``, ``TASK_PARAMS``, ``epochs``, which are then ignored).
    params : dict
        Extra keyword arguments for the neural models.
    """
    torch.set_num_threads(1)
    n_train = int(0.8 * n_series)
    n_observed = n_points // 2
    base = dict(params) if estimator_defaults else {**DEFAULTS, **params, "max_epochs": epochs}
    task_params = {task: {} for task in TASK_PARAMS} if estimator_defaults else TASK_PARAMS
    settings = {"n_series": n_series, "n_points": n_points, "n_train": n_train, "n_observed": n_observed,
                "epochs": None if estimator_defaults else epochs, "estimator_defaults": bool(estimator_defaults),
                "seeds": list(seeds), "params": base, "task_params": task_params}
    runs, tables = [], {}
    for task in tasks:
        for seed in seeds:
            df = make_periodic(n_series=n_series, n_points=n_points, random_state=seed)
            train, test = df[df["unique_id"] < n_train], df[df["unique_id"] >= n_train]
            cases = _cases(test, task, n_observed, seed)
            for model in models:
                run = H.run_one(model, train, cases, ["y"], {**base, **task_params[task]}, seed,
                                id_col="unique_id", time_col="time")
                run["task"] = task
                if "seconds_per_epoch" in run:
                    run["seconds_per_step"] = run["seconds_per_epoch"] / run["steps_per_epoch"]
                runs.append(run)
                print(f"{task} {model} seed {seed}: test MSE {run['test']['mse']:.4e} ({run['total_seconds']:.0f} s)",
                      flush=True)
                H.write_json(name, {"protocol": "periodic", "settings": settings, "runs": runs}, out_dir)
        task_runs = [r for r in runs if r["task"] == task]
        tables[task] = {case: H.markdown_table(H.summarise(task_runs, case, ("mse",)), ("mse",))
                        for case in _cases(test, task, n_observed, 0)}
        for case, table in tables[task].items():
            print(f"\n{task}, {case}:\n{table}")
    result = {"protocol": "periodic", "settings": settings, "runs": runs, "tables": tables}
    H.write_json(name, result, out_dir)
    return result


def _cli():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-series", type=int, default=1000)
    p.add_argument("--n-points", type=int, default=100)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tasks", default="interpolation,extrapolation")
    p.add_argument("--models", default="odernn,locf,linear,mean")
    p.add_argument("--name", default="periodic")
    p.add_argument("--estimator-defaults", action="store_true",
                   help="fit the latent ODE with the estimator's defaults (ignores --epochs and the task settings)")
    H.add_model_options(p)
    a = p.parse_args()
    main(a.n_series, a.n_points, a.epochs, H.parse_list(a.seeds, int), H.parse_list(a.tasks),
         H.parse_list(a.models), a.name, estimator_defaults=a.estimator_defaults, **H.model_options(a))


if __name__ == "__main__":
    _cli()
