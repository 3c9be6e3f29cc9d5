"""One rank of the data-parallel tests (tests/test_distributed.py), launched by torchrun.

Usage: ``torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT MODE``

MODE "fit": fits :data:`CONFIGS` on :func:`data` and writes, per rank and configuration,
the weights, the history, the predictions and the pickled estimator to OUT.
MODE "fail": rank 1 raises in its second training step; the job must end with that error.
MODE "mismatch": rank 1 fits other data than rank 0; every rank must refuse it.
MODE "finish": after a fit, rank 0 writes a file a second late; every rank then calls
``latentode._distributed.finish`` and writes the time it returned.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import time

import torch

from latentode import LatentODERegressor, _distributed
from latentode.datasets import make_synthetic

BASE = dict(latent_dim=4, encoder_dim=8, width=16, n_layers=2, max_epochs=2, batch_size=7, kl_warmup=0,
            validation_fraction=0.25, random_state=0)
#: name -> options; 16 series, 12 training: global batches of 7 and 5 (4/3 and 3/2 rows per rank)
CONFIGS = {"backprop": dict(BASE, adjoint=False), "adjoint": dict(BASE, adjoint=True)}
FAILURE = "rank 1 failed on purpose"


def data():
    return make_synthetic(16, n_obs=(5, 12), random_state=3)[0]


def main(out: Path, mode: str) -> None:
    rank = int(os.environ["RANK"])
    df = data()
    if mode == "mismatch":  # rank 1 leaves a series out
        if rank == 1:
            df = df[df["id"] != df["id"].iloc[0]]
        LatentODERegressor(**BASE).fit(df)
        return
    if mode == "fail":
        from latentode import _training

        real, calls = _training.train_step, []

        def failing(*args, **kwargs):
            calls.append(1)
            if rank == 1 and len(calls) == 2:
                raise RuntimeError(FAILURE)
            return real(*args, **kwargs)

        _training.train_step = failing
        LatentODERegressor(**dict(BASE, max_epochs=50)).fit(df)
        return
    if mode == "finish":
        LatentODERegressor(**dict(BASE, max_epochs=1)).fit(df)
        if rank == 0:
            time.sleep(1.0)
            (out / "written").write_text(str(time.time()))
        _distributed.finish()
        (out / f"left-{rank}").write_text(str(time.time()))
        return
    for name, params in CONFIGS.items():
        est = LatentODERegressor(**params).fit(df)
        torch.save(est.module_.state_dict(), out / f"{name}-weights-{rank}.pt")
        (out / f"{name}-history-{rank}.json").write_text(json.dumps(est.history_))
        est.predict(df).to_pickle(out / f"{name}-predict-{rank}.pkl")
        (out / f"{name}-estimator-{rank}.pkl").write_bytes(pickle.dumps(est))
    _distributed.finish()  # the ranks leave together


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
    _distributed.exit_process(0)  # as the CLI leaves: no teardown abort after a finished job
