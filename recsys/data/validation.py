"""Data validation with great-expectations (GX 1.x): one suite per data product.

Suites live as JSON under ``expectations/`` (the form GX serialises an ExpectationSuite to) and run
through GX's own validator on a pandas dataframe: an ephemeral context, one pandas datasource, one
dataframe asset per suite and a whole-dataframe batch definition. The context, the suites and the
batch definitions are built once per process, so a repeated validation costs only the metrics.

Suites: ``ratings_raw`` (the raw ratings snapshot), ``interactions`` (the prepared positives; parameters
``n_users``, ``n_items``, ``rating_threshold``), ``recommendations`` (per-user checks derived by
:func:`recommendation_checks`, because GX has no list expectations; parameter ``k``) and ``pairs``
(the pairwise table of similar movies with per-row checks from :func:`pair_checks`; parameters
``min_positives``, ``max_positives``); ``events`` and ``movie_events`` (a night's delivery, see
recsys.data.event_checks).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys.config import PROJECT_ROOT
from recsys.data.list_checks import RECOMMENDATION_COLUMNS, recommendation_checks
from recsys.data.prepared import Prepared
from recsys.errors import DataError, ValidationFailed

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.datasource.fluent import PandasDatasource

log = logging.getLogger(__name__)

EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
SUITES = ("ratings_raw", "interactions", "recommendations", "pairs", "events", "movie_events")
MAX_EXAMPLES = 5  # bad values / rows quoted per failed expectation
# Columns that name a failing row in the report (when present), instead of the bare frame index.
_ROW_KEYS = {
    "ratings_raw": ["user_id", "movie_id"],
    "interactions": ["user_id", "movie_id"],
    "recommendations": ["user_id"],
    "pairs": ["movie_id_first", "movie_id_second"],
    "events": ["user_id", "movie_id"],
    "movie_events": ["movie_id"],
}


@lru_cache(maxsize=1)
def _datasource() -> PandasDatasource:
    """The pandas datasource of the process-wide in-memory GX context (analytics, progress bars off)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # there is no network; never phone home
    import great_expectations as gx  # heavy (~5 s): keep `import recsys.data.validation` cheap
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.enable_analytics(False)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context.data_sources.add_pandas("recsys")


@cache
def _suite_json(name: str) -> dict[str, Any]:
    if name not in SUITES:
        raise ValueError(f"unknown validation suite {name!r}; known suites: {', '.join(SUITES)}")
    path = EXPECTATIONS_DIR / f"{name}.json"
    if not path.is_file():
        raise DataError(f"expectation suite file {path} is missing; restore it from git")
    return json.loads(path.read_text())


@cache
def _suite(name: str) -> ExpectationSuite:
    """Load a suite from JSON (the context must exist first; GX resolves suites through it)."""
    _datasource()
    from great_expectations import ExpectationSuite

    spec = _suite_json(name)
    suite = ExpectationSuite(**spec)
    # GX logs and drops an expectation it cannot parse; a suite must never lose checks silently.
    if len(suite.expectations) != len(spec["expectations"]):
        raise DataError(
            f"suite {name!r}: {len(spec['expectations']) - len(suite.expectations)} "
            f"expectation(s) in {EXPECTATIONS_DIR / name}.json are invalid (see GX log)"
        )
    return suite


@cache
def _batch_definition(name: str) -> BatchDefinition:
    return _datasource().add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")


def suite_parameters(name: str) -> set[str]:
    """Names of the ``{"$PARAMETER": ...}`` values the suite needs at run time."""
    return set(re.findall(r'"\$PARAMETER": "([^"]+)"', json.dumps(_suite_json(name)["expectations"])))


