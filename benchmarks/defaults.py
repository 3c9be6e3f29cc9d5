"""The defaults scoreboard: ``LatentODERegressor`` with no settings but the column names and
``random_state``, on datasets nobody tuned for, against the methods a user would otherwise use.

Protocol, the same for every dataset (one fit scores both tasks):

- each series' window is cut at 75% of its span (CO2: the last two years are cut); the
  rows after the cut are the **forecasting** targets;
- of the observed values before the cut, a seeded random 20% are hidden (NaN): the
  **imputation** targets;
- the estimator is fitted on what remains (``fit(frame)``), then ``impute(frame)`` and
  ``predict(frame, times=future[[id, time]])`` are scored, exactly as in the README;
- baselines on the same frame: per-series linear interpolation in time, last value
  carried forward, the series mean (and for CO2 the seasonal naive: the value one year
  earlier). The MSE is pooled over values, each variable standardised by its observed
  standard deviation in the frame; ``ratio`` is the model's MSE over the best baseline's.

Run: ``python benchmarks/defaults.py`` (all datasets, seeds 0 1 2; writes
``benchmarks/results/defaults.json``); ``--datasets oscillator,pk --seeds 0`` for a part;
``--size tiny`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from latentode import LatentODERegressor
from latentode.baselines import baseline_predict
from latentode.datasets import make_periodic, make_synthetic
from latentode.datasets import dynamics
from latentode.scoring import forecast_split, hide_at_random, standardised_mse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import physionet_dir  # noqa: E402  (the benchmarks' one data-path rule)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
HIDE = 0.2
CUT = 0.75


# ---------------------------------------------------------------------------- datasets
def _periodic(seed, n):
    """Rubanova's periodic task: 50 of the 100 points of each series observed."""
    from latentode.datasets import periodic_task

    observed, _ = periodic_task(make_periodic(n_series=n, n_points=100, random_state=seed), "interpolation",
                                n_observed=50, random_state=seed)
    return observed


def _physionet(seed, n, root):
    from latentode.datasets import load_physionet2012

    base = physionet_dir(root)
    paths = [p for p in (base / "set-a.tar.gz", base / "set-a") if p.exists()][:1]
    if not paths:
        raise FileNotFoundError(f"PhysioNet 2012 set-a not found under {base} (use --data-dir).")
    df = load_physionet2012(paths[0])
    ids = np.sort(df["RecordID"].unique())
    pick = np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False)
    df = df[df["RecordID"].isin(pick)]
    # variables this subset never observes cannot be fitted: a user would drop them too
    keep = [c for c in df.columns if c in ("RecordID", "Time") or df[c].notna().any()]
    return df[keep].reset_index(drop=True)


def _co2(seed, n, root):
    from statsmodels.datasets import co2

    data = co2.load_pandas().data
    return pd.DataFrame({"ds": data.index.to_numpy(), "co2": data["co2"].to_numpy()})


# name -> (builder(seed, size, data_root) -> frame, id_col, time_col, n_series at full size, tiny size)
DATASETS = {
    "quickstart": (lambda s, n, r: make_synthetic(n, n_obs=(8, 24), random_state=s)[0], "id", "time", 300, 30),
    "periodic": (lambda s, n, r: _periodic(s, n), "unique_id", "time", 300, 30),
    "oscillator": (lambda s, n, r: dynamics.make_oscillator(n, random_state=s)[0], "id", "time", 200, 20),
    "damped_oscillator": (lambda s, n, r: dynamics.make_oscillator(
        n, damping=0.1, n_obs=(20, 50), missing=0.1, noise=0.05, observe_velocity=False, random_state=s)[0],
        "id", "time", 200, 20),
    "lotka_volterra": (lambda s, n, r: dynamics.make_lotka_volterra(n, random_state=s)[0], "id", "time", 200, 20),
    "van_der_pol": (lambda s, n, r: dynamics.make_van_der_pol(n, n_obs=(60, 120), random_state=s)[0], "id", "time",
                    100, 10),
    "pk": (lambda s, n, r: dynamics.make_pk(n, random_state=s)[0], "id", "time", 300, 30),
    "sensors20": (lambda s, n, r: dynamics.make_mixed_sensors(n, random_state=s)[0], "id", "time", 200, 20),
    "long_oscillator": (lambda s, n, r: dynamics.make_long_oscillator(n, random_state=s)[0], "id", "time", 2, 1),
    "physionet": (lambda s, n, r: _physionet(s, n, r), "RecordID", "Time", 300, 20),
    "co2": (lambda s, n, r: _co2(s, n, r), None, "ds", 1, 1),
}


