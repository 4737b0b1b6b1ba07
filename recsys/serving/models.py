"""The MLflow pyfunc model behind the HTTP endpoint (``mlflow models serve``).

Request (the seed's): ``{"dataframe_split": {"columns": ["user_id", "k"], "data": [[1, 10]]}}``;
``dataframe_records``, ``inputs`` and ``instances`` (columns, or a list of rows) are read the same
way (recsys.checks.as_frame).
"More like this": ``{"dataframe_split": {"columns": ["movie_id", "k"], "data": [[1, 10]]}}`` answers
one row per movie with ``similar`` = k triples [movie_id, score, title], best first, read from the
online store (Feast view ``movie_similar``, published nightly), and ``source``: ``collaborative``
(from the movie's trained vector) or ``content`` (a movie with no or too few ratings, embedded from
its genres, year, title and tags). A movie without a stored list does not fail the batch: its row
has ``source`` ``none``, ``similar`` ``[]`` and ``reason`` (in the catalogue but not yet published,
or not in the catalogue). A k beyond the stored K is an HTTP 400 naming it, and an unreachable online store an
HTTP 503 naming it. A request holds user ids or movie ids, not both.
(``k`` optional, default 10, at most the version's K; 1 to recsys.checks.MAX_BATCH users per
request; recsys.checks says what else is refused, with an HTTP 400). Response: one row per
requested user, in request order, with ``recommendations`` = K triples [movie_id, score, title],
best first, ``because`` (parallel to them: [movie_id, title] of the movie of the user's history that
explains each, recsys.runtime.explain, or null where none does, as in a popular list), ``arm`` and
``model_version`` (the arm, ``champion`` or ``canary``, and the two_tower version of a stored list;
both "" for a computed or popular one), and ``source``:

- ``online_store``: the list the nightly job stored in Redis through Feast (of a version the arms
  record allows: a stopped canary's lists are not served, recsys.online.publication);
- ``computed``: no stored list, but a stored recent history (Feast view ``user_history``), or a
  training-time user of the id tower: scored on the spot by this version's ONNX graph, with the
  stored history as the seen set;
- ``popular``: nothing known about the user: the most popular catalogue items. Their scores are
  the movies' numbers of positive ratings in the training data (counts such as 268.0), not model
  scores: compare them only with each other.

A request costs a bounded number of steps whatever its number of users: one pipelined Redis round
trip for every user's stored list, one more for the histories of the users without a list (only
when there are some), one batched ONNX Runtime call for those the model can score. Titles come from
the version's catalogue in memory, the one the nightly publish wrote to Redis; a movie missing from
it (a list stored by another version) costs one round trip for its stored title. Settings are read
once, when MLflow loads the model, and everything loaded by then is kept out of the garbage
collector's full passes (``gc.freeze``). When Redis is unreachable, every user is answered from the
model or the popular list, with one warning per outage rather than one per request.

The model version is read through :class:`recsys.runtime.two_tower.ModelBundle`, like nightly scoring.
"""

from __future__ import annotations

import gc
import logging

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE
from mlflow.pyfunc import PythonModel

from recsys.checks import MAX_K, as_frame, check_frame, check_request
from recsys.config import Settings, load_settings
from recsys.errors import InvalidRequestError, StoreError, UnknownMovieError
from recsys.online.reader import Served, read_histories, read_served, titles
from recsys.online.similar_reader import read_similar
from recsys.runtime.content import COLLABORATIVE
from recsys.runtime.scoring import inputs_from_histories, score_users
from recsys.runtime.two_tower import ModelBundle, OnnxRetriever

log = logging.getLogger(__name__)
SOURCES = {"model": "computed", "popular": "popular"}  # score_users' source -> the response's
Ranked = tuple[str, list[int], list[float], list[int]]  # source, movie ids best first, scores, reasons


