"""The ``latentode`` command: fit, predict and impute on CSV or Parquet files.

Examples
--------
::

    latentode fit train.csv --model-dir model --id-col id --time-col time --max-epochs 50
    latentode predict context.csv --model-dir model --horizon 24 --freq h --level 80 95 -o forecast.csv
    latentode predict context.csv --model-dir model --times queries.parquet -o pred.parquet
    latentode impute data.csv --model-dir model -o filled.csv

Errors about files, columns or options print one line to stderr and exit with code 2. Any
other error is a bug: it is shown with its traceback and exits with code 1.
"""

from __future__ import annotations

import argparse
import os
import json
import re
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from ._times import parse_text_times
from ._validation import InputError
from .decoder import READOUTS, SolverError
from .encoders import ENCODERS

_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".txt")
_PARQUET = (".parquet", ".pq")
_OUT_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")


class UsageError(Exception):
    """A user error: reported as one line, exit code 2."""


def _kind(path: Path, what: str, csv=_CSV) -> str:
    name = path.name.lower()
    if name.endswith(csv):
        return "csv"
    if name.endswith(_PARQUET):
        return "parquet"
    raise UsageError(f"{what} {str(path)!r}: unknown file type; use one of {list(csv + _PARQUET)}.")


def read_table(path, what="input file", id_col=None) -> pd.DataFrame:
    """Read a CSV or Parquet file (by extension); CSV ids are read as strings."""
    path = Path(path)
    kind = _kind(path, what)
    if not path.is_file():
        raise UsageError(f"{what} {str(path)!r} does not exist.")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={id_col: str} if id_col else None)
    except ImportError as err:
        raise UsageError(f"reading {path}: {err} (pip install 'latentode[parquet]')") from err
    except Exception as err:  # parser errors of pandas/pyarrow come in many classes
        raise UsageError(f"cannot read {what} {str(path)!r}: {str(err).splitlines()[0] if str(err) else err!r}") \
            from err


def write_table(frame: pd.DataFrame, path) -> None:
    path = Path(path)
    kind = _kind(path, "output file", _OUT_CSV)
    if not path.parent.is_dir():
        raise UsageError(f"output directory {str(path.parent)!r} does not exist.")
    if kind == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def _parse_times(frame: pd.DataFrame, time_col: str, kind=None, what="input file") -> pd.DataFrame:
    """Turn a text time column into datetimes (CSV files hold text); numbers are kept."""
    if time_col not in frame.columns:
        raise UsageError(f"{what}: time column {time_col!r} not found; columns: {list(frame.columns)}.")
    col = frame[time_col]
    want_datetime = kind is not None and kind.kind == "datetime"
    is_text = ptypes.is_object_dtype(col.dtype) or ptypes.is_string_dtype(col.dtype)
    example = col.dropna().iloc[0] if col.notna().any() else None
    example = example.item() if hasattr(example, "item") else example
    if want_datetime and ptypes.is_numeric_dtype(col.dtype) and not ptypes.is_bool_dtype(col.dtype):
        raise UsageError(f"{what}: the model was fitted on datetimes, but time column {time_col!r} holds numbers "
                         f"(e.g. {example!r}); give ISO dates such as 2024-01-31T08:00.")
    if (want_datetime and not ptypes.is_datetime64_any_dtype(col.dtype)) or (kind is None and is_text):
        parsed = parse_text_times(col)  # mixed UTC offsets (daylight saving) become UTC
        if not ptypes.is_datetime64_any_dtype(parsed.dtype):
            fitted = " (the model was fitted on datetimes)" if want_datetime else ""
            raise UsageError(f"{what}: time column {time_col!r} holds neither numbers nor ISO dates "
                             f"(e.g. {example!r}){fitted}.")
        if kind is not None and kind.tz is not None and parsed.dt.tz is None:
            parsed = parsed.dt.tz_localize(kind.tz)
        frame = frame.assign(**{time_col: parsed})
    elif kind is not None and kind.kind == "timedelta" and not ptypes.is_timedelta64_dtype(col.dtype):
        try:
            frame = frame.assign(**{time_col: pd.to_timedelta(col)})
        except (ValueError, TypeError) as err:
            raise UsageError(f"{what}: time column {time_col!r} does not hold time spans.") from err
    return frame


