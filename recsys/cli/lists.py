"""Commands of the served lists: score, publish, lookup, similar movies, status."""

from __future__ import annotations

import argparse
import json
import sys

from recsys import checks
from recsys.cli.common import (
    Add,
    k_arg,
    movie_id_arg,
    print_json,
    settings_for,
    user_id_arg,
)


def cmd_publish_similar(args: argparse.Namespace) -> None:
    from recsys.pipelines import score_nightly

    settings = settings_for(args)
    scored = score_nightly.score_similar(settings, args.model)
    print_json({"score": scored, "publish": score_nightly.publish_similar(settings, scored["similar"])})


def _print_triples(triples: list, as_json: bool, because: list[str | None] | None = None) -> None:
    """[movie_id, score, title] triples, with ``because`` [movie_id, score, title, because_title]
    (null where no movie explains it): one JSON list, or one line each (scores to 4 places)."""
    rows = [list(t) for t in triples]
    if because is not None:
        rows = [[*row, why] for row, why in zip(rows, because + [None] * (len(rows) - len(because)))]
    if as_json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(json.dumps([row[0], round(row[1], 4), *row[2:]]))


def _list_options(p: argparse.ArgumentParser) -> None:
    """--k and --json, as lookup and similar both take them."""
    p.add_argument(
        "--k",
        type=k_arg,
        default=10,
        help=f"list length, 1..{checks.MAX_K}, at most what the lists hold (default 10)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list of triples")


def cmd_similar(args: argparse.Namespace) -> None:
    from recsys.errors import UnknownMovieError
    from recsys.online.similar_reader import COLLABORATIVE, NONE, similar_answers

    answer = next(iter(similar_answers([args.movie], args.k, settings_for(args)).values()))
    if answer.source == NONE:
        raise UnknownMovieError(answer.reason)
    if answer.source != COLLABORATIVE:
        print(
            f"note: movie {args.movie} has no or too few ratings for the model; source {answer.source}: "
            "its list comes from its genres, year, title words and tags",
            file=sys.stderr,
        )
    _print_triples(answer.similar, args.json)


def cmd_score(args: argparse.Namespace) -> None:
    from recsys.pipelines import score_nightly

    settings = settings_for(args)
    result = score_nightly.score(settings, args.model, full=args.full)
    result["validation"] = score_nightly.validate_recommendations(settings, result["recommendations"])
    print_json(result)


def cmd_publish(args: argparse.Namespace) -> None:
    from recsys import home
    from recsys.data.snapshots import data_version
    from recsys.pipelines import canary, score_nightly

    settings = settings_for(args)
    path = args.recommendations
    if path is None:
        arms = canary.arms(settings)
        folder = home.scores_dir(settings, arms.label, data_version(home.raw_dir(settings)))
        path = str(folder / "recommendations.parquet")
    score_nightly.validate_recommendations(settings, path)
    print_json(score_nightly.publish(settings, path))


def cmd_lookup(args: argparse.Namespace) -> None:
    from recsys.errors import UnknownUserError
    from recsys.online.reader import served_lookup

    settings = settings_for(args)
    because: list[str | None] | None = None
    try:
        served = served_lookup(args.user, args.k, settings, explain=args.explain)
        triples = served.triples
        because = [title if m else None for m, title in served.because]
        version = served.model_version or "unrecorded"
        print(
            f"served: user {args.user}, arm {served.arm or 'champion'}, two_tower version {version}",
            file=sys.stderr,
        )
    except UnknownUserError:  # as over HTTP: scored from a stored history, else the popular list
        from recsys.serving.models import answer_without_list

        source, version, triples, reasons = answer_without_list(settings, args.user, args.k)
        because = [why[1] if why else None for why in reasons]
        what = {
            "computed": f"scored now from the stored history by two_tower version {version}",
            "popular": "the popular list: scores are positive ratings in the training data, not model scores",
        }[source]
        print(f"note: user {args.user} has no stored list; source {source}: {what}", file=sys.stderr)
    _print_triples(triples, args.json, because if args.explain else None)


