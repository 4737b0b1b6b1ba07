"""The HTTP pyfunc's request check (recsys.serving.check_request); the rest is in tests/integration."""

import pandas as pd
import pytest

from recsys.errors import InvalidRequestError
from recsys.serving import check_request

pytestmark = pytest.mark.unit


def test_ids_and_ks_come_back_as_ints_in_order() -> None:
    frame = pd.DataFrame({"user_id": [3, 1, 3], "k": [5, 20, 1]})
    assert check_request(frame, 20) == ([3, 1, 3], [5, 20, 1])
    assert check_request(pd.DataFrame({"user_id": [7, 2]}), 20) == ([7, 2], [10, 10])  # k defaults to 10
    # whole numbers that came as floats or text (a frame MLflow's schema did not type) are accepted
    ids, ks = check_request(pd.DataFrame({"user_id": [1.0, "2"], "k": ["3", 4.0]}), 20)
    assert (ids, ks) == ([1, 2], [3, 4]) and all(type(v) is int for v in ids + ks)
    assert check_request(pd.DataFrame({"user_id": pd.Series([], dtype="int64")}), 20) == ([], [])


@pytest.mark.parametrize("frame, message", [
    ({"movie_id": [1]}, "column 'user_id'"),
    ({"user_id": [1.5]}, "'user_id' must hold integers"),
    ({"user_id": ["abc"]}, "'user_id' must hold integers"),
    ({"user_id": [1, None]}, "'user_id' must hold integers"),
    ({"user_id": [0]}, "user_id must be a positive integer, got \\[0\\]"),
    ({"user_id": [1], "k": [0]}, "k must be in 1..20, got \\[0\\]"),
    ({"user_id": [1], "k": [21]}, "k must be in 1..20"),
    ({"user_id": [1], "k": [2.5]}, "'k' must hold integers"),
])
def test_bad_requests_name_the_bad_value(frame: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_request(pd.DataFrame(frame), 20)
