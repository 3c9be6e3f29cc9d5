"""Seconds per training step of the reference Latent ODE (Rubanova et al. 2019) at PhysioNet shapes.

The reference implementation is https://github.com/YuliaRubanova/latent_ode; its code is not part
of this repository. Pass a checkout of it with ``--reference DIR`` (the files used are listed in
``REFERENCE_FILES``; ``run_models.py`` and ``lib/parse_datasets.py`` are not imported, because they
pull in the MuJoCo, person-activity and periodic-data modules). The step is set beside
latentode's own figures from ``benchmarks/speed.py``.

Data: the stays of ``speed.physionet_like(batch)`` (the first ``batch`` stays of PhysioNet 2012
set-a, 41 variables, minute resolution; synthetic stays of the same shape when the data is
absent), turned into the reference's records ``(record_id, tt, vals, mask, labels)`` in the order
of ``physionet.PhysioNet.params``, with times in hours. By default the times are not rounded, so
the stays have the same observation times as in speed.py; ``--quantization Q`` rounds them to
multiples of ``Q`` hours and averages the values that fall together, as the reference's PhysioNet
loader does (its default is 0.1 h). Two differences from the reference's own loader: descriptor
values of -1 (unknown) are missing here (latentode's loader drops them), and the averaging within a
quantisation bin is over minute averages. Scaling is the reference's: ``get_data_min_max`` over the
loaded stays, then ``variable_time_collate_fn`` computes ``(x - min) / max`` per variable (so not
min-max scaling); a variable never observed in the loaded stays gets min 0 and max 1, since the
reference's ``normalize_masked_data`` would turn its infinite min and max into NaN (with the
reference's 8,000 stays this does not happen). The batch is collated once, outside the timed
steps, exactly as run_models.py does it for PhysioNet interpolation: ``variable_time_collate_fn``
(union time grid of the batch, scaled to [0, 1] by its largest time) with ``split_and_subsample_batch``
under ``--sample-tp None``, ``--cut-tp None``, no ``--extrap``, then ``utils.get_next_batch``.

Model: ``create_LatentODE_model`` with run_models.py's arguments ``--latent-ode -l 20 --rec-dims 40
--rec-layers 3 --gen-layers 3 --units 50 --gru-units 50 --z0-encoder odernn --dataset physionet``
(no ``--classif``, no ``--poisson``): ODE-RNN encoder (Euler, the reference's own steps), dopri5
decoder with the reference's rtol 1e-3 and atol 1e-4, obsrv_std 0.01, Normal(0, 1) prior, Adamax
with lr 1e-2, seed 1991. One step = ``optimizer.zero_grad(); loss =
model.compute_all_losses(batch, n_traj_samples=3, kl_coef=KL_COEF)['loss']; loss.backward();
optimizer.step()`` (run_models.py also decays the learning rate by 0.999 each step; that is left
out). One torch thread. Function evaluations are counted with forward pre-hooks on the decoder's
and the encoder's ``ODEFunc`` (the encoder calls its ODE function directly for short gaps and
through ``odeint`` for long ones; both are counted).

Runtime shims, applied by this script in the worker process only (the reference files are used
unchanged):

- ``torchvision``: physionet.py imports ``torchvision.datasets.utils.download_url`` (used only to
  download the data set). Where torchvision is not installed, a stub package is put in
  ``sys.modules`` whose ``download_url`` raises.
- The reference imports its modules as ``lib.*`` and ``physionet``: its directory is put first on
  ``sys.path``, and the script checks that ``lib`` was imported from there.

Run: ``python benchmarks/reference_speed.py --reference DIR [--batch 50] [--steps 2] [--warmup 1]``
(writes benchmarks/results/reference_speed.json and prints a table). The measurement runs in a
subprocess, so that peak RSS (VmHWM) is the reference's alone.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import peak_rss_mb, physionet_like  # noqa: E402

REFERENCE_FILES = ("lib/utils.py", "lib/encoder_decoder.py", "lib/likelihood_eval.py", "lib/base_models.py",
                   "lib/latent_ode.py", "lib/ode_func.py", "lib/diffeq_solver.py", "lib/create_latent_ode_model.py",
                   "physionet.py")
N_TRAJ_SAMPLES = 3  # run_models.py: compute_all_losses(batch_dict, n_traj_samples = 3, kl_coef = kl_coef)
KL_COEF = 1.0  # run_models.py uses 0 for the first 10 epochs, then 1 - 0.99 ** (epoch - 10): the cost is the same
SEED = 1991  # run_models.py's default --random-seed


# ---------------------------------------------------------------------------- the reference code
def check_reference(reference) -> Path:
    """The reference checkout as a resolved path.

    Parameters
    ----------
    reference : str or os.PathLike or None
        A checkout of https://github.com/YuliaRubanova/latent_ode.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        ``reference`` is None, is not a directory, or lacks one of ``REFERENCE_FILES``; the message
        names ``--reference``.
    """
    if reference is None:
        raise ValueError("--reference DIR is required: a checkout of https://github.com/YuliaRubanova/latent_ode")
    path = Path(reference).expanduser()
    if not path.is_dir():
        raise ValueError(f"--reference {reference}: no such directory (expected a checkout of "
                         "https://github.com/YuliaRubanova/latent_ode)")
    missing = [f for f in REFERENCE_FILES if not (path / f).is_file()]
    if missing:
        raise ValueError(f"--reference {reference}: not a checkout of YuliaRubanova/latent_ode (missing "
                         f"{', '.join(missing)})")
    return path.resolve()


def reference_digest(reference: Path) -> str:
    """SHA-256 of ``REFERENCE_FILES`` in ``reference`` (which version of the reference was timed)."""
    h = hashlib.sha256()
    for name in REFERENCE_FILES:
        h.update(name.encode() + b"\0" + (reference / name).read_bytes() + b"\0")
    return h.hexdigest()


def reference_commit(reference: Path):
    """``git rev-parse HEAD`` of the checkout, or None where it is not a git checkout."""
    if not (reference / ".git").exists():
        return None
    res = subprocess.run(["git", "-C", str(reference), "rev-parse", "HEAD"], capture_output=True, text=True)
    return (res.stdout.strip() or None) if res.returncode == 0 else None


def install_shims() -> list:
    """Put what the reference needs and this environment lacks into ``sys.modules``; return their names."""
    shims = []
    if importlib.util.find_spec("torchvision") is None:
        def download_url(*args, **kwargs):
            raise RuntimeError("torchvision is a stub here (benchmarks/reference_speed.py): no downloads")

        pkg = types.ModuleType("torchvision")
        datasets = types.ModuleType("torchvision.datasets")
        utils = types.ModuleType("torchvision.datasets.utils")
        utils.download_url = download_url
        pkg.datasets, datasets.utils = datasets, utils
        pkg.__path__, datasets.__path__ = [], []
        sys.modules.update({"torchvision": pkg, "torchvision.datasets": datasets, "torchvision.datasets.utils": utils})
        shims.append("torchvision stub (physionet.py imports torchvision.datasets.utils.download_url)")
    return shims


def import_reference(reference: Path):
    """Import the reference's modules from ``reference``; return (physionet, lib.utils, create_LatentODE_model, shims)."""
    shims = install_shims()
    sys.path.insert(0, str(reference))
    import lib.utils as ref_utils
    import physionet
    from lib.create_latent_ode_model import create_LatentODE_model

    for mod in (ref_utils, physionet):
        if not Path(mod.__file__).resolve().is_relative_to(reference):
            raise RuntimeError(f"{mod.__name__} was imported from {mod.__file__}, not from --reference {reference}")
    return physionet, ref_utils, create_LatentODE_model, shims