def cmd_status(args: argparse.Namespace) -> None:
    from recsys.online import blocklist, publication
    from recsys.ops import redis_server

    settings = settings_for(args)
    redis_server.require(settings)
    conn = redis_server.client(settings.redis_connection)
    try:
        state = publication.status(settings, conn)
        state["similar"] = publication.similar_status(conn)
        state["arms"] = publication.served_arms(conn)
        state["canary_decisions"] = publication.decisions(conn, 1)
    finally:
        conn.close()
    state["blocked"] = [{"movie_id": m, **entry} for m, entry in blocklist.blocked(settings).items()]
    if args.json:
        print_json(state)
        return
    served = state["served"]
    print(
        f"served:  model version {served['model_version'] or '-'}, data version "
        f"{served['data_version'] or '-'}, published {served['published_at'] or 'never'}, "
        f"{served['users']} users with a list"
    )
    if served.get("mode"):
        print(
            f"night:   {served['mode']}, {served['rescored']} users re-scored, the oldest list served "
            f"was scored {served['oldest_scored_at']}"
        )
    if served.get("new_movies") is not None:
        print(
            f"movies:  {served['new_movies']} in the served catalogue have no training positive (new "
            f"since training); {served.get('lists_with_new') or 0} served lists hold at least one"
        )
    target = state.get("target") or {}
    line = {
        "idle": "no publish under way",
        "under way": f"version {target.get('model_version')} is being published "
        f"({target.get('percent')}% written, {publication_holder(target)})",
        "interrupted": f"interrupted: a publish of version {target.get('model_version')} "
        f"started {target.get('started_at')} stopped at "
        f"{target.get('percent')}%; users hold version "
        f"{served['model_version'] or '-'} or {target.get('model_version')} "
        "lists: run `recsys publish` again",
    }[state["publish"]]
    print(f"publish: {line}")
    similar = state["similar"]
    if similar["movies"]:
        versions = ", ".join(f"{v} ({n} movies)" for v, n in similar["model_versions"].items())
        data = ", ".join(similar["data_versions"]) or "-"
        print(
            f"similar: movie_similar version {versions}, data version {data}, scored "
            f"{similar['scored_at'] or '-'}, {similar['movies']} movies with a list "
            f"({similar.get('content', 0)} from their features alone: no or too few ratings)"
        )
    else:
        print("similar: no similar-movie lists in the store (run `recsys publish-similar`)")
    _print_arms_and_blocked(state)


def _print_arms_and_blocked(state: dict) -> None:
    """`recsys status`'s lines of the arms served and of the takedown list."""
    arms = state["arms"]
    if arms is not None:
        canary = (
            f"canary version {arms['canary']} on {float(arms['share']):.1%} of users"
            if arms.get("canary")
            else "no canary"
        )
        withdrawn = f"; version {arms['withdrawn']} withdrawn" if arms.get("withdrawn") else ""
        print(f"arms:    champion version {arms['champion']}, {canary}{withdrawn} (`recsys canary status`)")
    for last in state["canary_decisions"]:
        who = f"at {last['at']} by {last['by']}"
        print(f"canary:  version {last['version']} {last['action']} {who}: {last['reason']}")
    blocked = state["blocked"]
    shown = ", ".join(f"{b['movie_id']} (by {b['by']} at {b['at']})" for b in blocked[:10])
    more = f" and {len(blocked) - 10} more (`recsys blocked`)" if len(blocked) > 10 else ""
    print(f"blocked: {shown}{more}" if blocked else "blocked: no movie")


def publication_holder(target: dict) -> str:
    holder = target.get("holder") or {}
    return f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "holder unknown"


def register(add: Add) -> None:
    """Add this module's sub-commands."""
    p = add("score", cmd_score, "score tonight's users with a model's ONNX graph and validate the lists")
    p.add_argument("--model", default="champion", help="version number or alias (default champion)")
    p.add_argument(
        "--full",
        action="store_true",
        help="score every user (default: only users whose ratings changed since the lists served now, "
        "or everyone when the model version changed)",
    )
    p = add("publish", cmd_publish, "write validated lists into Redis through Feast and verify")
    p.add_argument(
        "--recommendations", help="parquet to publish (default: the champion's lists for today's data)"
    )
    p = add(
        "status",
        cmd_status,
        "what the online store serves (user lists and similar-movie lists), and whether a publish "
        "is under way",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = add(
        "lookup",
        cmd_lookup,
        "print a user's stored top-K as [movie_id, score, title] triples. A user without a stored "
        "list gets what HTTP answers (exit 0, a 'note:' line on stderr names the source): a list "
        "scored from the stored history (source computed), else the popular list (source popular; "
        "its scores are positive-rating counts)",
    )
    p.add_argument("--user", type=user_id_arg, required=True, help="MovieLens user id")
    _list_options(p)
    p.add_argument(
        "--explain",
        action="store_true",
        help="print [movie_id, score, title, because_title]: the movie of the user's history that "
        "explains each one (null where none does, as in a popular list)",
    )
    p = add(
        "publish-similar",
        cmd_publish_similar,
        "score every movie's similar movies with a movie_similar version and publish them",
    )
    p.add_argument("--model", default="champion", help="version number or alias (default champion)")
    p = add(
        "similar", cmd_similar, "print a movie's stored similar movies as [movie_id, score, title] triples"
    )
    p.add_argument("--movie", type=movie_id_arg, required=True, help="MovieLens movie id")
    _list_options(p)
