"""recsys.online.layout against the encoders Feast itself uses (protobuf, serialize_entity_key, _mmh3).

The integration tests compare whole Redis contents written by both writers; these pin each encoder
on the edge cases (empty lists, varint size boundaries, negatives, non-ASCII, nanoseconds).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import FloatList, Int64List, Value
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.online import layout as feast_layout

pytestmark = pytest.mark.unit

BOUNDARIES = [0, 1, 127, 128, 16_383, 16_384, 193_609, 2**21, 2**28 - 1, 2**28, 2**35, 2**63 - 1]


def test_varint_known_bytes() -> None:
    assert feast_layout.varint(300) == b"\xac\x02"
    assert feast_layout.varint(-1) == b"\xff" * 9 + b"\x01"
    data, sizes = feast_layout.varints(np.array([1, 300, 0], dtype=np.int64))
    assert data.tobytes() == b"\x01\xac\x02\x00" and sizes.tolist() == [1, 2, 1]


def test_int64_lists_match_protobuf() -> None:
    rng = np.random.default_rng(0)
    lists = [
        np.array([], dtype=np.int64),
        np.array(BOUNDARIES, dtype=np.int64),
        np.array([-1, -(2**63), 5], dtype=np.int64),
        *(rng.integers(1, 200_000, size=n) for n in (1, 100, 300)),
        np.array([], dtype=np.int64),
    ]
    want = [Value(int64_list_val=Int64List(val=ids.tolist())).SerializeToString() for ids in lists]
    assert feast_layout.int64_list_values(lists) == want
    assert want[0] == b"r\x00"  # an empty list is set, not an unset Value
    small = [np.array([1, 2], dtype=np.int64)]  # every id below 2**32: the narrow path
    assert feast_layout.int64_list_values(small) == [b"r\x04\x0a\x02\x01\x02"]


def test_float_lists_match_protobuf() -> None:
    rng = np.random.default_rng(0)
    lists = [
        np.array([], dtype=np.float32),
        np.array([0.0, -0.0, 1.5, np.inf, -np.inf, 3.4e38, 1e-45], dtype=np.float32),
        *(rng.normal(size=n).astype(np.float32) for n in (1, 100, 40)),  # 160 bytes: 2-byte length
    ]
    want = [Value(float_list_val=FloatList(val=s.tolist())).SerializeToString() for s in lists]
    assert feast_layout.float_list_values(lists) == want


def test_strings_match_protobuf() -> None:
    texts = ["", "7", "Amélie (2001)", "Léon: The Professional (a.k.a. Le Professionnel) " * 4, "7"]
    assert feast_layout.string_values(texts) == [Value(string_val=t).SerializeToString() for t in texts]


def test_timestamps_match_protobuf_from_datetime() -> None:
    stamps = pd.DatetimeIndex(
        pd.to_datetime(
            [
                "2026-11-23 02:00:00.123456789",
                "1970-01-01 00:00:00",
                "1970-01-01 00:00:00.5",
                "2026-11-23 02:00:00",
                "1960-06-01 12:00:00.000001",
            ],
            utc=True,
            format="ISO8601",
        )
    )
    want = []
    for stamp in stamps:
        proto = Timestamp()
        with warnings.catch_warnings():  # pandas warns that the datetime drops the nanoseconds
            warnings.simplefilter("ignore", UserWarning)
            proto.FromDatetime(stamp.to_pydatetime())  # Feast's path
        want.append(proto.SerializeToString())
    assert feast_layout.timestamp_values(stamps.as_unit("ns").asi8) == want
    assert want[1] == b""  # the epoch: both fields zero, nothing on the wire


def test_entity_keys_and_field_keys_match_feast() -> None:
    ids = np.array([1, 193_609, 2**40, 138_493], dtype=np.int64)
    want = [
        serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=int(i))]), 3)
        + b"recsys"
        for i in ids
    ]
    assert feast_layout.entity_keys("user_id", ids, "recsys") == want
    assert feast_layout.entity_keys("movie_id", ids[:0], "recsys") == []
    assert feast_layout.field_key("user_recommendations", "item_ids") == _mmh3(
        "user_recommendations:item_ids"
    )
