"""The README's quality table is the committed benchmark JSON, rendered (never typed by hand)."""

import importlib.util
import json

import pytest

from recsys.config import PROJECT_ROOT

pytestmark = pytest.mark.unit
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "quality-ml-latest-small.json"


def test_readme_quality_table_matches_the_committed_json():
    spec = importlib.util.spec_from_file_location(
        "quality_table", PROJECT_ROOT / "benchmarks" / "quality_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = json.loads(RESULTS.read_text())
    table = module.render(results)
    assert table in (PROJECT_ROOT / "README.md").read_text()
    # the protocol the figures claim: all held-out users, several seeds
    assert results["users"] == results["n_valid"] == results["n_test"] == 603
    assert len(results["seeds"]) >= 3


def test_readme_scale_tables_match_the_committed_json():
    spec = importlib.util.spec_from_file_location(
        "scale_table", PROJECT_ROOT / "benchmarks" / "scale_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = json.loads((PROJECT_ROOT / "benchmarks" / "results" / "scale-ml20m.json").read_text())
    assert module.render(report) in (PROJECT_ROOT / "README.md").read_text()
    # the run the README quotes went through every stage of the chain, at full size
    stages = {row["stage"]: row for row in report["stages"]}
    assert all(row["ok"] for row in report["stages"])
    assert {
        "ingest",
        "prepare",
        "train",
        "promote",
        "score",
        "validate",
        "publish",
        "lookups",
        "night",
    } <= set(stages)
    assert report["results"]["score"]["n_users"] == 138_493


def test_readme_similar_movies_tables_match_the_committed_json():
    results = json.loads(
        (PROJECT_ROOT / "benchmarks" / "results" / "similar-ml-latest-small.json").read_text()
    )
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(results["seeds"]) >= 3 and not results["quick"]
    for name, row in results["results"].items():
        if "ties left" in name or "jaccard" in name:  # kept in the JSON, not in the README
            continue
        cells = [
            f"{row[k]:.3f} ± {row[k + '_std']:.3f}"
            for k in (
                "valid_recall_at_10",
                "test_recall_at_10",
                "test_recall_at_50",
                "test_auc_hard",
                "test_auc_soft",
            )
        ]
        assert " | ".join(cells) + " |" in readme, name
    counts = results["pairs"]["counts"]
    for kind in ("positive", "hard_negative", "soft_negative"):
        cells = " | ".join(f"{counts[kind][split]:,}" for split in ("train", "valid", "test"))
        assert f"| {kind} | {cells} |" in readme, kind
    # the chosen configuration is the default the product trains with
    from recsys.config import SimilarConfig

    chosen = results["chosen"]["similar"]
    default = SimilarConfig().model_dump()
    for key in ("init", "distance", "margin", "mining", "learning_rate", "id_dropout", "embedding_dim"):
        assert default[key] == chosen[key], key
