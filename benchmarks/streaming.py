"""Inference at scale: ``predict`` and ``impute`` on up to 100,000 series; peak memory and rows per second.

A small model is fitted on 300 series of the quickstart's generator (``make_synthetic``);
each size then runs in its own process (peak RSS is per process), which builds a frame of
``n`` series of the same generator and calls ``predict`` (at the rows), ``impute`` and,
with ``--quantiles``, ``predict(..., quantiles=[0.1, 0.9])`` on it. Reported: rows, seconds
(wall and CPU), rows per second, the peak RSS, and the RSS of the frame alone (measured
before the call), so that the model's share of the memory is the difference.

Run: ``python benchmarks/streaming.py [--sizes 10000,30000,100000]`` (writes
benchmarks/results/streaming.json and prints a table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import peak_rss_mb  # noqa: E402


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def frame(n_series: int, seed: int = 1):
    from latentode.datasets import make_synthetic

    return make_synthetic(n_series, random_state=seed)[0]


def run_one(model_dir: str, n_series: int, what: str) -> dict:
    import torch

    from latentode import LatentODERegressor

    torch.set_num_threads(1)
    est = LatentODERegressor.load(model_dir)
    df = frame(n_series)
    est.predict(df.iloc[:50])  # warm up outside the measurement
    base = current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    if what == "predict":
        out = est.predict(df)
    elif what == "impute":
        out = est.impute(df)
    else:
        out = est.predict(df, quantiles=[0.1, 0.9], n_samples=100)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dict(n_series=n_series, what=what, rows=len(out), wall_s=wall, cpu_s=cpu, rows_per_s=len(out) / wall,
                frame_rss_mb=base, peak_rss_mb=peak_rss_mb(), out_mb=out.memory_usage(deep=True).sum() / 2**20,
                in_mb=df.memory_usage(deep=True).sum() / 2**20)


def main(sizes, whats, out=ROOT / "benchmarks" / "results") -> list:
    from latentode import LatentODERegressor

    records = []
    with tempfile.TemporaryDirectory() as tmp:
        est = LatentODERegressor(id_col="id", time_col="time", max_epochs=2, random_state=0).fit(frame(300, seed=0))
        est.save(Path(tmp) / "model")
        for n in sizes:
            for what in whats:
                res = subprocess.run([sys.executable, __file__, "--one", json.dumps([str(Path(tmp) / "model"), n,
                                                                                      what])],
                                     capture_output=True, text=True, cwd=ROOT,
                                     env=dict(os.environ, PYTHONWARNINGS="ignore"))
                if res.returncode:
                    raise RuntimeError(res.stderr[-2000:])
                records.append(json.loads(res.stdout.strip().splitlines()[-1]))
                r = records[-1]
                print(f"| {r['n_series']:,} | {r['what']} | {r['rows']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                      f"{r['rows_per_s']:,.0f} | {r['frame_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} |", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "streaming.json").write_text(json.dumps({"machine": machine, "records": records}, indent=1))
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--what", default="predict,impute,quantiles")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(*json.loads(a.one))))
    else:
        print("| series | call | rows | wall s | CPU s | rows / s | RSS with the frame MB | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|")
        main([int(s) for s in a.sizes.split(",")], a.what.split(","))
