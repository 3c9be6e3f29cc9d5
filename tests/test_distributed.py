"""Data-parallel training: 2-process gloo jobs launched with torchrun on localhost, and the sharding rules."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latentode import LatentODERegressor
from latentode import _distributed
from latentode._collate import Packed, Scaling, collate
from latentode._frame import validate_frame
from latentode._training import StepRandomness, local_rows

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
#: the loss history of 2 processes against 1 on the same global batches. The ranks solve part batches, so
#: the adaptive solver's steps (and the ODE-RNN's sub-steps, set by the longest gap of a batch) differ within
#: its tolerance (rtol 1e-3); the random draws are the same. Measured: at most 5e-4 relative.
HISTORY_RTOL = 2e-3


def torchrun(out: Path, mode: str, timeout: float):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), str(out), mode]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    res = torchrun(out, "fit", timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", list(ddp_worker.CONFIGS))
def test_two_processes_end_with_the_same_weights(two_process, name):
    w0 = torch.load(two_process / f"{name}-weights-0.pt")
    w1 = torch.load(two_process / f"{name}-weights-1.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    h0 = json.loads((two_process / f"{name}-history-0.json").read_text())
    h1 = json.loads((two_process / f"{name}-history-1.json").read_text())
    assert [h["valid_mse"] for h in h0] == [h["valid_mse"] for h in h1]  # all-reduced: the same decisions
    assert [h["loss"] for h in h0] == [h["loss"] for h in h1]


@pytest.mark.parametrize("name", list(ddp_worker.CONFIGS))
def test_two_processes_follow_the_one_process_loss_history(two_process, name):
    params = ddp_worker.CONFIGS[name]
    single = LatentODERegressor(**params).fit(ddp_worker.data())
    assert single.world_size_ == 1
    h2 = json.loads((two_process / f"{name}-history-0.json").read_text())
    assert len(h2) == len(single.history_) == params["max_epochs"]
    for key in ("loss", "mse", "valid_mse", "grad_norm"):
        np.testing.assert_allclose([h[key] for h in h2], [h[key] for h in single.history_], rtol=HISTORY_RTOL,
                                   err_msg=key)
    # and training moved: a history that matched because nothing was learned would prove nothing
    assert len({h["valid_mse"] for h in h2}) == len(h2)


@pytest.mark.parametrize("name", list(ddp_worker.CONFIGS))
def test_the_two_process_model_predicts_as_a_single_process_one(two_process, name):
    est = pickle.loads((two_process / f"{name}-estimator-0.pkl").read_bytes())
    assert est.world_size_ == 2
    assert not isinstance(est.module_, torch.nn.parallel.DistributedDataParallel)
    df = ddp_worker.data()
    here = est.predict(df)  # this process has no process group: the single-process code path
    there = pd.read_pickle(two_process / f"{name}-predict-0.pkl")
    pd.testing.assert_frame_equal(here, there, rtol=1e-6)


def test_a_rank_that_raises_ends_the_job_with_its_error(tmp_path):
    t0 = time.perf_counter()
    res = torchrun(tmp_path, "fail", timeout=120)
    assert res.returncode != 0
    assert ddp_worker.FAILURE in res.stderr + res.stdout
    assert time.perf_counter() - t0 < 120


def test_ranks_with_different_data_refuse_to_train(tmp_path):
    res = torchrun(tmp_path, "mismatch", timeout=120)
    assert res.returncode != 0
    assert "differs between ranks" in res.stderr + res.stdout


def test_finish_lets_no_rank_leave_before_the_others_are_done(tmp_path):
    res = torchrun(tmp_path, "finish", timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    written = float((tmp_path / "written").read_text())
    for rank in (0, 1):
        assert float((tmp_path / f"left-{rank}").read_text()) >= written
    assert not torch.distributed.is_initialized()  # (this process never joined; finish is a no-op here)
    _distributed.finish()


def test_a_process_that_ended_a_job_exits_without_teardown(monkeypatch):
    calls = []

    class Exited(Exception):
        pass

    def fake_exit(code):
        calls.append(code)
        raise Exited

    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit) as plain:  # no job ended here: a normal exit
        _distributed.exit_process(3)
    assert plain.value.code == 3 and calls == []
    monkeypatch.setattr(_distributed, "_ENDED", True)
    with pytest.raises(Exited):
        _distributed.exit_process(0)
    assert calls == [0]


def test_torchrun_cli_fit_writes_one_model(tmp_path, synth):
    df, _ = synth
    data = tmp_path / "data.csv"
    df.to_csv(data, index=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "latentode",
           "fit", str(data), "--model-dir", str(tmp_path / "model"), "--id-col", "id", "--max-epochs", "1",
           "--latent-dim", "4", "--encoder-dim", "8", "--width", "16", "--seed", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("fitted 1 epochs") == 1  # rank 0 alone reports
    assert "2 processes" in res.stderr
    est = LatentODERegressor.load(tmp_path / "model")
    assert est.world_size_ == 2
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "weights.pt"]


# ------------------------------------------------------------------ single-process rules
def test_without_a_launcher_fit_is_single_process(synth, monkeypatch):
    for k in _distributed.ENV:
        monkeypatch.delenv(k, raising=False)
    df, _ = synth
    from conftest import TINY

    est = LatentODERegressor(**dict(TINY, max_epochs=1)).fit(df)
    assert est.world_size_ == 1 and not torch.distributed.is_initialized()
    with pytest.raises(ValueError, match="torchrun"):
        LatentODERegressor(**dict(TINY, max_epochs=1, distributed=True)).fit(df)
    with pytest.raises(TypeError, match="distributed"):
        LatentODERegressor(**dict(TINY, distributed="yes")).fit(df)
    # a lone process with WORLD_SIZE=1 (torchrun --nproc_per_node=1) is single-process too
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not _distributed.launched()


@pytest.mark.parametrize("n", [1, 2, 5, 7, 50])
def test_ranks_split_a_global_batch_into_disjoint_rows(n):
    parts = [_distributed.shard_rows(n, _distributed.Context(2, r, r)) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    assert abs(len(parts[0]) - len(parts[1])) <= 1
    evals = [_distributed.shard_series(n, _distributed.Context(2, r, r)) for r in range(2)]
    assert sorted(np.concatenate(evals).tolist()) == list(range(n))


def test_rank_shares_of_a_global_batch_sum_to_its_loss_and_gradient(synth):
    """What DDP averages: each rank's loss share (global normaliser), times the world size."""
    df, _ = synth
    lf = validate_frame(df, "id", "time")
    series = lf.series.observed_only()
    scaling = Scaling.fit(series, lf.columns.values)
    from latentode.model import LatentODE

    torch.manual_seed(0)
    model = LatentODE(len(lf.columns.values), 4, "odernn", 8, 16, 2)
    packed = Packed(series, scaling)
    gidx = np.array([3, 0, 7, 5, 1])
    batch = packed.batch(gidx)

    class Opts:
        mask_fraction, forecast_fraction, n_samples = 0.3, 0.5, 1

    draws = StepRandomness(batch, Opts, 4, torch.Generator().manual_seed(1))
    n_scored = batch.m.sum()
    solver = dict(method="rk4", step_size=0.05)

    def loss_and_grad(rows, share):
        local, mask, eps = local_rows(batch, draws, rows, packed.width(gidx[rows]))
        model.zero_grad()
        loss, stats = model.loss(local, mask, eps=eps, normalizer=n_scored, share=share, solver=solver)
        loss.backward()
        return float(loss.detach()), float(stats["kl"]), [p.grad.clone() for p in model.parameters()]

    whole = loss_and_grad(np.arange(5), 1.0)
    parts = [loss_and_grad(r, len(r) / 5) for r in (np.arange(3), np.arange(3, 5))]
    assert parts[0][0] + parts[1][0] == pytest.approx(whole[0], rel=1e-4)
    assert parts[0][1] + parts[1][1] == pytest.approx(whole[1], rel=1e-4)
    for g, g0, g1 in zip(whole[2], parts[0][2], parts[1][2]):
        torch.testing.assert_close(g0 + g1, g, rtol=1e-3, atol=1e-6)


