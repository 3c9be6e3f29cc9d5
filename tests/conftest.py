import numpy as np
import pandas as pd
import pytest
import torch

from latentode import LatentODERegressor
from latentode.datasets import make_synthetic

# On 2 cores one intra-op thread was faster for these small models (see BENCHMARKS.md).
torch.set_num_threads(1)

TINY = dict(latent_dim=4, encoder_dim=8, width=16, n_layers=2, max_epochs=2, batch_size=8,
            validation_fraction=0.0, random_state=0)


@pytest.fixture(scope="session")
def synth():
    df, truth = make_synthetic(12, n_obs=(5, 12), random_state=1)
    return df, truth


@pytest.fixture(scope="session")
def fitted(synth):
    df, _ = synth
    return LatentODERegressor(**TINY).fit(df)


def with_time_kind(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The synthetic frame with its time column converted to another kind."""
    out = df.copy()
    hours = (df["time"] - pd.Timestamp("2024-01-01")) / pd.Timedelta(hours=1)
    if kind == "float":
        out["time"] = hours.to_numpy()
    elif kind == "int":
        out["time"] = np.round(hours.to_numpy() * 60).astype(np.int64)
    elif kind == "datetime":
        pass
    elif kind == "datetime_tz":
        out["time"] = df["time"].dt.tz_localize("Europe/Paris")
    elif kind == "timedelta":
        out["time"] = pd.to_timedelta(hours.to_numpy(), unit="h")
    else:
        raise ValueError(kind)
    return out
