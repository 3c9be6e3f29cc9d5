"""CUDA checks (skipped without a GPU); ``benchmarks/gpu_check.sh`` runs them on a machine that has one."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from latentode import LatentODERegressor
from latentode._collate import Packed, Scaling
from latentode._frame import validate_frame
from latentode.model import LatentODE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
HERE = Path(__file__).resolve().parent


def test_fit_and_predict_on_cuda(synth):
    from conftest import TINY

    df, _ = synth
    est = LatentODERegressor(**dict(TINY, device="cuda")).fit(df)
    assert est.device_.type == "cuda" and next(est.module_.parameters()).device.type == "cuda"
    assert np.isfinite([h["loss"] for h in est.history_]).all()
    pred = est.predict(df)
    assert np.isfinite(pred[["v1", "v2", "v3"]].to_numpy()).all()


def test_the_encoder_reads_the_device_once_per_batch(synth):
    """The ODE-RNN's sub-step counts come to the host in one read per batch, not one per time step."""
    df, _ = synth
    lf = validate_frame(df, "id", "time")
    series = lf.series.observed_only()
    batch = Packed(series, Scaling.fit(series, lf.columns.values), "cuda").batch(np.arange(series.n_series))
    enc = LatentODE(len(lf.columns.values), 4, "odernn", 8, 16, 2).cuda().encoder
    enc(batch.t, batch.x, batch.m)  # warm up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            enc(batch.t, batch.x, batch.m)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in seen if "synchroniz" in str(w.message)]
    assert batch.t.shape[1] > 5 and len(syncs) <= 1, [str(w.message) for w in syncs]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpu_torchrun_smoke(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), str(tmp_path), "fit"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("backprop", "adjoint"):
        w0 = torch.load(tmp_path / f"{name}-weights-0.pt", map_location="cpu")
        w1 = torch.load(tmp_path / f"{name}-weights-1.pt", map_location="cpu")
        assert all(torch.equal(w0[k], w1[k]) for k in w0)
