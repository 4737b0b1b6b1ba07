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

__all__ = ["MAX_K", "MAX_BATCH", "check_request", "list_length", "movie_id", "user_id", "whole_number"]
INT64_MAX = 2**63 - 1  # Feast Int64 join keys
MAX_BATCH = 1000  # users per HTTP request: a request's work and reply stay bounded
DEFAULT_K = 10
REQUEST_COLUMNS = ("user_id", "k")
SIMILAR_COLUMNS = ("movie_id", "k")  # a "more like this" request
_DECIMAL = re.compile(r"\+?[0-9]+")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
    if not isinstance(frame, pd.DataFrame) or key not in frame.columns:
        raise InvalidRequestError(
            "request needs a column 'user_id' (a user's list) or 'movie_id' (similar movies), "
            "and optionally 'k'"
        )
    unknown = [str(c) for c in frame.columns if c not in columns]
    if unknown:
        raise InvalidRequestError(f"unknown column(s) {unknown[:5]}; a request has columns {list(columns)}")
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
