"""Data-parallel scaling: training samples per second for 1 and 2 processes, and the all-reduce's share.

Data: PhysioNet 2012 stays (the first ``--stays`` of set-a; synthetic stays of the same shape
when the data is absent), 41 variables, the estimator's defaults except ``max_epochs`` and ``readout="linear"``.
Configurations, each in fresh processes:

- 1 process, 1 torch thread (the default on CPU);
- 1 process, 2 torch threads (the other way to use two cores);
- 2 processes (``torchrun --standalone --nproc_per_node=2``), 1 thread each, gloo.

Samples per second: training series per second of the last epoch's training time (the first
epoch warms up). The all-reduce's share: under DDP a communication hook times each bucket's
all-reduce (blocking, so the time includes waiting for the slower rank) and the sum is divided
by the epoch's training time, on rank 0.

Run: ``python benchmarks/scaling.py [--stays 400 --epochs 2]`` (writes
benchmarks/results/scaling.json and prints a table).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
CACHE = ROOT / "benchmarks" / "results" / "scaling_data.pkl"


def worker(epochs: int, threads: int, out: str, batch: int = 50) -> None:
    """One process of one configuration (under torchrun: one rank)."""
    import torch
    import torch.distributed as dist

    from latentode import LatentODERegressor, _training

    df, source = pickle.loads(CACHE.read_bytes())
    comm = []
    real_wrap = _training.wrap

    def timed_wrap(module, ctx, device):
        net = real_wrap(module, ctx, device)
        if ctx.active:
            def hook(state, bucket):
                t0 = time.perf_counter()
                buf = bucket.buffer()
                dist.all_reduce(buf)
                buf.div_(ctx.world_size)
                comm.append(time.perf_counter() - t0)
                fut = torch.futures.Future()
                fut.set_result(buf)
                return fut

            net.register_comm_hook(None, hook)
        return net

    _training.wrap = timed_wrap
    est = LatentODERegressor(id_col="id", time_col="time", max_epochs=epochs, patience=None, random_state=0,
                             n_threads=threads, batch_size=batch, readout="linear")
    c0, w0 = time.process_time(), time.perf_counter()
    est.fit(df)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    rank = dist.get_rank() if dist.is_initialized() else 0
    last = est.history_[-1]
    n_train = df["id"].nunique() - int(round(0.1 * df["id"].nunique()))
    steps = -(-n_train // est.batch_size)
    comm_last = sum(comm[-(len(comm) // epochs):]) if comm else 0.0
    rec = dict(world_size=est.world_size_, threads=threads, batch_size=batch, rank=rank, source=source, n_train=n_train,
               steps_per_epoch=steps, epoch_train_s=last["train_seconds"], samples_per_s=n_train / last["train_seconds"],
               allreduce_s=comm_last, allreduce_share=comm_last / last["train_seconds"], fit_wall_s=wall,
               fit_cpu_s=cpu, epochs=len(est.history_), loss=[h["loss"] for h in est.history_])
    Path(out).with_name(Path(out).stem + f"-{rank}.json").write_text(json.dumps(rec))


CONFIGS = [dict(world=1, threads=1), dict(world=1, threads=2), dict(world=2, threads=1)]


def main(stays: int, epochs: int, batches=(50,), out=ROOT / "benchmarks" / "results") -> list:
    from speed import physionet_like

    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.unlink(missing_ok=True)
    CACHE.write_bytes(pickle.dumps(physionet_like(stays)))
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    records = []
    for cfg in [dict(c, batch=b) for b in batches for c in CONFIGS]:
        tag = out / f"scaling-run-{cfg['world']}x{cfg['threads']}-b{cfg['batch']}.json"
        args = [__file__, "--one", json.dumps([epochs, cfg["threads"], str(tag), cfg["batch"]])]
        launcher = [sys.executable] if cfg["world"] == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg['world']}"]
        res = subprocess.run(launcher + args, capture_output=True, text=True, cwd=ROOT, env=env)
        if res.returncode:
            raise RuntimeError(res.stderr[-3000:])
        ranks = [json.loads(tag.with_name(tag.stem + f"-{r}.json").read_text()) for r in range(cfg["world"])]
        rec = dict(ranks[0], fit_cpu_s=sum(r["fit_cpu_s"] for r in ranks))
        records.append(rec)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    print(f"data: {records[0]['source']}, {records[0]['n_train']} training series; machine: {machine}\n")
    print("| global batch | processes | threads each | samples / s | vs 1 process, 1 thread | all-reduce share | "
          "fit wall s | fit CPU s (all ranks) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in records:
        base = next(b for b in records if b["batch_size"] == r["batch_size"])["samples_per_s"]
        print(f"| {r['batch_size']} | {r['world_size']} | {r['threads']} | {r['samples_per_s']:.1f} | "
              f"{r['samples_per_s'] / base:.2f}x | {100 * r['allreduce_share']:.1f}% | {r['fit_wall_s']:.0f} | "
              f"{r['fit_cpu_s']:.0f} |")
    (out / "scaling.json").write_text(json.dumps({"machine": machine, "stays": stays, "epochs": epochs,
                                                  "batches": list(batches), "records": records}, indent=1))
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stays", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batches", default="50,200", help="global batch sizes, comma-separated")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        worker(*json.loads(a.one))
    else:
        main(a.stays, a.epochs, [int(b) for b in a.batches.split(",")])
