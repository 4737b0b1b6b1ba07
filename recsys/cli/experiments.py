"""Commands of the canary: serve a challenger to a deterministic slice of users, stop it, show it."""

from __future__ import annotations

import argparse

from recsys.cli.common import adder, positive_arg, print_json, settings_for


def _share_arg(text: str) -> float:
    """A number; its range, (0, 0.5], is checked with the rest of the request (exit 1)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 0.5], got {text!r}") from None


def _describe(state: dict) -> str:
    canary = state.get("canary")
    if canary is None:
        return f"champion: version {state.get('champion') or '-'}; no canary"
    return (
        f"champion: version {state['champion']}; canary: version {canary['version']} for "
        f"{canary['share']:.1%} of users (salt {canary['salt']}), started {canary['started_at']} "
        f"by {canary['started_by']}"
    )


def cmd_canary_start(args: argparse.Namespace) -> None:
    from recsys.pipelines import canary

    state = canary.start(settings_for(args), args.version, args.share, args.salt, args.by)
    print(f"{_describe(state)}; the next night scores its users with it")


def cmd_canary_stop(args: argparse.Namespace) -> None:
    from recsys.pipelines import canary

    version = canary.stop(settings_for(args), args.reason, args.by)
    if version is None:
        print("no canary was running: nothing changed")
    else:
        print(
            f"version {version} is no longer the canary: its lists left every answer now; "
            "the next night re-scores its users with the champion"
        )


def cmd_canary_status(args: argparse.Namespace) -> None:
    from recsys.pipelines import canary

    state = canary.status(settings_for(args))
    if args.json:
        print_json(state)
        return
    print(_describe(state))
    served = state.get("served")
    if served is None:
        print(f"served:   {state.get('store') or 'no lists published with arms yet'}")
        return
    arms = f"champion {served.get('champion')}" + (
        f", canary {served['canary']} on {float(served['share']):.1%}" if served.get("canary") else ""
    )
    print(f"served:   {arms}; lists of version(s) {', '.join(served['allowed'])} are answered")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``recsys canary start|stop|status``."""
    group = sub.add_parser(
        "canary",
        help="serve a registered version to a slice of users beside the champion",
        description="A canary: a registered two_tower version scored nightly for a deterministic slice "
        "of users (a salted hash of the user id), recorded in MLflow (alias canary, version tags).",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_action = adder(actions)
    p = add_action("start", cmd_canary_start, "make a version the canary from the next night on")
    p.add_argument("--version", type=positive_arg, required=True, help="registered two_tower version")
    p.add_argument("--share", type=_share_arg, required=True, help="share of users, in (0, 0.5]")
    p.add_argument("--salt", help="salt of the slice's hash (default: the running one, else a new one)")
    p.add_argument("--by", help="who starts it, for the record (default: the login name)")
    p = add_action("stop", cmd_canary_stop, "end the canary: its lists leave every answer at once")
    p.add_argument("--reason", default="", help="why, kept on the version")
    p.add_argument("--by", help="who stops it, for the record (default: the login name)")
    p = add_action("status", cmd_canary_status, "the champion, the canary, and what the online store serves")
    p.add_argument("--json", action="store_true", help="print one JSON object")
