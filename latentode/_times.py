"""Time columns: which kind they hold, and their conversion to float64.

Every time becomes float64 inside the package: the number itself for numeric times,
seconds since 1970-01-01 for datetimes (UTC for tz-aware ones), seconds for timedeltas.
A text column of ISO dates (or an object column of datetimes) is parsed as datetimes;
mixed UTC offsets (daylight saving time) become tz-aware UTC times.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from ._validation import InputTypeError, InputValueError

_EPOCH = pd.Timestamp("1970-01-01")
_SECOND = pd.Timedelta(seconds=1)


def parse_text_times(values: pd.Series) -> pd.Series:
    """ISO date strings or datetime objects in an object/string column as a datetime Series.

    Mixed UTC offsets (``+02:00`` and ``+01:00`` in one column, as daylight saving time
    gives) are converted to tz-aware UTC times. Any other column, or text that is not ISO
    dates, is returned unchanged (the caller's checks then name it).
    """
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype) or not (ptypes.is_object_dtype(dtype) or ptypes.is_string_dtype(dtype)):
        return values
    present = values.dropna()
    inferred = ptypes.infer_dtype(present, skipna=True)
    if not len(present) or inferred not in ("string", "datetime"):
        return values
    if inferred == "string" and not present.astype(str).str.match(r"\s*[+-]?\d{4}-\d{2}-\d{2}").all():
        return values  # e.g. numbers as text: not dates
    for utc in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pandas 2 warns about mixed offsets before returning objects
                out = pd.to_datetime(values, format="ISO8601" if inferred == "string" else None, utc=utc)
        except (ValueError, TypeError, OverflowError):
            continue
        if ptypes.is_datetime64_any_dtype(out.dtype):
            return out
    return values


@dataclass(frozen=True)
class TimeKind:
    """What kind of time a column holds, so that queries can be checked against it.

    Attributes
    ----------
    kind : {"numeric", "datetime", "timedelta"}
    tz : str or None
        Time zone of a tz-aware datetime column, else None.
    """

    kind: str
    tz: str | None = None

    @classmethod
    def of(cls, values: pd.Series, name: str) -> TimeKind:
        """Infer the kind of ``values``; ``name`` (e.g. ``"time column 'ds'"``) starts error messages."""
        values = parse_text_times(values)
        dtype = values.dtype
        if isinstance(dtype, pd.DatetimeTZDtype):
            return cls("datetime", str(dtype.tz))
        if ptypes.is_datetime64_dtype(dtype):
            return cls("datetime", None)
        if ptypes.is_timedelta64_dtype(dtype):
            return cls("timedelta", None)
        if ptypes.is_bool_dtype(dtype) or not ptypes.is_numeric_dtype(dtype):
            raise InputTypeError(
                f"{name} must hold numbers, datetimes, timedeltas or ISO dates; "
                f"found dtype {dtype} (e.g. {_example(values)}). Convert it first, e.g. with pd.to_datetime."
            )
        return cls("numeric", None)

    def describe(self) -> str:
        if self.kind == "datetime":
            return f"datetime (tz={self.tz})" if self.tz else "datetime (tz-naive)"
        return self.kind

    def to_float(self, values, name: str) -> np.ndarray:
        """Convert time values of this kind to float64 (seconds for datetime/timedelta).

        Raises
        ------
        TypeError
            If ``values`` are of another kind (e.g. numbers for a model fitted on
            datetimes, or tz-naive for tz-aware).
        ValueError
            If any value is missing (NaN / NaT) or infinite.
        """
        s = parse_text_times(values if isinstance(values, pd.Series) else pd.Series(values))
        found = TimeKind.of(s, name)
        if found.kind != self.kind or (self.kind == "datetime" and (found.tz is None) != (self.tz is None)):
            raise InputTypeError(
                f"the model was fitted on {self.describe()} times ({_PLURAL[self.kind]}), but {name} holds "
                f"{found.describe()} ones (dtype {s.dtype}, e.g. {_example(s)}); give times of the fitted kind."
            )
        if s.isna().any():
            raise InputValueError(f"{name} has {int(s.isna().sum())} missing times (NaN/NaT); every row needs a time.")
        if self.kind == "numeric":
            out = s.to_numpy(dtype=np.float64)
            if not np.isfinite(out).all():
                raise InputValueError(f"{name} has infinite times.")
            return out
        if self.kind == "datetime":
            epoch = _EPOCH.tz_localize("UTC") if found.tz is not None else _EPOCH
            return ((s - epoch) / _SECOND).to_numpy(dtype=np.float64)
        return (s / _SECOND).to_numpy(dtype=np.float64)


_PLURAL = {"numeric": "numbers", "datetime": "datetimes", "timedelta": "timedeltas"}


def _example(values: pd.Series) -> str:
    present = values.dropna()
    return repr(present.iloc[0].item() if hasattr(present.iloc[0], "item") else present.iloc[0]) if len(present) \
        else "only missing values"
