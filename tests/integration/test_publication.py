"""A publish against faults (recsys.online.publication): killed at 10/50/90 %, Redis restarted mid-way,
users gone from the new scoring; every reader sees a whole list, a re-run converges, status says so.

Frames are synthetic: 2,000 users, lists of 20 of 300 movies, versions "A" and "B" with different
lists, written 100 rows per round trip so the fault points land mid-publish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import Settings
from recsys.online import feast_repo, publication, writer
from recsys.online import reader as lookup
from recsys.ops import redis_server

pytestmark = pytest.mark.integration
N_USERS, N_MOVIES, K, ROWS = 2_000, 300, 20, 100
RECSYS = str(Path(sys.executable).parent / "recsys")


def frames(version: str, users: range = range(1, N_USERS + 1)) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(ord(version))
    stamp = pd.Timestamp("2026-11-25 01:30", tz="UTC") + pd.Timedelta(days=ord(version) - 65)
    recs = pd.DataFrame(
        {
            "user_id": np.array(list(users), dtype="int64"),
            "item_ids": [rng.choice(np.arange(1, N_MOVIES + 1), K, replace=False) for _ in users],
            "scores": [np.sort(rng.random(K).astype("float32"))[::-1] for _ in users],
            "model_version": version,
            "data_version": f"data-{version}",
            "event_timestamp": stamp,
        }
    )
    catalogue = pd.DataFrame(
        {
            "movie_id": np.arange(1, N_MOVIES + 1, dtype="int64"),
            "title": [f"Movie {m}" for m in range(1, N_MOVIES + 1)],
        }
    )
    return recs, catalogue


def feast_keys(settings: Settings) -> dict[bytes, object]:
    """Every key but the publication record with its fields and values (set members for the
    users set): what readers see, byte for byte (DUMP would also compare Redis's internal order)."""
    conn = redis_server.client(settings.redis_connection)
    return {
        k: conn.smembers(k) if conn.type(k) == b"set" else conn.hgetall(k)
        for k in conn.scan_iter(count=1000)
        if k != b"recsys:publication"
    }


def record(settings: Settings) -> dict:
    return publication.status(settings, redis_server.client(settings.redis_connection))


def env_of(settings: Settings) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS")}
    return {
        **clean,
        "RECSYS_HOME": str(settings.paths.home),
        "RECSYS__STORE__PORT": str(settings.store.port),
        "RECSYS__PATHS__FEATURE_REPO": str(settings.paths.feature_repo),
    }


PUBLISH = """
import sys, pandas as pd
from recsys.online import feast_repo, writer
from recsys.config import load_settings
recs, catalogue = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
writer.publish(recs, catalogue, load_settings(), batch_size=int(sys.argv[3]))
"""


@pytest.fixture
def published(own_redis: Settings, tmp_path: Path) -> dict:
    """A + B frames on disk, B's end state (published cleanly once), then A served again."""
    feast_repo.apply(own_redis)
    files = {}
    for version in "AB":
        recs, catalogue = frames(version)
        files[version] = (tmp_path / f"{version}.parquet", tmp_path / "catalogue.parquet")
        recs.to_parquet(files[version][0])
        catalogue.to_parquet(files[version][1])
    writer.publish(*frames("B"), own_redis, batch_size=ROWS)
    end_state = feast_keys(own_redis)
    writer.publish(*frames("A"), own_redis, batch_size=ROWS)
    return {"files": files, "end_state": end_state}


def lists_of(settings: Settings) -> dict[int, tuple[list[int], str]]:
    got = lookup.stored_lists(list(range(1, N_USERS + 1)), K, settings)
    conn = redis_server.client(settings.redis_connection)
    versions = {}
    for user in got:
        raw = conn.hget(
            lookup.entity_key("user_id", user), lookup.field_key("user_recommendations", "model_version")
        )
        versions[user] = lookup.decode_value(raw)
    return {u: (pair[0], versions[u]) for u, pair in got.items()}


@pytest.mark.parametrize("at", [0.1, 0.5, 0.9])
def test_a_publish_killed_part_way_leaves_whole_lists_says_so_and_converges(
    published: dict, own_redis: Settings, at: float
) -> None:
    recs_file, catalogue_file = published["files"]["B"]
    env = {**env_of(own_redis), publication.FAULT_ENV: str(at)}
    killed = subprocess.run(
        [sys.executable, "-c", PUBLISH, str(recs_file), str(catalogue_file), str(ROWS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # every reader sees a complete list of A or of B, never a mix
    want = {
        v: dict(zip(f["user_id"], f["item_ids"])) for v, f in (("A", frames("A")[0]), ("B", frames("B")[0]))
    }
    served = lists_of(own_redis)
    for user, (items, version) in served.items():
        assert version in ("A", "B") and items == want[version][user].tolist(), user
    on_b = sum(v == "B" for _, v in served.values())
    users_share = N_USERS / (N_USERS + N_MOVIES)  # lists go first, then titles
    assert 0 < on_b and (on_b < N_USERS or at > users_share)  # part way, as asked
    state = record(own_redis)
    assert state["publish"] == "interrupted" and state["served"]["model_version"] == "A"
    assert state["target"]["model_version"] == "B" and 0 < state["target"]["percent"] < 100
    status = subprocess.run(
        [RECSYS, "status"], env=env_of(own_redis), capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0 and "interrupted" in status.stdout and "B" in status.stdout
    # the same publish again: exactly the state a clean publish of B leaves
    writer.publish(*frames("B"), own_redis, batch_size=ROWS)
    assert feast_keys(own_redis) == published["end_state"]
    final = record(own_redis)
    assert final["publish"] == "idle" and final["served"]["model_version"] == "B"
    assert final["served"]["users"] == N_USERS


def test_redis_restarted_mid_publish_converges(
    published: dict, own_redis: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    restarted = []
    real = publication.progress

    def restart_at_half(conn, written, total):  # noqa: ANN001
        real(conn, written, total)
        if not restarted and written >= total / 2:
            redis_server.stop(own_redis)  # SHUTDOWN SAVE: what was written survives
            redis_server.start(own_redis)
            restarted.append(written)

    monkeypatch.setattr(publication, "progress", restart_at_half)
    try:
        writer.publish(*frames("B"), own_redis, batch_size=ROWS)
    except Exception as exc:  # a reconnect may fail once: it must say Redis, then a re-run heals
        assert "Redis" in str(exc), exc
    monkeypatch.setattr(publication, "progress", real)
    assert restarted
    writer.publish(*frames("B"), own_redis, batch_size=ROWS)
    assert feast_keys(own_redis) == published["end_state"]


@pytest.mark.parametrize("policy", ["remove", "keep"])
def test_users_gone_from_the_new_scoring_are_removed_or_kept_by_setting(
    published: dict, own_redis: Settings, policy: str
) -> None:
    settings = own_redis.model_copy(deep=True)
    settings.store.stale_users = policy
    fewer, catalogue = frames("B", range(1, N_USERS - 99))  # the last 100 users are gone
    counts = writer.publish(fewer, catalogue, settings, batch_size=ROWS)
    gone = lookup.stored_lists(list(range(N_USERS - 99, N_USERS + 1)), K, settings)
    if policy == "remove":
        assert counts["stale_users_removed"] == 100 and all(v is None for v in gone.values())
    else:
        assert counts["stale_users_removed"] == 0 and all(v is not None for v in gone.values())
    state = record(settings)
    assert state["served"]["users"] == N_USERS - 100 and state["publish"] == "idle"
    out = subprocess.run(
        [RECSYS, "status", "--json"], env=env_of(settings), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["served"]["model_version"] == "B"


def test_the_arms_record_serves_only_the_published_versions_and_a_withdrawn_canary_stays_out(
    own_redis: Settings,
) -> None:
    """A publish with arms (recsys.runtime.arms) allows its versions' lists; withdrawing the canary
    hides its lists at once, also from a publish that was under way when it was withdrawn."""
    from recsys.runtime.arms import Arms

    feast_repo.apply(own_redis)
    arms = Arms("A", "C", 0.5, "s")
    recs, catalogue = frames("A")
    canary = arms.in_canary(recs["user_id"].to_numpy())
    recs = recs.assign(arm=np.where(canary, "canary", "champion"), model_version=np.where(canary, "C", "A"))
    writer.publish(recs, catalogue, own_redis, batch_size=ROWS, arms=arms)
    conn = redis_server.client(own_redis.redis_connection)
    assert publication.served_arms(conn) == {
        "champion": "A", "canary": "C", "share": "0.5", "salt": "s", "allowed": ["A", "C"]
    }  # fmt: skip
    users = recs["user_id"].tolist()
    one_canary, one_champion = users[int(np.argmax(canary))], users[int(np.argmin(canary))]
    served, _ = lookup.read_served([one_canary, one_champion], K, own_redis)
    assert served[one_canary].arm == "canary" and served[one_canary].model_version == "C"
    assert served[one_champion].arm == "champion" and served[one_champion].model_version == "A"

    publication.withdraw_canary(conn, "C")
    got = lookup.stored_lists(users, K, own_redis)
    assert [u for u, pair in got.items() if pair is None] == [u for u, c in zip(users, canary) if c]
    assert publication.served_arms(conn)["allowed"] == ["A"]
    # a publish of the same arms that was under way finishes without the withdrawn canary
    publication.begin(conn, "A,C", "data-A", 0, arms)
    assert publication.served_arms(conn)["allowed"] == ["A"]
    publication.finish(conn, users, lambda u: lookup.entity_key("user_id", u), True, arms)
    assert publication.served_arms(conn) == {"champion": "A", "allowed": ["A"], "withdrawn": "C"}
    assert lookup.stored_lists([one_canary], K, own_redis)[one_canary] is None
    # started again: the next publish serves it
    publication.allow_canary(conn, "C")
    writer.publish(recs, catalogue, own_redis, batch_size=ROWS, arms=arms)
    assert lookup.read_served([one_canary], K, own_redis)[0][one_canary].arm == "canary"
    # a publish without arms (a direct writer call) leaves the record as it is
    writer.publish(*frames("A"), own_redis, batch_size=ROWS)
    assert publication.served_arms(conn)["allowed"] == ["A", "C"]
    conn.close()
