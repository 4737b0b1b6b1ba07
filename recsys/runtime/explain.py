"""Because you liked X: for each recommended movie, the movie of the user's recent history that
explains it best.

"Best" is the history movie whose item vector (the two-tower's item tower, ``item_vectors.npy``) has
the highest cosine similarity with the recommended movie's; ties go to the most recent. The model
scores a movie by its dot product with a user vector read from that same history through the same
item vectors, so the closest history movie is the one the recommendation leans on most; it is
item-specific (each movie of a list gets its own reason) and costs one small matrix product per user.
``benchmarks/explain.py`` measures it against the alternatives (raw dot product, the most recent
movie, and the exact but H-times dearer leave-one-out influence) and says why this one was chosen.

Shapes: ``recommended`` [B, K] and ``history`` [B, H] hold item indices of the model, ``history``
left-padded with ``pad`` (the model's ``n_items``). The answer holds item indices too, ``-1`` where
a user has no history to explain from. Stored lists carry movie ids, with :data:`NONE` (0: movie
ids start at 1) for an entry without a reason (a popular list), in ``because_ids`` parallel to
``item_ids``.
"""

from __future__ import annotations

import numpy as np

NONE = 0  # because id of a list entry with no reason (popular lists): MovieLens ids start at 1


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """[N, D] item vectors -> [N + 1, D] float32 rows of length 1 (a zero vector stays zero), with a
    zero row appended for the padding index N."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return np.vstack([unit, np.zeros((1, vectors.shape[1]), dtype=np.float32)])


def because(unit: np.ndarray, recommended: np.ndarray, history: np.ndarray) -> np.ndarray:
    """The history item closest in cosine to each recommended item: [B, K] item indices.

    ``unit``: :func:`unit_rows` of the model's item vectors ([N + 1, D]; row N is the padding);
    ``recommended`` [B, K] in 0..N-1; ``history`` [B, H] in 0..N (N: padding). Ties go to the most
    recent (rightmost) history item; a row whose history is all padding gets -1.
    """
    pad = unit.shape[0] - 1
    recommended = np.asarray(recommended, dtype=np.int64)
    history = np.asarray(history, dtype=np.int64)
    if recommended.ndim != 2 or history.ndim != 2 or len(recommended) != len(history):
        raise ValueError(
            f"need recommended [B, K] and history [B, H] with the same B, got {recommended.shape} and "
            f"{history.shape}"
        )
    padding = history == pad
    # right to left, so that argmax (the first maximum) takes the most recent of equal ones
    flipped, flipped_padding = history[:, ::-1], padding[:, ::-1]
    similarity = np.matmul(unit[recommended], unit[flipped].transpose(0, 2, 1))  # [B, K, H]
    similarity[np.broadcast_to(flipped_padding[:, None, :], similarity.shape)] = -np.inf
    best = np.take_along_axis(flipped, similarity.argmax(axis=2), axis=1)
    best[padding.all(axis=1)] = -1
    return best
