"""Commands of the registered models: train, train-similar, promote, models."""

from __future__ import annotations

import argparse

from recsys.cli.common import (
    Add,
    print_json,
    settings_for,
)


def cmd_train(args: argparse.Namespace) -> None:
    from recsys.pipelines import ingest, retrain

    settings = settings_for(args)
    prepared = ingest.locate_prepared(settings)
    result = retrain.train(settings, prepared["prepared_dir"], prepared["data_version"])
    result["comparison"] = retrain.compare(settings, result["version"], prepared["prepared_dir"])
    result["promotion"] = retrain.promote(settings, result["comparison"], force=args.force_promotion)
    print_json(result)


def cmd_train_similar(args: argparse.Namespace) -> None:
    from recsys.pipelines import ingest, retrain

    settings = settings_for(args)
    located = retrain.locate_pairs(settings)
    prepared = ingest.locate_prepared(settings)["prepared_dir"]
    result = retrain.train_similar(settings, located["pairs_dir"], prepared, located["pairs_version"])
    result["promotion"] = retrain.promote_similar(
        settings, result, located["pairs_dir"], force=args.force_promotion
    )
    print_json(result)


def cmd_promote(args: argparse.Namespace) -> None:
    import getpass

    from recsys.pipelines import canary

    settings = settings_for(args)
    # a missing version: the versions there are
    outcome = canary.promote_by_hand(settings, str(args.version), getpass.getuser())
    replaced = f"replaced version {outcome['previous']}" if outcome["previous"] else "there was none before"
    print(f"{settings.mlflow.model_name}@champion -> version {outcome['version']} ({replaced})")
    if outcome["override"]:
        print(f"this manual promotion {outcome['override']}")


def cmd_models(args: argparse.Namespace) -> None:
    from recsys.errors import ModelNotFoundError
    from recsys.ops.registry import MOVIE_SIMILAR, TWO_TOWER, Registry

    settings = settings_for(args)
    names = {settings.mlflow.model_name: TWO_TOWER, settings.mlflow.similar_model_name: MOVIE_SIMILAR}
    if args.model is not None and args.model not in names:
        raise ModelNotFoundError(f"no registered model {args.model!r}; the models are {', '.join(names)}")
    chosen = [args.model] if args.model else list(names)
    listed = {name: Registry.open(settings, names[name]).versions() for name in chosen}
    if args.model and not listed[args.model]:
        raise ModelNotFoundError(
            f"model {args.model!r} has no registered version at {settings.tracking_address}; "
            f"run `recsys {'train' if names[args.model] == TWO_TOWER else 'train-similar'}` first"
        )
    print_json(listed)


def register(add: Add) -> None:
    """Add this module's sub-commands."""
    p = add("train", cmd_train, "train the two-tower, log it to MLflow, register it, run the promotion gate")
    p.add_argument("--force-promotion", action="store_true", help="make the new version champion")
    p = add("promote", cmd_promote, "point alias champion at a registered version")
    p.add_argument("version", type=int, help="registered model version number")
    p = add(
        "models",
        cmd_models,
        "list the registered versions of both models (two_tower, movie_similar) with their aliases, "
        "as one JSON object keyed by model name",
    )
    p.add_argument("--model", help="only this registered model (an unknown name is an error)")
    p = add(
        "train-similar",
        cmd_train_similar,
        "train the similar-movies item tower (from the two_tower champion's item vectors, triplet loss), "
        "register movie_similar, run its gate",
    )
    p.add_argument("--force-promotion", action="store_true", help="make the new version champion")
