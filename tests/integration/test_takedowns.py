"""Takedowns (recsys.online.blocklist) against a real Redis: a blocked movie leaves every reader's
answer at once (the Python API, `recsys lookup`, the HTTP model's stored, computed and popular
lists), with no re-publish; the next one moves up, so a reader still gets k movies."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recsys.cli import main
from recsys.errors import InvalidRequestError
from recsys.online import blocklist
from recsys.online import reader as lookup
from recsys.serving.models import RecommenderModel
from tests.integration import test_serving as serving
from tests.integration.test_serving import BUNDLE_K, HISTORY_ONLY, STORED, UNKNOWN, title

# the HTTP tests' fixtures: a small real bundle, its lists published into this test's Redis, the model
bundle_dir, published, served = serving.bundle_dir, serving.published, serving.served

pytestmark = pytest.mark.integration


def _answer(model: RecommenderModel, user: int, k: int) -> tuple[str, list[int]]:
    (row,) = model.predict(None, pd.DataFrame({"user_id": [user], "k": [k]}))
    return row["source"], [t[0] for t in row["recommendations"]]


def test_a_blocked_movie_leaves_every_answer_at_once_and_comes_back_unblocked(served, published, own_redis):
    recs, _ = published
    user = STORED[1]
    stored = recs["item_ids"][1].tolist()
    computed_before = _answer(served, HISTORY_ONLY[0], 5)[1]
    popular = served.bundle.movie_ids[served.bundle.popular].tolist()
    gone = {stored[0], stored[3], computed_before[0], popular[0]}

    for movie in gone:
        entry = blocklist.block(movie, own_redis, reason="licence ended", by="tester")
        assert entry["movie_id"] == movie and entry["by"] == "tester" and entry["at"]

    kept = [m for m in stored if m not in gone]
    items, scores = lookup.stored_lists([user], 5, own_redis)[user]
    assert items == kept[:5] and len(scores) == 5
    assert [m for m, _, _ in lookup.lookup(user, 5, own_redis)] == kept[:5]
    assert _answer(served, user, 5) == ("online_store", kept[:5])
    source, computed = _answer(served, HISTORY_ONLY[0], 5)
    assert source == "computed" and len(computed) == 5 and not gone & set(computed)
    source, shown = _answer(served, UNKNOWN[0], 5)
    assert source == "popular" and shown == [m for m in popular if m not in gone][:5]
    # k up to K less the blocked movies of the list; beyond, one line that says so
    assert len(lookup.lookup(user, len(kept), own_redis)) == len(kept)
    with pytest.raises(InvalidRequestError, match="less any blocked movies"):
        lookup.lookup(user, BUNDLE_K, own_redis)

    assert set(blocklist.blocked(own_redis)) == gone
    assert blocklist.blocked(own_redis)[stored[0]]["reason"] == "licence ended"
    for movie in gone:
        assert blocklist.unblock(movie, own_redis)
    assert not blocklist.unblock(stored[0], own_redis)  # not blocked any more
    assert [m for m, _, _ in lookup.lookup(user, 5, own_redis)] == stored[:5]
    assert lookup.lookup(user, BUNDLE_K, own_redis)[0] == (
        stored[0],
        pytest.approx(recs["scores"][1][0]),
        title(stored[0]),
    )


def test_block_unblock_and_blocked_on_the_command_line(published, own_redis, monkeypatch, capsys):
    for name in ("RECSYS_HOME", "REDIS_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECSYS_HOME", str(own_redis.paths.home))
    monkeypatch.setenv("REDIS_CONNECTION_STRING", own_redis.redis_connection)
    movie = int(published[0]["item_ids"][1][0])

    assert main(["block", "--movie", str(movie), "--reason", "court order", "--by", "legal"]) == 0
    assert f"movie {movie} blocked by legal at " in capsys.readouterr().out
    assert main(["blocked", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["movie_id"] == movie and entry["reason"] == "court order" and entry["by"] == "legal"
    assert main(["status"]) == 0
    assert f"blocked: {movie} (by legal at " in capsys.readouterr().out
    assert main(["lookup", "--user", str(STORED[1]), "--k", "3", "--json"]) == 0
    assert movie not in [t[0] for t in json.loads(capsys.readouterr().out)]
    assert main(["unblock", "--movie", str(movie)]) == 0
    assert f"movie {movie} unblocked" in capsys.readouterr().out
    assert main(["unblock", "--movie", str(movie)]) == 0
    assert "was not blocked" in capsys.readouterr().out
    assert main(["blocked"]) == 0 and capsys.readouterr().out == "no movie is blocked\n"

    with pytest.raises(SystemExit) as refused:  # argparse: one line, exit 2
        main(["block", "--movie", "0"])
    assert refused.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["block", "--movie", "7", "--reason", "x" * 501]) == 1
    assert capsys.readouterr().err.strip() == "error: reason must be at most 500 characters, got 501"
    assert main(["block", "--movie", "7", "--by", "y" * 101]) == 1
    assert capsys.readouterr().err.strip() == "error: by must be at most 100 characters, got 101"
    assert main(["block", "--movie", "7", "--reason", "\n<script>'; DROP TABLE ratings;--\x00"]) == 0
    assert blocklist.blocked(own_redis)[7]["reason"] == "\n<script>'; DROP TABLE ratings;--\x00"
    assert main(["unblock", "--movie", "7"]) == 0
    assert blocklist.blocked(own_redis) == {}