def reference_args(batch: int, quantization=None) -> argparse.Namespace:
    """run_models.py's arguments for the Latent ODE on PhysioNet interpolation at the benchmark's size."""
    return argparse.Namespace(
        n=batch, niters=1, lr=1e-2, batch_size=batch, random_seed=SEED, dataset="physionet", sample_tp=None,
        cut_tp=None, quantization=quantization, latent_ode=True, z0_encoder="odernn", latents=20, rec_dims=40,
        rec_layers=3, gen_layers=3, units=50, gru_units=50, poisson=False, classif=False, linear_classif=False,
        extrap=False)


# ---------------------------------------------------------------------------- data
def load_stays(batch: int, data=None):
    """The first ``batch`` stays: speed.py's ``physionet_like``, or those of a set-a archive or directory ``data``."""
    if data is None:
        return physionet_like(batch)
    from latentode.datasets import load_physionet2012

    df = load_physionet2012(data)
    ids = df["RecordID"].drop_duplicates().iloc[:batch]
    return (df[df["RecordID"].isin(ids)].rename(columns={"RecordID": "id", "Time": "time"}),
            f"PhysioNet {Path(data).name}")


def to_records(df, params, quantization=None):
    """The reference's records ``(record_id, tt, vals, mask, labels)`` from a long frame (id, time, variables).

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``id``, ``time`` (hours) and one column per variable (NaN = not observed).
    params : sequence of str
        The reference's variable order (``physionet.PhysioNet.params``); used where the frame has
        exactly these variables, else the frame's own column order is kept.
    quantization : float, optional
        Round times to multiples of this many hours and average the values falling together, as
        the reference's ``PhysioNet`` loader does. None keeps the times as they are.

    Returns
    -------
    records : list of tuple
    variable_order : str
        ``"PhysioNet.params"`` or ``"frame"``.
    """
    import torch

    cols = [c for c in df.columns if c not in ("id", "time")]
    if sorted(cols) == sorted(params):
        cols, order = list(params), "PhysioNet.params"
    else:
        order = "frame"
    df = df[["id", "time", *cols]]
    if quantization:
        df = (df.assign(time=np.round(df["time"].to_numpy() / quantization) * quantization)
              .groupby(["id", "time"], sort=True).mean().reset_index())
    records = []
    for rid, g in df.sort_values(["id", "time"]).groupby("id", sort=True):
        v = g[cols].to_numpy(dtype=np.float64)
        mask = ~np.isnan(v)
        records.append((str(rid), torch.tensor(g["time"].to_numpy(dtype=np.float64).tolist()),
                        torch.tensor(np.where(mask, v, 0.0), dtype=torch.float32),
                        torch.tensor(mask, dtype=torch.float32), None))
    return records, order


