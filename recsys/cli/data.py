"""Commands of the data: the whole chain, ingest, generated releases, prepare, the pairwise table."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.cli.common import (
    Add,
    print_json,
    settings_for,
)
from recsys.errors import InvalidRequestError


def cmd_run(args: argparse.Namespace) -> None:
    from recsys.pipelines.chain import run_all

    steps = run_all(settings_for(args), force_promotion=args.force_promotion)
    print_json({"train": steps["train"], "promote": steps["promote"], "publish": steps["publish"]})


def cmd_ingest(args: argparse.Namespace) -> None:
    from recsys.pipelines import ingest

    extra = [f"data.dataset={args.dataset}"] if args.dataset else []
    if args.events is not None:
        if args.source:
            raise InvalidRequestError("--source names a release; give the event source as --events SOURCE")
        source = args.events or None  # bare --events: the events.source setting
        print_json(ingest.ingest_events(settings_for(args, extra), source))
        return
    extra += [f"data.source={args.source}"] if args.source else []
    settings = settings_for(args, extra)
    print_json(ingest.ingest(settings, validate=True))


def cmd_synth(args: argparse.Namespace) -> None:
    from recsys.data.synth.params import params_for
    from recsys.data.synth.release import synthesize

    sizes = {"users": args.users, "movies": args.movies, "ratings": args.ratings}
    params = params_for(args.preset, seed=args.seed, **sizes)
    print_json(synthesize(params, args.out, force=args.force))


def cmd_prepare(args: argparse.Namespace) -> None:
    from recsys import home
    from recsys.data.snapshots import data_version
    from recsys.pipelines import ingest

    settings = settings_for(args)
    raw = home.raw_dir(settings)
    ingest.validate_raw(settings, str(raw))
    print_json(ingest.prepare(settings, str(raw), data_version(raw)))


def cmd_pairs(args: argparse.Namespace) -> None:
    from recsys.pipelines import ingest, retrain

    settings = settings_for(args)
    prepared = ingest.locate_prepared(settings)
    print_json(retrain.mine_pairs(settings, prepared["prepared_dir"], prepared["data_version"]))


def register(add: Add, sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands."""
    p = add("run", cmd_run, "the whole chain on one machine: ingest ... publish")
    p.add_argument("--force-promotion", action="store_true", help="make the new version champion")
    p = add(
        "ingest",
        cmd_ingest,
        "snapshot a MovieLens release into the DVC workspace and validate it; with --events, take the "
        "events new since the last night into the snapshot instead",
    )
    p.add_argument("--dataset", choices=["ml-latest-small", "ml-20m"])
    p.add_argument("--source", help="local copy (ml-20m.zip or an extracted folder) instead of the network")
    p.add_argument(
        "--events",
        nargs="?",
        const="",
        metavar="SOURCE",
        help="take the night's events: from SOURCE (a folder of YYYY-MM-DD.csv|.parquet files, or an "
        "SQLAlchemy URL such as sqlite:///app.db), default the events.source setting",
    )
    p = sub.add_parser(
        "synth",
        help="write a synthetic MovieLens-shaped release (ratings.csv, "
        "movies.csv, README.txt) with a planted preference structure",
        description="Write a synthetic release in the MovieLens CSV layout, for "
        "`recsys ingest --dataset ml-20m --source DIR`. Numbers override the preset.",
    )
    p.set_defaults(func=cmd_synth)
    p.add_argument(
        "--preset",
        default="small",
        help="ml-20m (138,493 users, 26,744 movies, 20,000,263 ratings) or small "
        "(ml-1m's shape: 6,040 / 3,706 / 1,000,209); default small",
    )
    p.add_argument("--users", type=int, help="users (ids 1..N)")
    p.add_argument("--movies", type=int, help="movies, each rated at least once")
    p.add_argument("--ratings", type=int, help="ratings, at least 20 per user")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    p.add_argument("--out", type=Path, required=True, help="release folder to write (created)")
    p.add_argument("--force", action="store_true", help="replace --out if it holds files")
    add("prepare", cmd_prepare, "validate the raw snapshot, split it by the protocol, validate, track")
    add(
        "pairs",
        cmd_pairs,
        "mine the pairwise table of similar movies from the prepared data, validate, track",
    )
