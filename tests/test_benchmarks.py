"""The benchmark harness end to end at tiny size, its split and its metric."""

import importlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentode import LatentODERegressor
from latentode.baselines import GRUDeltaTRegressor
from latentode.datasets import make_synthetic

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "physionet2012"
sys.path.insert(0, str(REPO / "benchmarks"))
H = importlib.import_module("_harness")
TINY = dict(latent_dim=4, encoder_dim=8, width=8, n_layers=2)


def test_tpatchgnn_split_sizes_and_determinism():
    ids = np.arange(1000, 1100)
    train, valid, test = H.tpatchgnn_split(ids)
    assert (len(train), len(valid), len(test)) == (60, 20, 20)
    assert len(np.unique(np.concatenate([train, valid, test]))) == 100
    again = H.tpatchgnn_split(np.random.default_rng(0).permutation(ids))  # file order does not matter
    for a, b in zip((train, valid, test), again):
        np.testing.assert_array_equal(a, b)
    # the validation stays are the last quarter of the shuffled seen stays (no second shuffle)
    seen = np.concatenate([train, valid])
    assert list(seen[-20:]) == list(valid)


def test_masked_errors_hand_computed():
    truth = pd.DataFrame({"a": [1.0, np.nan, 3.0, 0.0], "b": [np.nan, 2.0, np.nan, np.nan]})
    pred = pd.DataFrame({"a": [2.0, 100.0, 1.0, 0.0], "b": [100.0, 1.0, 100.0, 100.0]})
    out = H.masked_errors(truth, pred, ["a", "b"])
    # a: errors 1, -2, 0 -> MSE 5/3, MAE 1; b: error -1 -> MSE 1, MAE 1
    assert out["mse"] == pytest.approx((5 / 3 + 1) / 2)
    assert out["mae"] == pytest.approx(1.0)
    assert out["mse_pooled"] == pytest.approx(6 / 4)
    assert out["n_values"] == 4
    assert math.isnan(H.masked_errors(truth.iloc[[1]][["a"]], pred.iloc[[1]][["a"]], ["a"])["mse"])
    # per series (Rubanova et al.'s averaging): series x = rows 0, 1; y = rows 2, 3
    # x: a 1 (one value), b 1 -> (1 + 1) / 2 = 1; y: a (4 + 0) / 2 = 2, b nothing -> 0 -> (2 + 0) / 2 = 1
    out = H.masked_errors(truth, pred, ["a", "b"], groups=["x", "x", "y", "y"])
    assert out["mse_per_series"] == pytest.approx(1.0)
    out = H.masked_errors(truth, pred.assign(a=[1.0, 0, 3.0, 0.0]), ["a", "b"], groups=["x", "x", "y", "y"])
    assert out["mse_per_series"] == pytest.approx((0 + 1) / 2 / 2)


def test_interp_frames_take_half_of_each_stay():
    df = pd.DataFrame({"RecordID": np.repeat([1, 2], [5, 4]), "Time": np.r_[0:5, 0:4] * 1.0, "x": 1.0})
    context, targets = H.interp_frames(df, [1, 2], 0.5, random_state=0)
    assert context.groupby("RecordID").size().tolist() == [3, 2]
    assert len(context) + len(targets) == len(df)
    assert not set(map(tuple, context[["RecordID", "Time"]].values)) & set(
        map(tuple, targets[["RecordID", "Time"]].values))


def test_gru_delta_t_fit_predict_shapes():
    df, _ = make_synthetic(n_series=6, random_state=0)
    est = GRUDeltaTRegressor(hidden_dim=8, width=8, max_epochs=2, random_state=0).fit(df)
    assert len(est.history_) == 2
    query = df[["id", "time"]].iloc[::2]
    pred = est.predict(df, times=query)
    assert pred.shape == (len(query), 5)
    assert pred.index.equals(query.index)
    assert np.isfinite(pred[["v1", "v2", "v3"]].to_numpy()).all()
    again = GRUDeltaTRegressor(hidden_dim=8, width=8, max_epochs=2, random_state=0).fit(df).predict(df, query)
    pd.testing.assert_frame_equal(pred, again)


