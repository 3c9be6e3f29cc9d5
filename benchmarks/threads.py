"""One vs two torch threads for a default fit, with and without another busy process.

Fits the quickstart data (300 series) with the defaults for ``--epochs`` epochs, each
configuration in its own process, once with the machine otherwise as it is and once
beside a process that keeps one core busy (a NumPy loop). Reports wall and CPU seconds
per epoch. Run: ``python benchmarks/threads.py`` (writes ``benchmarks/results/threads.json``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import json, sys, time, torch
from latentode import LatentODERegressor
from latentode.datasets import make_synthetic
threads, epochs = int(sys.argv[1]), int(sys.argv[2])
df, _ = make_synthetic(300, n_obs=(8, 24), random_state=0)
est = LatentODERegressor(id_col="id", time_col="time", random_state=0, max_epochs=epochs, patience=None,
                         n_threads=threads)
w, c = time.perf_counter(), time.process_time()
est.fit(df)
print(json.dumps({"threads": threads, "wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
                  "epochs": len(est.history_)}))
"""


def _burn(stop):
    import numpy as np

    a = np.random.rand(200, 200)
    while not stop.is_set():
        a = np.tanh(a @ a / 200.0)


def run(threads: int, epochs: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(epochs)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args(argv)
    rows = []
    for load in (False, True):
        stop = mp.Event()
        burner = mp.Process(target=_burn, args=(stop,)) if load else None
        if burner:
            burner.start()
            time.sleep(1.0)
        try:
            for threads in (1, 2):
                r = run(threads, a.epochs)
                r.update(other_busy_process=load, wall_s_per_epoch=r["wall_s"] / r["epochs"],
                         cpu_s_per_epoch=r["cpu_s"] / r["epochs"])
                rows.append(r)
                print(r, flush=True)
        finally:
            if burner:
                stop.set()
                burner.join()
    RESULTS.mkdir(exist_ok=True)
    res = {"command": "python benchmarks/threads.py " + " ".join(argv or sys.argv[1:]),
           "machine": platform.platform(), "rows": rows}
    (RESULTS / "threads.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
