"""The ``latentode`` command line end to end on small files in a temporary directory."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from latentode.cli import main
from latentode.datasets import make_synthetic

TINY = ["--latent-dim", "4", "--encoder-dim", "8", "--width", "16", "--max-epochs", "1",
        "--validation-fraction", "0", "--seed", "0", "--quiet"]
VARS = ["v1", "v2", "v3"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A CSV of 5 irregular series and a model fitted on it by ``latentode fit``."""
    d = tmp_path_factory.mktemp("cli")
    df, _ = make_synthetic(5, n_obs=(8, 12), random_state=0)
    df.to_csv(d / "data.csv", index=False)
    assert main(["fit", str(d / "data.csv"), "--model-dir", str(d / "model"), *TINY]) == 0
    return d, df


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_fit_saves_a_model(workdir):
    d, _ = workdir
    assert (d / "model" / "config.json").is_file() and (d / "model" / "weights.pt").is_file()


def test_fit_takes_the_encoder_and_readout(workdir):
    import json
    d, _ = workdir
    out = d / "model-attention"
    assert main(["fit", str(d / "data.csv"), "--model-dir", str(out), *TINY, "--encoder", "attention",
                 "--readout", "per_variable"]) == 0
    params = json.loads((out / "config.json").read_text())["params"]
    assert (params["encoder"], params["readout"]) == ("attention", "per_variable")


def test_predict_horizon_with_levels(workdir):
    d, df = workdir
    out = d / "forecast.csv"
    assert main(["predict", str(d / "data.csv"), "-m", str(d / "model"), "--horizon", "3", "--freq", "h",
                 "--level", "80", "95", "--n-samples", "20", "-o", str(out)]) == 0
    pred = pd.read_csv(out, parse_dates=["time"])
    assert len(pred) == 5 * 3
    assert {"id", "time", *VARS, "v1-lo-80", "v1-hi-80", "v3-lo-95", "v3-hi-95"} <= set(pred.columns)
    first = pred[pred["id"] == "s0000"]["time"].tolist()
    last = df[df["id"] == "s0000"]["time"].max()
    assert first == [last + pd.Timedelta(hours=h) for h in (1, 2, 3)]
    assert (pred["v2-lo-80"] <= pred["v2-hi-80"]).all()


def test_predict_times_file_parquet_and_rows(workdir):
    d, df = workdir
    q = df[["id", "time"]].iloc[::3].reset_index(drop=True)
    q.to_parquet(d / "queries.parquet")
    out = d / "pred.parquet"
    assert main(["predict", str(d / "data.csv"), "-m", str(d / "model"), "--times", str(d / "queries.parquet"),
                 "--quantiles", "0.1", "0.5", "0.9", "--std", "--n-samples", "20", "-o", str(out)]) == 0
    pred = pd.read_parquet(out)
    assert len(pred) == len(q) and {"v1-q-10", "v1-median", "v1-q-90", "v1-std"} <= set(pred.columns)
    np.testing.assert_array_equal(pred["time"].to_numpy(), q["time"].to_numpy())
    # no query option: predictions at the rows of the data
    assert main(["predict", str(d / "data.csv"), "-m", str(d / "model"), "-o", str(d / "rows.csv")]) == 0
    assert len(pd.read_csv(d / "rows.csv")) == len(df)


def test_impute_fills_every_gap(workdir):
    d, df = workdir
    out = d / "filled.csv"
    assert main(["impute", str(d / "data.csv"), "-m", str(d / "model"), "-o", str(out)]) == 0
    filled = pd.read_csv(out)
    assert filled.shape == df.shape and not filled[VARS].isna().any(axis=None)
    seen = df[VARS].notna().to_numpy()
    np.testing.assert_allclose(filled[VARS].to_numpy()[seen], df[VARS].to_numpy()[seen])


