"""Input checks shared by `recsys lookup`, the lookup functions and the HTTP pyfunc (recsys.checks).

Known answers first, then hypothesis throws generated input at the command line's parser and the
HTTP request check: each either returns the values it was given or refuses them with one line.
"""

import argparse

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys import checks
from recsys.cli import build_parser
from recsys.cli.common import k_arg, user_id_arg
from recsys.errors import InvalidRequestError

pytestmark = pytest.mark.unit

INT64_MAX = 2**63 - 1


def test_ids_and_ks_come_back_as_ints_in_order() -> None:
    frame = pd.DataFrame({"user_id": [3, 1, 3], "k": [5, 20, 1]})
    assert checks.check_request(frame, 20) == ([3, 1, 3], [5, 20, 1])
    assert checks.check_request(pd.DataFrame({"user_id": [7, 2]}), 20) == ([7, 2], [10, 10])
    # whole numbers that came as floats or text (a frame MLflow's schema did not type) are accepted
    ids, ks = checks.check_request(pd.DataFrame({"user_id": [1.0, "2"], "k": ["3", 4.0]}), 20)
    assert (ids, ks) == ([1, 2], [3, 4]) and all(type(v) is int for v in ids + ks)
    big = pd.DataFrame({"user_id": np.array([INT64_MAX], dtype="int64")})
    assert checks.check_request(big, 20) == ([INT64_MAX], [10])


@pytest.mark.parametrize(
    "frame, message",
    [
        ({"movie_id": [1]}, "column 'user_id'"),
        ({"user_id": [1], "kk": [3]}, r"unknown column\(s\) \['kk'\]"),
        ({"user_id": pd.Series([], dtype="int64")}, "no rows"),
        ({"user_id": list(range(1, checks.MAX_BATCH + 2))}, f"{checks.MAX_BATCH + 1} rows; at most"),
        ({"user_id": [1.5]}, r"row 0: user_id must be an integer in 1\.\.9223372036854775807, got 1\.5"),
        ({"user_id": [1, "abc"]}, "row 1: user_id .* got 'abc'"),
        ({"user_id": [1, None]}, "row 1: user_id .* got (None|nan)"),
        ({"user_id": [0]}, "user_id .* got 0"),
        ({"user_id": [10**29]}, "user_id .* got 100000000000000000000000000000"),
        ({"user_id": [1e30]}, "user_id .* got 1e\\+30"),
        ({"user_id": [True]}, "user_id .* got True"),
        ({"user_id": [1], "k": [0]}, r"k must be an integer in 1\.\.20, got 0"),
        ({"user_id": [1], "k": [21]}, r"k must be an integer in 1\.\.20, got 21"),
        ({"user_id": [1], "k": [2.5]}, "k .* got 2.5"),
    ],
)
def test_bad_requests_name_the_bad_value(frame: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        checks.check_request(pd.DataFrame(frame), 20)


def test_the_lookup_command_refuses_bad_ids_on_one_line(capsys: pytest.CaptureFixture) -> None:
    for bad in ["100000000000000000000000000000", "-5", "1.5", "1e3", "x", ""]:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["lookup", "--user", bad])
        assert exited.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "user_id must be an integer in 1..9223372036854775807" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["lookup", "--user", "1", "--k", str(checks.MAX_K + 1)])
    assert f"k must be an integer in 1..{checks.MAX_K}" in capsys.readouterr().err
    args = build_parser().parse_args(["lookup", "--user", str(INT64_MAX), "--k", "7"])
    assert (args.user, args.k) == (INT64_MAX, 7)


def _decimal(text: str) -> int | None:
    """What the parser should make of ``text``: its integer when it is decimal digits, else None."""
    stripped = text.strip()
    body = stripped[1:] if stripped.startswith("+") else stripped
    if body and all(c in "0123456789" for c in body):  # str.isdigit admits other scripts' digits
        return int(body.lstrip("0") or "0") if len(body.lstrip("0")) <= 30 else 10**30
    return None


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=30),
        st.integers().map(str),
        st.integers(min_value=-10, max_value=2**64).map(str),
        st.floats().map(str),
        st.text(alphabet="+0123456789 ", max_size=5000),
    )
)
def test_the_command_line_parser_returns_the_id_or_refuses_it(text: str) -> None:
    expected = _decimal(text)
    for parse, high in ((user_id_arg, INT64_MAX), (k_arg, checks.MAX_K)):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as exc:
            assert expected is None or not 1 <= expected <= high
            assert "\n" not in str(exc) and len(str(exc)) < 200
        else:
            assert value == expected and 1 <= value <= high


