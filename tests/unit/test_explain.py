"""Because you liked X (recsys.runtime.explain): the closest history item in cosine, known answers."""

import numpy as np
import pytest

from recsys.runtime.explain import because, unit_rows

pytestmark = pytest.mark.unit

# Four items on two axes: 0 and 1 point along x (1 ten times longer), 2 and 3 along y.
VECTORS = np.array([[1.0, 0.0], [10.0, 0.1], [0.0, 1.0], [0.1, 5.0]], dtype=np.float32)
PAD = 4


def test_unit_rows_have_length_one_and_a_zero_padding_row():
    unit = unit_rows(np.vstack([VECTORS, np.zeros((1, 2), np.float32)]))
    assert unit.shape == (6, 2)
    np.testing.assert_allclose(np.linalg.norm(unit[:4], axis=1), 1.0, rtol=1e-6)
    assert not unit[4:].any()  # a zero vector stays zero, and the padding row is zero


def test_the_reason_is_the_history_item_closest_in_direction_not_in_length():
    unit = unit_rows(VECTORS)
    # item 0 is explained by item 1 (same direction) rather than item 3 (longer, but along y)
    got = because(unit, np.array([[0, 2]]), np.array([[PAD, 1, 3]]))
    assert got.tolist() == [[1, 3]]


def test_ties_go_to_the_most_recent_and_an_empty_history_has_no_reason():
    unit = unit_rows(VECTORS)
    # the history holds item 1 twice (oldest and newest) and item 2 between: the newest position wins
    recommended = np.array([[0], [0]])
    history = np.array([[1, 2, 1], [PAD, PAD, PAD]])
    got = because(unit, recommended, history)
    assert got.tolist() == [[1], [-1]]
    # equal similarity: two identical vectors, the more recent (right) one is the reason
    twins = unit_rows(np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=np.float32))
    assert because(twins, np.array([[2]]), np.array([[0, 1]])).tolist() == [[1]]
    assert because(twins, np.array([[2]]), np.array([[1, 0]])).tolist() == [[0]]


def test_every_row_of_a_batch_is_its_own_users_answer():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    unit = unit_rows(vectors)
    recommended = rng.integers(0, 50, size=(6, 5))
    history = rng.integers(0, 50, size=(6, 7))
    history[2, :4] = 50  # left padding
    got = because(unit, recommended, history)
    for row in range(6):
        one = because(unit, recommended[row : row + 1], history[row : row + 1])
        assert got[row].tolist() == one[0].tolist()
        real = history[row][history[row] != 50]
        for item, reason in zip(recommended[row], got[row]):
            cosine = unit[real] @ unit[item]
            assert reason in real and unit[reason] @ unit[item] == pytest.approx(cosine.max())


def test_shapes_that_do_not_match_are_refused():
    with pytest.raises(ValueError, match="same B"):
        because(unit_rows(VECTORS), np.array([[0]]), np.array([[1], [2]]))