def test_physionet_forecast_end_to_end(tmp_path):
    mod = importlib.import_module("physionet_forecast")
    res = mod.main(data_dir=DATA, epochs=1, seeds=(0,), models=("locf", "mean", "odernn", "grudt"),
                   out_dir=tmp_path, **TINY)
    assert (res["settings"]["n_train_split"], res["settings"]["n_valid"], res["settings"]["n_test"]) == (3, 1, 1)
    assert [r["model"] for r in res["runs"]] == ["locf", "mean", "odernn", "grudt"]
    assert all(np.isfinite(r["test"]["mse"]) for r in res["runs"])
    assert res["runs"][2]["epochs"] == 1 and res["runs"][2]["peak_rss_mb"] > 0
    assert "| odernn |" in res["table"] and (tmp_path / "physionet_forecast.json").is_file()
    # --select-on-valid: the latent ODE is scored on the validation stays every epoch
    sel = mod.main(data_dir=DATA, epochs=2, seeds=(0,), models=("odernn",), out_dir=tmp_path, select_on_valid=True,
                   **TINY)
    assert sel["settings"]["select_on_valid"] and sel["settings"]["params"]["patience"] is None
    assert np.isfinite(sel["runs"][0]["test"]["mse"]) and sel["runs"][0]["epochs"] == 2
    assert all(np.isfinite(h["grad_norm"]) and np.isfinite(h["valid_mse"]) for h in sel["runs"][0]["history"])
    # seeds run as separate processes are summarised together
    other = mod.main(data_dir=DATA, epochs=1, seeds=(1,), models=("odernn",), out_dir=tmp_path, name="seed1", **TINY)
    both = H.table_from_json(f"{tmp_path / 'physionet_forecast.json'},{tmp_path / 'seed1.json'}")
    mses = [sel["runs"][0]["test"]["mse"], other["runs"][0]["test"]["mse"]]
    assert f"| odernn | 2 | {np.mean(mses):.4e} ± {np.std(mses, ddof=1):.1e} |" in both


def test_physionet_interp_end_to_end(tmp_path):
    mod = importlib.import_module("physionet_interp")
    res = mod.main(data_dir=DATA, epochs=1, seeds=(0,), models=("linear", "gru"), out_dir=tmp_path, **TINY)
    assert (res["settings"]["n_train_split"], res["settings"]["n_test"]) == (4, 1)
    for run in res["runs"]:
        assert run["heldout"]["n_values"] > 0 and run["all"]["n_values"] > run["heldout"]["n_values"]
    assert (tmp_path / "physionet_interp.json").is_file()


def test_periodic_end_to_end(tmp_path):
    mod = importlib.import_module("periodic")
    res = mod.main(n_series=10, n_points=10, epochs=1, seeds=(0,), models=("odernn", "linear"), out_dir=tmp_path,
                   **TINY)
    tasks = [(r["task"], r["model"]) for r in res["runs"]]
    assert tasks == [("interpolation", "odernn"), ("interpolation", "linear"), ("extrapolation", "odernn"),
                     ("extrapolation", "linear")]
    interp = res["runs"][0]
    assert interp["test"]["n_values"] == 2 * 10 and interp["heldout"]["n_values"] == 2 * 5
    assert interp["seconds_per_step"] > 0
    assert set(res["tables"]) == {"interpolation", "extrapolation"}


def test_model_options_from_the_command_line():
    parser = H.physionet_parser("test", "name")
    assert H.model_options(parser.parse_args([])) == {}
    args = parser.parse_args(["--noise-std", "0.01", "--adjoint", "false", "--mask-fraction", "0",
                              "--forecast-fraction", "1", "--anchor", "last", "--loss-on", "hidden", "--lr", "0.003",
                              "--lr-decay", "0.999", "--variable-weight", "balanced", "--center", "last",
                              "--max-grad-norm", "500"])
    assert H.model_options(args) == {"noise_std": 0.01, "adjoint": False, "mask_fraction": 0.0,
                                     "forecast_fraction": 1.0, "anchor": "last", "loss_on": "hidden", "lr": 0.003,
                                     "lr_decay": 0.999, "variable_weight": "balanced", "center": "last",
                                     "max_grad_norm": 500.0}
    with pytest.raises(SystemExit):
        parser.parse_args(["--adjoint", "maybe"])


def test_window_start_rows_reach_the_model():
    df = pd.DataFrame({"RecordID": [1, 1, 2], "Time": [3.0, 5.0, 1.0], "x": [0.1, 0.2, 0.3], "y": np.nan})
    out = H.with_window_start(df)
    assert list(out.columns) == list(df.columns) and len(out) == 5
    assert out.groupby("RecordID")["Time"].min().tolist() == [0.0, 0.0]
    assert out[out["Time"] == 0][["x", "y"]].isna().all().all()
    # the harness keeps the empty earliest row for the neural models: scoring the same targets from
    # a context with and without it gives different predictions
    data, _ = make_synthetic(n_series=6, random_state=0)
    data = data.rename(columns={"id": "RecordID", "time": "Time"})
    data["Time"] = (data["Time"] - data["Time"].min()) / pd.Timedelta(hours=1) + 5.0
    cols = ["v1", "v2", "v3"]
    ctx = data[data["RecordID"].isin(data["RecordID"].unique()[:2])]
    run = H.run_one("odernn", data[["RecordID", "Time", *cols]],
                    {"plain": (ctx, ctx), "start": (H.with_window_start(ctx), ctx)}, cols,
                    dict(TINY, max_epochs=1, validation_fraction=0), 0)
    assert run["plain"]["mse"] != pytest.approx(run["start"]["mse"])