def validate(
    suite_name: str, frame: pd.DataFrame, parameters: dict | None = None, docs_dir: Path | None = None
) -> dict:
    """Run suite ``suite_name`` on ``frame`` with GX.

    ``parameters`` fill the suite's ``$PARAMETER`` values (all are required). Returns a summary
    ``{"suite", "success", "evaluated_expectations", "successful_expectations", "rows", "seconds"}``.
    Raises ValidationFailed (its ``report`` names each failed expectation, its column(s), how many rows
    failed and a few bad values; with ``docs_dir``, ``docs`` is the run's Data Docs page written
    there, see :func:`write_data_docs`) and ValueError for an unknown suite or a missing parameter.
    """
    parameters = dict(parameters or {})
    missing = sorted(suite_parameters(suite_name) - set(parameters))
    if missing:
        raise ValueError(f"suite {suite_name!r} needs parameter(s) {missing}; pass them in `parameters`")
    start = time.perf_counter()
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
    keys = _ROW_KEYS.get(suite_name, [])
    if keys and all(k in frame.columns for k in keys):
        result_format["unexpected_index_column_names"] = keys
    if not frame.index.is_unique:  # GX looks failing rows up by index label
        frame = frame.reset_index(drop=True)
    batch = _batch_definition(suite_name).get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(
        _suite(suite_name), result_format=result_format, expectation_parameters=parameters
    )
    stats = result.statistics
    summary = {
        "suite": suite_name,
        "success": bool(result.success),
        "evaluated_expectations": int(stats["evaluated_expectations"]),
        "successful_expectations": int(stats["successful_expectations"]),
        "rows": len(frame),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if not result.success:
        docs = write_data_docs(result, docs_dir / suite_name) if docs_dir else None
        raise ValidationFailed(suite_name, failure_report(result.results, summary), docs)
    log.info("validation passed: %s", summary)
    return summary


def write_data_docs(result: Any, folder: Path) -> str:
    """The validation result as a great-expectations Data Docs page (GX's own page renderer, as its
    site builder uses), written to ``folder/<UTC time>.html`` and ``folder/latest.html``."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    page = folder / f"{stamp}.html"
    page.write_text(html)
    (folder / "latest.html").write_text(html)
    return str(page.resolve())


def _columns(kwargs: dict) -> str:
    cols = kwargs.get("column") or kwargs.get("column_list")
    if cols is None and "column_A" in kwargs:
        cols = [kwargs["column_A"], kwargs["column_B"]]
    if cols is None:
        return "table"
    return ", ".join(cols) if isinstance(cols, list) else str(cols)


def _exception_message(info: Any) -> str | None:
    """First line of the first raised exception in GX's (possibly nested) exception_info."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception") and info.get("exception_message"):
        return str(info["exception_message"]).strip().splitlines()[0]
    for value in info.values():
        message = _exception_message(value)
        if message:
            return message
    return None


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, recursively, so reports read `3`, not `np.int64(3)`."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _describe(res: Any) -> list[str]:
    """Report lines for one failed ExpectationValidationResult."""
    config = res.expectation_config
    lines = [f"- {config.type} [{_columns(config.kwargs)}]"]
    error = _exception_message(res.exception_info)
    out = res.result or {}
    if error:
        lines.append(f"    could not run: {error}")
    elif "unexpected_count" in out:
        lines.append(
            f"    {out['unexpected_count']} of {out.get('element_count')} rows unexpected "
            f"({out.get('unexpected_percent') or 0:.3g}%)"
        )
        # Rows (key columns + the bad value) say more than bare values; GX gives them when it can.
        rows = out.get("partial_unexpected_index_list") or []
        if rows and isinstance(rows[0], dict):
            lines.append(f"    example rows: {_plain(rows[:MAX_EXAMPLES])}")
        else:
            lines.append(f"    examples: {_plain(out.get('partial_unexpected_list', [])[:MAX_EXAMPLES])}")
    else:
        lines.append(f"    observed: {_plain(out.get('observed_value'))!r}")
        if out.get("details"):
            lines.append(f"    details: {_plain(out['details'])}")
    return lines


def failure_report(results: list, summary: dict) -> str:
    """Readable multi-line text naming each failed expectation of a GX validation result."""
    # Expectations that ran come first; those that could not run (a missing column) follow.
    failed = sorted(
        (r for r in results if not r.success), key=lambda r: _exception_message(r.exception_info) is not None
    )
    lines = [
        f"{len(failed)} of {summary['evaluated_expectations']} expectations failed on {summary['rows']} rows:"
    ]
    for res in failed:
        lines.extend(_describe(res))
    return "\n".join(lines)


def validate_ratings(ratings: pd.DataFrame, docs_dir: Path | None = None) -> dict:
    """Validate a raw ratings frame (as read by ``recsys.data.prepared.load_ratings``) with suite
    ``ratings_raw``."""
    return validate("ratings_raw", ratings, docs_dir=docs_dir)


def validate_interactions(prepared: Prepared, rating_threshold: float, docs_dir: Path | None = None) -> dict:
    """Validate ``prepared.interactions`` against its own id maps with suite ``interactions``."""
    parameters = {
        "n_users": prepared.n_users,
        "n_items": prepared.n_items,
        "rating_threshold": float(rating_threshold),
    }
    return validate("interactions", prepared.interactions, parameters, docs_dir)


def validate_recommendations(
    recs: pd.DataFrame,
    rated: pd.DataFrame,
    k: int,
    docs_dir: Path | None = None,
    catalogue: pd.DataFrame | None = None,
) -> dict:
    """Validate scored recommendation lists with suite ``recommendations``.

    ``k`` is the expected length of every list (the caller passes min(k, unseen catalogue size));
    ``catalogue``: the night's served catalogue (movie_id, train_count), new movies included.
    Raises ValidationFailed, also when ``recs`` lacks a required column.
    """
    missing = [c for c in RECOMMENDATION_COLUMNS if c not in recs.columns]
    if missing:
        raise ValidationFailed(
            "recommendations",
            f"- expect_table_columns_to_match_set [table]\n"
            f"    missing column(s) {missing}; got {list(recs.columns)}",
        )
    checks = recommendation_checks(recs, rated, catalogue)
    return validate("recommendations", checks, {"k": int(k)}, docs_dir)


PAIR_COLUMNS = ["movie_id_first", "movie_id_second", "label", "kind", "split", "shares_characteristics"]


def pair_checks(table: pd.DataFrame) -> pd.DataFrame:
    """The table plus what suite ``pairs`` checks per row: ``self_pair``, ``label_matches_kind``,
    ``query_splits`` (splits the row's query appears in) and ``query_positives`` (its positives)."""
    first = table["movie_id_first"]
    positive = table["kind"] == "positive"
    return table.assign(
        self_pair=first == table["movie_id_second"],
        label_matches_kind=(table["label"] == 1) == positive,
        query_splits=table.groupby("movie_id_first")["split"].transform("nunique").astype("int64"),
        query_positives=positive.groupby(first).transform("sum").astype("int64"),
    )


def validate_pairs(
    table: pd.DataFrame, min_positives: int, max_positives: int, docs_dir: Path | None = None
) -> dict:
    """Validate the pairwise table (recsys.data.pairs.mine) with suite ``pairs``; ValidationFailed also
    when a column is missing."""
    missing = [c for c in PAIR_COLUMNS if c not in table.columns]
    if missing:
        raise ValidationFailed(
            "pairs",
            f"- expect_table_columns_to_match_set [table]\n"
            f"    missing column(s) {missing}; got {list(table.columns)}",
        )
    parameters = {"min_positives": int(min_positives), "max_positives": int(max_positives)}
    return validate("pairs", pair_checks(table), parameters, docs_dir)
