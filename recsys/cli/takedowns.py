"""Commands of the takedown list: block a movie in every answer at once, unblock it, list them."""

from __future__ import annotations

import argparse

from recsys.cli.common import Add, movie_id_arg, print_json, settings_for


def cmd_block(args: argparse.Namespace) -> None:
    from recsys.online import blocklist

    entry = blocklist.block(args.movie, settings_for(args), args.reason, args.by)
    print(
        f"movie {entry['movie_id']} blocked by {entry['by']} at {entry['at']}: every answer leaves it out now"
    )


def cmd_unblock(args: argparse.Namespace) -> None:
    from recsys.online import blocklist

    if blocklist.unblock(args.movie, settings_for(args), args.by):
        print(f"movie {args.movie} unblocked: answers may hold it again")
    else:
        print(f"movie {args.movie} was not blocked: nothing changed")


def cmd_blocked(args: argparse.Namespace) -> None:
    from recsys.online import blocklist

    found = blocklist.blocked(settings_for(args))
    if args.json:
        print_json([{"movie_id": m, **entry} for m, entry in found.items()])
        return
    for movie, entry in found.items():
        print(f"{movie}: blocked by {entry['by']} at {entry['at']}: {entry['reason'] or 'no reason given'}")
    if not found:
        print("no movie is blocked")


def register(add: Add) -> None:
    """Add this module's sub-commands."""
    who = "who takes the action, for the log (default: the login name)"
    p = add(
        "block",
        cmd_block,
        "withdraw a movie from every answer at once (lookup, HTTP, the Python API), with no re-publish",
    )
    p.add_argument("--movie", type=movie_id_arg, required=True, help="MovieLens movie id")
    p.add_argument("--reason", default="", help="why, kept with who and when")
    p.add_argument("--by", help=who)
    p = add("unblock", cmd_unblock, "put a blocked movie back into the answers")
    p.add_argument("--movie", type=movie_id_arg, required=True, help="MovieLens movie id")
    p.add_argument("--by", help=who)
    p = add("blocked", cmd_blocked, "list the blocked movies with who blocked them, when and why")
    p.add_argument("--json", action="store_true", help="print one JSON list")
