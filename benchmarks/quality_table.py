"""Render the README's quality tables from a quality benchmark JSON (so the two never disagree).

    .venv/bin/python benchmarks/quality_table.py benchmarks/results/quality-ml-latest-small.json

A time-split JSON (``--protocol time-split``) renders with the new-movie and known-movie columns.

tests/unit/test_readme.py checks that README.md holds exactly this table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HEADER = (
    "| model | valid R@10 | valid R@50 | valid R@100 | valid NDCG@10 | test R@10 | test R@50 "
    "| test R@100 | test NDCG@10 [95% CI] | test R@50 [95% CI] |"
)
METRICS = [
    "valid_recall_at_10",
    "valid_recall_at_50",
    "valid_recall_at_100",
    "valid_ndcg_at_10",
    "test_recall_at_10",
    "test_recall_at_50",
    "test_recall_at_100",
]


def _with_ci(row: dict, metric: str) -> str:
    value = f"{row[metric]:.4f}"
    if f"{metric}_ci" in row:
        low, high = row[f"{metric}_ci"]
        value += f" [{low:.4f}, {high:.4f}]"
    return value


def render(results: dict) -> str:
    """Markdown table: one row per model, in the JSON's order."""
    lines = [HEADER, "|" + " --- |" * (len(METRICS) + 3)]
    for name, row in results["results"].items():
        cells = [name] + [f"{row[m]:.4f}" for m in METRICS]
        cells += [_with_ci(row, "test_ndcg_at_10"), _with_ci(row, "test_recall_at_50")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SPLIT_HEADER = (
    "| model | valid R@10 | valid R@100 | valid NDCG@10 | test R@10 | test R@100 | test NDCG@10 [95% CI] "
    "| known: R@10 | known: R@100 | new: R@10 | new: R@100 | new: NDCG@10 |"
)
SPLIT_METRICS = [
    "valid_recall_at_10",
    "valid_recall_at_100",
    "valid_ndcg_at_10",
    "test_recall_at_10",
    "test_recall_at_100",
]
SPLIT_TAIL = [
    "test_known_recall_at_10",
    "test_known_recall_at_100",
    "test_new_recall_at_10",
    "test_new_recall_at_100",
    "test_new_ndcg_at_10",
]


def render_time_split(results: dict) -> str:
    """Markdown table of a time-split run: overall, then known-movie and new-movie positives."""
    lines = [SPLIT_HEADER, "|" + " --- |" * (len(SPLIT_METRICS) + len(SPLIT_TAIL) + 2)]
    for name, row in results["results"].items():
        cells = [name] + [f"{row[m]:.4f}" for m in SPLIT_METRICS] + [_with_ci(row, "test_ndcg_at_10")]
        cells += [f"{row[m]:.4f}" for m in SPLIT_TAIL]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_any(results: dict) -> str:
    """The table for the JSON's protocol."""
    protocol = (results.get("protocol") or {}).get("name", "leave-last-out")
    return render_time_split(results) if protocol == "time-split" else render(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    print(render_any(json.loads(parser.parse_args().json.read_text())))


if __name__ == "__main__":
    main()
