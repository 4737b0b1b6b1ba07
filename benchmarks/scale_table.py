"""Render the README's scale tables from a benchmarks/scale.py JSON (so the two never disagree).

    .venv/bin/python benchmarks/scale_table.py benchmarks/results/scale-ml20m.json

tests/unit/test_readme.py checks that README.md holds exactly these tables.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def _note(stage: str, results: dict) -> str:
    """What the stage did, from its own result."""
    r = results.get(stage) or {}
    if stage == "ingest" and r:
        return (
            f"GX ratings_raw on all {r['validation']['rows']:,} rows"
            if "rows" in (r.get("validation") or {})
            else "snapshot + DVC + GX ratings_raw"
        )
    if stage == "prepare" and r:
        return (
            f"{r['n_users']:,} users, {r['n_items']:,} items, {r['n_train']:,} train positives; "
            "GX interactions on every row"
        )
    if stage in ("train", "train_id", "train_budget") and r:
        t = r["timings"]
        pop = r["mostpop"]
        tower = "id item tower (before issue 21), " if stage == "train_id" else ""
        return (
            f"{tower}{r['n_epochs']} epoch(s), {r['pairs']:,} pairs, {r['seconds_per_1m_pairs']:.0f} s "
            f"per 1M pairs; NDCG@10 valid {r['valid']['ndcg_at_10']:.4f} / test "
            f"{r['test']['ndcg_at_10']:.4f} (MostPop {pop['mostpop_valid_ndcg_at_10']:.4f} / "
            f"{pop['mostpop_test_ndcg_at_10']:.4f}); test evaluation {t['evaluate_s']:.0f} s, "
            f"export {t['export_s']:.0f} s, register {t['register_s']:.0f} s"
        )
    if stage == "promote" and r:
        c = r["comparison"]
        return (
            f"gate on validation: model NDCG@10 {c['metrics']['ndcg_at_10']:.4f}, MostPop "
            f"{c['mostpop_metrics']['ndcg_at_10']:.4f}"
        )
    if stage == "catalogue" and r:
        return (
            f"tonight's {r['movies']:,} movies ({r['tagged']:,} tagged) read in {r['read_movies_s']:.1f} s; "
            f"the {r['embedded']:,} without a trained id ({r['fresh']:,} of them new since training) "
            f"embedded by item_tower.onnx in {r['with_movies_s']:.1f} s (median of "
            f"{len(r['with_movies_runs_s'])})"
        )
    if stage == "synth":
        return f"`{results.get('_dataset', 'recsys synth')}`"
    if stage == "validate" and r:
        return f"GX recommendations on all {r['rows']:,} lists" if "rows" in r else "GX recommendations"
    if stage == "score" and r:
        return f"{r['n_users']:,} users ({r['n_popular']:,} popular lists), one process"
    if stage == "publish" and r:
        w = r["written"]
        return (
            f"{w['users']:,} lists + {w['histories']:,} histories + {w['movies']:,} titles, "
            f"{w['writer']} writer, online writes {w['online_seconds']:.1f} s"
        )
    if stage == "lookups" and r:
        return (
            f"{r['checked']} lists read back equal; lookup k=10 median "
            f"{r['lookup_k10_median_ms']:.2f} ms, p99 {r['lookup_k10_p99_ms']:.2f} ms"
        )
    if stage == "night" and r:
        return f"`recsys_score_nightly` dag.test(), {r['dag_test_s']:.0f} s in all (tasks below)"
    return ""


def render_stages(report: dict) -> str:
    lines = ["| stage | wall s | peak RSS GiB (process / tree) | what |", "| --- | --- | --- | --- |"]
    for row in report["stages"]:
        results = {**report["results"], "_dataset": report.get("dataset", "")}
        lines.append(
            f"| {row['stage']} | {row['wall_s']:.1f} | {row['peak_rss_gib']:.2f} / "
            f"{row['peak_tree_rss_gib']:.2f} | {_note(row['stage'], results)} |"
        )
    return "\n".join(lines)


def render_night(report: dict) -> str:
    night = report["results"].get("night")
    if not night:
        return ""
    seconds: dict[str, list[float]] = defaultdict(list)
    for task in night["tasks"]:
        seconds[task["task"]].append(task["seconds"] or 0.0)
    lines = ["| task | tasks | seconds |", "| --- | --- | --- |"]
    order = [
        "resolve_champion",
        "plan_shards",
        "score_shard",
        "merge_shards",
        "validate_recommendations",
        "publish",
        "verify_lookups",
        "report",
    ]
    for name in sorted(seconds, key=lambda n: order.index(n) if n in order else len(order)):
        values = seconds[name]
        shown = (
            f"{sum(values):.1f}"
            if len(values) == 1
            else (f"{sum(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})")
        )
        lines.append(f"| {name} | {len(values)} | {shown} |")
    lines.append(f"| all tasks | {len(night['tasks'])} | {night['tasks_sum_s']:.1f} |")
    return "\n".join(lines)


def render(report: dict) -> str:
    return "\n\n".join(t for t in (render_stages(report), render_night(report)) if t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    print(render(json.loads(parser.parse_args().json.read_text())))


if __name__ == "__main__":
    main()