def test_errors_exit_2_with_one_line(workdir, capsys, tmp_path):
    d, df = workdir
    data, model = str(d / "data.csv"), str(d / "model")
    assert main(["fit", data, "-m", str(tmp_path / "m"), "--id-col", "patient", *TINY]) == 2
    one_line_error(capsys, "patient")
    assert main(["fit", data, "-m", str(tmp_path / "m"), "--value-cols", "v1,nope", *TINY]) == 2
    one_line_error(capsys, "nope")
    assert main(["fit", str(tmp_path / "absent.csv"), "-m", str(tmp_path / "m"), *TINY]) == 2
    one_line_error(capsys, "absent.csv", "does not exist")
    assert main(["impute", data, "-m", str(tmp_path / "no-model"), "-o", str(tmp_path / "o.csv")]) == 2
    one_line_error(capsys, "no saved model")
    import shutil

    shutil.copytree(model, tmp_path / "old")
    (tmp_path / "old" / "config.json").write_text('{"format_version": 99}')
    assert main(["impute", data, "-m", str(tmp_path / "old"), "-o", str(tmp_path / "o.csv")]) == 2
    one_line_error(capsys, "format_version 99")
    assert main(["impute", data, "-m", model, "-o", str(tmp_path / "o.xlsx")]) == 2
    one_line_error(capsys, "unknown file type")
    df.drop(columns="v2").to_csv(tmp_path / "short.csv", index=False)
    assert main(["impute", str(tmp_path / "short.csv"), "-m", model, "-o", str(tmp_path / "o.csv")]) == 2
    one_line_error(capsys, "v2")
    (tmp_path / "bad.csv").write_text("id,time,v1,v2,v3\na,yesterday,1,2,3\n")
    assert main(["predict", str(tmp_path / "bad.csv"), "-m", model, "-o", str(tmp_path / "o.csv")]) == 2
    one_line_error(capsys, "time")
    df[["time"]].to_csv(tmp_path / "q.csv", index=False)
    assert main(["predict", data, "-m", model, "--times", str(tmp_path / "q.csv"), "-o", str(tmp_path / "o.csv")]) == 2
    one_line_error(capsys, "'id'")
    assert main(["predict", data, "-m", model, "--horizon", "2", "-o", str(tmp_path / "o.csv")]) == 2
    one_line_error(capsys, "--freq")
    assert main(["predict", data, "-m", model, "--horizon", "2", "--freq", "often", "-o",
                 str(tmp_path / "o.csv")]) == 2
    one_line_error(capsys, "often")