class RecommenderModel(PythonModel):
    """Stored list from the online store, else an on-the-spot ONNX retrieval, else popular items."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's PythonModelContext
        self.load(context.artifacts["bundle"], load_settings())

    def load(self, folder: str, settings: Settings) -> None:
        """Load the model bundle in ``folder``; read the online store with ``settings``."""
        bundle = ModelBundle.load(folder)
        # One ONNX Runtime thread: a request scores a handful of users (10: 1.2 ms on one thread,
        # 1.7 ms on two) and the server already runs one worker per core.
        bundle.retriever = OnnxRetriever(bundle.folder / "model.onnx", bundle.n_items, threads=1)
        self.bundle = bundle
        self.settings = settings
        self.max_k = min(MAX_K, self.bundle.k)
        self.store_up = True
        # Built now rather than by the first request that needs them.
        _ = self.bundle.titles, self.bundle.popular
        # A full garbage collection walks every object MLflow, pandas and ONNX Runtime have loaded
        # (about 300k, 150 ms measured) once every few hundred requests: leave those out of it.
        gc.collect()
        gc.freeze()

    def _store_failed(self, exc: StoreError) -> None:
        if self.store_up:
            log.warning(
                "online store unavailable (%s): answering from the model and the popular "
                "list until it is back (no stored lists or histories)",
                exc,
            )
        self.store_up = False

    def _stored(self, user_ids: list[int], k: int) -> tuple[dict[int, Served | None], set[int]]:
        """Each user's stored list (None: none stored, or the store is down) and the blocked movies
        (recsys.online.blocklist; none known while the store is down); one round trip."""
        try:
            lists, blocked = read_served(user_ids, k, self.settings, explain=True)  # checked already
        except StoreError as exc:
            self._store_failed(exc)
            return dict.fromkeys(user_ids), set()
        if not self.store_up:
            log.warning("online store is back: serving stored lists again")
            self.store_up = True
        return lists, blocked

    def _fresh(self, user_ids: list[int], blocked: set[int]) -> dict[int, Ranked]:
        """Lists of users without a stored one: their stored histories (one round trip), then the
        graph for those it can score (one batched call) and the popular list for the rest, without
        the ``blocked`` movies."""
        histories: dict[int, list[int]] = {}
        if self.store_up:
            try:
                histories = read_histories(user_ids, self.settings)
            except StoreError as exc:
                self._store_failed(exc)
        inputs = inputs_from_histories(self.bundle, user_ids, [histories.get(u, []) for u in user_ids])
        scored = score_users(self.bundle, inputs, "", "")
        out: dict[int, Ranked] = {}
        columns = (scored["source"], scored["item_ids"], scored["scores"], scored["because_ids"])
        for u, source, items, scores, because in zip(user_ids, *columns):
            keep = [i for i, m in enumerate(items.tolist()) if m not in blocked]  # takedowns
            reasons = [0 if m in blocked else m for m in because[keep].tolist()]
            out[u] = (SOURCES[source], items[keep].tolist(), scores[keep].tolist(), reasons)
        return out

    def _titles(self, movie_ids: set[int]) -> dict[int, str]:
        """Titles from the bundle; those it lacks from the online store ("" if it is down)."""
        known = self.bundle.titles
        named = {m: known[m] for m in movie_ids if m in known}
        missing = movie_ids - named.keys()
        if missing:
            try:
                named.update(titles(missing, self.settings))
            except StoreError as exc:
                self._store_failed(exc)
                named.update(dict.fromkeys(missing, ""))
        return named

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[dict]:  # noqa: ANN001
        """One dict per requested user, in request order (MLflow writes them as the JSON rows).

        A bad request is an HTTP 400 whose body names the problem; any other failure an HTTP 500
        that says to read the server log. Neither carries a stack trace (MLflow adds the
        traceback of any other exception to the reply); the traceback goes to the server's log.
        """
        try:
            model_input = as_frame(model_input)
            if isinstance(model_input, pd.DataFrame) and "movie_id" in model_input.columns:
                return self._answer_similar(model_input)
            return self._answer(model_input)
        except (InvalidRequestError, UnknownMovieError) as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        except StoreError as exc:  # only similar movies need the store: users fall back without it
            raise MlflowException(str(exc), error_code=TEMPORARILY_UNAVAILABLE) from None
        except Exception:
            log.exception("request failed")
            raise MlflowException(
                "recommendation failed on the server; see the server log", error_code=INTERNAL_ERROR
            ) from None

    def _answer(self, model_input: pd.DataFrame) -> list[dict]:
        user_ids, ks = check_request(model_input, self.max_k)
        unique = list(dict.fromkeys(user_ids))
        stored, blocked = self._stored(unique, max(ks))
        ranked: dict[int, Ranked] = {
            u: ("online_store", got.items, got.scores, got.because)
            for u, got in stored.items()
            if got is not None
        }
        missing = [u for u in unique if u not in ranked]
        if missing:
            ranked.update(self._fresh(missing, blocked))
        shown = {m for u, k in zip(user_ids, ks) for m in (*ranked[u][1][:k], *ranked[u][3][:k])}
        named = self._titles(shown - {0})
        rows = []
        for user_id, k in zip(user_ids, ks):
            source, items, scores, because = ranked[user_id]
            got = stored.get(user_id)
            arm, version = (got.arm, got.model_version) if got is not None else ("", "")
            rows.append(
                {
                    "user_id": user_id,
                    "source": source,
                    "arm": arm,
                    "model_version": version,
                    "recommendations": [[m, s, named[m]] for m, s in zip(items[:k], scores[:k])],
                    "because": [[m, named[m]] if m else None for m in (because or [0] * len(items))[:k]],
                }
            )
        return rows

    def _answer_similar(self, model_input: pd.DataFrame) -> list[dict]:
        """One dict per requested movie: its stored similar movies, or an empty list and the reason
        (one pipelined round trip, one more for the titles). StoreError when the store is down."""
        movie_ids, ks = check_frame(model_input, MAX_K, "movie_id")
        try:
            found = read_similar(list(dict.fromkeys(movie_ids)), max(ks), self.settings)
        except StoreError as exc:
            self._store_failed(exc)
            raise
        if not self.store_up:
            log.warning("online store is back: serving stored lists again")
            self.store_up = True
        rows = []
        for m, k in zip(movie_ids, ks):
            got = found[m]
            if got.reason:
                rows.append({"movie_id": m, "source": got.source, "similar": [], "reason": got.reason})
            else:
                triples = [list(t) for t in got.similar[:k]]
                rows.append({"movie_id": m, "source": got.source, "similar": triples})
        return rows


class SimilarModel(PythonModel):
    """The ``movie_similar`` version served on its own: a movie's top-K from the version's ONNX
    graph (no online store needed). Request columns ``movie_id`` and optionally ``k``."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's PythonModelContext
        from recsys.runtime.similar import SimilarBundle

        self.bundle = SimilarBundle.load(context.artifacts["bundle"], threads=1)
        self.titles = dict(zip(self.bundle.movie_ids.tolist(), self.bundle.catalogue["title"].astype(str)))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[dict]:  # noqa: ANN001
        """One dict per requested movie; a movie this version does not know gets ``source`` ``none``,
        ``similar`` ``[]`` and ``reason``, and does not fail the batch."""
        try:
            movie_ids, ks = check_frame(model_input, min(MAX_K, self.bundle.k), "movie_id")
        except InvalidRequestError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        rows = self.bundle.item_index(np.asarray(movie_ids, dtype=np.int64))
        known = rows >= 0
        answers = iter(zip(*self.bundle.similar(rows[known]))) if known.any() else iter([])
        ids = self.bundle.movie_ids
        out = []
        for m, k, found in zip(movie_ids, ks, known):
            if not found:
                reason = (
                    f"movie {m} is unknown to this movie_similar version: too rarely rated in its "
                    "training data, or not a catalogue id"
                )
                out.append({"movie_id": m, "source": "none", "similar": [], "reason": reason})
                continue
            row, vals = next(answers)
            triples = [[int(ids[i]), float(v), self.titles[int(ids[i])]] for i, v in zip(row[:k], vals[:k])]
            out.append({"movie_id": m, "source": COLLABORATIVE, "similar": triples})
        return out


def answer_without_list(
    settings: Settings, user_id: int, k: int
) -> tuple[str, str, list[tuple], list[list | None]]:
    """(source, version, [movie_id, score, title] triples, the HTTP row's ``because``) for a user
    without a stored list, as the HTTP endpoint answers: ``computed`` from a stored history by the
    champion, else ``popular`` (scores: positive ratings in the training data). For ``recsys lookup``."""
    from recsys.ops.registry import CHAMPION, Registry

    version, folder = Registry.open(settings).download_bundle(CHAMPION)
    model = RecommenderModel()
    model.load(str(folder), settings)
    row = model._answer(pd.DataFrame({"user_id": [user_id], "k": [k]}))[0]
    return row["source"], version, [tuple(t) for t in row["recommendations"]], row["because"]
