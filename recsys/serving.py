"""The MLflow pyfunc model behind the HTTP endpoint (``mlflow models serve``).

Request (the seed's): ``{"dataframe_split": {"columns": ["user_id", "k"], "data": [[1, 10]]}}``.
Response: one row per requested user with ``recommendations`` = K triples [movie_id, score, title],
best first, and ``source``:

- ``online_store``: the list the nightly job stored in Redis through Feast;
- ``computed``: no stored list, but a stored recent history (Feast view ``user_history``), or a
  training-time user of the id tower: scored on the spot by this version's ONNX graph, with the
  stored history as the seen set;
- ``popular``: nothing known about the user: the most popular catalogue items.

The model version is read through :class:`recsys.bundle.ModelBundle`, like nightly scoring.
"""

from __future__ import annotations

import logging

import mlflow.pyfunc
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _check_request(frame: pd.DataFrame, max_k: int) -> pd.DataFrame:
    from recsys.errors import InvalidRequestError

    if not isinstance(frame, pd.DataFrame) or "user_id" not in frame.columns:
        raise InvalidRequestError("request needs a column 'user_id' (and optionally 'k')")
    frame = frame.copy()
    if "k" not in frame.columns:
        frame["k"] = 10
    for col in ("user_id", "k"):
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.isna().any() or (values != values.round()).any():
            raise InvalidRequestError(f"column '{col}' must hold integers, got {frame[col].tolist()}")
        frame[col] = values.astype(np.int64)
    if (frame["user_id"] < 1).any():
        raise InvalidRequestError(f"user_id must be a positive integer, got {frame['user_id'].tolist()}")
    if ((frame["k"] < 1) | (frame["k"] > max_k)).any():
        raise InvalidRequestError(f"k must be in 1..{max_k}, got {frame['k'].tolist()}")
    return frame


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Stored list from the online store, else an on-the-spot ONNX retrieval, else popular items."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's PythonModelContext
        from recsys.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def _triples(self, items: np.ndarray, scores: np.ndarray, k: int) -> list[list]:
        titles = self.bundle.titles
        return [[int(m), float(s), titles.get(int(m), "")] for m, s in zip(items[:k], scores[:k])]

    def _computed(self, user_id: int, history: list[int], k: int) -> list[list] | None:
        """The graph's list from a stored history (None when the model cannot use it)."""
        from recsys.scoring import inputs_from_histories, score_users

        inputs = inputs_from_histories(self.bundle, [user_id], [history])
        if not inputs.personal[0]:
            return None
        row = score_users(self.bundle, inputs, "", "").iloc[0]
        return self._triples(row["item_ids"], row["scores"], k)

    def _one(self, user_id: int, k: int, settings) -> tuple[str, list[list]]:  # noqa: ANN001
        from recsys.errors import StoreError, UnknownUserError
        from recsys.lookup import history, lookup

        stored: list[int] = []
        try:
            return "online_store", [list(t) for t in lookup(user_id, k, settings)]
        except UnknownUserError:
            try:
                stored = history(user_id, settings)
            except UnknownUserError:
                pass
        except StoreError as exc:
            log.warning("online store unavailable (%s): no stored list or history; the id tower "
                        "can still score a known user, a history tower falls back to popular", exc)
        computed = self._computed(user_id, stored, k)
        if computed is not None:
            return "computed", computed
        items, scores = self.bundle.popular_for(self.bundle.item_index(np.asarray(stored)), k)
        return "popular", self._triples(self.bundle.movie_ids[items], scores, k)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ANN001
        from recsys.config import load_settings
        from recsys.lookup import MAX_K

        request = _check_request(model_input, min(MAX_K, self.bundle.k))
        settings = load_settings()
        rows = []
        for user_id, k in zip(request["user_id"].tolist(), request["k"].tolist()):
            source, triples = self._one(int(user_id), int(k), settings)
            rows.append({"user_id": int(user_id), "source": source, "recommendations": triples})
        return pd.DataFrame(rows)
