"""The examples run (at tiny size), so they cannot rot."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quickstart_runs_tiny(tmp_path):
    quickstart = load("quickstart")
    res = quickstart.main(n_series=15, max_epochs=1, plot=str(tmp_path / "q.png"), verbose=0, latent_dim=4,
                          encoder_dim=8, width=16)
    for task in ("impute", "forecast"):
        for who in ("model", "linear", "locf", "series_mean"):
            assert np.isfinite(res[f"{task}_mse_{who}"])
    assert res["hourly_rows"] > 0
