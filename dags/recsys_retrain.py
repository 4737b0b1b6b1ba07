"""
### recsys_retrain: train the two-tower model, compare it, and move `champion` only if it wins

Runs when `recsys_ingest` announces new prepared data (asset **recsys_prepared_data**) and weekly
(Sunday 03:00 UTC) whatever happens upstream.

`locate_prepared` -> `train` -> `compare` -> `promotion_gate` -> `announce_champion` (asset
**recsys_champion_model**, which schedules `recsys_score_nightly`).

- `train`: one MLflow run in experiment `two-tower` (params, per-epoch metrics, plots, artefacts),
  evaluated on validation and test with MostPop beside it, registered as a new version of
  `two_tower` with alias `challenger`. Its "MLflow run" button opens the run.
- `compare`: the new version and the champion are both scored by their own ONNX graphs on the
  same, current validation split (histories from today's prepared data), beside MostPop; all three
  evaluations are logged to the new version's MLflow run.
- `promotion_gate`: `champion` moves only if the new version beats MostPop and the champion on
  that split (or `force_promotion`); the decision is logged to the run.
- `announce_champion`: emits the model asset only when `champion` moved; otherwise it is skipped
  and the served lists stay as they are.

Then the "similar movies" branch (same prepared data; mining runs beside the two-tower training):
`mine_pairs` -> `train_similar` (after `promotion_gate`) -> `similar_gate` -> `announce_similar`
(asset **recsys_similar_model**, which also schedules `recsys_score_nightly`).

- `mine_pairs`: the pairwise table (positives, hard and soft negatives per query movie, split by
  query movie) from the train split, validated by suite `pairs` and versioned with DVC.
- `train_similar`: the item tower, its id embeddings started from the `two_tower` champion's item
  vectors and fine-tuned with a triplet loss; one MLflow run in experiment `movie-similar`
  (per-epoch triplet loss and validation metrics), registered as `movie_similar` with alias
  `challenger`. It waits for `promotion_gate`, so it starts from today's champion.
- `similar_gate`: `champion` of `movie_similar` moves only if the new version's validation
  Recall@10 beats the champion's, the genre-only floor's and the `two_tower` champion's item
  vectors' on today's table.

Params: `force_promotion` (both models), `dataset`, `k` (list length baked into the ONNX graph),
`max_epochs` (empty = the setting). A failed training never touches the champion or the served lists.
"""

from __future__ import annotations

from _common import (
    CHAMPION_MODEL,
    DEFAULT_ARGS,
    PREPARED_DATA,
    SIMILAR_MODEL,
    START_DATE,
    MlflowRunLink,
    fail_fast_on_bad_input,
    load,
    params,
)
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException


def _settings(dataset: str | None = None):  # noqa: ANN202
    p = params()
    return load(
        **{"data.dataset": dataset or p["dataset"], "score.k": p["k"], "train.max_epochs": p["max_epochs"]}
    )


@task
def locate_prepared() -> dict:
    """The prepared data to train on: the triggering asset event's, else the settings'."""
    from recsys.pipelines import ingest

    events = get_current_context()["triggering_asset_events"].get(PREPARED_DATA, [])
    if events and not params()["dataset"]:
        extra = events[-1].extra
        return {k: extra[k] for k in ("dataset", "prepared_dir", "data_version")}
    with fail_fast_on_bad_input():
        return ingest.locate_prepared(_settings())


@task(retries=1)  # a training costs minutes: one retry covers a lost MLflow connection
def train(prepared: dict) -> dict:
    """Train, evaluate (valid + test, MostPop beside it), log to MLflow, register @challenger."""
    from recsys.pipelines import retrain

    with fail_fast_on_bad_input():
        result = retrain.train(
            _settings(prepared["dataset"]), prepared["prepared_dir"], prepared["data_version"]
        )
    return {**result, "dataset": prepared["dataset"]}


@task
def compare(trained: dict, prepared: dict) -> dict:
    """New version, champion and MostPop evaluated alike on today's validation split."""
    from recsys.pipelines import retrain

    with fail_fast_on_bad_input():
        return retrain.compare(_settings(trained["dataset"]), trained["version"], prepared["prepared_dir"])


