"""A night's delivery validated before it touches anything: suites ``events`` (the ratings) and
``movie_events`` (movies added with them), run by recsys.data.validation with GX.

``events`` checks what MovieLens's own suite checks of a rating (types, nulls, half stars, ids), that
no event comes from the future (timestamps up to a day after the run: parameter ``max_timestamp``),
and that every rated movie is known: in the snapshot's movies or added by the same delivery (a
derived column ``known_movie``, as GX has no expectation against a second table). Repeated rows are
not a failure: the event log drops and counts them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.events import MOVIE_COLUMNS, RATING_COLUMNS, Delivery
from recsys.data.validation import validate

FUTURE_SLACK_S = 86_400  # clocks and time zones: an event up to a day ahead of the run is accepted


def event_checks(ratings: pd.DataFrame, known_movies: np.ndarray) -> pd.DataFrame:
    """The delivered ratings plus ``known_movie`` (True when the movie is in ``known_movies``)."""
    movie = pd.to_numeric(ratings["movie_id"], errors="coerce") if len(ratings) else ratings["movie_id"]
    return ratings[RATING_COLUMNS].assign(known_movie=np.isin(movie.to_numpy(), known_movies))


def validate_delivery(
    delivery: Delivery, movies_now: pd.DataFrame, docs_dir: Path | None, now: float | None = None
) -> dict:
    """Run ``movie_events`` on the added movies (when there are any) and ``events`` on the ratings.

    ``movies_now``: the snapshot's movies before this delivery. Raises ValidationFailed (with a Data
    Docs page under ``docs_dir``); returns both summaries.
    """
    summary: dict = {}
    known = movies_now["movie_id"].to_numpy()
    if len(delivery.movies):
        summary["movie_events"] = validate("movie_events", delivery.movies[MOVIE_COLUMNS], docs_dir=docs_dir)
        added = pd.to_numeric(delivery.movies["movie_id"], errors="coerce").dropna().to_numpy()
        known = np.concatenate([known, added.astype(np.int64)])
    if len(delivery.ratings):
        limit = int((time.time() if now is None else now) + FUTURE_SLACK_S)
        checks = event_checks(delivery.ratings, known)
        summary["events"] = validate("events", checks, {"max_timestamp": limit}, docs_dir)
    return summary
