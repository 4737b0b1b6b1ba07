"""The main job end to end through Airflow itself: the body of `make demo`.

The bundled sample is played as a living system: its ratings before its last four weeks are the
release, and those four weeks arrive as daily event files (recsys.data.stream). The first night runs
`recsys_ingest` (the release), `recsys_retrain` and `recsys_score_nightly` in order with `dag.test()`
on a SQLite metadata DB in a project-local AIRFLOW_HOME (.recsys/airflow). The next night the event
files land in the event folder ($RECSYS_HOME/events): `recsys_ingest` takes them and
`recsys_score_nightly` measures how the first night's lists did on them, then re-scores only the
users who rated. Then it prints the lookup for user 1 (with each movie's reason, --explain), the
movies similar to movie 1 (Toy Story) and last night's online metrics (`recsys report`). Exits 1
(naming the DAG and its failed tasks) if a run fails.

    .venv/bin/python scripts/demo.py [--user 1] [--movie 1] [--k 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAG_IDS = ("recsys_ingest", "recsys_retrain", "recsys_score_nightly")
EVENT_DAYS = 28  # the sample's last four weeks arrive as events on the second night


def airflow_environment() -> dict[str, str]:
    """The same Airflow settings as scripts/airflow.sh (which `make airflow` runs)."""
    home = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".recsys" / "airflow"))
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        "RECSYS_HOME": os.environ.get("RECSYS_HOME", str(ROOT / ".recsys")),
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    }


def failed_tasks(dag_run) -> list[str]:  # noqa: ANN001 - an Airflow DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return sorted(
            f"{ti.task_id} ({ti.state})"
            for ti in dag_run.get_task_instances(session=session)
            if ti.state not in ("success", "skipped")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="1")
    parser.add_argument("--movie", default="1", help="movie whose similar movies are shown (1: Toy Story)")
    parser.add_argument("--k", default="10")
    parser.add_argument("--timings", type=Path, help="also write the per-DAG wall times here (JSON)")
    args = parser.parse_args()
    started_all = time.perf_counter()
    os.environ.update(airflow_environment())  # before airflow is imported: it reads config once
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], capture_output=True, text=True)
    if migrate.returncode != 0:
        print(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}", file=sys.stderr)
        return 1
    from airflow.dag_processing.dagbag import BundleDagBag

    dags = ROOT / "dags"
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags, bundle_name="dags-folder")
    if bag.import_errors:
        print(f"DAG import errors: {bag.import_errors}", file=sys.stderr)
        return 1
    # a run's conf is written into the DAG's Param objects when its tasks run in this process: every
    # run passes every Param, so night 2 does not inherit night 1's `release`
    defaults = {d: {n: bag.dags[d].params.get_param(n).value for n in bag.dags[d].params} for d in DAG_IDS}
    events = stream_of_the_sample()
    nights = [
        ("night 1", [(d, {"release": True} if d == "recsys_ingest" else {}) for d in DAG_IDS]),
        ("night 2", [("recsys_ingest", {}), ("recsys_score_nightly", {})]),
    ]
    timings = {}
    for night, runs in nights:
        if night == "night 2":
            inbox = Path(os.environ["RECSYS_HOME"]) / "events"
            inbox.mkdir(parents=True, exist_ok=True)
            for path in events.glob("*.csv"):  # what the application's export job would drop
                shutil.copyfile(path, inbox / path.name)
            print(f"=== {EVENT_DAYS} days of events dropped into {inbox} ===", flush=True)
        for dag_id, conf in runs:
            print(f"=== {night}, airflow: {dag_id} (dag.test) ===", flush=True)
            started = time.perf_counter()
            dag_run = bag.dags[dag_id].test(run_conf={**defaults[dag_id], **conf})
            timings[f"{night}: {dag_id}"] = time.perf_counter() - started
            if dag_run.state != "success":
                failed = ", ".join(failed_tasks(dag_run))
                print(f"{dag_id} ended {dag_run.state}; failed: {failed}", file=sys.stderr)
                return 1
    print(" | ".join(f"{d} {s:.1f}s" for d, s in timings.items()), flush=True)
    if args.timings:
        args.timings.write_text(
            json.dumps(
                {
                    "command": "make demo DEMO_ARGS='--timings ...' (fresh clone, after install)",
                    "dag_seconds": timings,
                    "wall_seconds_before_lookup": time.perf_counter() - started_all,
                    "cpus": os.cpu_count(),
                },
                indent=2,
            )
            + "\n"
        )
    print(f"=== recsys lookup --user {args.user} --explain ===", flush=True)
    lookup = ["lookup", "--user", args.user, "--k", args.k, "--explain"]  # the reason beside each movie
    looked = subprocess.run([str(BIN / "recsys"), *lookup]).returncode
    if looked != 0:
        return looked
    print(f"=== recsys similar --movie {args.movie} (more like this) ===", flush=True)
    similar = subprocess.run([str(BIN / "recsys"), "similar", "--movie", args.movie, "--k", args.k])
    if similar.returncode != 0:
        return similar.returncode
    print("=== recsys report --nights 1 (how last night's lists did on the events since) ===", flush=True)
    return subprocess.run([str(BIN / "recsys"), "report", "--nights", "1"]).returncode


def stream_of_the_sample() -> Path:
    """Split the bundled sample into a release (all but its last EVENT_DAYS days), which the first
    night ingests (RECSYS__DATA__SOURCE), and one event file per day after; returns their folder."""
    from recsys.data import stream

    sample = ROOT / "data" / "ml-latest-small"
    last = stream.last_day(stream.read_release(sample)[0])
    start = last - timedelta(days=EVENT_DAYS - 1)
    out = Path(os.environ["RECSYS_HOME"]) / "demo"
    split = stream.split(sample, start, EVENT_DAYS, 1, out)
    os.environ["RECSYS__DATA__SOURCE"] = str(split.release)
    print(f"=== the sample up to {start - timedelta(days=1)} is the release; {start}..{last} are events ===")
    return out / "events"


if __name__ == "__main__":
    sys.exit(main())
