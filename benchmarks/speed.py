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
    device = torch.device(cfg.get("device", "cpu"))
    df, source = physionet_like(cfg["batch"])
    lf = validate_frame(df, "id", "time")
    series = lf.series.observed_only()
    scaling = Scaling.fit(series, lf.columns.values)
    batch = collate(series, np.arange(series.n_series), scaling, device)
    model = LatentODE(len(lf.columns.values), 20, "odernn", 40, 50, 3).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    k = cfg["query_factor"]
    # decoder grid: k points per observation interval (the observation times are every k-th)
    t = batch.t
    prev = torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1]], 1)
    frac = torch.arange(1, k + 1, dtype=t.dtype, device=device) / k
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
    times, cpu, nfe = [], [], []
    for i in range(cfg["steps"] + 1):
        n0 = dyn.nfe
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            nfe.append(dyn.nfe - n0)
    peak = peak_rss_mb()
    if device.type == "cuda":
        cfg = dict(cfg, peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20)
    lengths = series.lengths
    return dict(cfg, source=source, seconds_per_step=float(np.median(times)), seconds_all=times,
                cpu_seconds_per_step=float(np.median(cpu)),
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


def main(batch: int = 50, steps: int = 3, configs=None, out: Path | None = ROOT / "benchmarks" / "results",
         device: str = "cpu") -> list:
    """Run every configuration in a subprocess; print a markdown table; return the records."""
    if device != "cpu":  # threads do not matter there
        configs = [dict(c, device=device) for c in (configs or CONFIGS) if c["threads"] == 1]
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
    print("| device | adjoint | query grid | threads | s / step | decoder NFE / step | peak RSS MB | "
          "RSS growth in steps MB | peak CUDA MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r.get('device', 'cpu')} | {r['adjoint']} | {r['query_grid']} ({r['query_factor']}x) | "
              f"{r['threads']} | {r['seconds_per_step']:.3f} | {r['decoder_nfe_per_step']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r['step_rss_mb']:.0f} | {r.get('peak_cuda_mb', float('nan')):.0f} |")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        name = "speed.json" if device == "cpu" else f"speed-{device.split(':')[0]}.json"
        (out / name).write_text(json.dumps({"machine": machine, "command": "python " + " ".join(sys.argv),
                                            "records": records}, indent=1))
    return records


# ---------------------------------------------------------------------------- the training loop's host work
def loop_costs(batch: int = 50, repeats: int = 5) -> dict:
    """What the loop's host-side work costs, through APIs that every version of the package has.

    ``encoder_s``: one ODE-RNN forward and backward on a PhysioNet batch (its sub-step counts:
    one host read per batch, or one per time step). ``step_s``: the training seconds per
    optimisation step of a 2-epoch fit on ``4 * batch`` stays (the second epoch), which holds
    the per-step reads of loss and gradient norm and the batch preparation.
    """
    import torch

    from latentode import LatentODERegressor
    from latentode._collate import Scaling, collate
    from latentode._frame import validate_frame
    from latentode.model import LatentODE

    torch.set_num_threads(1)
    torch.manual_seed(0)
    df, source = physionet_like(4 * batch)
    lf = validate_frame(df, "id", "time")
    series = lf.series.observed_only()
    scaling = Scaling.fit(series, lf.columns.values)
    b = collate(series, np.arange(batch), scaling)
    enc = LatentODE(len(lf.columns.values), 20, "odernn", 40, 50, 3).encoder
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        mu, sigma = enc(b.t, b.x, b.m)
        (mu.sum() + sigma.sum()).backward()
        if i:
            times.append(time.perf_counter() - t0)
    est = LatentODERegressor(id_col="id", time_col="time", max_epochs=2, batch_size=50, readout="linear",
                             patience=None, validation_fraction=0.0, random_state=0).fit(df)
    steps = -(-series.n_series // est.batch_size_)
    import latentode

    package = Path(latentode.__file__).resolve()  # recorded relative to its tree: no machine paths in results
    tree = Path(os.environ.get("PYTHONPATH", str(ROOT))).resolve()
    return dict(source=source, package=str(package.relative_to(tree)) if package.is_relative_to(tree) else
                package.name, encoder_s=float(np.median(times)),
                step_s=est.history_[-1]["train_seconds"] / steps)


def prep_costs(n_series: int = 100_000, batch: int = 50) -> dict:
    """In this tree: batches from numpy (collate) against batches gathered from device-held series
    (Packed), over one epoch of 4,000 PhysioNet-shaped stays; and the query times of ``n_series``
    series padded with a loop per series (pad_queries) against without (pad_points)."""
    from latentode._collate import Packed, Scaling, collate, pad_points, pad_queries
    from latentode._frame import validate_frame

    df, _ = physionet_like(4000)
    lf = validate_frame(df, "id", "time")
    series = lf.series.observed_only()
    scaling = Scaling.fit(series, lf.columns.values)
    order = np.random.default_rng(0).permutation(series.n_series)
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    t0 = time.perf_counter()
    for idx in batches:
        collate(series, idx, scaling)
    numpy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed = Packed(series, scaling)
    pack_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for idx in batches:
        packed.batch(idx)
    gather_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 60, n_series)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    qt = np.sort(rng.random(offsets[-1])) * 1e3
    origin = qt[offsets[:-1]]
    t0 = time.perf_counter()
    for start in range(0, n_series, 2048):
        idx = np.arange(start, min(start + 2048, n_series))
        pad_queries([(qt[offsets[i]:offsets[i + 1]] - origin[i]) / 10.0 for i in idx])
    loop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, n_series, 2048):
        pad_points(qt, offsets, np.arange(start, min(start + 2048, n_series)), origin, 10.0)
    vector_s = time.perf_counter() - t0
    return dict(epoch_batches=len(batches), collate_epoch_s=numpy_s, packed_epoch_s=gather_s, pack_once_s=pack_s,
                query_series=n_series, query_loop_s=loop_s, query_vector_s=vector_s)


