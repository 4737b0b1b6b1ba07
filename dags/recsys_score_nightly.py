"""
### recsys_score_nightly: score the users whose ratings changed (or everyone) and publish the lists

Runs nightly (01:30 UTC) and whenever `recsys_retrain` moves the champion (asset
**recsys_champion_model**).

`evaluate_served` -> `judge_canary` -> `resolve_champion` -> `plan_shards` -> `score_shard` (mapped,
one task per shard: Celery or Kubernetes workers take shards in parallel) -> `merge_shards` ->
`validate_recommendations` -> `publish` (Feast -> Redis, with a read-back) -> `verify_lookups` (the
fast lookup path) -> `report`.

`evaluate_served` first measures the lists served now against the positives that came in since they
were built (HitRate@10, Recall@10/100, NDCG@10, coverage, popularity, churn): a row of
`$RECSYS_HOME/online/nights.csv` and a run in the MLflow experiment `online` (`recsys report` prints
them). It is skipped when there is nothing to evaluate; if it fails, the night's lists are still
scored and published (the run then shows the failed evaluation).

`judge_canary` then decides on the canary, with setting `promotion.mode=canary`: after
`promotion.canary_nights` evaluated nights, or earlier once the 95% interval of its HitRate@10
difference from the champion excludes zero with `promotion.min_users` users in each arm, it is
promoted when that interval lies above `-promotion.tolerance`, else rolled back. The decision and
its evidence go to the task log, the version's MLflow tags and `recsys status`. Skipped without a
canary; with `promotion.mode=offline` it logs the evidence and leaves the decision to people.

The champion's version and tonight's data (the prepared activity plus the nights of events after it)
are pinned once, so every shard is scored by the same model on the same data even if the alias
moves or new events land during the run. No retrain is needed for fresh lists: each user's history
and seen set come from the pinned data, so ratings given since training change tonight's lists, and
new users get personalised lists.

Only the users whose ratings changed since the lists served now are re-scored (the others would get
exactly the list they have); everyone is, when the champion changed, when nothing is served yet, or
with Param `full`. `report` names the mode, the reason and how many users were re-scored. The
lists, the recent histories (Feast view `user_history`) and the report carry both the model version
and the data version. Lists that fail suite `recommendations` fail the run at once (no
retries) before anything is written, so the lists being served stay. Publishing is idempotent (last
write wins), so a retried `publish` leaves the same lists.

Beside the user lists: `score_similar` -> `publish_similar`. Every movie's top-K similar movies
from the `movie_similar` champion (ONNX Runtime), checked, then written to Feast view
`movie_similar` and read back. Skipped, with the reason, while no `movie_similar` version is
champion. The run also starts when `recsys_retrain` moves that champion (asset
**recsys_similar_model**).

Params: `shard_size` (users per scoring task; default: setting `score.shard_size`, 25,000), `full`
(re-score every user), `canary_version` with `canary_share` (serve a registered version to that
share of the users from this night on: `recsys canary start`), `canary_stop` (end the canary: its
lists leave every answer at once, and this night gives its users back to the champion).

With a canary (alias `canary` in MLflow), each user is scored by its arm's version: a salted hash
of the user id puts the same share of users in the canary's slice every night. Every list records
its `arm` and `model_version`; users whose arm or version changed are re-scored in an incremental
night.
"""

from __future__ import annotations

from _common import (
    CHAMPION_MODEL,
    DEFAULT_ARGS,
    SIMILAR_MODEL,
    START_DATE,
    DataDocsLink,
    fail_fast_on_bad_input,
    hold_for_test,
    load,
    params,
    with_links,
)
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException


@task
def evaluate_served() -> dict:
    """How the lists served now did on the events that came in since they were built."""
    from recsys.pipelines import evaluate

    context = get_current_context()
    # an asset-triggered or manual run has no logical date: the night is the day it runs after
    night = context.get("ds") or context["dag_run"].run_after.date().isoformat()
    with fail_fast_on_bad_input():
        result = evaluate.evaluate_served(load(), night)
    if not result["evaluated"]:
        raise AirflowSkipException(f"nothing to evaluate: {result['reason']}")
    print(f"served lists: {result}")
    return result


@task(trigger_rule="all_done")  # the evidence so far, even when tonight's evaluation failed
def judge_canary() -> dict:
    """Promote or roll back the canary on its online evidence (setting promotion.mode=canary).
    Skipped at once, before MLflow loads, when last night served no canary: nothing to judge."""
    from recsys.online import publication
    from recsys.ops import redis_server

    settings = load()
    with fail_fast_on_bad_input(), redis_server.client(settings.redis_connection) as conn:
        served = publication.serves_a_canary(conn)
    if not served:
        raise AirflowSkipException("last night served no canary: nothing to judge")
    from recsys.pipelines import canary

    with fail_fast_on_bad_input():
        result = canary.judge(settings, by="recsys_score_nightly")
    if result["action"] == "none":
        raise AirflowSkipException(result["reason"])
    print(f"canary version {result['version']}: {result['action']}: {result['reason']}")
    return result


@task(trigger_rule="all_done")  # fresh lists even when the evaluation of yesterday's failed
def resolve_champion() -> dict:
    """Start or stop the canary when the Params ask; pin the champion, the canary and today's
    prepared data; count the users."""
    from recsys.pipelines import canary, score_nightly

    settings, asked = load(), params()
    with fail_fast_on_bad_input():
        done = canary.from_params(
            settings, asked["canary_version"], asked["canary_share"], asked["canary_stop"], "airflow"
        )
        if done:
            print(f"canary: {done}")
        return score_nightly.plan_scoring(settings, "champion", asked["shard_size"], asked["full"])