def test_periodic_window_start_runs_tiny():
    mod = importlib.import_module("periodic_window_start")
    out = mod.main(epochs=1, seed=0, n_series=10, n_points=10, **TINY)
    assert np.isfinite(out["with_start_row"]) and np.isfinite(out["without_start_row"])


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    """--data-dir, then $LATENTODE_DATA/physionet2012, then ../shared/data/physionet2012 next to the repository."""
    calibration = importlib.import_module("calibration")
    monkeypatch.delenv(H.DATA_ENV, raising=False)
    assert H.physionet_dir() == REPO.parent / "shared" / "data" / "physionet2012"
    monkeypatch.setenv(H.DATA_ENV, str(DATA.parent))  # tests/data holds physionet2012/set-a
    assert H.physionet_dir() == DATA
    assert H.physionet_paths() == [DATA / "set-a.tar.gz"]
    assert calibration.physionet_set_a() == DATA / "set-a.tar.gz"
    assert H.physionet_dir(tmp_path) == tmp_path  # the option wins over the variable
    with pytest.raises(FileNotFoundError, match=rf"{H.DATA_ENV}"):
        H.physionet_paths(tmp_path)
    with pytest.raises(FileNotFoundError, match="set-a"):
        calibration.physionet_set_a(data_dir=tmp_path)
    assert calibration.physionet_set_a(tmp_path / "x.tar.gz") == tmp_path / "x.tar.gz"
    monkeypatch.setenv(H.DATA_ENV, str(tmp_path))
    assert H.physionet_dir() == tmp_path / "physionet2012"
    for script in ("_harness.py", "calibration.py"):  # no absolute path of one machine
        assert "/work/" not in (REPO / "benchmarks" / script).read_text()


def test_streaming_benchmark_runs_tiny(tmp_path):
    """benchmarks/streaming.py's measurement, on 30 series of a tiny saved model."""
    import streaming

    est = LatentODERegressor(id_col="id", time_col="time", latent_dim=4, encoder_dim=8, width=8, n_layers=2,
                             max_epochs=1, random_state=0).fit(streaming.frame(20, seed=0))
    est.save(tmp_path / "model")
    for what in ("predict", "impute"):
        rec = streaming.run_one(str(tmp_path / "model"), 30, what)
        assert rec["rows"] == len(streaming.frame(30)) and rec["rows_per_s"] > 0
        assert rec["peak_rss_mb"] >= rec["frame_rss_mb"] > 0


REFERENCE_ENV = "LATENTODE_REFERENCE"  # a checkout of https://github.com/YuliaRubanova/latent_ode


def test_reference_speed_needs_a_reference_checkout(tmp_path, capsys):
    """benchmarks/reference_speed.py: a missing or wrong --reference directory is a clear error, before any work."""
    mod = importlib.import_module("reference_speed")
    with pytest.raises(ValueError, match="--reference .*no such directory"):
        mod.main(tmp_path / "missing", batch=2, steps=1, warmup=0, out_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--reference .*missing lib/utils.py"):
        mod.main(tmp_path / "empty", batch=2, steps=1, warmup=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="--reference DIR is required"):
        mod.main(None, out_dir=tmp_path)
    for argv in ([], ["--reference", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit):
            mod.cli(argv)
        assert "--reference" in capsys.readouterr().err
    assert not (tmp_path / "reference_speed.json").exists()
    assert "/work/" not in (REPO / "benchmarks" / "reference_speed.py").read_text()  # no default machine path


def test_reference_speed_runs_tiny(tmp_path):
    """The reference's own training step on 2 stays, timed and recorded (needs $LATENTODE_REFERENCE)."""
    ref = os.environ.get(REFERENCE_ENV)
    if not ref or not Path(ref).is_dir():
        pytest.skip(f"{REFERENCE_ENV} is not set to a directory (a checkout of YuliaRubanova/latent_ode)")
    import torch

    mod = importlib.import_module("reference_speed")
    rec = mod.main(ref, batch=2, steps=1, warmup=0, out_dir=tmp_path, data=DATA / "set-a.tar.gz")
    saved = json.loads((tmp_path / "reference_speed.json").read_text())
    assert saved["machine"] == rec["machine"] and saved["records"] == [{k: v for k, v in rec.items() if k != "machine"}]
    assert (rec["batch"], rec["steps"], rec["warmup"], rec["threads"], rec["n_traj_samples"]) == (2, 1, 0, 1, 3)
    assert rec["variables"] == 41 and rec["variable_order"] == "PhysioNet.params" and rec["quantization"] is None
    assert 0 < rec["union_grid"] <= rec["collated_grid"] <= 2 * rec["obs_times_max"]
    assert len(rec["seconds_all"]) == len(rec["cpu_seconds_all"]) == len(rec["loss_all"]) == 1
    assert rec["seconds_per_step"] > 0 and rec["cpu_seconds_per_step"] > 0 and np.isfinite(rec["loss_all"][0])
    assert rec["decoder_nfe_per_step"] > 0 and rec["encoder_nfe_per_step"] >= rec["union_grid"] - 1
    assert rec["peak_rss_mb"] >= rec["rss_before_steps_mb"] > 0 and rec["step_rss_mb"] >= 0
    assert rec["torch"] == torch.__version__ and len(rec["reference_sha256"]) == 64 and rec["shims"]
    assert "cores" in rec["machine"]