def _load_model(model_dir):
    from .estimator import LatentODERegressor

    try:
        return LatentODERegressor.load(model_dir, device="cpu")
    except FileNotFoundError as err:
        raise UsageError(f"model directory {str(model_dir)!r}: no saved model there (run `latentode fit` "
                         "with --model-dir first).") from err
    except ValueError as err:  # load's own checks of the files (format version, JSON): the user's files
        raise UsageError(f"model directory {str(model_dir)!r}: cannot load it: {err}") from err


def _read_for_model(path, est, what="input file"):
    frame = read_table(path, what, est.id_col_)
    return _parse_times(frame, est.time_col_, est.time_kind_, what)


def _param(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:  # not JSON: a plain string, so prior=cnf works without shell quoting
        return key, value


# ---------------------------------------------------------------------- commands
def cmd_fit(a) -> int:
    from . import _distributed
    from .estimator import LatentODERegressor

    unknown = [k for k, _ in a.param if k not in LatentODERegressor().get_params()]
    if unknown:
        raise UsageError(f"--param {unknown} are not parameters of LatentODERegressor; valid: "
                         f"{sorted(LatentODERegressor().get_params())}.")
    value_cols = [c.strip() for c in a.value_cols.split(",") if c.strip()] if a.value_cols else None
    frame = read_table(a.data, "data file", a.id_col)
    time_col = a.time_col
    if time_col is None:
        from ._frame import TIME_CANDIDATES, _find
        time_col = _find(list(frame.columns), TIME_CANDIDATES)
        if time_col is None:
            raise UsageError(f"data file has no time column among {list(TIME_CANDIDATES)}; pass --time-col; "
                             f"columns: {list(frame.columns)}.")
    frame = _parse_times(frame, time_col, what="data file")
    params = dict(id_col=a.id_col, time_col=time_col, value_cols=value_cols, random_state=a.seed,
                  verbose=0 if a.quiet else 1, device=a.device, n_threads=a.threads)
    for name in ("encoder", "readout", "latent_dim", "encoder_dim", "width", "max_epochs", "batch_size", "lr",
                 "validation_fraction"):  # given options only: the rest are the estimator's defaults
        if getattr(a, name) is not None:
            params[name] = getattr(a, name)
    params.update(dict(a.param))
    est = LatentODERegressor(**params)
    t0 = time.perf_counter()
    est.fit(frame)  # under torchrun every rank trains; rank 0 alone writes and reports
    if _is_main_rank():
        _report_fit(frame, est, est.save(a.model_dir), time.perf_counter() - t0)
    _distributed.finish()  # the ranks leave together, once the model is written
    return 0


def _report_fit(frame, est, path, seconds) -> None:
    """The one line a fit reports on stderr: epochs, time, processes, split, variables and where it was saved."""
    n_series = frame[est.id_col_].nunique() if est.id_col_ is not None else 1
    n_valid = int(round(est.validation_fraction * n_series)) if n_series > 1 else 0
    split = f"{n_series - n_valid} training and {n_valid} validation series" if n_valid else \
        f"{n_series} training series (no validation)"
    where = f" on {est.world_size_} processes" if est.world_size_ > 1 else ""
    print(f"fitted {len(est.history_)} epochs in {seconds:.1f} s{where} on {split}, "
          f"variables {list(est.feature_names_in_)}; saved to {path}", file=sys.stderr)


def _is_main_rank() -> bool:
    """False on the ranks above 0 of a torch.distributed or torchrun job (they compute, but write nothing)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def _horizon_queries(frame, est, horizon, freq) -> pd.DataFrame:
    """``horizon`` steps of ``freq`` after each series' last time."""
    tcol, icol = est.time_col_, est.id_col_
    if est.time_kind_.kind == "numeric":
        try:
            step = float(freq)
        except ValueError as err:
            raise UsageError(f"--freq {freq!r}: the model's time is numeric, so --freq must be a number.") from err
    else:
        try:
            step = pd.to_timedelta(pd.tseries.frequencies.to_offset(freq))
        except (ValueError, TypeError) as err:
            raise UsageError(f"--freq {freq!r} is not a fixed pandas frequency such as 'h', '15min', '1D'.") \
                from err
    last = frame.groupby(icol, sort=False)[tcol].max() if icol is not None else pd.Series([frame[tcol].max()])
    k = np.arange(1, horizon + 1)
    times = np.repeat(last.to_numpy(), horizon)
    if est.time_kind_.kind == "numeric":
        qt = pd.Series(times.astype(float) + np.tile(k, len(last)) * step)
    else:
        qt = pd.Series(pd.Series(times, dtype=frame[tcol].dtype) + pd.to_timedelta(np.tile(k, len(last)) * step))
    out = {tcol: qt.reset_index(drop=True)}
    if icol is not None:
        out = {icol: pd.Series(np.repeat(last.index.to_numpy(), horizon), dtype=frame[icol].dtype), **out}
    return pd.DataFrame(out)


def cmd_predict(a) -> int:
    est = _load_model(a.model_dir)
    est.n_threads = a.threads
    frame = _read_for_model(a.data, est, "data file")
    if a.times is not None and a.horizon is not None:
        raise UsageError("pass --times or --horizon, not both.")
    if a.quantiles and a.level:
        raise UsageError("pass --level or --quantiles, not both.")
    times = None
    if a.times is not None:
        times = _read_for_model(a.times, est, "times file")
        need = [c for c in (est.id_col_, est.time_col_) if c is not None]
        missing = [c for c in need if c not in times.columns]
        if missing:
            raise UsageError(f"times file lacks the columns {missing}; columns: {list(times.columns)}.")
        times = times[need]
    elif a.horizon is not None:
        if a.freq is None:
            raise UsageError("--horizon needs --freq (e.g. 'h' for datetimes, a number for numeric time).")
        if a.horizon < 1:
            raise UsageError(f"--horizon must be >= 1, got {a.horizon}.")
        times = _horizon_queries(frame, est, a.horizon, a.freq)
    pred = est.predict(frame, times=times, level=a.level or None, quantiles=a.quantiles or None,
                       return_std=a.std, n_samples=a.n_samples, random_state=a.seed)
    if _is_main_rank():  # under torchrun every rank predicts the same rows; one writes them
        write_table(pred, a.output)
        print(f"wrote {len(pred)} rows to {a.output}", file=sys.stderr)
    return 0


def cmd_impute(a) -> int:
    est = _load_model(a.model_dir)
    est.n_threads = a.threads
    frame = _read_for_model(a.data, est, "data file")
    out = est.impute(frame)
    if _is_main_rank():
        write_table(out, a.output)
        print(f"wrote {len(out)} rows to {a.output}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- parser
def _threads(text: str):
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return n


def _threads_option(p) -> None:
    p.add_argument("--threads", type=_threads, default="auto", metavar="N",
                   help="torch threads ('auto': 1 on CPU, where a second thread on these small matrices mostly "
                        "spins; default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latentode",
        description="Latent ODEs for irregularly sampled multivariate time series in long format "
                    "(one row per series and time, one column per variable, empty = not measured). "
                    "Files are CSV or Parquet, chosen by extension.",
        epilog="Run `latentode COMMAND --help` for a command's options. Errors in the input or options exit "
               "with code 2; an internal error (a bug) shows a traceback and exits with code 1.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    f = sub.add_parser("fit", help="fit a model on a long table and save it to a directory",
                       description="Fit a LatentODERegressor on a long table and save it (config.json, "
                                   "weights.pt) to --model-dir. Shows a progress bar unless --quiet.")
    f.add_argument("data", type=Path, help="training table (.csv or .parquet)")
    f.add_argument("--model-dir", "-m", type=Path, required=True, help="directory to save the model to")
    f.add_argument("--id-col", help="series id column (default: 'unique_id' or 'id'; none = one series)")
    f.add_argument("--time-col", help="time column, numbers or ISO dates (default: 'ds', 'time' or 'timestamp')")
    f.add_argument("--value-cols", help="comma-separated variable columns (default: all other columns)")
    f.add_argument("--encoder", choices=sorted(ENCODERS), help="default: odernn")
    f.add_argument("--readout", choices=["auto", *READOUTS], help="default: auto (per_variable when the variables "
                   "are measured at their own times, as ICU labs are; linear otherwise)")
    f.add_argument("--latent-dim", type=int, help="default: 20")
    f.add_argument("--encoder-dim", type=int, help="default: 40")
    f.add_argument("--width", type=int, help="MLP width (default: 50)")
    f.add_argument("--max-epochs", type=int, help="default: 20")
    f.add_argument("--batch-size", type=int, help="default: 50")
    f.add_argument("--lr", type=float, help="Adam learning rate (default: 0.01)")
    f.add_argument("--validation-fraction", type=float, default=None,
                   help="share of series held out for early stopping, 0 disables (default: %(default)s)")
    f.add_argument("--seed", type=int, default=None, help="random seed (default: none)")
    f.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    f.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="any other LatentODERegressor parameter (repeatable); VALUE is read as JSON, "
                        "else as a string, e.g. --param prior=cnf --param kl_warmup=5 "
                        "--param 'prior_options={\"trace\": \"exact\"}'")
    f.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _threads_option(f)
    f.set_defaults(func=cmd_fit)

    pr = sub.add_parser("predict", help="predict means and intervals at query times",
                        description="Condition on the observed rows of DATA and write predictions: at the rows "
                                    "of DATA (default), at the (id, time) rows of --times, or --horizon steps of "
                                    "--freq after each series' last time. Output columns: id, time, one mean per "
                                    "variable, then {var}-lo-{level}/{var}-hi-{level}, {var}-q-{100q} or "
                                    "{var}-std as asked.")
    pr.add_argument("data", type=Path, help="context table (.csv or .parquet), the model's columns")
    pr.add_argument("--model-dir", "-m", type=Path, required=True, help="a directory written by `latentode fit`")
    pr.add_argument("--output", "-o", type=Path, required=True, help="output table (.csv or .parquet, by extension)")
    pr.add_argument("--times", type=Path, help="table of (id, time) query rows, the model's column names")
    pr.add_argument("--horizon", type=int, help="number of steps to forecast after each series' last time")
    pr.add_argument("--freq", help="step of --horizon: a pandas frequency ('h', '30min', '1D') for datetime "
                                   "data, a number for numeric time")
    pr.add_argument("--level", type=float, nargs="+", metavar="LEVEL",
                    help="central prediction intervals in percent, e.g. --level 80 95 (not 0.8)")
    pr.add_argument("--quantiles", type=float, nargs="+", metavar="Q", help="quantiles in (0, 1), e.g. 0.1 0.5 0.9")
    pr.add_argument("--std", action="store_true", help="add the predictive standard deviation {var}-std")
    pr.add_argument("--n-samples", type=int, default=200,
                    help="predictive samples behind intervals (default: %(default)s)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the samples (default: %(default)s)")
    _threads_option(pr)
    pr.set_defaults(func=cmd_predict)

    im = sub.add_parser("impute", help="fill the empty values of a table",
                        description="Fill every empty variable value of DATA with the model's reconstruction; "
                                    "observed values, rows and columns are kept.")
    im.add_argument("data", type=Path, help="table with missing values (.csv or .parquet)")
    im.add_argument("--model-dir", "-m", type=Path, required=True, help="a directory written by `latentode fit`")
    im.add_argument("--output", "-o", type=Path, required=True, help="output table (.csv or .parquet, by extension)")
    _threads_option(im)
    im.set_defaults(func=cmd_impute)
    return p


#: What the command reports as the user's mistake (one line, exit code 2). ValueError and TypeError
#: in general are not in it: raised from inside the package they are bugs.
USER_ERRORS = (UsageError, InputError, FileNotFoundError, SolverError)


def _show_warning(command):
    """Warnings as one line each, with the API's ``id_col=...`` spelled as the option ``--id-col ...``."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = re.sub(r"\b(id|time|value)_col(?:s)?=\[?'?([^'.\]]*)'?\]?", lambda m: f"--{m[1]}-col {m[2]}",
                      " ".join(str(message).split()))
        print(f"latentode {command}: warning: {text}", file=sys.stderr)

    return show


def main(argv=None) -> int:
    """Entry point of the ``latentode`` console script; returns the exit code."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(a.command)
            return a.func(a)
    except USER_ERRORS as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"latentode {a.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception:  # a bug, not the user's input: keep the traceback
        traceback.print_exc()
        print(f"latentode {a.command}: internal error (a bug in latentode, not in your input; please report it "
              "with the traceback above).", file=sys.stderr)
        return 1


def run() -> None:
    """``latentode`` and ``python -m latentode``: run :func:`main` and exit with its code (after a torchrun job,
    without the interpreter's teardown: :func:`latentode._distributed.exit_process`)."""
    from ._distributed import exit_process

    exit_process(main())


if __name__ == "__main__":  # pragma: no cover
    run()
