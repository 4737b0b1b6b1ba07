"""A model version as its consumers see it: ONNX graph, id maps, catalogue, K and tower kind.

The one reader of a version's artefacts: nightly scoring, the HTTP pyfunc and the promotion gate all
load a :class:`ModelBundle` from a folder, so none reaches into another's objects. The folder holds
``model.onnx`` (see recsys.models.two_tower.export), ``catalogue.parquet`` (item_idx, movie_id, title, genres,
train_count), ``users.parquet`` (user_idx, user_id: the id tower's training-time users) and
``bundle.json``; versions trained since issue 7 also hold ``user_tower.onnx`` and
``item_vectors.npy`` (recsys.models.two_tower.export.export_scoring), which :class:`FastRetriever` uses:
same lists, several times faster. A content item tower's version also holds ``item_tower.onnx``
and ``vocabulary.json``: :meth:`ModelBundle.with_movies` embeds tonight's new movies with them, so
they can be recommended from their first night, and ``rare_movies.npy`` (the movies rated in its
training data, too rarely to be trained): the others outside its catalogue are new since training,
and with ``fresh_slots`` the last places of every list are kept for the user's best of those
(:class:`FastRetriever`; benchmarks/fresh_slots.py measures it). This module imports neither torch nor MLflow:
serving needs ONNX Runtime (and numba for the top-K kernel) only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import HISTORY_TOWERS
from recsys.errors import DataError
from recsys.files import read_parquet
from recsys.runtime.content import ITEM_TOWER_FILE, RARE_FILE, VOCABULARY_FILE, embed_movies, read_rare
from recsys.runtime.onnx import DAMAGED, session

BUNDLE_FILE = "bundle.json"
FORMAT = 2  # bumped when the layout changes; older bundles are refused with a clear error
FILES = ("model.onnx", "catalogue.parquet", "users.parquet", BUNDLE_FILE)
SCORING_FILES = ("user_tower.onnx", "item_vectors.npy")  # optional: the fast scoring path
CONTENT_FILES = (ITEM_TOWER_FILE, VOCABULARY_FILE)  # a content item tower: embeds new movies
ITEM_TABLE = "item_table"  # a content history tower's second input (recsys.models.two_tower.export)
_MIN_PART = 16  # users per side-by-side user tower run, at least
_WAVE_USERS = 65_536  # users FastRetriever.recommend_batches embeds before scoring them (16 MB at D=64)


def pad_lists(lists: list[np.ndarray], pad: int, min_width: int = 1) -> np.ndarray:
    """Right-pad variable-length int arrays into [len(lists), max(len, min_width)] with ``pad``."""
    width = max([min_width] + [len(x) for x in lists])
    out = np.full((len(lists), width), pad, dtype=np.int64)
    for row, values in enumerate(lists):
        out[row, : len(values)] = values
    return out


class OnnxRetriever:
    """An ONNX Runtime session over the retrieval graph written by
    :func:`recsys.models.two_tower.export.export_onnx`."""

    def __init__(self, onnx_path: Path, n_items: int, threads: int | None = None) -> None:
        if not Path(onnx_path).is_file():
            raise DataError(f"ONNX model {onnx_path} does not exist")
        self.session = session(Path(onnx_path), threads)
        self.user_input = self.session.get_inputs()[0].name  # "history" or "user_idx"
        self.n_items = n_items

    def recommend(self, user: np.ndarray, seen: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Top-K for a batch: history [B, H] or user_idx [B], seen lists -> ([B, K], [B, K])."""
        feeds = {self.user_input: np.asarray(user, dtype=np.int64), "seen": pad_lists(seen, self.n_items)}
        item_idx, scores = self.session.run(["item_idx", "scores"], feeds)
        return item_idx, scores

    def recommend_batches(
        self, user: np.ndarray, seen: list[np.ndarray], batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`recommend` of each run of ``batch_size`` rows in turn."""
        for start in range(0, len(user), batch_size):
            yield self.recommend(user[start : start + batch_size], seen[start : start + batch_size])


def matmul_graph(items: np.ndarray) -> bytes:
    """An ONNX graph ``user_vectors`` [B, D] -> ``scores`` [B, N]: one MatMul by ``items``.T.

    The item matrix is an initializer, stored transposed ([D, N]) so nothing is transposed per call.
    """
    from onnx import TensorProto, helper, numpy_helper

    n, d = items.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["user_vectors", "items_t"], ["scores"])],
        "scores",
        [helper.make_tensor_value_info("user_vectors", TensorProto.FLOAT, ["batch", d])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(np.ascontiguousarray(items.T, dtype=np.float32), "items_t")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # readable by every onnxruntime this project supports
    return model.SerializeToString()


class FastRetriever:
    """The nightly scoring path: user tower (ONNX) -> MatMul (ONNX) -> fused masked top-K.

    Returns what :class:`OnnxRetriever` returns for the same version (tests/unit/test_export.py):
    the top-K of the same float32 dot products, ties to the lower item index.
    """

    def __init__(
        self, tower_path: Path, items: Path | np.ndarray, k: int, threads: int | None = None
    ) -> None:
        """``items``: the item vectors [N, D] or their ``item_vectors.npy``; ``threads``: ONNX
        Runtime and top-K threads (None: every core; 1 when scoring shards run side by side)."""
        if not Path(tower_path).is_file():
            raise DataError(f"scoring file {tower_path} does not exist")
        # The tower's ops are small: ONNX Runtime spreads one over 2 threads at ~1.1x the speed of
        # one, while 2 one-thread runs of half a batch side by side take 1.9x (benchmarks/speed.py).
        self.workers = threads or os.cpu_count() or 1
        self.tower = session(Path(tower_path), 1)
        self._pool: ThreadPoolExecutor | None = None
        self.user_input = self.tower.get_inputs()[0].name  # "history" or "user_idx"
        items = items if isinstance(items, np.ndarray) else load_vectors(Path(items))
        self.n_items, self.k = items.shape[0], min(k, items.shape[0])
        self.matmul = session(matmul_graph(items), threads)
        self.threads = threads
        # a content history tower reads its history from the item table (padding row last)
        self.table = None
        self.fresh, self.fresh_slots = np.empty(0, dtype=np.int64), 0  # see ModelBundle.with_movies
        if any(i.name == ITEM_TABLE for i in self.tower.get_inputs()):
            self.table = np.vstack([items, np.zeros((1, items.shape[1]), items.dtype)]).astype(np.float32)

    def user_vectors(self, user: np.ndarray) -> np.ndarray:
        """history [B, H] or user_idx [B] -> user vectors [B, D] float32.

        Columns that are padding in every row of a history batch are cut first (the encoder's
        positions count from the end and padding is masked, so the vectors stay the same): a batch
        of short histories costs less. Batch users of similar history length together. The batch
        is split into one part per thread, each cut on its own and run by one ONNX Runtime thread,
        side by side.
        """
        user = np.asarray(user, dtype=np.int64)
        parts = min(self.workers, max(1, len(user) // _MIN_PART))
        if parts == 1:
            return self._tower(user)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="user-tower")
        return np.concatenate(list(self._pool.map(self._tower, np.array_split(user, parts))))

    def _tower(self, user: np.ndarray) -> np.ndarray:
        if user.ndim == 2 and user.shape[1] > 2:
            real = (user != self.n_items).any(axis=0)
            first = min(int(real.argmax()) if real.any() else user.shape[1], user.shape[1] - 2)
            user = user[:, first:]
        feeds = {self.user_input: user}
        if self.table is not None:
            feeds[ITEM_TABLE] = self.table
        return self.tower.run(["user_vectors"], feeds)[0]

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """user vectors [B, D] -> every item's score [B, N] (the bare MatMul: the floor)."""
        return self.matmul.run(["scores"], {"user_vectors": vectors})[0]

    def recommend(self, user: np.ndarray, seen: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Top-K for a batch: history [B, H] or user_idx [B], seen lists -> ([B, K], [B, K])."""
        return self._retrieve(self.user_vectors(user), seen)

    def recommend_batches(
        self, user: np.ndarray, seen: list[np.ndarray], batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`recommend` of each run of ``batch_size`` rows in turn, the same lists, faster:
        the tower runs a wave of batches, then the MatMul and top-K run batch by batch. A MatMul
        that runs right after a tower call took twice as long as one after the previous top-K
        (not page faults: the same into a preallocated output); benchmarks/speed.py times both
        orders (``nightly``, ``nightly_in_turn``)."""
        wave = max(batch_size, _WAVE_USERS // batch_size * batch_size)
        for first in range(0, len(user), wave):
            starts = range(first, min(first + wave, len(user)), batch_size)
            vectors = [self.user_vectors(user[s : s + batch_size]) for s in starts]
            for s, v in zip(starts, vectors, strict=True):
                yield self._retrieve(v, seen[s : s + batch_size])

    def _retrieve(self, vectors: np.ndarray, seen: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from recsys.runtime.topk import masked_topk

        scores = self.scores(vectors)
        if not scores.flags.writeable:  # onnxruntime hands back its own buffer: writable today
            scores = scores.copy()
        return masked_topk(scores, seen, self.k, self.threads, self.fresh, self.fresh_slots)


def load_vectors(path: Path) -> np.ndarray:
    """An [items, dim] float matrix saved with numpy (DataError when missing or damaged)."""
    if not path.is_file():
        raise DataError(f"scoring file {path} does not exist")
    try:
        items = np.load(path)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc}); {DAMAGED}") from exc
    if items.ndim != 2:
        raise DataError(f"{path} must hold an [items, dim] matrix, got shape {items.shape}")
    return items


@dataclass
class ModelBundle:
    """A loaded model version (see the module docstring); use :meth:`load`."""

    folder: Path
    user_tower: str  # sasrec | mean | id
    k: int  # list length the graph returns
    history_length: int
    rating_threshold: float  # rating >= this is a positive (history input)
    catalogue: pd.DataFrame
    users: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None  # scoring threads (None: every core); see FastRetriever
    vectors: np.ndarray | None = None  # tonight's item vectors (:meth:`with_movies`); None: the trained ones
    fresh: np.ndarray | None = None  # item_idx of tonight's movies new since training (:meth:`with_movies`)
    fresh_slots: int = 0  # the last places of a list kept for them

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> ModelBundle:
        """Read a bundle folder; raises DataError naming a missing file or an unknown format.

        ``threads`` bounds the threads its retriever scores with (None: every core)."""
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise DataError(
                f"model bundle {folder} lacks {missing}; was it written by this "
                "version of recsys? Retrain to get a current bundle"
            )
        try:
            meta = json.loads((folder / BUNDLE_FILE).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{folder / BUNDLE_FILE} is not valid JSON ({exc}); {DAMAGED}") from exc
        if meta.get("format") != FORMAT:
            raise DataError(
                f"model bundle {folder} has format {meta.get('format')!r}, this recsys "
                f"reads format {FORMAT}; retrain the model"
            )
        catalogue = read_parquet(folder / "catalogue.parquet", fix=DAMAGED).sort_values("item_idx")
        return cls(
            folder,
            meta["user_tower"],
            int(meta["k"]),
            int(meta["history_length"]),
            float(meta["rating_threshold"]),
            catalogue.reset_index(drop=True),
            read_parquet(folder / "users.parquet", fix=DAMAGED),
            meta,
            threads,
        )

    @property
    def n_items(self) -> int:
        return len(self.catalogue)

    @property
    def n_trained(self) -> int:
        """Movies the version was trained on (item_idx 0..n_trained-1); the rest are new tonight."""
        return int(self.meta.get("n_items", self.n_items))

    @property
    def reads_content(self) -> bool:
        """True when the version embeds movies from their features (a content item tower)."""
        return all((self.folder / name).is_file() for name in CONTENT_FILES)

    @cached_property
    def item_vectors(self) -> np.ndarray:
        """Every catalogue movie's vector [N, D] (tonight's, with :meth:`with_movies`)."""
        return self.vectors if self.vectors is not None else load_vectors(self.folder / SCORING_FILES[1])

    def with_movies(self, movies: pd.DataFrame, fresh_slots: int = 0) -> ModelBundle:
        """Tonight's bundle: a content tower's catalogue grown by every movie of ``movies``
        (movie_id, title, genres, optionally tags) it was not trained on, each embedded from its
        features by ``item_tower.onnx``, with no retrain; the bundle itself for an id tower.
        ``fresh_slots``: the last places of each list kept for the user's best movies new since
        training (those not in ``rare_movies.npy``; none for a version without it)."""
        if not self.reads_content or not self.fast_scoring:
            return self
        new = movies[~movies["movie_id"].isin(self.movie_ids)].sort_values("movie_id", kind="mergesort")
        if new.empty:
            return self
        n = self.n_items
        added = new.assign(item_idx=np.arange(n, n + len(new)), train_count=0)
        added = added[[c for c in self.catalogue.columns if c in added.columns]]
        vectors = np.vstack([self.item_vectors, self.embed(added)]).astype(np.float32)
        catalogue = pd.concat([self.catalogue, added], ignore_index=True)
        catalogue["genres"] = catalogue["genres"].fillna("(no genres listed)")
        fresh = None
        if fresh_slots and (self.folder / RARE_FILE).is_file():
            rare = read_rare(self.folder)
            fresh = added["item_idx"].to_numpy()[~added["movie_id"].isin(rare).to_numpy()]
        return replace(self, catalogue=catalogue, vectors=vectors, fresh=fresh, fresh_slots=fresh_slots)

    def embed(self, movies: pd.DataFrame) -> np.ndarray:
        """Vectors of ``movies`` from their features alone (no trained id): [M, D]."""
        return embed_movies(self.folder, movies, self.n_trained, self.threads)

    @property
    def reads_history(self) -> bool:
        return self.user_tower in HISTORY_TOWERS

    @cached_property
    def movie_ids(self) -> np.ndarray:
        """item_idx -> movie_id, [N] int64."""
        return self.catalogue["movie_id"].to_numpy(dtype=np.int64)

    @cached_property
    def _item_lookup(self) -> pd.Index:
        return pd.Index(self.movie_ids)

    @cached_property
    def _user_lookup(self) -> pd.Index:
        return pd.Index(self.users.sort_values("user_idx")["user_id"].to_numpy(dtype=np.int64))

    def item_index(self, movie_ids: np.ndarray) -> np.ndarray:
        """movie ids -> item_idx, -1 for a movie unknown to this model."""
        return self._item_lookup.get_indexer(np.asarray(movie_ids, dtype=np.int64))

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        """user ids -> training-time user_idx (the id tower's input), -1 for a user it never saw."""
        return self._user_lookup.get_indexer(np.asarray(user_ids, dtype=np.int64))

    @cached_property
    def popular(self) -> np.ndarray:
        """item_idx by train popularity, most popular first (ties by item_idx)."""
        counts = self.catalogue["train_count"].to_numpy()
        return np.lexsort((np.arange(len(counts)), -counts))

    @cached_property
    def titles(self) -> dict[int, str]:
        return dict(zip(self.movie_ids.tolist(), self.catalogue["title"].astype(str).tolist()))

    @cached_property
    def unit_item_vectors(self) -> np.ndarray | None:
        """The item vectors as unit rows with a padding row (recsys.runtime.explain.unit_rows),
        [N + 1, D]; None for a version without ``item_vectors.npy`` (no reasons then)."""
        from recsys.runtime.explain import unit_rows

        if self.vectors is None and not (self.folder / SCORING_FILES[1]).is_file():
            return None
        return unit_rows(self.item_vectors)

    @property
    def fast_scoring(self) -> bool:
        """True when the version holds the fast scoring files (trained since issue 7)."""
        return all((self.folder / name).is_file() for name in SCORING_FILES)

    @cached_property
    def retriever(self) -> OnnxRetriever | FastRetriever:
        """:class:`FastRetriever` when the version has its files, else the end-to-end graph."""
        if self.fast_scoring:
            fast = FastRetriever(self.folder / SCORING_FILES[0], self.item_vectors, self.k, self.threads)
            if self.fresh is not None and len(self.fresh) and self.fresh_slots:
                fast.fresh, fast.fresh_slots = self.fresh, min(self.fresh_slots, fast.k - 1)
            return fast
        return OnnxRetriever(self.folder / "model.onnx", self.n_items, self.threads)

    def popular_for(self, seen: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most popular items not in ``seen`` (item_idx) and their train counts as scores."""
        order = self.popular[~np.isin(self.popular, seen)][:k]
        return order, self.catalogue["train_count"].to_numpy()[order].astype(np.float32)