# ---------------------------------------------------------------------------- protocol
def split(df: pd.DataFrame, id_col, time_col, seed: int, horizon=None):
    """(frame, hidden, future, values): the fitted frame (20% of the context's values hidden),
    the hidden values (NaN elsewhere; same rows as frame), the future rows and the variables."""
    context, future = forecast_split(df, id_col, time_col, CUT, horizon)
    values = [c for c in df.columns if c not in (id_col, time_col)]
    frame, hidden = hide_at_random(context, values, HIDE, random_state=seed)
    return frame, hidden, future, values


def seasonal_naive(frame, query, time_col, values, period=pd.Timedelta(days=365.25)):
    """The frame's value interpolated at the query time moved back by whole periods into the frame."""
    end = frame[time_col].max()
    t = query[time_col]
    k = np.ceil((t - end) / period).clip(lower=0)
    back = t - k * period
    q = pd.DataFrame({time_col: back.to_numpy()})
    pred = baseline_predict(frame, q, "linear", time_col=time_col, value_cols=values)
    pred.index = query.index
    return pred


mse = standardised_mse


def baselines(frame, query, truth, id_col, time_col, values, scale, seasonal=False) -> dict:
    kw = dict(id_col=id_col, time_col=time_col, value_cols=values)
    keys = query[[c for c in (id_col, time_col) if c is not None]]
    out = {"linear": mse(baseline_predict(frame, keys, "linear", **kw)[values], truth, scale),
           "locf": mse(baseline_predict(frame, keys, "locf", **kw)[values], truth, scale),
           "series_mean": mse(baseline_predict(frame, keys, "series_mean", **kw)[values], truth, scale)}
    if seasonal:
        out["seasonal_naive"] = mse(seasonal_naive(frame, keys, time_col, values)[values], truth, scale)
    return out


