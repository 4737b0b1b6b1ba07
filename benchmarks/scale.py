"""The real nightly chain at MovieLens-20M scale, stage by stage: wall time and peak memory.

Every stage runs the project's own code (recsys.pipelines, the CLI, the Airflow DAG) in a child
process of its own, in a temporary RECSYS_HOME with its own embedded Redis on a free 127.0.0.1
port, so nothing of the developer's .recsys is touched. Per stage it records the wall time, the
peak RSS of the stage's process (and of the children it waited for: DVC, GX), and the peak of
the summed RSS of its whole process tree sampled every 0.2 s. The Redis server (a daemon, not a
child) is reported apart, from its INFO.

Stages: synth (`recsys synth`, skipped with --source), ingest (snapshot + DVC + suite
ratings_raw on every row), prepare (protocol split + suite interactions on every row + DVC), train
(one epoch at the default train.max_interactions, valid and test evaluation, ONNX export,
registration: each timed inside), train_id (the same epoch with the id item tower, the default
before issue 21), promote (the gate: both versions re-scored on validation), catalogue (the
nightly item-tower cost: today's movies.csv and tags.csv read, every movie without a trained id
embedded by the champion's item_tower.onnx; median of 3), score (all users, one process, new
movies embedded and given their fresh slots), validate (suite recommendations on every row), publish (lists,
histories and titles into Redis through the fast Feast-layout writer, Feast read-back), lookups
(`recsys.online.reader` on a sample, compared with the scored lists), night (`recsys_score_nightly`
through `dag.test()`, mapped shards, every user; per-task times), train_budget (with --train-minutes:
train for that long, then the validation metrics). With --events-share S: events (a day of events
for a share S of the users, a few new ratings each, taken in by `recsys ingest --events`),
incremental_night (score + validate + publish of the users they changed, in one process) and
full_night (the same with every user, then every user's list compared with the incremental night's).
With --explain-cost N: what "because you liked X" (score.explain, recsys.runtime.explain) costs, as
ratios to scoring without it: the score stage N times each way, alternating, and Redis's
used_memory after publishing the lists with and without their reasons.

    .venv/bin/python benchmarks/scale.py --events-share 0.01 --skip lookups night \
        --out benchmarks/results/incremental-ml20m.json     # the incremental night against a full one
    .venv/bin/python benchmarks/scale.py --explain-cost 3 --skip lookups night \
        --out benchmarks/results/explain-cost-ml20m.json    # the reasons' cost, as ratios

    .venv/bin/python benchmarks/scale.py                   # generated ML-20M-shaped release
    .venv/bin/python benchmarks/scale.py --preset small    # ~1M ratings, a few minutes
    .venv/bin/python benchmarks/scale.py --source ~/ml-20m.zip --out benchmarks/results/scale-ml20m-real.json
Prints a table and writes benchmarks/results/scale-ml20m.json (rewritten after every stage).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = (
    "synth",
    "ingest",
    "prepare",
    "train",
    "train_id",
    "promote",
    "catalogue",
    "score",
    "validate",
    "publish",
    "lookups",
    "night",
    "events",
    "incremental_night",
    "full_night",
    "train_budget",
)
NIGHT_STAGES = ("events", "incremental_night", "full_night")  # with --events-share
GIB = 1024**3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- child side: one stage, reading and extending the state file ---------------------------------


def _stage_ingest(settings, state: dict) -> dict:  # noqa: ANN001 - recsys Settings
    from recsys.pipelines import ingest

    return ingest.ingest(settings, validate=True)


def _stage_prepare(settings, state: dict) -> dict:  # noqa: ANN001
    from recsys.pipelines import ingest

    return ingest.prepare(settings, state["ingest"]["raw_dir"], state["ingest"]["data_version"])


def _train(settings, state: dict) -> dict:  # noqa: ANN001
    from recsys.pipelines import retrain

    result = retrain.train(settings, state["prepare"]["prepared_dir"], state["prepare"]["data_version"])
    pairs = sum(row["pairs"] for row in result["epochs"])
    train_s = sum(row["train_seconds"] for row in result["epochs"])
    return {
        **result,
        "n_epochs": len(result["epochs"]),
        "pairs": pairs,
        "train_loop_s": train_s,
        "seconds_per_1m_pairs": train_s / max(pairs, 1) * 1e6,
    }


def _stage_train(settings, state: dict) -> dict:  # noqa: ANN001
    return _train(settings, state)


def _stage_train_budget(settings, state: dict) -> dict:  # noqa: ANN001
    return _train(settings, state)


def _stage_train_id(settings, state: dict) -> dict:  # noqa: ANN001
    return _train(settings, state)  # with model.item_tower=id: the item tower before issue 21


def _stage_catalogue(settings, state: dict, repeats: int = 3) -> dict:  # noqa: ANN001
    """What the nightly scoring pays to embed tonight's catalogue with the champion's item tower:
    read today's movies (with their tags), then ModelBundle.with_movies, ``repeats`` times."""
    import statistics

    from recsys import home
    from recsys.data import eventlog
    from recsys.ops.registry import TWO_TOWER, Registry
    from recsys.runtime.two_tower import ModelBundle

    _, folder = Registry.open(settings, TWO_TOWER).download_bundle("champion")
    bundle = ModelBundle.load(folder, threads=settings.score.threads or None)
    read_s, embed_s = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        movies = eventlog.current_movies(home.raw_dir(settings))
        read_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        tonight = bundle.with_movies(movies, settings.score.fresh_slots)
        embed_s.append(time.perf_counter() - started)
    return {
        "movies": len(movies),
        "tagged": int((movies["tags"].fillna("") != "").sum()) if "tags" in movies else 0,
        "trained": bundle.n_trained,
        "embedded": tonight.n_items - bundle.n_trained,
        "fresh": 0 if tonight.fresh is None else len(tonight.fresh),
        "read_movies_s": statistics.median(read_s),
        "with_movies_s": statistics.median(embed_s),
        "with_movies_runs_s": embed_s,
    }