@task
def plan_shards(champion: dict) -> list[dict]:
    """One entry per scoring task: this shard's index and the shard count, with the night's plan."""
    n = champion["n_shards"]
    return [{**champion, "shard": i, "n_shards": n} for i in range(n)]


@task(map_index_template="{{ task.op_kwargs['spec']['shard'] }}")
def score_shard(spec: dict) -> dict:
    """Score one shard of users with ONNX Runtime (seen items masked) into a parquet file."""
    hold_for_test(spec["shard"])  # test-only fault hook (RECSYS_TEST_HOLD_SHARD); unset: a no-op
    from recsys.pipelines import score_nightly

    with fail_fast_on_bad_input():
        return score_nightly.score(load(), spec["model_version"], spec["shard"], spec["n_shards"], spec)


@task
def merge_shards(scored: list[dict]) -> dict:
    """One recommendations parquet from every shard's file."""
    from recsys.pipelines import score_nightly

    with fail_fast_on_bad_input():
        # Index by length: iterating the lazy XCom sequence probes one past the end and logs a 404.
        shards = [scored[i]["shard"] for i in range(len(scored))]
        return score_nightly.merge_recommendations(load(), shards)


@task
def validate_recommendations(merged: dict) -> dict:
    """Suite recommendations: K per user, no duplicates, no seen item, sorted scores."""
    from recsys.pipelines import score_nightly

    with fail_fast_on_bad_input():
        summary = score_nightly.validate_recommendations(load(), merged["recommendations"])
    return {**merged, "validation": summary}


@task
def publish(validated: dict) -> dict:
    """Write the lists and titles into Redis through Feast; read a sample back through Feast."""
    from recsys.pipelines import score_nightly

    with fail_fast_on_bad_input():
        return {
            **score_nightly.publish(load(), validated["recommendations"]),
            "recommendations": validated["recommendations"],
        }


@task
def verify_lookups(published: dict) -> dict:
    """Read a fixed sample of users the way `recsys lookup` and the HTTP endpoint do."""
    from recsys.pipelines import score_nightly

    settings = load()
    with fail_fast_on_bad_input():
        return score_nightly.verify_lookups(
            settings, published["recommendations"], settings.score.verify_sample
        )


@task
def report(validated: dict, published: dict, verified: dict) -> dict:
    """Counts for the run's log and XCom."""
    counts = {
        "model_version": validated["model_version"],
        "data_version": validated["data_version"],
        "mode": validated["mode"],
        "reason": validated["reason"],
        "users": validated["n_users"],
        "rescored": validated["n_rescored"],
        "rescored_users": validated["rescored_users"],
        "popular_lists": validated["n_popular"],
        "shards": validated["n_shards"],
        "written": published["written"],
        "new_movies": published.get("new_movies", 0),  # catalogue movies without training positives
        "lists_with_new": published.get("lists_with_new", 0),  # served lists holding one of them
        "feast_read_back": published["verified"],
        "lookups_checked": verified["checked"],
        "recommendations": validated["recommendations"],
    }
    print(f"nightly scoring: {counts}")
    return counts


@task
def score_similar() -> dict:
    """Every movie's similar movies from the movie_similar champion, with ONNX Runtime."""
    from recsys.errors import ModelNotFoundError
    from recsys.pipelines import score_nightly

    try:
        score_nightly.locate_similar_champion(load())
    except ModelNotFoundError as exc:  # no version promoted yet: nothing to publish
        raise AirflowSkipException(f"no similar movies to publish: {exc}") from exc
    with fail_fast_on_bad_input():
        return score_nightly.score_similar(load(), "champion")


@task
def publish_similar(scored: dict) -> dict:
    """Write the similar movies into Redis (view movie_similar); read a sample back through Feast."""
    from recsys.pipelines import score_nightly

    with fail_fast_on_bad_input():
        return {**score_nightly.publish_similar(load(), scored["similar"]), "movies": scored["movies"]}


@dag(
    dag_id="recsys_score_nightly",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("30 1 * * *", timezone="UTC"), assets=CHAMPION_MODEL | SIMILAR_MODEL
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["recsys", "serving"],
    doc_md=__doc__,
    params={
        "shard_size": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="users per scoring task (mapped over shards); empty: setting score.shard_size",
        ),
        "full": Param(False, type="boolean", description="re-score every user, not only the changed ones"),
        "canary_version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="serve this registered two_tower version to a slice of users from tonight on "
            "(with canary_share); empty: leave the canary as it is",
        ),
        "canary_share": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=0.5,
            description="the canary's share of users, in (0, 0.5] (with canary_version)",
        ),
        "canary_stop": Param(
            False, type="boolean", description="end the canary: its lists leave every answer at once"
        ),
    },
)
def recsys_score_nightly() -> None:
    publish_similar(score_similar())
    champion = evaluate_served() >> judge_canary() >> resolve_champion()
    scored = score_shard.expand(spec=plan_shards(champion))
    validated = with_links(validate_recommendations(merge_shards(scored)), DataDocsLink())
    published = publish(validated)
    report(validated, published, verify_lookups(published))


recsys_score_nightly()
