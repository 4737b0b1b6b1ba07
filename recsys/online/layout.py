"""Feast's Redis online-store layout: every name of the Feast repo, keys, hash fields, the values
encoded with numpy and decoded back (the three kinds recsys stores); no I/O.

What feast/infra/online_stores/redis.py ``online_write_batch`` writes for one row of a view
(entity_key_serialization_version 3, one Int64 join key):

- key: ``<I 1> <I STRING=2> <I len(join_key)> join_key <I INT64=4> <I 8> <q id>`` + project;
- field ``_ts:<view>``: a serialized ``google.protobuf.Timestamp`` (seconds field 1, nanos field 2,
  microsecond precision; a zero field is omitted);
- field murmur3_32(``"<view>:<feature>"``) as 4 little-endian bytes per feature: a serialized
  ``feast.types.Value``: ``string_val`` (field 2), ``int64_list_val`` (14, packed varints) or
  ``float_list_val`` (16, packed fixed32), a list being a message whose field 1 holds the values;
  an empty list is the list field with length 0 (``72 00`` for int64).

Feast builds one protobuf object per value and row; here each column is encoded in one go
(varints with array arithmetic, floats with one ``tobytes()``) and only the per-row framing is a
Python loop. The integration tests compare every byte with what Feast writes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import mmh3
import numpy as np

from recsys.errors import StoreError

VALUE_TYPE_STRING, VALUE_TYPE_INT64 = 2, 4  # feast.types.ValueType enum
STRING_TAG = b"\x12"  # Value.string_val: field 2, length-delimited
INT64_LIST_TAG = b"\x72"  # Value.int64_list_val: field 14, length-delimited
FLOAT_LIST_TAG = b"\x82\x01"  # Value.float_list_val: field 16, length-delimited
REPEATED_TAG = b"\x0a"  # Int64List.val / FloatList.val: field 1, packed
SECONDS_TAG, NANOS_TAG = b"\x08", b"\x10"  # Timestamp.seconds (field 1), Timestamp.nanos (field 2)

# Every name of the Feast repo that code outside feature_repo/ uses (tests/unit/test_feast_layout.py
# pins them equal to feature_repo/'s objects).
PROJECT = "recsys"
USER_KEY = "user_id"
MOVIE_KEY = "movie_id"
USER_VIEW = "user_recommendations"
MOVIE_VIEW = "movie"
FEATURE_SERVICE = "recommendations_v1"
HISTORY_VIEW = "user_history"
SIMILAR_VIEW = "movie_similar"
SIMILAR_SERVICE = "similar_movies_v1"
SIMILAR_FEATURES = ("movie_ids", "scores", "source", "model_version", "data_version")
USER_FEATURES = ("item_ids", "scores", "because_ids", "model_version", "arm", "data_version", "scored_at")
HISTORY_FEATURES = ("movie_ids", "data_version")
MOVIE_FEATURES = ("title",)
SIMILAR_COLUMNS = (MOVIE_KEY, *SIMILAR_FEATURES, "event_timestamp")
RECS_COLUMNS = (USER_KEY, *USER_FEATURES, "event_timestamp")  # scored_at: from event_timestamp
HISTORY_COLUMNS = (USER_KEY, *HISTORY_FEATURES, "event_timestamp")
CATALOGUE_COLUMNS = (MOVIE_KEY, "title")
# The takedown list (recsys.online.blocklist), a plain Redis hash beside Feast's keys (which start
# with a serialized entity key, never with this text): field movie id -> JSON {reason, by, at}.
BLOCKLIST_KEY = f"{PROJECT}:blocked_movies".encode()


# The arms served now (recsys.online.publication): field -> text. ``allowed`` lists the model versions
# whose stored lists a reader may serve (comma-separated); the other fields are the arms of the last
# publish (champion, canary, share, salt).
ARMS_KEY = f"{PROJECT}:arms".encode()
ALLOWED_FIELD = b"allowed"


def allowed_versions(value: bytes | None) -> set[str] | None:
    """The versions of the arms record's ``allowed`` field; None (serve any) when there is none."""
    if value is None:
        return None
    return {v for v in value.decode().split(",") if v}


def blocked_ids(fields: Iterable[bytes]) -> set[int]:
    """The movie ids of the blocklist's hash fields (HKEYS)."""
    return {int(field) for field in fields}


def varint(value: int) -> bytes:
    """One protobuf varint; a negative int64 as its 10-byte two's complement."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varints of int64 ``values`` (shape (n,)): (all their bytes, uint8 (sum of sizes,); sizes (n,))."""
    unsigned = values.astype(np.int64, copy=False).view(np.uint64)
    top = int(unsigned.max()) if len(unsigned) else 0
    if top < 1 << 32:  # movie ids: narrower integers make every pass below cheaper
        unsigned = unsigned.astype(np.uint32)
    sizes = np.ones(len(unsigned), dtype=np.uint8)
    for bits in range(7, 64, 7):
        if top < 1 << bits:
            break
        sizes += unsigned >= (1 << bits)
    width = int(sizes.max()) if len(sizes) else 1
    groups = np.empty((len(unsigned), width), dtype=np.uint8)
    for j in range(width):
        more = (sizes > j + 1).view(np.uint8) << 7  # continuation bit
        groups[:, j] = ((unsigned >> (7 * j)) & 0x7F).astype(np.uint8) | more
    return groups[np.arange(width) < sizes[:, None]], sizes