def _stage_promote(settings, state: dict) -> dict:  # noqa: ANN001
    from recsys.pipelines import retrain

    comparison = retrain.compare(settings, state["train"]["version"], state["prepare"]["prepared_dir"])
    return {"comparison": comparison, "promotion": retrain.promote(settings, comparison, force=True)}


def _stage_score(settings, state: dict) -> dict:  # noqa: ANN001
    from recsys.pipelines import score_nightly

    return score_nightly.score(settings, "champion", full=True)


def _stage_validate(settings, state: dict) -> dict:  # noqa: ANN001
    from recsys.pipelines import score_nightly

    return score_nightly.validate_recommendations(settings, state["score"]["recommendations"])


def _stage_publish(settings, state: dict) -> dict:  # noqa: ANN001
    from recsys.pipelines import score_nightly

    return score_nightly.publish(settings, state["score"]["recommendations"])


def _stage_lookups(settings, state: dict) -> dict:  # noqa: ANN001
    import statistics

    import numpy as np

    from recsys.online.reader import lookup
    from recsys.pipelines import score_nightly
    from recsys.runtime.scoring import read_recommendations

    checked = score_nightly.verify_lookups(settings, state["score"]["recommendations"], sample=1000)
    users = read_recommendations(Path(state["score"]["recommendations"]))["user_id"].to_numpy()
    rng = np.random.default_rng(0)
    times = []
    for user in rng.choice(users, size=2000):
        start = time.perf_counter()
        lookup(int(user), 10, settings)
        times.append(time.perf_counter() - start)
    return {
        **checked,
        "lookup_k10_median_ms": statistics.median(times) * 1e3,
        "lookup_k10_p99_ms": float(np.percentile(times, 99)) * 1e3,
    }