def run_one(name: str, seed: int, size: str = "full", root=None, params=None) -> dict:
    build, id_col, time_col, n_full, n_tiny = DATASETS[name]
    df = build(seed, n_full if size == "full" else n_tiny, root)
    horizon = pd.Timedelta(days=730) if name == "co2" else None
    frame, hidden, future, values = split(df, id_col, time_col, seed, horizon)
    scale = np.nanstd(frame[values].to_numpy(dtype=float), axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    settings = dict(id_col=id_col, time_col=time_col, random_state=seed)
    if size != "full":
        settings.update(max_epochs=2)
    settings.update(params or {})
    model = LatentODERegressor(**settings)
    c0, w0 = time.process_time(), time.perf_counter()
    model.fit(frame)
    fit_cpu, fit_wall = time.process_time() - c0, time.perf_counter() - w0
    keys = future[[c for c in (id_col, time_col) if c is not None]]
    imputed = model.impute(frame)[values].to_numpy(dtype=float)
    forecast = model.predict(frame, times=keys)[values].to_numpy(dtype=float)
    fut = future[values].to_numpy(dtype=float)
    tasks = {}
    for task, pred, truth, query in (("impute", imputed, hidden, frame), ("forecast", forecast, fut, future)):
        base = baselines(frame, query, truth, id_col, time_col, values, scale, seasonal=name == "co2")
        model_mse = mse(pred, truth, scale)
        best = min(base, key=base.get)
        tasks[task] = {"model": model_mse, **base, "best_baseline": best, "ratio": model_mse / base[best],
                       "n_values": int((~np.isnan(truth)).sum())}
    hist = model.history_
    valid = [h.get("valid_mse", float("nan")) for h in hist]
    return {"dataset": name, "seed": seed, "size": size, "n_series": int(df[id_col].nunique()) if id_col else 1,
            "n_features": len(values), "n_rows": len(df), "fit_cpu_s": fit_cpu, "fit_wall_s": fit_wall,
            "epochs": len(hist), "valid_mse": valid, "chosen": getattr(model, "chosen_", {}),
            "params": {k: v for k, v in (params or {}).items()}, **{f"{k}": v for k, v in tasks.items()}}


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def curve_flags(valid: list, warmup: int = 10) -> dict:
    """``plateau``: the best validation MSE is above 0.9 times the first epoch's (training never left
    where it started); ``max_jump``: the largest ratio between consecutive epochs' validation MSE after
    the KL warm-up (``warmup`` epochs)."""
    v = np.asarray([x for x in valid if x is not None and np.isfinite(x)], dtype=float)
    if len(v) < 2:
        return {"plateau": False, "max_jump": float("nan")}
    after = v[max(warmup - 1, 0):]
    ratios = np.maximum(after[1:] / after[:-1], after[:-1] / after[1:]) if len(after) > 1 else np.array([1.0])
    return {"plateau": bool(v.min() > 0.9 * v[0]), "max_jump": float(ratios.max())}


def table(rows: list[dict]) -> str:
    """Markdown table: one row per dataset and seed."""
    head = ("| dataset | seed | vars | series | impute MSE | best baseline | ratio | forecast MSE | best baseline "
            "| ratio | epochs | fit CPU s | plateau | max jump |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        i, f = r["impute"], r["forecast"]
        flags = curve_flags(r["valid_mse"])
        lines.append(f"| {r['dataset']} | {r['seed']} | {r['n_features']} | {r['n_series']} | {i['model']:.4f} | "
                     f"{i[i['best_baseline']]:.4f} ({i['best_baseline']}) | {i['ratio']:.2f} | {f['model']:.4f} | "
                     f"{f[f['best_baseline']]:.4f} ({f['best_baseline']}) | {f['ratio']:.2f} | {r['epochs']} | "
                     f"{r['fit_cpu_s']:.0f} | {'yes' if flags['plateau'] else 'no'} | {flags['max_jump']:.2f} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Markdown table: per dataset, the mean and worst ratio over seeds for both tasks, and the mean fit cost."""
    lines = ["| dataset | seeds | impute ratio, mean (worst) | forecast ratio, mean (worst) | fit CPU s, mean | epochs |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        imp = [r["impute"]["ratio"] for r in rs]
        fc = [r["forecast"]["ratio"] for r in rs]
        lines.append(f"| {name} | {len(rs)} | {np.mean(imp):.2f} ({max(imp):.2f}) | {np.mean(fc):.2f} ({max(fc):.2f}) | "
                     f"{np.mean([r['fit_cpu_s'] for r in rs]):.0f} | {np.mean([r['epochs'] for r in rs]):.0f} |")
    return "\n".join(lines)


def report(paths) -> str:
    """The BENCHMARKS.md section of one or more result files (rows concatenated)."""
    rows, machines, commands = [], [], []
    for p in paths:
        d = json.loads(Path(p).read_text())
        rows += d["rows"]
        machines.append(d["machine"])
        commands.append(d["command"])
    m = machines[0]
    return "\n\n".join([
        summary(rows),
        f"Machine: {m['platform']}, {m['cpu_count']} cores, torch {m['torch']}, one thread per process. "
        "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(commands)) + ".",
        table(rows)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, from: " + ", ".join(DATASETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--size", choices=["full", "tiny"], default="full")
    ap.add_argument("--data-dir", default=None, help="the PhysioNet 2012 folder (default: $LATENTODE_DATA/"
                                                      "physionet2012, else ../shared/data/physionet2012 beside "
                                                      "the repository)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=JSON",
                    help="an estimator setting to override (the scoreboard itself uses none)")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/defaults[-NAME].json)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--report", default=None, metavar="A.json,B.json",
                    help="print the markdown of these result files instead of running (BENCHMARKS.md and the "
                         "README take theirs from benchmarks/report.py)")
    a = ap.parse_args(argv)
    if a.report:
        print(report(a.report.split(",")))
        return None
    params = {}
    for p in a.param:
        k, _, v = p.partition("=")
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    names = [n for n in a.datasets.split(",") if n]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        ap.error(f"unknown datasets {unknown}; choose from {list(DATASETS)}")
    out = Path(a.out) if a.out else RESULTS / (f"defaults-{a.name}.json" if a.name else "defaults.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        for seed in (int(s) for s in a.seeds.split(",")):
            r = run_one(name, seed, a.size, a.data_dir, params)
            rows.append(r)
            print(table([r]).splitlines()[-1], flush=True)
            out.write_text(json.dumps({"machine": machine(), "command": " ".join(["python"] + sys.argv),
                                       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                       "rows": rows}, indent=1, default=float))
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
