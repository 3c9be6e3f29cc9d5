"""Forecast bands on PhysioNet: one stay's forecast with its 80/95% intervals, and the coverage of the intervals.

The defaults scoreboard's PhysioNet protocol: ``--stays`` random stays of set-a (seed 0), each stay's last
25% forecast from the rest; 80% of the stays train a default ``LatentODERegressor``, 10% calibrate and
10% test. On the test stays the script records the predictive intervals at nominal levels 10-95% and
the share of observed future values inside each (the calibration curve), before and after the split
conformal factors of :func:`latentode.calibration.fit_interval_scale` fitted on the calibration stays,
and for one test stay the context, the future and the forecast with its 80% and 95% bands on a dense
grid.

Run: ``python benchmarks/bands.py [--stays 300]`` (writes benchmarks/results/bands.json; ``python
docs/figures.py`` draws the figures from it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
LEVELS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
SHOWN = ["HR", "MAP", "Temp", "GCS"]


def main(stays: int, data_dir=None, out=ROOT / "benchmarks" / "results") -> dict:
    import torch

    from defaults import _physionet
    from latentode import LatentODERegressor
    from latentode.calibration import apply_interval_scale, fit_interval_scale, interval_coverage
    from latentode.scoring import forecast_split

    torch.set_num_threads(1)
    df = _physionet(0, stays, data_dir)
    ids = np.sort(df["RecordID"].unique())
    draw = np.random.default_rng(1).permutation(ids)
    n_part = max(1, len(ids) // 10)
    held, calib = set(draw[:n_part].tolist()), set(draw[n_part:2 * n_part].tolist())
    context, future = forecast_split(df, "RecordID", "Time")
    train = context[~context["RecordID"].isin(held | calib)]
    est = LatentODERegressor(id_col="RecordID", time_col="Time", random_state=0)
    c0 = time.process_time()
    est.fit(train)
    fit_cpu = time.process_time() - c0
    variables = [str(v) for v in est.feature_names_in_]
    ctx_h = context[context["RecordID"].isin(held)]
    fut_h = future[future["RecordID"].isin(held)]
    pred = est.predict(ctx_h, times=fut_h[["RecordID", "Time"]], level=LEVELS, n_samples=200, random_state=0)
    cov = interval_coverage(pred, fut_h, variables, level=LEVELS).loc["overall"]
    scale = fit_interval_scale(est, context[context["RecordID"].isin(calib)], future[future["RecordID"].isin(calib)],
                               level=LEVELS, n_samples=200, random_state=1)
    cov_cal = interval_coverage(apply_interval_scale(pred, scale), fut_h, variables, level=LEVELS).loc["overall"]
    # the stay to show: the held-out one with the most observed future values of the shown variables
    shown = [v for v in SHOWN if v in variables]
    counts = fut_h.groupby("RecordID")[shown].count().sum(axis=1)
    stay = int(counts.idxmax())
    one_ctx = context[context["RecordID"] == stay]
    one_fut = future[future["RecordID"] == stay]
    grid = pd.DataFrame({"RecordID": stay, "Time": np.linspace(0.0, float(one_fut["Time"].max()), 200)})
    band = est.predict(one_ctx, times=grid, level=[80, 95], n_samples=200, random_state=0)

    def records(frame, cols):
        return {c: [None if pd.isna(v) else float(v) for v in frame[c]] for c in cols}

    cols = [f"{v}{s}" for v in shown for s in ("", "-lo-80", "-hi-80", "-lo-95", "-hi-95")]
    res = dict(command=f"python benchmarks/bands.py --stays {stays}", stays=stays,
               n_train=len(ids) - len(held) - len(calib), n_calib=len(calib), n_held=len(held), fit_cpu_s=fit_cpu,
               epochs=len(est.history_),
               machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
               coverage={str(lv): float(cov[f"coverage-{lv}"]) for lv in LEVELS}, n_values=int(cov["n"]),
               coverage_calibrated={str(lv): float(cov_cal[f"coverage-{lv}"]) for lv in LEVELS},
               scale_median={str(lv): float(scale.loc[lv].median()) for lv in LEVELS},
               stay=stay, variables=shown, cut=float(one_ctx["Time"].max()),
               context=records(one_ctx, ["Time", *shown]), future=records(one_fut, ["Time", *shown]),
               forecast=records(band, ["Time", *cols]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bands.json").write_text(json.dumps(res))
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stays", type=int, default=400)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    r = main(a.stays, a.data_dir)
    print(json.dumps(r["coverage"], indent=1), f"fit {r['fit_cpu_s']:.0f} CPU s, stay {r['stay']}")
