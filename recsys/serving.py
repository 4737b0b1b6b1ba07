"""The MLflow pyfunc model behind the HTTP endpoint (``mlflow models serve``).

Request (the seed's): ``{"dataframe_split": {"columns": ["user_id", "k"], "data": [[1, 10]]}}``.
Response: one row per requested user with ``recommendations`` = K triples [movie_id, score, title],
best first, and ``source``: "online_store" (the list the nightly job stored in Redis through Feast),
"computed" (no stored list yet: scored on the spot by this version's ONNX graph) or "popular"
(a user this model has never seen: the most popular catalogue items, scored by train count).
"""

from __future__ import annotations

import logging

import mlflow.pyfunc
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
MAX_K = 100


def _check_request(frame: pd.DataFrame) -> pd.DataFrame:
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
    if ((frame["k"] < 1) | (frame["k"] > MAX_K)).any():
        raise InvalidRequestError(f"k must be in 1..{MAX_K}, got {frame['k'].tolist()}")
    return frame


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Stored list from the online store, else an on-the-spot ONNX retrieval, else popular items."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's PythonModelContext
        from recsys.data import seen_lists
        from recsys.scoring import OnnxRetriever

        art = context.artifacts
        self.catalogue = pd.read_parquet(art["catalogue"])
        users = pd.read_parquet(art["users"])
        self.user_index = dict(zip(users["user_id"].tolist(), users["user_idx"].tolist()))
        self.rated = seen_lists(pd.read_parquet(art["rated"]), len(users))
        self.histories = np.load(art["histories"]) if "histories" in art else None
        self.retriever = OnnxRetriever(art["onnx"], len(self.catalogue))
        self.movie_ids = self.catalogue["movie_id"].to_numpy()
        self.titles = dict(zip(self.catalogue["movie_id"], self.catalogue["title"]))
        self.popular = self.catalogue.sort_values("train_count", ascending=False, kind="mergesort")

    def _computed(self, user_id: int, k: int) -> list[list]:
        idx = self.user_index[user_id]
        hist = None if self.histories is None else self.histories[[idx]]
        items, scores = self.retriever.recommend(np.array([idx]), [self.rated[idx]], hist)
        keep = np.isfinite(scores[0])
        movie_ids = self.movie_ids[items[0][keep]][:k]
        return [[int(m), float(s), self.titles[m]] for m, s in zip(movie_ids, scores[0][keep][:k])]

    def _popular(self, k: int) -> list[list]:
        top = self.popular.head(k)
        return [[int(m), float(c), str(t)] for m, c, t in
                zip(top["movie_id"], top["train_count"], top["title"])]

    def _one(self, user_id: int, k: int, settings) -> tuple[str, list[list]]:  # noqa: ANN001
        from recsys.errors import StoreError, UnknownUserError
        from recsys.lookup import lookup

        try:
            return "online_store", [list(t) for t in lookup(user_id, k, settings)]
        except UnknownUserError:
            pass
        except StoreError as exc:
            log.warning("online store unavailable, computing on the spot: %s", exc)
        if user_id in self.user_index:
            return "computed", self._computed(user_id, k)
        return "popular", self._popular(k)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ANN001
        from recsys.config import load_settings

        request = _check_request(model_input)
        settings = load_settings()
        rows = []
        for user_id, k in zip(request["user_id"].tolist(), request["k"].tolist()):
            source, triples = self._one(int(user_id), int(k), settings)
            rows.append({"user_id": int(user_id), "source": source, "recommendations": triples})
        return pd.DataFrame(rows)