def loop_report(against: str, out: Path | None = ROOT / "benchmarks" / "results") -> dict:
    """``loop_costs`` in this tree and in a git worktree of ``against`` (same machine, same run), and
    ``prep_costs`` in this tree; prints a table and writes benchmarks/results/loop.json."""
    import tempfile

    cache = ROOT / "benchmarks" / "results" / "speed_data_200.pkl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    for n in (200, 4000):
        path = ROOT / "benchmarks" / "results" / f"speed_data_{n}.pkl"
        path.unlink(missing_ok=True)
        data = physionet_like(n)
        pd_pickle(data, path)
    rev = subprocess.run(["git", "rev-parse", "--short", against], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.strip()
    here = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout.strip()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "worktree", "add", "--detach", tmp, rev], cwd=ROOT, check=True, capture_output=True)
        try:
            for name, tree in ((f"{rev} (before)", Path(tmp)), (f"{here} (this tree)", ROOT)):
                env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(tree))
                res = subprocess.run([sys.executable, __file__, "--loop-one"], capture_output=True, text=True,
                                     cwd=ROOT, env=env)
                if res.returncode:
                    raise RuntimeError(res.stderr[-2000:])
                rows[name] = json.loads(res.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tmp], cwd=ROOT, capture_output=True)
    prep = prep_costs()
    (before, b), (after, a) = rows.items()
    print(f"| change | measured | {before} | {after} | ratio |")
    print("|---|---|---|---|---|")
    print(f"| encoder sub-steps once per batch | ODE-RNN forward + backward, batch 50 | {b['encoder_s']:.3f} s | "
          f"{a['encoder_s']:.3f} s | {a['encoder_s'] / b['encoder_s']:.2f} |")
    print(f"| no per-step reads; batches gathered on the device | training s / step (fit, epoch 2) | "
          f"{b['step_s']:.3f} s | {a['step_s']:.3f} s | {a['step_s'] / b['step_s']:.2f} |")
    print(f"| tensors prepared once per fit | {prep['epoch_batches']} batches of 50 stays | "
          f"{prep['collate_epoch_s']:.3f} s (collate) | {prep['packed_epoch_s']:.3f} s (+ {prep['pack_once_s']:.3f} s "
          f"once) | {prep['packed_epoch_s'] / prep['collate_epoch_s']:.2f} |")
    print(f"| predict's queries without a loop | {prep['query_series']:,} series padded | "
          f"{prep['query_loop_s']:.3f} s | {prep['query_vector_s']:.3f} s | "
          f"{prep['query_vector_s'] / prep['query_loop_s']:.2f} |")
    record = dict(against=before, this=after, rows=rows, prep=prep)
    if out is not None:
        (out / "loop.json").write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Seconds per training step and peak memory at PhysioNet shapes.")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder of the JSON results")
    ap.add_argument("--loop", metavar="REF", help="compare the training loop's host work with git revision REF")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--loop-one", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(json.loads(a.one))))
    elif a.loop_one:
        print(json.dumps(loop_costs()))
    elif a.loop:
        loop_report(a.loop)
    else:
        main(a.batch, a.steps, out=a.out, device=a.device)