# ---------------------------------------------------------------------------- the measurement
def run_one(cfg: dict) -> dict:
    """One measurement, in this process (the worker): build, collate, warm up, time ``cfg['steps']`` steps."""
    import pandas as pd
    import torch
    import torchdiffeq
    from torch.distributions.normal import Normal
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    reference = check_reference(cfg["reference"])
    physionet, ref_utils, create_model, shims = import_reference(reference)
    shims = shims + ["sys.path[0] = the --reference directory (lib.* and physionet imported from it)"]
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    device = torch.device("cpu")

    df, source = pd.read_pickle(cfg["data_pickle"])
    args = reference_args(cfg["batch"], cfg.get("quantization"))
    records, order = to_records(df, physionet.PhysioNet.params, args.quantization)
    records = records[:cfg["batch"]]
    data_min, data_max = physionet.get_data_min_max(records)
    unobserved = torch.isinf(data_min)
    data_min, data_max = data_min.clone(), data_max.clone()
    data_min[unobserved], data_max[unobserved] = 0.0, 1.0

    t0 = time.perf_counter()
    loader = DataLoader(records, batch_size=args.batch_size, shuffle=False, collate_fn=lambda b: (
        physionet.variable_time_collate_fn(b, args, device, data_type="train", data_min=data_min, data_max=data_max)))
    collated = next(iter(loader))
    batch = ref_utils.get_next_batch(iter([collated]))  # run_models.py: utils.get_next_batch(train_dataloader)
    collate_s = time.perf_counter() - t0

    obsrv_std = torch.Tensor([0.01]).to(device)  # as run_models.py
    z0_prior = Normal(torch.Tensor([0.0]).to(device), torch.Tensor([1.]).to(device))
    input_dim = records[0][2].size(-1)
    model = create_model(args, input_dim, z0_prior, obsrv_std, device, classif_per_tp=False, n_labels=1)
    optimizer = torch.optim.Adamax(model.parameters(), lr=args.lr)

    nfe = {"decoder": 0, "encoder": 0}

    def counter(name):
        def hook(module, inputs):
            nfe[name] += 1
        return hook

    model.diffeq_solver.ode_func.register_forward_pre_hook(counter("decoder"))
    model.encoder_z0.z0_diffeq_solver.ode_func.register_forward_pre_hook(counter("encoder"))

    def step() -> float:
        optimizer.zero_grad()
        loss = model.compute_all_losses(batch, n_traj_samples=N_TRAJ_SAMPLES, kl_coef=KL_COEF)["loss"]
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(cfg["warmup"]):
        step()
    base_rss = peak_rss_mb()
    wall, cpu, dec, enc, losses = [], [], [], [], []
    for _ in range(cfg["steps"]):
        d0, e0 = nfe["decoder"], nfe["encoder"]
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(step())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        dec.append(nfe["decoder"] - d0)
        enc.append(nfe["encoder"] - e0)
    peak = peak_rss_mb()
    lengths = np.array([len(r[1]) for r in records])
    return dict(
        batch=len(records), steps=cfg["steps"], warmup=cfg["warmup"], threads=torch.get_num_threads(),
        n_traj_samples=N_TRAJ_SAMPLES, kl_coef=KL_COEF, quantization=args.quantization, source=source,
        variables=int(input_dim), variable_order=order, unobserved_variables=int(unobserved.sum()),
        scaling="reference: (x - min) / max per variable, min and max over the loaded stays (get_data_min_max)",
        obs_times_median=float(np.median(lengths)), obs_times_max=int(lengths.max()),
        collated_grid=int(collated["observed_tp"].numel()), union_grid=int(batch["observed_tp"].numel()),
        seconds_per_step=float(np.median(wall)), seconds_all=wall, cpu_seconds_per_step=float(np.median(cpu)),
        cpu_seconds_all=cpu, decoder_nfe_per_step=float(np.mean(dec)), decoder_nfe_all=dec,
        encoder_nfe_per_step=float(np.mean(enc)), encoder_nfe_all=enc, loss_all=losses,
        peak_rss_mb=peak, rss_before_steps_mb=base_rss, step_rss_mb=peak - base_rss, collate_s=collate_s,
        n_params=sum(p.numel() for p in model.parameters()), torch=torch.__version__,
        torchdiffeq=getattr(torchdiffeq, "__version__", "unknown"), python=platform.python_version(),
        reference_sha256=reference_digest(reference), reference_commit=reference_commit(reference), shims=shims)


