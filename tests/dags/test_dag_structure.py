"""The DAG files parse, and each DAG is wired as the design says: order, schedules, assets, retries."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = pytest.mark.dags

DAG_IDS = {"recsys_ingest", "recsys_retrain", "recsys_score_nightly"}
ORDER = {
    "recsys_ingest": [
        ("choose", "ingest"),
        ("choose", "take_events"),
        ("ingest", "validate_raw"),
        ("validate_raw", "prepare"),
        ("prepare", "validate_prepared"),
    ],
    "recsys_retrain": [
        ("locate_prepared", "train"),
        ("train", "compare"),
        ("locate_prepared", "compare"),
        ("compare", "promotion_gate"),
        ("promotion_gate", "announce_champion"),
        ("locate_prepared", "mine_pairs"),
        ("mine_pairs", "train_similar"),
        ("locate_prepared", "train_similar"),
        ("train_similar", "similar_gate"),
        ("mine_pairs", "similar_gate"),
        ("similar_gate", "announce_similar"),
        ("promotion_gate", "train_similar"),
    ],
    "recsys_score_nightly": [
        ("evaluate_served", "judge_canary"),
        ("judge_canary", "resolve_champion"),
        ("resolve_champion", "plan_shards"),
        ("plan_shards", "score_shard"),
        ("score_shard", "merge_shards"),
        ("merge_shards", "validate_recommendations"),
        ("validate_recommendations", "publish"),
        ("publish", "verify_lookups"),
        ("verify_lookups", "report"),
        ("score_similar", "publish_similar"),
    ],
}


def test_dagbag_imports_every_dag_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == DAG_IDS


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_dag_conventions(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.fileloc.endswith(f"/{dag_id}.py")  # file name = dag_id
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.start_date.tzinfo is not None
    assert "recsys" in dag.tags and len(dag.tags) >= 2
    assert dag.doc_md and dag_id in dag.doc_md
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_exponential_backoff > 1 and task.retry_delay >= timedelta(seconds=10)
    for upstream, downstream in ORDER[dag_id]:
        assert downstream in dag.task_dict[upstream].downstream_task_ids, (upstream, downstream)
    assert {t.task_id for t in dag.tasks} == {name for pair in ORDER[dag_id] for name in pair}


def test_schedules_chain_the_dags_through_assets(dagbag):
    from airflow.sdk import AssetOrTimeSchedule

    ingest, retrain, score = (dagbag.dags[d] for d in sorted(DAG_IDS))
    assert ingest.timetable.expression == "0 0 * * *"  # @daily
    (prepared,) = ingest.task_dict["validate_prepared"].outlets
    assert prepared.name == "recsys_prepared_data"
    assert isinstance(retrain.timetable, AssetOrTimeSchedule)
    assert retrain.timetable.asset_condition == prepared
    assert retrain.timetable.timetable.expression == "0 3 * * 0"  # weekly, Sunday 03:00 UTC
    (model,) = retrain.task_dict["announce_champion"].outlets
    assert model.name == "recsys_champion_model"
    (similar,) = retrain.task_dict["announce_similar"].outlets
    assert similar.name == "recsys_similar_model"
    assert isinstance(score.timetable, AssetOrTimeSchedule)
    assert score.timetable.asset_condition == (model | similar)  # either champion moving rescores
    assert score.timetable.timetable.expression == "30 1 * * *"  # nightly
    outlets = {t.task_id for d in dagbag.dags.values() for t in d.tasks if t.outlets}
    assert outlets == {"validate_prepared", "announce_champion", "announce_similar"}


def test_scoring_is_mapped_over_shards(dagbag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(dagbag.dags["recsys_score_nightly"].task_dict["score_shard"], MappedOperator)


def test_params_are_typed(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    retrain = dagbag.dags["recsys_retrain"].params
    assert retrain["force_promotion"] is False
    assert {k: retrain.get_param(k).schema["type"] for k in ("dataset", "k", "max_epochs")} == {
        "dataset": ["null", "string"],
        "k": ["null", "integer"],
        "max_epochs": ["null", "integer"],
    }
    score = dagbag.dags["recsys_score_nightly"].params
    assert score["shard_size"] is None  # setting score.shard_size
    assert score["full"] is False  # only the users whose ratings changed
    ingest = dagbag.dags["recsys_ingest"].params
    assert ingest["release"] is False and ingest["events_source"] is None
    with pytest.raises(ParamValidationError):
        score.get_param("shard_size").resolve(0)
    assert (score["canary_version"], score["canary_share"], score["canary_stop"]) == (None, None, False)
    assert score.get_param("canary_share").resolve(0.5) == 0.5
    for bad in (0, 0.6, "a lot"):  # the share of users: (0, 0.5]
        with pytest.raises(ParamValidationError):
            score.get_param("canary_share").resolve(bad)
    with pytest.raises(ParamValidationError):
        dagbag.dags["recsys_ingest"].params.get_param("dataset").resolve("ml-1b")


def test_the_training_task_links_to_its_mlflow_run(dagbag, monkeypatch):
    train = dagbag.dags["recsys_retrain"].task_dict["train"]
    (link,) = train.operator_extra_links
    assert link.name == "MLflow run"

    class FakeTI:
        def xcom_pull(self, task_ids):
            assert task_ids == "train"
            return {"run_id": "abc123", "experiment_id": "7"}

    monkeypatch.setenv("RECSYS_MLFLOW_UI_URL", "http://127.0.0.1:5005/")
    assert link.get_link(train, ti_key=FakeTI()) == "http://127.0.0.1:5005/#/experiments/7/runs/abc123"


def test_validating_tasks_link_to_their_data_docs(dagbag, monkeypatch):
    linked = {
        (d, t.task_id)
        for d, dag in dagbag.dags.items()
        for t in dag.tasks
        if [link.name for link in t.operator_extra_links] == ["Data Docs"]
    }
    assert linked == {
        ("recsys_ingest", "take_events"),
        ("recsys_ingest", "ingest"),
        ("recsys_ingest", "validate_raw"),
        ("recsys_ingest", "prepare"),
        ("recsys_ingest", "validate_prepared"),
        ("recsys_score_nightly", "validate_recommendations"),
    }
    task = dagbag.dags["recsys_score_nightly"].task_dict["validate_recommendations"]
    (link,) = task.operator_extra_links

    class FakeTI:
        def __init__(self, page):
            self.page = page

        def xcom_pull(self, task_ids, key):
            assert (task_ids, key) == ("validate_recommendations", "data_docs")
            return self.page

    page = "/srv/recsys/data_docs/recommendations/20261125T013000Z.html"
    monkeypatch.delenv("RECSYS_DATA_DOCS_URL", raising=False)
    assert link.get_link(task, ti_key=FakeTI(page)) == "file://" + page
    assert link.get_link(task, ti_key=FakeTI(None)) == ""  # passed: nothing to link
    monkeypatch.setenv("RECSYS_DATA_DOCS_URL", "http://127.0.0.1:8000/docs/")
    assert link.get_link(task, ti_key=FakeTI(page)) == (
        "http://127.0.0.1:8000/docs/recommendations/20261125T013000Z.html"
    )


def test_errors_retrying_cannot_fix_fail_at_once(dagbag):
    import _common  # importable: the dagbag put dags/ on sys.path, as the dag-processor does
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.errors import IngestError, StoreError, ValidationFailed

    with pytest.raises(AirflowFailException, match="ratings_raw"):
        with _common.fail_fast_on_bad_input():
            raise ValidationFailed("ratings_raw", "rating out of range")
    for transient in (
        StoreError("Redis at 127.0.0.1:1 is unreachable"),
        IngestError("download"),
        OSError("disk"),
    ):
        with pytest.raises(type(transient)):
            with _common.fail_fast_on_bad_input():
                raise transient


def test_the_readme_dag_table_matches_the_dags(dagbag):
    """README's Airflow table: a row per DAG naming every task of it in the order the DAG runs."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(recsys_\w+)` \|.*$", readme, re.M)}
    assert set(rows) == set(dagbag.dags)
    for dag_id, dag in dagbag.dags.items():
        row = rows[dag_id]
        positions = {t.task_id: [m.start() for m in re.finditer(rf"\b{t.task_id}\b", row)] for t in dag.tasks}
        assert all(positions.values()), (dag_id, [t for t, p in positions.items() if not p])
        for task in dag.tasks:  # each task is named after the tasks it waits for
            for upstream in task.upstream_task_ids:
                assert min(positions[upstream]) < max(positions[task.task_id]), (upstream, task.task_id)
        named = set(re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", row.split("|")[3]))
        assets = {"recsys_prepared_data", "recsys_champion_model", "recsys_similar_model", "movie_similar"}
        assert named - assets <= set(dag.task_dict), (dag_id, named - assets - set(dag.task_dict))


def test_tasks_draw_no_progress_bars_unless_asked(dagbag, monkeypatch):
    """Airflow files a task's stderr as [error] lines: tqdm bars stay off in tasks by default."""
    import _common

    monkeypatch.delenv("RECSYS__TRAIN__PROGRESS_BAR", raising=False)
    assert _common.load().train.progress_bar is False
    assert _common.load(**{"score.k": 20}).score.k == 20
    monkeypatch.setenv("RECSYS__TRAIN__PROGRESS_BAR", "true")
    assert _common.load().train.progress_bar is True


def test_the_test_only_shard_hold_waits_for_its_release_and_does_nothing_unset(dagbag, monkeypatch, tmp_path):
    """dags/_common.hold_for_test, the stack test's fault hook: a no-op unless it names this shard."""
    import json
    import os
    import threading
    import time

    import _common

    monkeypatch.delenv("RECSYS_TEST_HOLD_SHARD", raising=False)
    _common.hold_for_test(7)  # unset: returns at once
    monkeypatch.setenv("RECSYS_TEST_HOLD_SHARD", f"7:{tmp_path}")
    monkeypatch.setenv("RECSYS_WORKER_NAME", "worker-2")
    _common.hold_for_test(3)  # another shard: returns at once, writes nothing
    assert not list(tmp_path.iterdir())

    held = threading.Thread(target=_common.hold_for_test, args=(7,), daemon=True)
    held.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "held").exists():
        assert time.monotonic() < deadline, "no marker 30 s after the held shard started"
        time.sleep(0.05)
    marker = json.loads((tmp_path / "held").read_text())
    assert marker == {"pid": os.getpid(), "worker": "worker-2", "shard": 7}
    assert held.is_alive()  # no release yet: it cannot have returned
    (tmp_path / "release").touch()
    held.join(timeout=30)
    assert not held.is_alive()
    _common.hold_for_test(7)  # released already (the retry after the kill): returns at once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held", "release"]  # no temporary file left

    monkeypatch.setenv("RECSYS_TEST_HOLD_SHARD", str(tmp_path))
    with pytest.raises(ValueError, match="<map_index>:<folder>"):
        _common.hold_for_test(7)


def test_the_retry_delay_comes_from_the_environment_or_is_30_s(dagbag, monkeypatch):
    import _common  # the dagbag put the DAG folder on sys.path

    monkeypatch.delenv("RECSYS_TASK_RETRY_DELAY_S", raising=False)
    assert _common._retry_delay() == timedelta(seconds=30)
    monkeypatch.setenv("RECSYS_TASK_RETRY_DELAY_S", "1.5")
    assert _common._retry_delay() == timedelta(seconds=1.5)
    for bad, said in (("soon", "a number of seconds, not 'soon'"), ("-1", "between 0 and 3600")):
        monkeypatch.setenv("RECSYS_TASK_RETRY_DELAY_S", bad)
        with pytest.raises(ValueError, match=said):
            _common._retry_delay()