def _stage_night(settings, state: dict) -> dict:  # noqa: ANN001
    """recsys_score_nightly through dag.test(): mapped shards, then per-task wall times."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    os.environ["AIRFLOW_HOME"] = str(settings.paths.home / "airflow")  # read by the next line
    env = demo.airflow_environment()
    os.environ.update(env)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], capture_output=True, text=True
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {migrate.stderr[-3000:]}")
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.utils.session import create_session

    dags = ROOT / "dags"
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags, bundle_name="dags-folder")
    started = time.perf_counter()
    conf = {"shard_size": state["shard_size"], "full": True}  # every user, as before the events
    run = bag.dags["recsys_score_nightly"].test(run_conf=conf)
    wall = time.perf_counter() - started
    with create_session() as session:
        tasks = [
            {
                "task": ti.task_id,
                "map_index": ti.map_index,
                "state": str(ti.state),
                "seconds": (ti.end_date - ti.start_date).total_seconds()
                if ti.start_date and ti.end_date
                else None,
            }
            for ti in run.get_task_instances(session=session)
        ]
    tasks.sort(key=lambda t: (t["task"], t["map_index"]))
    if run.state != "success":
        raise RuntimeError(f"recsys_score_nightly ended {run.state}: {tasks}")
    return {
        "state": str(run.state),
        "dag_test_s": wall,
        "tasks": tasks,
        "tasks_sum_s": sum(t["seconds"] or 0 for t in tasks),
    }


def _stage_events(settings, state: dict) -> dict:  # noqa: ANN001
    """A day of events for a share of the users: new ratings of movies they have not rated."""
    import numpy as np
    import pandas as pd

    from recsys import home
    from recsys.pipelines import ingest

    activity = pd.read_parquet(
        Path(state["prepare"]["prepared_dir"]) / "activity.parquet",
        columns=["user_id", "movie_id", "timestamp"],
    )
    movies = pd.read_parquet(Path(state["prepare"]["prepared_dir"]) / "catalogue.parquet")[
        "movie_id"
    ].to_numpy()
    rng = np.random.default_rng(0)
    users = np.unique(activity["user_id"].to_numpy())
    chosen = rng.choice(users, size=max(1, round(state["events_share"] * len(users))), replace=False)
    rated = activity[activity["user_id"].isin(chosen)].groupby("user_id")["movie_id"].agg(set)
    start, rows = int(activity["timestamp"].max()) + 60, []
    for user in chosen:
        fresh = [int(m) for m in rng.choice(movies, size=20, replace=False) if m not in rated[user]][:3]
        rows += [
            (int(user), m, float(rng.choice([3.0, 4.0, 4.5, 5.0])), start + i) for i, m in enumerate(fresh)
        ]
    folder = home.workspace(settings).parent / "bench-events"
    folder.mkdir(parents=True, exist_ok=True)
    day = pd.Timestamp(start, unit="s").date().isoformat()
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(
        folder / f"{day}.csv", index=False
    )
    taken = ingest.ingest_events(settings, str(folder))
    return {**taken, "users_with_events": len(chosen), "events": len(rows)}


def _night_in_one_process(settings, full: bool) -> dict:  # noqa: ANN001
    """score -> validate -> publish, each step timed (the imports they share are paid once)."""
    from recsys.pipelines import score_nightly

    times, started = {}, time.perf_counter()
    scored = score_nightly.score(settings, "champion", full=full)
    times["score_s"] = time.perf_counter() - started
    step = time.perf_counter()
    score_nightly.validate_recommendations(settings, scored["recommendations"])
    times["validate_s"] = time.perf_counter() - step
    step = time.perf_counter()
    published = score_nightly.publish(settings, scored["recommendations"])
    times["publish_s"] = time.perf_counter() - step
    times["night_s"] = time.perf_counter() - started
    return {**scored, **times, "written": published["written"]}


def _stage_incremental_night(settings, state: dict) -> dict:  # noqa: ANN001
    result = _night_in_one_process(settings, full=False)
    shutil.copyfile(result["recommendations"], settings.paths.home / "incremental-night.parquet")
    return result


def _stage_full_night(settings, state: dict) -> dict:  # noqa: ANN001
    """The full night on the same data, then every user's list against the incremental night's."""
    import numpy as np
    import pandas as pd

    result = _night_in_one_process(settings, full=True)
    full = pd.read_parquet(result["recommendations"]).set_index("user_id")
    incremental = pd.read_parquet(settings.paths.home / "incremental-night.parquet").set_index("user_id")
    same_users = full.index.equals(incremental.index)
    differ = [
        int(u)
        for u in full.index
        if not same_users
        or not np.array_equal(full.at[u, "item_ids"], incremental.at[u, "item_ids"])
        or not np.allclose(full.at[u, "scores"], incremental.at[u, "scores"], atol=1e-5)
    ]
    night = state["incremental_night"]
    return {
        **result,
        "users_compared": len(full),
        "users_whose_lists_differ": len(differ),
        "first_differing": differ[:10],
        "incremental_over_full": night["night_s"] / result["night_s"],
    }


def run_child(stage: str, state_path: Path) -> None:
    import logging

    from recsys.config import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = json.loads(state_path.read_text())
    settings = load_settings(state["overrides"].get(stage, []))
    result = globals()[f"_stage_{stage}"](settings, state)
    out = state_path.with_name(f"{stage}.json")
    out.write_text(json.dumps(result, default=str))


# --- parent side ----------------------------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Peak of the summed RSS of a process and its descendants, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.done = pid, interval, 0, threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for proc in procs:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self.done.wait(self.interval)


def run_stage(stage: str, state_path: Path, env: dict, log_path: Path) -> dict:
    """Run one stage in a child process; wall time, peak RSS (own + waited children), tree peak."""
    started = time.perf_counter()
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-P", __file__, "--child", stage, str(state_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        sampler = TreeSampler(child.pid)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        sampler.done.set()
        sampler.join()
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    return {
        "stage": stage,
        "ok": code == 0,
        "exit_code": code,
        "wall_s": round(wall, 2),
        "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3),
        "peak_tree_rss_gib": round(max(sampler.peak, usage.ru_maxrss * 1024) / GIB, 3),
    }


def synth_stage(args: argparse.Namespace, folder: Path, env: dict, log_path: Path) -> dict:
    started = time.perf_counter()
    command = [
        str(Path(sys.executable).parent / "recsys"),
        "synth",
        "--preset",
        args.preset,
        "--seed",
        str(args.seed),
        "--out",
        str(folder),
    ]
    with open(log_path, "ab") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {
        "stage": "synth",
        "ok": code == 0,
        "exit_code": code,
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3),
        "peak_tree_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3),
    }


def redis_memory(port: int, field: str = "used_memory_rss") -> float | None:
    import redis

    try:
        return round(redis.Redis(host="127.0.0.1", port=port).info("memory")[field] / GIB, 4)
    except redis.RedisError:
        return None


def explain_cost(
    repeats: int, write_state: Any, state_path: Path, env: dict, log_path: Path, port: int
) -> dict:
    """The score stage ``repeats`` times with reasons and without, alternating (the machine's drift
    falls on both), then the lists without reasons published over the ones with them: wall times,
    their medians and ratio, and Redis's used_memory (the data, not the allocator's RSS) both ways."""
    import statistics

    with_reasons = redis_memory(port, "used_memory")
    walls: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(repeats):
        for way in ("on", "off"):
            write_state({"score": [f"score.explain={'true' if way == 'on' else 'false'}"]})
            row = run_stage("score", state_path, env, log_path)
            if not row["ok"]:
                raise RuntimeError(f"score with reasons {way} failed; see {log_path}")
            walls[way].append(row["wall_s"])
            print(f"score, reasons {way}: {row['wall_s']:.1f} s", flush=True)
    # the last run scored without reasons: publish those lists over the ones with them
    if not run_stage("publish", state_path, env, log_path)["ok"]:
        raise RuntimeError(f"publish without reasons failed; see {log_path}")
    without = redis_memory(port, "used_memory")
    on, off = statistics.median(walls["on"]), statistics.median(walls["off"])
    return {
        "score_wall_s": walls,
        "score_median_s": {"on": on, "off": off},
        "score_ratio": round(on / off, 3),
        "redis_used_memory_gib": {"on": with_reasons, "off": without},
        "redis_ratio": round(with_reasons / without, 3) if with_reasons and without else None,
    }


def print_row(row: dict, header: bool = False) -> None:
    if header:
        print(f"{'stage':14s} {'wall s':>9s} {'peak RSS GiB':>13s} {'tree peak GiB':>14s}  ok")
    print(
        f"{row['stage']:14s} {row['wall_s']:9.1f} {row['peak_rss_gib']:13.2f} "
        f"{row['peak_tree_rss_gib']:14.2f}  {row['ok']}",
        flush=True,
    )


def print_table(rows: list[dict]) -> None:
    for i, row in enumerate(rows):
        print_row(row, header=i == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "STATE"), help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="ml-20m", help="recsys synth preset (default ml-20m)")
    parser.add_argument("--seed", type=int, default=0, help="recsys synth seed")
    parser.add_argument("--source", type=Path, help="a real release (ml-20m.zip or folder) instead")
    parser.add_argument("--shard-size", type=int, default=25_000, help="users per mapped scoring task")
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=0.0,
        help="also train for this long and report the validation metrics",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=STAGES, help="stages to leave out")
    parser.add_argument(
        "--events-share",
        type=float,
        default=0.0,
        help="also a day of events for this share of the users, then an incremental and a full night",
    )
    parser.add_argument(
        "--explain-cost",
        type=int,
        default=0,
        metavar="N",
        help="also score N times with reasons and N times without, and publish both (module docstring)",
    )
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale-ml20m.json")
    args = parser.parse_args()
    if args.child:
        run_child(args.child[0], Path(args.child[1]))
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="recsys-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    home, repo, release = work / "home", work / "feature_repo", work / "release"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    port = free_port()
    source = args.source or release
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RECSYS__") and k not in ("REDIS_CONNECTION_STRING", "MLFLOW_TRACKING_URI")
    }
    env.update(
        {
            "RECSYS_HOME": str(home),
            "RECSYS__STORE__PORT": str(port),
            "RECSYS__PATHS__FEATURE_REPO": str(repo),
            "RECSYS__DATA__DATASET": "ml-20m",
            "RECSYS__DATA__SOURCE": str(source),
            "RECSYS__TRAIN__PROGRESS_BAR": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    overrides = {
        "train": ["train.max_epochs=1"],
        "train_id": ["train.max_epochs=1", "model.item_tower=id"],
        "train_budget": ["train.max_epochs=200", f"train.max_minutes={args.train_minutes}"],
    }
    state_path = work / "state.json"
    log_path = work / "scale.log"
    rows: list[dict] = []
    results: dict = {}
    report = {
        "args": {k: str(v) for k, v in vars(args).items() if k != "child"},
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        },
        "dataset": "real release"
        if args.source
        else f"recsys synth --preset {args.preset} --seed {args.seed}",
        "stages": rows,
        "results": results,
        "workdir": str(work),
    }
    skip = set(args.skip) | ({"synth"} if args.source else set())
    if not args.train_minutes:
        skip.add("train_budget")
    if not args.events_share:
        skip.update(NIGHT_STAGES)
    print(f"work folder {work}; log {log_path}", flush=True)

    def write_state(extra: dict | None = None) -> None:
        state = {
            "overrides": {**overrides, **(extra or {})},
            "shard_size": args.shard_size,
            "events_share": args.events_share,
            **results,
        }
        state_path.write_text(json.dumps(state, default=str))

    try:
        for stage in STAGES:
            if stage in skip:
                continue
            if stage == "synth":
                shutil.rmtree(release, ignore_errors=True)
                row = synth_stage(args, release, env, log_path)
            else:
                write_state()
                row = run_stage(stage, state_path, env, log_path)
                if row["ok"]:
                    results[stage] = json.loads((work / f"{stage}.json").read_text())
            if stage in ("publish", "night", "incremental_night", "full_night"):
                row["redis_rss_gib"] = redis_memory(port)
            rows.append(row)
            print_row(row, header=len(rows) == 1)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2, default=str))
            if not row["ok"]:
                print(f"stage {stage} failed (exit {row['exit_code']}); see {log_path}", file=sys.stderr)
                return 1
        if args.explain_cost:
            cost = explain_cost(args.explain_cost, write_state, state_path, env, log_path, port)
            report["explain_cost"] = cost
            print(json.dumps(report["explain_cost"], indent=2), flush=True)
    finally:
        subprocess.run(
            [str(Path(sys.executable).parent / "recsys"), "down"], env=env, cwd=ROOT, capture_output=True
        )
        report["peak_rss_gib_max"] = max((r["peak_tree_rss_gib"] for r in rows), default=None)
        args.out.write_text(json.dumps(report, indent=2, default=str))
    print()
    print_table(rows)
    print(f"max peak (process tree) {report['peak_rss_gib_max']} GiB; wrote {args.out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