def field_key(view: str, feature: str) -> bytes:
    """Hash field of one feature of one view: murmur3_32 of ``"<view>:<feature>"``, little-endian."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def entity_keys(join_key: str, ids: np.ndarray, project: str) -> list[bytes]:
    """Redis keys of entities with one Int64 join key, one per id of ``ids`` (shape (n,))."""
    name = join_key.encode()
    head = (
        struct.pack("<III", 1, VALUE_TYPE_STRING, len(name)) + name + struct.pack("<II", VALUE_TYPE_INT64, 8)
    )
    tail = project.encode()
    width = len(head) + 8 + len(tail)
    rows = np.empty((len(ids), width), dtype=np.uint8)
    rows[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    rows[:, len(head) : len(head) + 8] = ids.astype("<i8").view(np.uint8).reshape(-1, 8)
    rows[:, len(head) + 8 :] = np.frombuffer(tail, dtype=np.uint8)
    flat = rows.tobytes()
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def _framed(tag: bytes, payload: bytes, offsets: np.ndarray) -> list[bytes]:
    """Value bytes per row: ``payload[offsets[i]:offsets[i + 1]]`` as the packed field 1 of a list."""
    heads: dict[int, bytes] = {0: tag + b"\x00"}  # an empty list message carries no field 1
    out = []
    bounds = offsets.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        size = end - start
        head = heads.get(size)
        if head is None:
            inner = REPEATED_TAG + varint(size)
            head = heads[size] = tag + varint(len(inner) + size) + inner
        out.append(head + payload[start:end])
    return out


def _offsets(sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def int64_list_values(lists: Sequence[np.ndarray]) -> list[bytes]:
    """Serialized ``Value(int64_list_val=...)`` of each int64 array of ``lists``."""
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    flat = np.concatenate(lists) if len(lists) else np.empty(0, dtype=np.int64)
    data, sizes = varints(flat)
    return _framed(INT64_LIST_TAG, data.tobytes(), _offsets(sizes)[_offsets(lengths)])


def float_list_values(lists: Sequence[np.ndarray]) -> list[bytes]:
    """Serialized ``Value(float_list_val=...)`` of each float32 array of ``lists``."""
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    flat = np.concatenate(lists).astype("<f4", copy=False) if len(lists) else np.empty(0, dtype="<f4")
    return _framed(FLOAT_LIST_TAG, flat.tobytes(), _offsets(lengths * 4))


def string_values(strings: Sequence[str]) -> list[bytes]:
    """Serialized ``Value(string_val=...)`` of each string (repeated strings are encoded once)."""
    cache: dict[str, bytes] = {}
    out = []
    for text in strings:
        value = cache.get(text)
        if value is None:
            raw = text.encode("utf-8")
            value = cache[text] = STRING_TAG + varint(len(raw)) + raw
        out.append(value)
    return out


def timestamp_values(nanoseconds: np.ndarray) -> list[bytes]:
    """Serialized ``Timestamp`` of each UTC epoch time in ``nanoseconds`` (int64), cut to microseconds.

    Feast converts each time to a Python datetime first, which drops the nanoseconds.
    """
    cache: dict[int, bytes] = {}
    out = []
    for ns in nanoseconds.tolist():
        value = cache.get(ns)
        if value is None:
            seconds, micros = divmod(ns // 1000, 1_000_000)
            value = (SECONDS_TAG + varint(seconds) if seconds else b"") + (
                NANOS_TAG + varint(micros * 1000) if micros else b""
            )
            cache[ns] = value
        out.append(value)
    return out


def entity_key(join_key: str, value: int, project: str = PROJECT) -> bytes:
    """Redis key of one entity with a single Int64 join key (see :func:`entity_keys`)."""
    return entity_keys(join_key, np.array([value], dtype=np.int64), project)[0]


ENCODERS: dict[str, Callable[[Any], list[bytes]]] = {  # Feast ValueType name -> column encoder
    "INT64_LIST": int64_list_values,
    "FLOAT_LIST": float_list_values,
    "STRING": string_values,
}


# --- Decoding: what the fast reader needs of Feast's values (string, int64 list, float list).

STRING_VAL, INT64_LIST_VAL, FLOAT_LIST_VAL = 2, 14, 16  # feast.types.Value field numbers


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterable[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one protobuf message."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise StoreError(f"unsupported protobuf wire type {wire} in a Feast value")
        yield number, wire, value


def _int64_list(buf: bytes, limit: int) -> list[int]:
    out: list[int] = []
    for _, wire, value in _fields(buf):
        if wire == 2:  # packed
            pos = 0
            while pos < len(value) and len(out) < limit:
                item, pos = _varint(value, pos)
                out.append(item)
        else:
            out.append(value)
        if len(out) >= limit:
            break
    return [v - (1 << 64) if v >= 1 << 63 else v for v in out]


def _float_list(buf: bytes, limit: int) -> list[float]:
    out: list[float] = []
    for _, _, value in _fields(buf):
        n = min(len(value) // 4, limit - len(out))
        out.extend(struct.unpack(f"<{n}f", value[: 4 * n]))
        if len(out) >= limit:
            break
    return out


def decode_value(buf: bytes | None, limit: int | None = None) -> Any:
    """Decode a serialized feast Value holding a string, an int64 list or a float list (None if unset).

    ``limit``: decode only the first ``limit`` elements of a list (a lookup of the top 10 of a
    100-item list skips 90% of the work); a string is always whole.
    """
    if not buf:
        return None
    limit = len(buf) if limit is None else limit  # a list never holds more values than bytes
    for number, _, value in _fields(buf):
        if number == STRING_VAL:
            return value.decode("utf-8")
        if number == INT64_LIST_VAL:
            return _int64_list(value, limit)
        if number == FLOAT_LIST_VAL:
            return _float_list(value, limit)
    raise StoreError(f"Feast value {buf[:16]!r} is not a string, int64 list or float list")
