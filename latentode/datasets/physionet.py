"""Reader for the PhysioNet/Computing in Cardiology Challenge 2012 files, in their original format.

The challenge (Silva et al., CinC 2012; https://physionet.org/content/challenge-2012/1.0.0/,
ODC-BY 1.0) distributes one CSV file per ICU stay, ``<RecordID>.txt``, with the header
``Time,Parameter,Value``. ``Time`` is ``HH:MM`` since ICU admission (0 to 48 h). At ``00:00`` come
``RecordID`` and the five static descriptors ``Age, Gender, Height, ICUType, Weight`` (``-1`` =
unknown); then time-series rows for up to 37 variables (``Weight`` recurs as a time series).

Parsing is vectorised over all stays at once: the files' bytes are concatenated, every line is
checked with numpy (field count, ``HH:MM`` time), ``Parameter`` and ``Value`` are parsed in one
:func:`pandas.read_csv` call, and same-minute measurements are averaged with :func:`numpy.bincount`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

DESCRIPTORS = ("Age", "Gender", "Height", "ICUType", "Weight")
TIME_SERIES = (
    "Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN", "Cholesterol", "Creatinine", "DiasABP",
    "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "Mg", "MAP", "MechVent", "Na",
    "NIDiasABP", "NIMAP", "NISysABP", "PaCO2", "PaO2", "pH", "Platelets", "RespRate", "SaO2",
    "SysABP", "Temp", "TroponinI", "TroponinT", "Urine", "WBC",
)  # fmt: skip
#: The 41 variable columns, in the order of Rubanova et al. (2019) and t-PatchGNN.
VARIABLES = DESCRIPTORS + TIME_SERIES
OUTCOME_COLUMNS = ("SAPS-I", "SOFA", "Length_of_stay", "Survival", "In-hospital_death")
UNKNOWN_CHOICES = ("raise", "ignore")

_HEADER = b"Time,Parameter,Value"
_RECORD_ID = len(VARIABLES)  # category code of the RecordID parameter
_NEWLINE, _COMMA, _COLON, _CR = ord("\n"), ord(","), ord(":"), ord("\r")


def load_physionet2012(path, *, outcomes=None, return_static=False, unknown="raise", strict=False):
    """Load PhysioNet 2012 ICU stays as one long frame, one row per (stay, observed minute).

    Parameters
    ----------
    path : str or os.PathLike
        Either a tar archive such as ``set-a.tar.gz`` (any compression :mod:`tarfile` reads) or a
        directory of stay files. Every regular file named ``<digits>.txt`` is read (other files,
        such as ``Outcomes-a.txt``, are ignored): at any depth in an archive, only at the top level
        of a directory.
    outcomes : str or os.PathLike, optional
        Path to ``Outcomes-a.txt``-style CSV with the columns ``RecordID`` and
        ``SAPS-I, SOFA, Length_of_stay, Survival, In-hospital_death``. Its five outcome columns are
        joined by ``RecordID`` onto the static frame, so it requires ``return_static=True``; extra
        rows are ignored, a loaded stay without an outcome row is an error. Values are kept as in
        the file (the file's ``-1`` codes are not converted).
    return_static : bool, default False
        Also return the static frame (see Returns). This flag alone decides the return type.
    unknown : {"raise", "ignore"}, default "raise"
        What to do with a parameter name outside :data:`VARIABLES` and ``RecordID``: raise a
        ``ValueError`` naming the file, line and parameter, or drop the row (counted in the
        warning described under Warns).
    strict : bool, default False
        What to do with a malformed row of a well-formed file: an empty parameter name (the
        official set-c has 2,403 lines such as ``06:32,,2.7``, in 1,594 of its 4,000 files) or a
        value that is missing or not a finite number. False skips such rows and counts them in
        one warning; True raises a ``ValueError`` naming the file and line. A file whose
        structure is wrong (header, number of fields, ``Time``) raises either way.

    Returns
    -------
    long : pandas.DataFrame, shape (n_rows, 43)
        Columns ``RecordID`` (int64), ``Time`` (float64 hours since admission, minute resolution:
        minutes / 60) and the 41 :data:`VARIABLES` (float64, NaN = not measured), sorted by
        ``RecordID`` then ``Time``, with a RangeIndex. One row per (stay, minute) holding at least
        one value; several values of one parameter in the same minute are averaged. The descriptors
        are values of the time-0 row. In the five descriptor columns the value ``-1`` means
        unknown: it is dropped before averaging, so it becomes NaN wherever it occurs (a time-series
        ``Weight`` of -1 too). Every other value, negative or not, is kept as is (set-a has e.g.
        ``Temp`` -17.8 and ``Weight`` 0, and a -1 of any other parameter stays -1).
    static : pandas.DataFrame, shape (n_stays, 5) or (n_stays, 10)
        Only with ``return_static=True``. Indexed by ``RecordID`` (sorted), one row per stay read,
        including stays with no row in ``long``; the five descriptors as in the time-0 row of
        ``long`` (NaN for unknown), then the outcome columns if ``outcomes`` was given.

    Raises
    ------
    FileNotFoundError
        ``path`` or ``outcomes`` does not exist.
    ValueError
        A file has a wrong header, a line without exactly three fields, a time that is not
        ``HH:MM`` (one to three hour digits, minutes below 60), an empty parameter name or a value
        that is not a finite number (with ``strict=True``), an unknown parameter
        (with ``unknown="raise"``), no ``RecordID`` row, several ``RecordID`` rows or a non-integer
        one; two files share a ``RecordID``; no stay file was found; ``outcomes`` is given without
        ``return_static=True``, lacks columns or stays. Every message names the file (archive
        members as ``archive:member``) and, where there is one, the line.

    Warns
    -----
    UserWarning
        Stay files that are empty (zero bytes or the header only) are skipped, with a warning that
        names them. A stay whose rows are only ``RecordID`` and unknown descriptors is kept in the
        static frame but has no row in ``long``. Rows that were dropped (malformed rows with
        ``strict=False``, unknown parameters with ``unknown="ignore"``) are counted, by reason,
        in one warning that also names the first such line.

    Notes
    -----
    Blank lines are ignored. Time is not rounded: Rubanova et al. quantise it afterwards (e.g. to
    6 minutes); do that on the returned frame if wanted.

    Examples
    --------
    >>> long, static = load_physionet2012("set-a.tar.gz", outcomes="Outcomes-a.txt",
    ...                                   return_static=True)  # doctest: +SKIP
    >>> long.shape, static.shape  # doctest: +SKIP
    ((299264, 43), (4000, 10))
    """
    if unknown not in UNKNOWN_CHOICES:
        raise ValueError(f"unknown must be one of {UNKNOWN_CHOICES}, got {unknown!r}")
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    if outcomes is not None and not return_static:
        raise ValueError(
            "outcomes are joined onto the static frame: pass return_static=True with outcomes="
        )
    files = _read_stay_files(path)
    record_ids, observations = _parse_stays(files, unknown, bool(strict))
    long = _aggregate(record_ids, *observations)
    if not return_static:
        return long
    static = _static_frame(long, np.sort(record_ids))
    if outcomes is not None:
        static = _join_outcomes(static, outcomes)
    return long, static


def _as_path(value, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{name} {str(path)!r} does not exist")
    return path


def _is_stay_file(name: str) -> bool:
    return re.fullmatch(r"\d+\.txt", name.rsplit("/", 1)[-1]) is not None


def _read_stay_files(path) -> list[tuple[str, bytes]]:
    """Return ``(name, bytes)`` for every stay file under ``path`` (archive or directory)."""
    root = _as_path(path, "path")
    if root.is_dir():
        files = [(str(p), p.read_bytes()) for p in sorted(root.iterdir())
                 if p.is_file() and _is_stay_file(p.name)]  # fmt: skip
    elif tarfile.is_tarfile(root):
        with tarfile.open(root, "r:*") as archive:
            files = [(f"{root}:{m.name}", archive.extractfile(m).read()) for m in archive
                     if m.isfile() and _is_stay_file(m.name)]  # fmt: skip
    else:
        raise ValueError(f"path {str(root)!r} is neither a directory nor a tar archive")
    if not files:
        raise ValueError(
            f"path {str(root)!r} holds no '<RecordID>.txt' stay files"
            " (pass the archive itself or the directory that directly contains the .txt files)"
        )
    return files


def _split_bodies(files):
    """Check headers, drop empty files; return (names, bodies), each body ending in a newline."""
    names, bodies, empty = [], [], []
    for name, data in files:
        data = data.removeprefix(b"\xef\xbb\xbf")
        first, _, body = data.partition(b"\n")
        if not body.strip() and first.strip() in (b"", _HEADER):
            empty.append(name)
            continue
        if first.rstrip(b"\r") != _HEADER:
            raise ValueError(
                f"{name}, line 1: expected the header {_HEADER.decode()!r}, found {_show(first)}"
            )
        names.append(name)
        bodies.append(body if body.endswith(b"\n") else body + b"\n")
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        message = f"skipped {len(empty)} empty stay file(s): {shown}"
        warnings.warn(message, UserWarning, stacklevel=4)
    if not names:
        raise ValueError("every stay file is empty (zero bytes or the header only)")
    return names, bodies


def _show(raw: bytes) -> str:
    return repr(raw.rstrip(b"\r").decode("utf-8", errors="replace"))


class _Lines:
    """Byte offsets of the non-blank lines of the concatenated bodies, and where each came from."""

    def __init__(self, names, bodies):
        self.names = names
        self.buffer = b"".join(bodies)
        self.bytes = np.frombuffer(self.buffer, dtype=np.uint8)
        ends = np.flatnonzero(self.bytes == _NEWLINE)
        starts = np.concatenate(([0], ends[:-1] + 1))
        counts = np.array([body.count(b"\n") for body in bodies])
        file_of_line = np.repeat(np.arange(len(bodies)), counts)
        line_no = np.arange(len(ends)) - np.repeat(np.cumsum(counts) - counts, counts) + 2
        carriage = np.flatnonzero(self.bytes == _CR)
        stray = carriage[self.bytes[carriage + 1] != _NEWLINE]  # the buffer ends with a newline
        if stray.size:
            i = np.searchsorted(ends, stray[0])
            raise ValueError(
                f"{names[file_of_line[i]]}, line {line_no[i]}: carriage return inside a line"
            )
        ends = ends - (self.bytes[np.maximum(ends - 1, 0)] == _CR) * (ends > starts)
        keep = ends > starts
        self.starts, self.ends = starts[keep], ends[keep]
        self.file, self.line = file_of_line[keep], line_no[keep]

    def where(self, i: int) -> str:
        raw = self.buffer[self.starts[i]:self.ends[i]]
        return f"{self.names[self.file[i]]}, line {self.line[i]} ({_show(raw)})"


def _parse_stays(files, unknown, strict=False):
    """Parse all stays.

    Returns
    -------
    record_ids : ndarray of int64, shape (n_files,)
    observations : tuple of four ndarrays, each of shape (n_observations,)
        ``(file, minute, code, value)``: index into ``record_ids``, minutes since admission, index
        into :data:`VARIABLES`, value. RecordID rows, malformed rows (with ``strict=False``),
        unknown parameters (with ``unknown="ignore"``) and -1 descriptors are left out.
    """
    lines = _Lines(*_split_bodies(files))
    first_commas = _check_fields(lines)
    minutes = _parse_minutes(lines, first_commas)
    parameters, values = _read_parameters_values(lines)
    if len(values) != len(minutes):  # pragma: no cover - the field check makes this impossible
        raise RuntimeError(f"parsed {len(values)} rows from {len(minutes)} lines")
    no_name = (parameters == "").to_numpy()
    no_value = ~np.isfinite(values) & ~no_name
    if strict:
        bad = np.flatnonzero(no_name | no_value)
        if bad.size:
            why = "empty parameter name" if no_name[bad[0]] else "Value is not a finite number"
            raise ValueError(f"{lines.where(bad[0])}: {why} (strict=True)")
    codes = parameters.cat.set_categories([*VARIABLES, "RecordID"]).cat.codes.to_numpy()
    malformed = no_name | no_value
    unknown_rows = np.flatnonzero((codes < 0) & ~malformed)
    if unknown_rows.size and unknown == "raise":
        i = unknown_rows[0]
        raise ValueError(
            f"{lines.where(i)}: unknown parameter {parameters.iat[i]!r}"
            " (pass unknown='ignore' to drop such rows)"
        )
    _warn_dropped(lines, parameters, no_name, no_value, unknown_rows)
    codes = np.where(malformed, -1, codes)
    record_ids = _record_ids(lines, codes, values)
    keep = (codes >= 0) & (codes != _RECORD_ID) & ~((codes < len(DESCRIPTORS)) & (values == -1))
    observations = lines.file[keep], minutes[keep], codes[keep].astype(np.int64), values[keep]
    return record_ids, observations


def _warn_dropped(lines: _Lines, parameters, no_name, no_value, unknown_rows) -> None:
    """One warning counting the rows left out, by reason, with the first line of each."""
    parts = []
    for mask, why in ((no_name, "an empty parameter name"), (no_value, "a missing or non-numeric value")):
        rows = np.flatnonzero(mask)
        if rows.size:
            files = len(np.unique(lines.file[rows]))
            parts.append(f"{rows.size} with {why} in {files} file(s), first {lines.where(rows[0])}")
    if unknown_rows.size:
        names = sorted(map(str, pd.unique(parameters.iloc[unknown_rows].astype(str))))
        shown = ", ".join(map(repr, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        parts.append(f"{unknown_rows.size} with an unknown parameter ({shown}; unknown='ignore'), "
                     f"first {lines.where(unknown_rows[0])}")
    if parts:
        total = int(no_name.sum() + no_value.sum() + unknown_rows.size)
        tail = " (pass strict=True to raise on malformed rows)" if no_name.any() or no_value.any() else ""
        warnings.warn(f"dropped {total} row(s): " + "; ".join(parts) + tail, UserWarning, stacklevel=4)


def _read_parameters_values(lines: _Lines) -> tuple[pd.Series, np.ndarray]:
    """Parse the Parameter (categorical) and Value (float64; NaN where unparsable) columns."""

    def read(value_dtype):
        return pd.read_csv(
            io.BytesIO(lines.buffer), header=None, names=["Time", "Parameter", "Value"],
            usecols=["Parameter", "Value"], dtype={"Parameter": "category", "Value": value_dtype},
            quoting=csv.QUOTE_NONE, na_filter=False,
        )  # fmt: skip

    try:  # fast path: the C parser converts the values itself
        frame = read(np.float64)
        return frame["Parameter"], frame["Value"].to_numpy()
    except ValueError:  # some value is not a number: parse again as text to find which
        frame = read(object)
        values = pd.to_numeric(frame["Value"], errors="coerce").to_numpy(dtype=np.float64)
        return frame["Parameter"], values


def _check_fields(lines: _Lines) -> np.ndarray:
    """Raise unless every line has exactly three fields; return each line's first comma offset."""
    commas = np.flatnonzero(lines.bytes == _COMMA)
    line_of_comma = np.searchsorted(lines.ends, commas)  # a comma's line ends at or after it
    n_commas = np.bincount(line_of_comma, minlength=len(lines.starts))
    bad = np.flatnonzero(n_commas != 2)
    if bad.size:
        found = n_commas[bad[0]] + 1
        raise ValueError(f"{lines.where(bad[0])}: expected 3 comma-separated fields, found {found}")
    return commas[0::2]


def _parse_minutes(lines: _Lines, first_commas: np.ndarray) -> np.ndarray:
    """Parse every ``Time`` field (``H:MM`` to ``HHH:MM``) into integer minutes."""
    data, starts, stop = lines.bytes, lines.starts, first_commas

    def digit(pos):
        return data[np.clip(pos, 0, len(data) - 1)].astype(np.int64) - ord("0")

    width = stop - starts
    ok = (width >= 4) & (width <= 6) & (data[np.maximum(stop - 3, 0)] == _COLON)
    tens, ones = digit(stop - 2), digit(stop - 1)
    ok &= (tens >= 0) & (tens <= 5) & (ones >= 0) & (ones <= 9)
    hours = np.zeros(len(starts), dtype=np.int64)
    for k in range(3):
        pos = stop - 4 - k
        present = pos >= starts
        d = digit(pos)
        ok &= ~present | ((d >= 0) & (d <= 9))
        hours += np.where(present, d, 0) * 10**k
    bad = np.flatnonzero(~ok)
    if bad.size:
        raise ValueError(f"{lines.where(bad[0])}: Time is not HH:MM with minutes below 60")
    return hours * 60 + tens * 10 + ones


def _record_ids(lines: _Lines, codes, values) -> np.ndarray:
    """Return each file's RecordID, checking there is exactly one integer per file and no repeat."""
    rows = np.flatnonzero(codes == _RECORD_ID)
    per_file = np.bincount(lines.file[rows], minlength=len(lines.names))
    missing = np.flatnonzero(per_file == 0)
    if missing.size:
        raise ValueError(f"{lines.names[missing[0]]}: no RecordID row")
    if (per_file > 1).any():
        again = rows[np.flatnonzero(per_file[lines.file[rows]] > 1)[1]]
        raise ValueError(f"{lines.where(again)}: a second RecordID row")
    ids = values[rows]
    bad = np.flatnonzero((ids != np.round(ids)) | (ids < 0))
    if bad.size:
        raise ValueError(f"{lines.where(rows[bad[0]])}: RecordID is not a non-negative integer")
    ids = ids.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    repeat = np.flatnonzero(np.diff(ids[order]) == 0)
    if repeat.size:
        a, b = order[repeat[0]], order[repeat[0] + 1]
        raise ValueError(
            f"RecordID {ids[a]} appears in two files: {lines.names[a]} and {lines.names[b]}"
        )
    return ids


def _aggregate(record_ids, file, minutes, codes, values) -> pd.DataFrame:
    """Average the observations per (stay, minute, variable) and spread them into the long frame."""
    order = np.argsort(record_ids)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    span = int(minutes.max(initial=0)) + 1
    keys, row = np.unique(rank[file] * span + minutes, return_inverse=True)
    n_rows, n_vars = len(keys), len(VARIABLES)
    cell = codes * n_rows + row  # variable-major: each column is one contiguous run
    sums = np.bincount(cell, weights=values, minlength=n_vars * n_rows)
    counts = np.bincount(cell, minlength=n_vars * n_rows)
    with np.errstate(invalid="ignore"):
        columns = (sums / counts).reshape(n_vars, n_rows)  # 0 / 0 = NaN where nothing was measured
    long = pd.DataFrame(columns.T, columns=list(VARIABLES), copy=False)
    long.insert(0, "Time", (keys % span) / 60.0)
    long.insert(0, "RecordID", record_ids[order][keys // span])
    return long


def _static_frame(long: pd.DataFrame, record_ids: np.ndarray) -> pd.DataFrame:
    """The five descriptors from each stay's time-0 row, one row per stay (NaN where unknown)."""
    at_zero = long.loc[long["Time"] == 0.0, ["RecordID", *DESCRIPTORS]].set_index("RecordID")
    static = at_zero.reindex(pd.Index(record_ids, dtype=np.int64, name="RecordID"))
    static.columns.name = None
    return static


def _join_outcomes(static: pd.DataFrame, outcomes) -> pd.DataFrame:
    """Join the outcome columns of ``outcomes`` (a CSV path) onto ``static`` by RecordID."""
    path = _as_path(outcomes, "outcomes")
    table = pd.read_csv(path)
    missing = [c for c in ("RecordID", *OUTCOME_COLUMNS) if c not in table.columns]
    if missing:
        raise ValueError(
            f"outcomes file {str(path)!r} lacks the column(s) {missing};"
            f" found {list(table.columns)}"
        )
    for column in ("RecordID", *OUTCOME_COLUMNS):
        if not ptypes.is_numeric_dtype(table[column]):
            raise ValueError(
                f"outcomes file {str(path)!r}: column {column!r} is not numeric"
                f" (dtype {table[column].dtype})"
            )
    if table["RecordID"].duplicated().any():
        rid = table.loc[table["RecordID"].duplicated(), "RecordID"].iat[0]
        raise ValueError(f"outcomes file {str(path)!r}: RecordID {rid} appears more than once")
    table = table.set_index("RecordID")[list(OUTCOME_COLUMNS)]
    absent = static.index.difference(table.index)
    if len(absent):
        raise ValueError(
            f"outcomes file {str(path)!r} has no row for {len(absent)} loaded stay(s),"
            f" e.g. RecordID {list(absent[:5])}"
        )
    return static.join(table, how="left")