cell = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=25),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=50).map(float),
    st.integers(min_value=-3, max_value=60).map(lambda n: f" +{n} "),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(cell, cell), min_size=0, max_size=20),
    st.booleans(),
    st.sampled_from([[], ["extra"], ["movie_id"]]),
)
def test_the_http_check_returns_the_request_or_refuses_it(rows: list, with_k: bool, extra: list[str]) -> None:
    data = {"user_id": pd.Series([u for u, _ in rows], dtype=object)}
    if with_k:
        data["k"] = pd.Series([k for _, k in rows], dtype=object)
    for name in extra:
        data[name] = pd.Series([1] * len(rows), dtype=object)
    try:
        ids, ks = checks.check_request(pd.DataFrame(data), 50)
    except InvalidRequestError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        return
    assert rows and not extra and len(ids) == len(ks) == len(rows)
    for (raw_id, raw_k), got_id, got_k in zip(rows, ids, ks):
        assert type(got_id) is int and 1 <= got_id <= INT64_MAX and got_id == _number(raw_id)
        assert type(got_k) is int and 1 <= got_k <= 50
        assert got_k == (_number(raw_k) if with_k else 10)


def _number(raw: object) -> int | None:
    """The integer a request cell stands for, if any (bools and fractions stand for none)."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, float):
        return int(raw) if raw == raw and abs(raw) != float("inf") and raw.is_integer() else None
    return _decimal(raw) if isinstance(raw, str) else int(raw)


valid = st.one_of(
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=50).map(float),
    st.integers(min_value=1, max_value=50).map(lambda n: f" {n}"),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(valid, valid), min_size=1, max_size=30))
def test_the_http_check_accepts_every_well_formed_request(rows: list) -> None:
    frame = pd.DataFrame(
        {
            "user_id": pd.Series([u for u, _ in rows], dtype=object),
            "k": pd.Series([k for _, k in rows], dtype=object),
        }
    )
    ids, ks = checks.check_request(frame, 50)
    assert ids == [_number(u) for u, _ in rows] and ks == [_number(k) for _, k in rows]


def test_a_repeated_column_is_refused_by_name() -> None:
    frame = pd.DataFrame([[1, 2]], columns=["user_id", "user_id"])
    with pytest.raises(InvalidRequestError, match="column 'user_id' appears more than once"):
        checks.check_request(frame, 10)
    frame = pd.DataFrame([[1, 2, 3]], columns=["movie_id", "k", "k"])
    with pytest.raises(InvalidRequestError, match="column 'k' appears more than once"):
        checks.check_frame(frame, 10, "movie_id")


def test_a_long_column_name_is_echoed_once_and_cut_to_40_characters() -> None:
    name = "x" * 50_000
    with pytest.raises(InvalidRequestError) as raised:
        checks.check_request(pd.DataFrame({"user_id": [1], name: [2]}), 10)
    message = str(raised.value)
    assert f"'{'x' * 40}'... (50,000 characters)" in message and len(message) < 200
    many = pd.DataFrame({"user_id": [1], **{f"c{i}": [i] for i in range(8)}})
    with pytest.raises(InvalidRequestError, match=r"\['c0', 'c1', 'c2', \.\.\. 5 more\]"):
        checks.check_request(many, 10)


@pytest.mark.parametrize(
    "model_input",
    [
        {"user_id": np.array([1, 2]), "k": np.array([3, 4])},  # "inputs"/"instances" as columns
        {"user_id": [1, 2], "k": [3, 4]},
        [{"user_id": np.array(1), "k": np.array(3)}, {"user_id": np.array(2), "k": np.array(4)}],  # rows
    ],
)
def test_the_inputs_and_instances_layouts_are_accepted(model_input: object) -> None:
    assert checks.check_request(model_input, 10) == ([1, 2], [3, 4])


def test_a_scalar_inputs_column_is_one_row_and_ragged_columns_are_refused() -> None:
    assert checks.check_request({"user_id": np.array(7)}, 10) == ([7], [checks.DEFAULT_K])
    with pytest.raises(InvalidRequestError, match="same length"):
        checks.check_request({"user_id": [1, 2], "k": [3]}, 10)
    with pytest.raises(InvalidRequestError, match="request needs a column 'user_id'"):
        checks.check_request(np.array([1, 2]), 10)