def test_packed_batches_equal_collate(synth):
    df, _ = synth
    lf = validate_frame(df, "id", "time")
    series = lf.series.observed_only()
    scaling = Scaling.fit(series, lf.columns.values)
    idx = np.array([4, 0, 11, 2])
    for a, b in zip(Packed(series, scaling).batch(idx), collate(series, idx, scaling)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("options", [
    dict(), dict(encoder="gru"), dict(prior="cnf"), dict(noise_std=None), dict(dynamics_init="mlp"),
    dict(anchor="last", center="interp"), dict(n_samples=3), dict(loss_on="hidden"),
])
def test_every_trainable_parameter_gets_a_gradient(synth, options):
    """What lets DDP run with find_unused_parameters=False: no trainable parameter sits out a step."""
    df, _ = synth
    from conftest import TINY

    est = LatentODERegressor(**dict(TINY, max_epochs=1, **options)).fit(df)
    model, series = est.module_, est._validate(df).series.observed_only()
    batch = Packed(series, est.scaling_).batch(np.arange(series.n_series))

    class Opts:
        mask_fraction, forecast_fraction, n_samples = est.mask_fraction, est.forecast_fraction, est.n_samples

    draws = StepRandomness(batch, Opts, est.latent_dim, torch.Generator().manual_seed(0))
    model.train()
    model.zero_grad()
    loss, _ = model(batch, draws.enc_mask, n_samples=est.n_samples, eps=draws.eps, solver=est._solver(),
                    loss_on=est.loss_on)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


# ------------------------------------------------------------------ inference at scale
def test_predict_streams_series_in_bounded_chunks(fitted, synth, monkeypatch):
    """predict decodes a bounded number of series at a time, and the chunking leaves the answer alone."""
    from latentode import estimator as estimator_module

    df, _ = synth
    whole = fitted.predict(df)
    calls = []
    encode = fitted.module_.encode

    def counting(t, x, m):
        calls.append(t.shape[0])
        return encode(t, x, m)

    monkeypatch.setattr(fitted.module_, "encode", counting)
    monkeypatch.setattr(estimator_module, "INFER_CHUNK", 5)
    monkeypatch.setattr(fitted, "batch_size_", 1)
    chunked = fitted.predict(df)
    assert max(calls) <= 5 and sum(calls) == df["id"].nunique() and len(calls) == 3
    pd.testing.assert_frame_equal(chunked, whole, rtol=1e-2, atol=1e-3)  # the adaptive steps differ by chunk


def test_query_padding_without_a_loop_equals_the_per_series_one():
    from latentode._collate import pad_points, pad_queries

    rng = np.random.default_rng(0)
    lengths = np.array([3, 0, 5, 1])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    times = np.sort(rng.random(lengths.sum())) * 10
    origin = np.array([0.5, 0.0, 2.0, 1.0])
    idx = np.array([2, 0, 1, 3])
    loop = [(times[offsets[i]:offsets[i + 1]] - origin[i]) / 4.0 for i in idx]
    a, la = pad_queries(loop)
    b, lb = pad_points(times, offsets, idx, origin, 4.0)
    torch.testing.assert_close(a, b)
    np.testing.assert_array_equal(la, lb)
