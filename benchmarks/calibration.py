"""Coverage of the 80% and 95% prediction intervals, raw and after post-hoc scaling.

For each dataset the series are split into three disjoint sets: *fit* (trains the model),
*calib* (fits the per-variable interval factors of :func:`latentode.calibration.fit_interval_scale`)
and *test* (where coverage is measured). Two tasks per dataset:

imputation
    A seeded random 30% of the observed values of each series are hidden from the encoder
    and are the targets.
forecasting
    The encoder sees the early part of each series; the later observations are the targets.

Synthetic (:func:`latentode.datasets.make_synthetic`): forecasting cuts each window at 70% of
its span. PhysioNet 2012 set-a: the encoder sees the first 24 h, the targets are 24-48 h;
imputation hides 30% of the first-24 h values.

Run::

    python benchmarks/calibration.py --dataset synthetic
    python benchmarks/calibration.py --dataset physionet

Writes ``benchmarks/results/calibration_<dataset>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from latentode import LatentODERegressor
from latentode.calibration import apply_interval_scale, fit_interval_scale, interval_coverage
from latentode.datasets import load_physionet2012, make_synthetic

LEVELS = (80, 95)
RESULTS = Path(__file__).resolve().parent / "results"
try:
    from . import _harness as H
except ImportError:
    import _harness as H


def hide_values(df, variables, fraction, rng):
    """Hide a random ``fraction`` of the observed values.

    Returns
    -------
    context : DataFrame
        ``df`` with the hidden values set to NaN (rows left with no value are dropped).
    targets : DataFrame
        The rows holding a hidden value; the hidden values, NaN elsewhere.
    """
    vals = df[variables].to_numpy(dtype=np.float64)
    hidden = ~np.isnan(vals) & (rng.uniform(size=vals.shape) < fraction)
    context = df.copy()
    context[variables] = np.where(hidden, np.nan, vals)
    targets = df.copy()
    targets[variables] = np.where(hidden, vals, np.nan)
    return (context[~np.isnan(np.where(hidden, np.nan, vals)).all(axis=1)],
            targets[hidden.any(axis=1)])


def split_at(df, id_col, time_col, cut):
    """Rows before ``cut`` (a per-row threshold) and the rest; series with no context are dropped."""
    before = (df[time_col] < cut).to_numpy()
    context, targets = df[before], df[~before]
    return context, targets[targets[id_col].isin(context[id_col].unique())]


def coverage_row(est, context, targets, scale, keys, variables, n_samples, seed):
    pred = est.predict(context, times=targets[keys], level=list(LEVELS), n_samples=n_samples, random_state=seed)
    raw = interval_coverage(pred, targets, variables, LEVELS)
    cal = interval_coverage(apply_interval_scale(pred, scale), targets, variables, LEVELS)
    # one factor per variable for every level (the mean over levels), as a spread factor on samples would do
    single = pd.DataFrame([scale.mean(axis=0)] * len(scale), index=scale.index)
    one = interval_coverage(apply_interval_scale(pred, single), targets, variables, LEVELS)
    err = pred[variables].to_numpy() - targets[variables].to_numpy()
    row = {"n_values": int(raw.loc["overall", "n"]), "mse": float(np.nanmean(err ** 2))}
    for lv in LEVELS:
        row[f"raw_{lv}"] = float(raw.loc["overall", f"coverage-{lv}"])
        row[f"calibrated_{lv}"] = float(cal.loc["overall", f"coverage-{lv}"])
        row[f"single_factor_{lv}"] = float(one.loc["overall", f"coverage-{lv}"])
        row[f"raw_{lv}_per_variable"] = raw[f"coverage-{lv}"].drop("overall").round(4).to_dict()
        row[f"calibrated_{lv}_per_variable"] = cal[f"coverage-{lv}"].drop("overall").round(4).to_dict()
    return row


def fit_or_load(est, train, model_dir, reuse):
    """Fit ``est`` (and save it to ``model_dir``), or load the model saved there by an earlier run."""
    if reuse and model_dir is not None and (Path(model_dir) / "config.json").is_file():
        est = LatentODERegressor.load(model_dir, device="cpu")
        return est, float(est.history_[-1].get("fit_seconds", np.nan)) if est.history_ else np.nan
    t0 = time.perf_counter()
    est.fit(train)
    seconds = time.perf_counter() - t0
    if est.history_:
        est.history_[-1]["fit_seconds"] = seconds
    if model_dir is not None:
        est.save(model_dir)
    return est, seconds


def run_tasks(est, tasks, keys, variables, n_samples, seed):
    """tasks: {name: (calib_context, calib_targets, test_context, test_targets)}."""
    out = {}
    for name, (c_ctx, c_tgt, t_ctx, t_tgt) in tasks.items():
        t0 = time.perf_counter()
        scale = fit_interval_scale(est, c_ctx, c_tgt, LEVELS, n_samples=n_samples, random_state=seed + 1)
        row = coverage_row(est, t_ctx, t_tgt, scale, keys, variables, n_samples, seed)
        row["scale"] = {f"{lv:g}": scale.loc[lv].round(3).to_dict() for lv in scale.index}
        row["scale_median"] = {f"{lv:g}": float(scale.loc[lv].median()) for lv in scale.index}
        row["seconds"] = time.perf_counter() - t0
        out[name] = row
    return out


def synthetic(n_series, max_epochs, seed, n_samples, verbose, model_dir=None, reuse=False):
    df, _ = make_synthetic(n_series, random_state=seed)
    variables = ["v1", "v2", "v3"]
    ids = np.random.default_rng(seed).permutation(df["id"].unique())
    n_test, n_cal = int(0.25 * len(ids)), int(0.15 * len(ids))
    parts = {"test": ids[:n_test], "calib": ids[n_test:n_test + n_cal], "fit": ids[n_test + n_cal:]}
    sub = {k: df[df["id"].isin(v)] for k, v in parts.items()}
    est = LatentODERegressor(latent_dim=8, encoder_dim=32, width=50, max_epochs=max_epochs, lr=5e-3,
                             batch_size=50, random_state=seed, verbose=verbose)
    est, fit_seconds = fit_or_load(est, sub["fit"], model_dir, reuse)
    rng = np.random.default_rng(seed + 7)
    imp, fc = [], []
    for part in ("calib", "test"):
        d = sub[part]
        imp += list(hide_values(d, variables, 0.3, rng))
        g = d.groupby("id")["time"]
        start, end = g.transform("min"), g.transform("max")
        fc += list(split_at(d, "id", "time", start + 0.7 * (end - start)))
    tasks = {"imputation": tuple(imp), "forecasting": tuple(fc)}
    settings = {"n_series": {k: len(v) for k, v in parts.items()}, "max_epochs": max_epochs,
                "epochs_run": len(est.history_), "fit_seconds": fit_seconds, "model": est.get_params()}
    return settings, run_tasks(est, tasks, ["id", "time"], variables, n_samples, seed)


def physionet_set_a(physionet_path=None, data_dir=None) -> Path:
    """``physionet_path`` if given, else ``set-a`` (archive or folder) in :func:`_harness.physionet_dir`."""
    if physionet_path is not None:
        return Path(physionet_path)
    found = [p for p in H.physionet_paths(data_dir) if p.name.split(".")[0] == "set-a"]
    if not found:
        raise FileNotFoundError(f"no set-a archive or directory in {H.physionet_dir(data_dir)}.")
    return found[0]


def physionet(n_fit, n_calib, n_test, max_epochs, seed, n_samples, verbose, path=None, model_dir=None,
              reuse=False):
    df = load_physionet2012(physionet_set_a(path))
    variables = [c for c in df.columns if c not in ("RecordID", "Time")]
    ids = np.random.default_rng(seed).permutation(df["RecordID"].unique())
    parts = {"fit": ids[:n_fit], "calib": ids[n_fit:n_fit + n_calib],
             "test": ids[n_fit + n_calib:n_fit + n_calib + n_test]}
    sub = {k: df[df["RecordID"].isin(v)] for k, v in parts.items()}
    est = LatentODERegressor(id_col="RecordID", time_col="Time", value_cols=variables, encoder="gru",
                             latent_dim=20, encoder_dim=40, width=50, max_epochs=max_epochs, lr=5e-3,
                             batch_size=50, random_state=seed, verbose=verbose)
    est, fit_seconds = fit_or_load(est, sub["fit"], model_dir, reuse)
    rng = np.random.default_rng(seed + 7)
    imp, fc = [], []
    for part in ("calib", "test"):
        d = sub[part]
        first = d[d["Time"] < 24]
        imp += list(hide_values(first, variables, 0.3, rng))
        fc += list(split_at(d, "RecordID", "Time", 24.0))
    tasks = {"imputation": tuple(imp), "forecasting": tuple(fc)}
    settings = {"n_stays": {k: len(v) for k, v in parts.items()}, "max_epochs": max_epochs,
                "epochs_run": len(est.history_), "fit_seconds": fit_seconds, "model": est.get_params()}
    return settings, run_tasks(est, tasks, ["RecordID", "Time"], variables, n_samples, seed)


def markdown(dataset, results) -> str:
    lines = [f"| {dataset} | task | values | 80% raw | 80% calibrated | 95% raw | 95% calibrated | "
             "80 / 95% one factor | factor 80 / 95 (median over variables) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task, r in results.items():
        f = r["scale_median"]
        lines.append(f"| | {task} | {r['n_values']} | {100 * r['raw_80']:.1f} | {100 * r['calibrated_80']:.1f} | "
                     f"{100 * r['raw_95']:.1f} | {100 * r['calibrated_95']:.1f} | "
                     f"{100 * r['single_factor_80']:.1f} / {100 * r['single_factor_95']:.1f} | "
                     f"{f['80']:.2f} / {f['95']:.2f} |")
    return "\n".join(lines)


def main(dataset="synthetic", *, n_series=400, n_fit=800, n_calib=200, n_test=400, max_epochs=None,
         n_samples=200, seed=0, verbose=1, out=RESULTS, physionet_path=None, data_dir=None, reuse=False,
         tag="") -> dict:
    """Run one dataset; returns the results dict (also written as JSON under ``out``).

    The fitted model is saved to ``out/calibration_<dataset>_model``; ``reuse=True`` loads it
    from there instead of fitting again (to re-measure with other sample counts); ``tag`` is
    appended to the JSON file's name.
    """
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model_dir = None if out is None else Path(out) / f"calibration_{dataset}_model"
    if dataset == "synthetic":
        settings, results = synthetic(n_series, max_epochs or 60, seed, n_samples, verbose, model_dir, reuse)
    elif dataset == "physionet":
        settings, results = physionet(n_fit, n_calib, n_test, max_epochs or 20, seed, n_samples, verbose,
                                      physionet_set_a(physionet_path, data_dir), model_dir, reuse)
    else:
        raise ValueError(f"dataset={dataset!r} is not one of ['physionet', 'synthetic'].")
    report = {"dataset": dataset, "settings": settings, "results": results, "n_samples": n_samples, "seed": seed,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
              "total_seconds": time.perf_counter() - t0}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"calibration_{dataset}{tag}.json").write_text(json.dumps(report, indent=1, default=str))
    print(markdown(dataset, results))
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["synthetic", "physionet"], default="synthetic")
    ap.add_argument("--n-series", type=int, default=400, help="synthetic: series in all (fit/calib/test 60/15/25%%)")
    ap.add_argument("--n-fit", type=int, default=800, help="physionet: stays to fit on")
    ap.add_argument("--n-calib", type=int, default=200, help="physionet: stays to fit the interval factors on")
    ap.add_argument("--n-test", type=int, default=400, help="physionet: stays to measure coverage on")
    ap.add_argument("--max-epochs", type=int, default=None, help="default 60 (synthetic), 20 (physionet)")
    ap.add_argument("--n-samples", type=int, default=200, help="predictive samples per query")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--physionet-path", type=Path, default=None, help="set-a archive or folder (default: set-a "
                    "in --data-dir)")
    ap.add_argument("--data-dir", default=None, help=f"folder of set-a (default: ${H.DATA_ENV}/physionet2012, else "
                    "../shared/data/physionet2012 next to the repository)")
    ap.add_argument("--reuse", action="store_true", help="load the model saved by an earlier run, do not fit")
    ap.add_argument("--tag", default="", help="suffix of the JSON file name")
    a = ap.parse_args()
    main(a.dataset, n_series=a.n_series, n_fit=a.n_fit, n_calib=a.n_calib, n_test=a.n_test,
         max_epochs=a.max_epochs, n_samples=a.n_samples, seed=a.seed, physionet_path=a.physionet_path,
         data_dir=a.data_dir, reuse=a.reuse, tag=a.tag)
