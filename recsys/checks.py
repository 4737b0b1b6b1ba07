"""What a caller may ask for, checked in one place: user ids, list lengths and HTTP request frames.

The command line (``recsys lookup``), the lookup functions and the HTTP pyfunc all go through these
checks, so a bad value gets the same one-line InvalidRequestError everywhere: ids are Feast Int64
join keys (1 .. 2^63 - 1), ``k`` is bounded by what the lists hold (the model version's K, at
most :data:`MAX_K`), and an HTTP request holds 1 .. :data:`MAX_BATCH` rows of known columns.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import MAX_K
from recsys.errors import InvalidRequestError

__all__ = [
    "MAX_K",
    "MAX_BATCH",
    "as_frame",
    "check_request",
    "list_length",
    "movie_id",
    "shown_name",
    "user_id",
    "whole_number",
]
INT64_MAX = 2**63 - 1  # Feast Int64 join keys
MAX_BATCH = 1000  # users per HTTP request: a request's work and reply stay bounded
DEFAULT_K = 10
REQUEST_COLUMNS = ("user_id", "k")
SIMILAR_COLUMNS = ("movie_id", "k")  # a "more like this" request
_DECIMAL = re.compile(r"\+?[0-9]+")


SHOWN_CHARS = 40  # at most this much of a caller's text is echoed back in an error


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def shown_name(value: Any) -> str:
    """A caller's name (a column...) as echoed in an error: quoted, its first SHOWN_CHARS
    characters and, when longer, its length."""
    text = str(value)
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:SHOWN_CHARS]!r}... ({len(text):,} characters)"


def as_frame(model_input: Any) -> Any:
    """The request as a DataFrame when it is one of the layouts MLflow's server hands over:

    - a DataFrame (``dataframe_split``, ``dataframe_records``, CSV, Parquet);
    - a dict of columns (``{"inputs": {"user_id": [1, 2]}}`` or ``{"instances": {...}}``, and
      ``{"instances": [{"user_id": 1}, ...]}``, which MLflow turns into columns);
    - a list of row dicts (``{"inputs": [{"user_id": 1, "k": 5}, ...]}``).

    Anything else is returned as it is (check_frame then refuses it, naming what a request holds).
    Rows of different lengths are an InvalidRequestError.
    """
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict) and model_input:
        columns = {
            str(name): np.atleast_1d(np.asarray(values, dtype=object)) for name, values in model_input.items()
        }
        if any(v.ndim != 1 for v in columns.values()) or len({len(v) for v in columns.values()}) != 1:
            raise InvalidRequestError("request columns must be flat lists of the same length")
        return pd.DataFrame({name: list(values) for name, values in columns.items()})
    if isinstance(model_input, list) and model_input and all(isinstance(r, dict) for r in model_input):
        rows = [
            {str(k): np.asarray(v).item() if np.ndim(v) == 0 else v for k, v in r.items()}
            for r in model_input
        ]
        return pd.DataFrame.from_records(rows)
    return model_input


def whole_number(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in low..high: an int, a whole float or decimal text (``"12"``).

    Raises InvalidRequestError naming ``name``, the range and the value otherwise (bools, NaN,
    fractions, other text, values out of range).
    """
    number: int | None = None
    if isinstance(value, (bool, np.bool_)):
        number = None
    elif isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer():
            number = int(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        digits = value.strip().lstrip("+").lstrip("0") or "0"
        number = int(digits) if len(digits) <= 20 else None  # int() refuses 4,300+ digits
    if number is None or not low <= number <= high:
        raise InvalidRequestError(f"{name} must be an integer in {low}..{high}, got {_shown(value)}")
    return number


def user_id(value: Any) -> int:
    """A user id (1 .. 2^63 - 1); InvalidRequestError otherwise."""
    return whole_number(value, "user_id", 1, INT64_MAX)


def movie_id(value: Any) -> int:
    """A movie id (1 .. 2^63 - 1); InvalidRequestError otherwise."""
    return whole_number(value, "movie_id", 1, INT64_MAX)


def list_length(value: Any, max_k: int = MAX_K) -> int:
    """A list length k in 1..max_k; InvalidRequestError otherwise."""
    return whole_number(value, "k", 1, max_k)


def check_request(frame: Any, max_k: int) -> tuple[list[int], list[int]]:
    """(user_ids, ks) of an HTTP request frame: column ``user_id`` and optionally ``k`` (default 10).

    Raises InvalidRequestError naming the problem: not a frame, a missing ``user_id`` column, an
    unknown column, no rows, more than MAX_BATCH rows, or the first bad value (see
    :func:`whole_number`), with its row.
    """
    return check_frame(frame, max_k, "user_id")


def check_frame(frame: Any, max_k: int, key: str) -> tuple[list[int], list[int]]:
    """(ids, ks) of a request frame keyed by ``key`` (``user_id`` or ``movie_id``); see
    :func:`check_request`."""
    columns = REQUEST_COLUMNS if key == "user_id" else SIMILAR_COLUMNS
    frame = as_frame(frame)
    if not isinstance(frame, pd.DataFrame) or key not in frame.columns:
        raise InvalidRequestError(
            "request needs a column 'user_id' (a user's list) or 'movie_id' (similar movies), "
            "and optionally 'k'"
        )
    unknown = [shown_name(c) for c in frame.columns if c not in columns]
    if unknown:
        more = f", ... {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise InvalidRequestError(
            f"unknown column(s) [{', '.join(unknown[:3])}{more}]; a request has columns {list(columns)}"
        )
    repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if repeated:
        raise InvalidRequestError(f"column {repeated[0]!r} appears more than once; send each column once")
    if len(frame) == 0:
        raise InvalidRequestError(f"request holds no rows; send at least one {key}")
    if len(frame) > MAX_BATCH:
        raise InvalidRequestError(f"request holds {len(frame)} rows; at most {MAX_BATCH} per request")
    raw_ks = frame["k"].tolist() if "k" in frame.columns else [DEFAULT_K] * len(frame)
    check_id = user_id if key == "user_id" else movie_id
    user_ids, ks = [], []
    for row, (raw_id, raw_k) in enumerate(zip(frame[key].tolist(), raw_ks)):
        try:
            user_ids.append(check_id(raw_id))
            ks.append(list_length(raw_k, max_k))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"row {row}: {exc}") from None
    return user_ids, ks