@task
def promotion_gate(comparison: dict) -> dict:
    """Move alias champion to the new version only if it wins (or force_promotion is set)."""
    from recsys.pipelines import retrain

    with fail_fast_on_bad_input():
        return retrain.promote(_settings(), comparison, force=bool(params()["force_promotion"]))


@task(outlets=[CHAMPION_MODEL])
def announce_champion(promotion: dict) -> dict:
    """Emit the model asset (scoring follows) only when the champion changed."""
    if not promotion["promoted"]:
        raise AirflowSkipException(f"champion stays at v{promotion['champion']}: {promotion['reason']}")
    get_current_context()["outlet_events"][CHAMPION_MODEL].extra = {
        "model_version": promotion["version"],
        "previous": promotion["previous"],
        "reason": promotion["reason"],
    }
    return promotion


@task
def mine_pairs(prepared: dict) -> dict:
    """The pairwise table of similar movies: mined, validated (suite pairs), tracked by DVC."""
    from recsys.pipelines import retrain

    with fail_fast_on_bad_input():
        return retrain.mine_pairs(
            _settings(prepared["dataset"]), prepared["prepared_dir"], prepared["data_version"]
        )


@task(retries=1)
def train_similar(mined: dict, prepared: dict) -> dict:
    """Item tower with a triplet loss: its own MLflow run, registered movie_similar@challenger."""
    from recsys.pipelines import retrain

    with fail_fast_on_bad_input():
        return retrain.train_similar(
            _settings(prepared["dataset"]),
            mined["pairs_dir"],
            prepared["prepared_dir"],
            mined["pairs_version"],
        )


@task
def similar_gate(trained: dict, mined: dict) -> dict:
    """Move movie_similar@champion only if it beats the champion and the floors."""
    from recsys.pipelines import retrain

    with fail_fast_on_bad_input():
        return retrain.promote_similar(
            _settings(), trained, mined["pairs_dir"], force=bool(params()["force_promotion"])
        )


@task(outlets=[SIMILAR_MODEL])
def announce_similar(promotion: dict) -> dict:
    """Emit the similar-model asset (the nightly publish follows) only when its champion moved."""
    if not promotion["promoted"]:
        raise AirflowSkipException(
            f"movie_similar champion stays at v{promotion['champion']}: {promotion['reason']}"
        )
    get_current_context()["outlet_events"][SIMILAR_MODEL].extra = {
        "model_version": promotion["version"],
        "previous": promotion["previous"],
        "reason": promotion["reason"],
    }
    return {k: v for k, v in promotion.items() if k in ("version", "promoted", "previous", "reason")}


@dag(
    dag_id="recsys_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 0", timezone="UTC"), assets=PREPARED_DATA
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["recsys", "training"],
    doc_md=__doc__,
    params={
        "force_promotion": Param(
            False, type="boolean", description="make the new version champion even if it does not win"
        ),
        "dataset": Param(
            None,
            type=["null", "string"],
            enum=[None, "ml-latest-small", "ml-20m"],
            description="prepared dataset to train on; empty = the triggering "
            "asset event's, else the data.dataset setting",
        ),
        "k": Param(
            None,
            type=["null", "integer"],
            minimum=10,
            maximum=1000,
            description="top-K list length of the exported graph; empty = score.k",
        ),
        "max_epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=500,
            description="training epochs; empty = train.max_epochs",
        ),
    },
)
def recsys_retrain() -> None:
    prepared = locate_prepared()
    trained = train(prepared)
    trained.operator.operator_extra_links = [MlflowRunLink()]
    gate = promotion_gate(compare(trained, prepared))
    announce_champion(gate)
    mined = mine_pairs(prepared)
    similar = train_similar(mined, prepared)
    similar.operator.operator_extra_links = [MlflowRunLink()]
    announce_similar(similar_gate(similar, mined))
    # The item tower starts from the two_tower champion's item vectors: it trains once that model's
    # gate has decided (so the nightly run the similar asset starts also finds a two_tower champion).
    gate >> similar


recsys_retrain()