def machine_string() -> str:
    """Processor, core count and platform, as speed.py records them."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"


def _command(reference) -> str:
    """This run's command line, with the checkout's path written as ``REF`` (no path of this machine)."""
    args, after = [], False
    for a in sys.argv[1:]:
        args.append("REF" if after else ("--reference=REF" if a.startswith("--reference=") else a))
        after = a == "--reference"
    return " ".join(["python", "benchmarks/reference_speed.py", *args])


def main(reference, batch: int = 50, steps: int = 2, warmup: int = 1, out_dir=None, quantization=None,
         data=None) -> dict:
    """Time the reference's training step in a subprocess; print a markdown table; write and return the record.

    Parameters
    ----------
    reference : str or os.PathLike
        A checkout of https://github.com/YuliaRubanova/latent_ode (``--reference``).
    batch : int, default 50
        Stays in the batch (the first ``batch`` of the data).
    steps : int, default 2
        Timed steps (the record holds each one and their median).
    warmup : int, default 1
        Untimed steps before them.
    out_dir : str or os.PathLike, optional
        Folder of ``reference_speed.json``; default benchmarks/results.
    quantization : float, optional
        Round observation times to multiples of this many hours, as the reference's loader does
        (``--quantization``; the reference's default is 0.1). None keeps minute resolution.
    data : str or os.PathLike, optional
        A PhysioNet set-a archive or directory to take the stays from; default speed.py's
        ``physionet_like`` (the shared set-a, else synthetic stays of the same shape).

    Returns
    -------
    dict
        The record written under ``records`` in the JSON file, with ``machine`` added.

    Raises
    ------
    ValueError
        ``reference`` is missing or not a checkout of the reference (the message names
        ``--reference``), or ``batch`` or ``steps`` is below 1 or ``warmup`` below 0.
    RuntimeError
        The measurement failed (the message holds the end of its stderr).
    """
    reference = check_reference(reference)
    if batch < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, steps >= 1, warmup >= 0 (got {batch}, {steps}, {warmup})")
    out_dir = Path(out_dir) if out_dir is not None else ROOT / "benchmarks" / "results"
    with tempfile.TemporaryDirectory() as tmp:
        data_pickle = Path(tmp) / "stays.pkl"
        data_pickle.write_bytes(pickle.dumps(load_stays(batch, data)))
        cfg = dict(reference=str(reference), batch=batch, steps=steps, warmup=warmup, quantization=quantization,
                   data_pickle=str(data_pickle))
        env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        res = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True,
                             cwd=ROOT, env=env)
    if res.returncode:
        raise RuntimeError(f"the reference's step failed:\n{res.stderr[-3000:]}")
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    machine = machine_string()
    print(f"reference Latent ODE (YuliaRubanova/latent_ode); data: {rec['source']}; batch {rec['batch']}; median "
          f"{rec['obs_times_median']:.0f} observation times per stay (max {rec['obs_times_max']}); union grid "
          f"{rec['union_grid']}; quantization {rec['quantization']}; torch {rec['torch']}; machine: {machine}\n")
    print("| batch | union grid | traj samples | s / step | CPU s / step | decoder NFE / step | encoder NFE / step | "
          "peak RSS MB | RSS growth in steps MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {rec['batch']} | {rec['union_grid']} | {rec['n_traj_samples']} | {rec['seconds_per_step']:.1f} | "
          f"{rec['cpu_seconds_per_step']:.1f} | {rec['decoder_nfe_per_step']:.0f} | {rec['encoder_nfe_per_step']:.0f} | "
          f"{rec['peak_rss_mb']:.0f} | {rec['step_rss_mb']:.0f} |")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "reference_speed.json").write_text(json.dumps({"machine": machine, "command": _command(reference),
                                                                "records": [rec]}, indent=1))
    return dict(rec, machine=machine)


def cli(argv=None):
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description="Seconds per training step of the reference Latent ODE "
                                             "(YuliaRubanova/latent_ode) at PhysioNet shapes.")
    ap.add_argument("--reference", type=Path, metavar="DIR",
                    help="a checkout of https://github.com/YuliaRubanova/latent_ode (required)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--steps", type=int, default=2, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    ap.add_argument("--quantization", type=float, default=None,
                    help="round times to multiples of this many hours, as the reference's loader (its default 0.1)")
    ap.add_argument("--data", type=Path, default=None, help="a PhysioNet set-a archive or directory")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder of the JSON result")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(json.loads(a.one))))
        return None
    try:
        check_reference(a.reference)
    except ValueError as e:
        ap.error(str(e))
    return main(a.reference, a.batch, a.steps, a.warmup, a.out, quantization=a.quantization, data=a.data)


if __name__ == "__main__":
    cli()
