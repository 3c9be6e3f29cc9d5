"""Seconds per training step and peak memory at PhysioNet shapes.

Shapes: batch 50, 41 variables, real PhysioNet 2012 stays (median ~71 observation times
over 48 h; synthetic stays of the same shape when the data is absent), latent 20,
ODE-RNN encoder with 40 hidden units, 3-layer 50-unit MLPs (the reference model size).

Each configuration runs in its own process (peak RSS is per process): ``adjoint`` on/off,
the decoder's query grid at 1x and 10x the observation times (the 10x grid interleaves 9
extra times in every observation interval and scores only the observed ones), and 1 or 2
threads. One step = encoder + decoder + masked likelihood + backward + Adam update.

Run: ``python benchmarks/speed.py`` (writes benchmarks/results/speed.json and prints a table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "physionet2012" / "set-a.tar.gz"


def physionet_like(n_stays: int, seed: int = 0):
    """Real PhysioNet stays if available, else synthetic ones of the same shape."""
    import pandas as pd

    cache = ROOT / "benchmarks" / "results" / f"speed_data_{n_stays}.pkl"
    if cache.exists():  # written by main(), so that workers' memory is not the loader's
        return pd.read_pickle(cache)

    if DATA.exists():
        from latentode.datasets import load_physionet2012

        df = load_physionet2012(DATA)
        ids = df["RecordID"].drop_duplicates().iloc[:n_stays]
        return df[df["RecordID"].isin(ids)].rename(columns={"RecordID": "id", "Time": "time"}), "PhysioNet set-a"
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_stays):
        t = np.unique(np.sort(rng.integers(0, 48 * 60, size=71))) / 60.0
        v = np.where(rng.random((len(t), 41)) < 0.15, rng.standard_normal((len(t), 41)), np.nan)
        v[:, 0] = np.nan_to_num(v[:, 0], nan=1.0)
        rows.append(pd.DataFrame(v, columns=[f"x{j}" for j in range(41)]).assign(id=i, time=t))
    return pd.concat(rows, ignore_index=True), "synthetic (PhysioNet shapes)"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pd_pickle(obj, path):
    import pickle

    path.write_bytes(pickle.dumps(obj))


def run_one(cfg: dict) -> dict:
    """One configuration, in this process."""
    import torch

    from latentode._collate import Scaling, collate
    from latentode._frame import validate_frame
    from latentode._training import train_encoder_mask
    from latentode.model import LatentODE

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    df, source = physionet_like(cfg["batch"])
    lf = validate_frame(df, "id", "time")
    series = lf.series.observed_only()
    scaling = Scaling.fit(series, lf.columns.values)
    batch = collate(series, np.arange(series.n_series), scaling)
    model = LatentODE(len(lf.columns.values), 20, "odernn", 40, 50, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    k = cfg["query_factor"]
    # decoder grid: k points per observation interval (the observation times are every k-th)
    t = batch.t
    prev = torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1]], 1)
    frac = torch.arange(1, k + 1, dtype=t.dtype) / k
    tq = (prev.unsqueeze(-1) + (t - prev).unsqueeze(-1) * frac).reshape(t.shape[0], -1)
    solver = dict(method="dopri5", rtol=1e-3, atol=1e-4, adjoint=cfg["adjoint"], max_num_steps=1000)

    def step():
        enc_mask = train_encoder_mask(batch, 0.2, 0.5, gen)
        opt.zero_grad()
        mu, sigma = model.encoder(batch.t, batch.x * enc_mask, enc_mask)
        z0 = model.sample_z0(mu, sigma, 1, gen)
        xhat = model.decoder(z0, tq, **solver)[:, :, k - 1::k]  # the observation times
        ll = model.log_likelihood(xhat, batch.x, batch.m)
        loss = -(ll[0] - model.prior.analytic_kl(mu, sigma)).sum() / batch.m.sum()
        loss.backward()
        opt.step()

    base_rss = peak_rss_mb()
    dyn = model.decoder.dynamics
    times, nfe = [], []
    for i in range(cfg["steps"] + 1):
        n0 = dyn.nfe
        t0 = time.perf_counter()
        step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
            nfe.append(dyn.nfe - n0)
    peak = peak_rss_mb()
    lengths = series.lengths
    return dict(cfg, source=source, seconds_per_step=float(np.median(times)), seconds_all=times,
                decoder_nfe_per_step=float(np.mean(nfe)), obs_times_median=float(np.median(lengths)),
                obs_times_max=int(lengths.max()), query_grid=int(tq.shape[1]), peak_rss_mb=peak,
                rss_before_steps_mb=base_rss, step_rss_mb=peak - base_rss)


CONFIGS = [
    dict(adjoint=True, query_factor=1, threads=1),
    dict(adjoint=False, query_factor=1, threads=1),
    dict(adjoint=True, query_factor=10, threads=1),
    dict(adjoint=False, query_factor=10, threads=1),
    dict(adjoint=True, query_factor=1, threads=2),
    dict(adjoint=False, query_factor=1, threads=2),
]


def main(batch: int = 50, steps: int = 3, configs=None, out: Path | None = ROOT / "benchmarks" / "results") -> list:
    """Run every configuration in a subprocess; print a markdown table; return the records."""
    records = []
    cache = ROOT / "benchmarks" / "results" / f"speed_data_{batch}.pkl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.unlink(missing_ok=True)
    data = physionet_like(batch)
    pd_pickle(data, cache)
    for cfg in configs or CONFIGS:
        cfg = dict(cfg, batch=batch, steps=steps)
        res = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True,
                             cwd=ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        if res.returncode:
            raise RuntimeError(res.stderr[-2000:])
        records.append(json.loads(res.stdout.strip().splitlines()[-1]))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    print(f"data: {records[0]['source']}; batch {batch}; median {records[0]['obs_times_median']:.0f} "
          f"observation times per series (max {records[0]['obs_times_max']}); machine: {machine}\n")
    print("| adjoint | query grid | threads | s / step | decoder NFE / step | peak RSS MB | RSS growth in steps MB |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['adjoint']} | {r['query_grid']} ({r['query_factor']}x) | {r['threads']} | "
              f"{r['seconds_per_step']:.2f} | {r['decoder_nfe_per_step']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['step_rss_mb']:.0f} |")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps({"machine": machine, "records": records}, indent=1))
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Seconds per training step and peak memory at PhysioNet shapes.")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(json.loads(a.one))))
    else:
        main(a.batch, a.steps)