def test_help_is_useful(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(w in out for w in ("fit", "predict", "impute", "CSV or Parquet"))
    for cmd, words in {"fit": ["--model-dir", "--id-col", "--time-col", "--value-cols", "--max-epochs"],
                       "predict": ["--times", "--horizon", "--freq", "--level", "--quantiles"],
                       "impute": ["--model-dir", "--output"]}.items():
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert all(w in out for w in words), (cmd, out)
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


def test_console_entry_point_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "latentode.cli", "impute", str(tmp_path / "x.csv"), "-m",
                        str(tmp_path), "-o", str(tmp_path / "y.csv")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_internal_errors_are_not_usage_errors(workdir, capsys, tmp_path, monkeypatch):
    """A ValueError from deep inside is a bug: traceback and exit code 1, not a one-line usage error."""
    d, _ = workdir
    from latentode import _training, estimator

    def broken(*args, **kwargs):
        raise ValueError("boom from deep inside")

    monkeypatch.setattr(estimator.LatentODERegressor, "_decode_points", broken)
    assert main(["impute", str(d / "data.csv"), "-m", str(d / "model"), "-o", str(tmp_path / "o.csv")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "boom from deep inside" in err and "internal error" in err
    monkeypatch.setattr(_training, "fit_loop", broken)
    monkeypatch.setattr(estimator, "fit_loop", broken)
    assert main(["fit", str(d / "data.csv"), "-m", str(tmp_path / "m"), *TINY]) == 1
    assert "Traceback" in capsys.readouterr().err
    # the same kind of exception raised by input validation is the user's: one line, exit 2
    assert main(["predict", str(d / "data.csv"), "-m", str(d / "model"), "--level", "0.8", "-o",
                 str(tmp_path / "o.csv")]) == 2
    one_line_error(capsys, "percent", "80")


def test_mixed_utc_offsets_fit_and_impute(tmp_path, capsys):
    """ISO times whose offset changes with daylight saving time (+01:00 and +02:00) are UTC-aware times."""
    df, _ = make_synthetic(5, n_obs=(6, 8), random_state=0)
    local = (df["time"] + pd.Timedelta(days=88)).dt.tz_localize("Europe/Paris", ambiguous="NaT",
                                                                 nonexistent="shift_forward")
    text = local.map(lambda t: t.isoformat())
    assert text.str.endswith("+01:00").any() and text.str.endswith("+02:00").any()
    df.assign(time=text).to_csv(tmp_path / "dst.csv", index=False)
    assert main(["fit", str(tmp_path / "dst.csv"), "-m", str(tmp_path / "m"), *TINY,
                 "--validation-fraction", "0.4"]) == 0
    err = capsys.readouterr().err
    assert "on 3 training and 2 validation series" in err, err  # not "on 5 series"
    assert main(["impute", str(tmp_path / "dst.csv"), "-m", str(tmp_path / "m"), "-o",
                 str(tmp_path / "out.csv")]) == 0
    out = pd.read_csv(tmp_path / "out.csv")
    same = pd.to_datetime(out["time"], utc=True) == pd.to_datetime(text, utc=True)  # written in UTC
    assert same.all() and not out[VARS].isna().any(axis=None)
    capsys.readouterr()
    df.assign(time=np.arange(len(df), dtype=float)).to_csv(tmp_path / "numeric.csv", index=False)
    assert main(["impute", str(tmp_path / "numeric.csv"), "-m", str(tmp_path / "m"), "-o",
                 str(tmp_path / "o.csv")]) == 2
    err = one_line_error(capsys, "fitted on datetimes", "'time'")
    assert "np.float64" not in err


def test_output_extension_and_param_strings(workdir, capsys, tmp_path):
    d, _ = workdir
    assert main(["impute", str(d / "data.csv"), "-m", str(d / "model"), "-o", str(tmp_path / "x.txt")]) == 2
    one_line_error(capsys, "x.txt", "unknown file type", ".parquet")
    assert not (tmp_path / "x.txt").exists()
    from latentode.cli import _param, build_parser

    assert _param("prior=cnf") == ("prior", "cnf") and _param("kl_warmup=5") == ("kl_warmup", 5)
    assert _param('prior_options={"trace": "exact"}') == ("prior_options", {"trace": "exact"})
    fit_help = " ".join(build_parser()._subparsers._group_actions[0].choices["fit"].format_help().split())
    assert "--param prior=cnf" in fit_help and '\\"' not in fit_help


def test_unnamed_id_column_is_pointed_out(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pd.DataFrame({"patient": np.repeat(np.arange(6), 5), "time": np.tile(np.arange(5.0), 6),
                  "v1": rng.normal(size=30)}).to_csv(tmp_path / "p.csv", index=False)
    assert main(["fit", str(tmp_path / "p.csv"), "-m", str(tmp_path / "m"), *TINY]) == 0
    err = capsys.readouterr().err
    assert "latentode fit: warning: " in err and "looks like a series id: pass --id-col patient" in err, err


def test_threads_option_reaches_the_estimator(tmp_path, monkeypatch):
    import torch

    from latentode import LatentODERegressor, cli
    from latentode.datasets import make_synthetic

    df, _ = make_synthetic(6, n_obs=(4, 6), random_state=0)
    data = tmp_path / "d.csv"
    df.to_csv(data, index=False)
    seen = []
    real_fit = LatentODERegressor.fit

    def spy(self, X, *args, **kwargs):
        seen.append(self.n_threads)
        out = real_fit(self, X, *args, **kwargs)
        seen.append(torch.get_num_threads())
        return out

    monkeypatch.setattr(LatentODERegressor, "fit", spy)
    before = torch.get_num_threads()
    code = cli.main(["fit", str(data), "-m", str(tmp_path / "m"), "--max-epochs", "1", "--latent-dim", "2",
                     "--width", "8", "--encoder-dim", "4", "--threads", "2", "-q"])
    assert code == 0 and seen[0] == 2 and torch.get_num_threads() == before
    assert cli.main(["impute", str(data), "-m", str(tmp_path / "m"), "-o", str(tmp_path / "o.csv"),
                     "--threads", "1"]) == 0
    with pytest.raises(SystemExit):
        cli.main(["impute", str(data), "-m", str(tmp_path / "m"), "-o", str(tmp_path / "o.csv"), "--threads", "0"])


def test_ranks_above_zero_write_nothing(workdir, tmp_path, monkeypatch):
    """Under torchrun every rank runs the command; rank 0 alone writes its output."""
    d, _ = workdir
    for rank, written in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        for cmd in ("impute", "predict"):
            out = tmp_path / f"{cmd}-{rank}.csv"
            assert main([cmd, str(d / "data.csv"), "-m", str(d / "model"), "-o", str(out)]) == 0
            assert out.exists() == written
