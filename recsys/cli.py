"""The ``recsys`` command: a thin shell over recsys.pipelines, recsys.online.reader and
recsys.ops.registry.

Settings overrides go after the sub-command as ``section.key=value`` (``recsys train
model.temperature=0.1 train.max_epochs=7``). Results go to stdout, logs to stderr. Exit codes:
0 success, 1 a known error (one-line message; traceback only with --verbose), 2 bad usage.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recsys import checks
from recsys.config import Settings, load_settings
from recsys.errors import InvalidRequestError, RecsysError

log = logging.getLogger("recsys")


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _settings(args: argparse.Namespace, extra: Sequence[str] = ()) -> Settings:
    return load_settings(list(extra) + list(args.overrides), config_file=args.config)


def cmd_run(args: argparse.Namespace) -> None:
    from recsys.pipelines.chain import run_all

    steps = run_all(_settings(args), force_promotion=args.force_promotion)
    _print_json({"train": steps["train"], "promote": steps["promote"], "publish": steps["publish"]})


def cmd_ingest(args: argparse.Namespace) -> None:
    from recsys.pipelines import ingest

    extra = [f"data.dataset={args.dataset}"] if args.dataset else []
    extra += [f"data.source={args.source}"] if args.source else []
    settings = _settings(args, extra)
    _print_json(ingest.ingest(settings, validate=True))


def cmd_synth(args: argparse.Namespace) -> None:
    from recsys.data.synth.params import params_for
    from recsys.data.synth.release import synthesize

    sizes = {"users": args.users, "movies": args.movies, "ratings": args.ratings}
    params = params_for(args.preset, seed=args.seed, **sizes)
    _print_json(synthesize(params, args.out, force=args.force))


def cmd_prepare(args: argparse.Namespace) -> None:
    from recsys import home
    from recsys.data.snapshots import data_version
    from recsys.pipelines import ingest

    settings = _settings(args)
    raw = home.raw_dir(settings)
    ingest.validate_raw(settings, str(raw))
    _print_json(ingest.prepare(settings, str(raw), data_version(raw)))


def cmd_train(args: argparse.Namespace) -> None:
    from recsys.pipelines import ingest, retrain

    settings = _settings(args)
    prepared = ingest.locate_prepared(settings)
    result = retrain.train(settings, prepared["prepared_dir"], prepared["data_version"])
    result["comparison"] = retrain.compare(settings, result["version"], prepared["prepared_dir"])
    result["promotion"] = retrain.promote(settings, result["comparison"], force=args.force_promotion)
    _print_json(result)


def cmd_pairs(args: argparse.Namespace) -> None:
    from recsys.pipelines import ingest, retrain

    settings = _settings(args)
    prepared = ingest.locate_prepared(settings)
    _print_json(retrain.mine_pairs(settings, prepared["prepared_dir"], prepared["data_version"]))


def cmd_train_similar(args: argparse.Namespace) -> None:
    from recsys.pipelines import ingest, retrain

    settings = _settings(args)
    located = retrain.locate_pairs(settings)
    prepared = ingest.locate_prepared(settings)["prepared_dir"]
    result = retrain.train_similar(settings, located["pairs_dir"], prepared, located["pairs_version"])
    result["promotion"] = retrain.promote_similar(
        settings, result, located["pairs_dir"], force=args.force_promotion
    )
    _print_json(result)


def cmd_publish_similar(args: argparse.Namespace) -> None:
    from recsys.pipelines import score_nightly

    settings = _settings(args)
    scored = score_nightly.score_similar(settings, args.model)
    _print_json({"score": scored, "publish": score_nightly.publish_similar(settings, scored["similar"])})


def cmd_similar(args: argparse.Namespace) -> None:
    from recsys.online.reader import similar

    triples = similar(args.movie, args.k, _settings(args))
    if args.json:
        print(json.dumps([list(t) for t in triples]))
        return
    for movie_id, score, title in triples:
        print(json.dumps([movie_id, round(score, 4), title]))


def cmd_promote(args: argparse.Namespace) -> None:
    from recsys.ops.registry import Registry

    settings = _settings(args)
    outcome = Registry.open(settings).promote(str(args.version))  # a missing one: the versions there are
    replaced = f"replaced version {outcome.previous}" if outcome.previous else "there was none before"
    print(f"{settings.mlflow.model_name}@champion -> version {outcome.version} ({replaced})")


def cmd_models(args: argparse.Namespace) -> None:
    from recsys.errors import ModelNotFoundError
    from recsys.ops.registry import MOVIE_SIMILAR, TWO_TOWER, Registry

    settings = _settings(args)
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
    _print_json(listed)


def cmd_score(args: argparse.Namespace) -> None:
    from recsys.pipelines import score_nightly

    settings = _settings(args)
    result = score_nightly.score(settings, args.model)
    result["validation"] = score_nightly.validate_recommendations(settings, result["recommendations"])
    _print_json(result)


def cmd_publish(args: argparse.Namespace) -> None:
    from recsys import home
    from recsys.ops.registry import CHAMPION, Registry
    from recsys.pipelines import ingest, score_nightly

    settings = _settings(args)
    path = args.recommendations
    if path is None:
        version = str(Registry.open(settings).resolve(CHAMPION).version)
        folder = home.scores_dir(settings, version, ingest.locate_prepared(settings)["data_version"])
        path = str(folder / "recommendations.parquet")
    score_nightly.validate_recommendations(settings, path)
    _print_json(score_nightly.publish(settings, path))


def cmd_lookup(args: argparse.Namespace) -> None:
    from recsys.errors import UnknownUserError
    from recsys.online.reader import lookup

    settings = _settings(args)
    try:
        triples = lookup(args.user, args.k, settings)
    except UnknownUserError:  # as over HTTP: scored from a stored history, else the popular list
        from recsys.serving.models import answer_without_list

        source, version, triples = answer_without_list(settings, args.user, args.k)
        what = {
            "computed": f"scored now from the stored history by two_tower version {version}",
            "popular": "the popular list: scores are positive ratings in the training data, not model scores",
        }[source]
        print(f"note: user {args.user} has no stored list; source {source}: {what}", file=sys.stderr)
    if args.json:
        print(json.dumps([list(t) for t in triples]))
        return
    for movie_id, score, title in triples:
        print(json.dumps([movie_id, round(score, 4), title]))


def cmd_status(args: argparse.Namespace) -> None:
    from recsys.online import publication
    from recsys.ops import redis_server

    settings = _settings(args)
    redis_server.require(settings)
    conn = redis_server.client(settings.redis_connection)
    try:
        state = publication.status(settings, conn)
        state["similar"] = publication.similar_status(conn)
    finally:
        conn.close()
    if args.json:
        _print_json(state)
        return
    served = state["served"]
    print(
        f"served:  model version {served['model_version'] or '-'}, data version "
        f"{served['data_version'] or '-'}, published {served['published_at'] or 'never'}, "
        f"{served['users']} users with a list"
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
            f"{similar['scored_at'] or '-'}, {similar['movies']} movies with a list"
        )
    else:
        print("similar: no similar-movie lists in the store (run `recsys publish-similar`)")


def publication_holder(target: dict) -> str:
    holder = target.get("holder") or {}
    return f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "holder unknown"


def cmd_up(args: argparse.Namespace) -> None:
    from recsys.ops import redis_server

    print(f"redis listening on {redis_server.ensure_running(_settings(args))}")


def cmd_down(args: argparse.Namespace) -> None:
    from recsys.ops import redis_server

    stopped = redis_server.stop(_settings(args))
    print("stopped the embedded redis" if stopped else "nothing was running")


# A worker is a process with its own copy of the model: the Python work of a request holds the GIL,
# so one process per core. A request takes milliseconds; the timeout only bounds a stuck one.
SERVE_WORKERS = 2
SERVE_TIMEOUT_S = 10


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port_free(host: str, port: int) -> None:
    """RecsysError (one line) when nothing can listen on host:port: in use, or a bad host."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RecsysError(f"cannot serve on host {host!r}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise RecsysError(f"cannot serve on {host}:{port}: {reason}; choose another --port") from None


def cmd_serve(args: argparse.Namespace) -> None:
    import tempfile

    from recsys.errors import ModelNotFoundError
    from recsys.ops import redis_server
    from recsys.ops.registry import Registry

    settings = _settings(args)
    _port_free(args.host, args.port)  # every check before anything starts
    models = Registry.open(settings)
    version = str(models.resolve(args.model).version)
    folder = settings.paths.home / "serving"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _, local = models.download_model(version, Path(tempfile.mkdtemp(dir=folder)))
    except Exception as exc:  # MLflow's or the artefact store's error, whatever its class
        raise ModelNotFoundError(
            f"cannot download {settings.mlflow.model_name} version {version} from "
            f"{settings.tracking_address}: {str(exc).splitlines()[0][:200]}"
        ) from exc
    redis_server.ensure_running(settings)
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "REDIS_CONNECTION_STRING": settings.redis_connection,
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(args.timeout),
        "__pyfunc_model_path__": str(local),  # recsys.serving.http.MODEL_PATH_ENV, as mlflow sets it
    }
    if args.config:
        env["RECSYS_CONFIG"] = str(Path(args.config).resolve())
    # MLflow's own scoring app (as `mlflow models serve` runs it) behind recsys.serving.http's guard
    command = [
        os.path.join(bin_dir, "uvicorn"),
        "--factory",
        "recsys.serving.http:create_app",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        str(args.workers),
    ]
    print(
        f"serving {settings.mlflow.model_name} version {version} ({args.model}) on "
        f"http://{args.host}:{args.port}/invocations ({args.workers} worker(s))",
        flush=True,
    )
    os.execvpe(command[0], command, env)


def _tcp_port(text: str) -> int:
    try:
        return checks.whole_number(text, "port", 1, 65535)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _user_id(text: str) -> int:
    try:
        return checks.user_id(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _movie_id(text: str) -> int:
    try:
        return checks.movie_id(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _k(text: str) -> int:
    try:
        return checks.list_length(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recsys",
        description="Nightly two-tower movie retrieval: ingest, validate, "
        "prepare, train, promote, score, publish, look up.",
    )
    parser.add_argument("--config", help="YAML settings file (default: $RECSYS_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("overrides", nargs="*", metavar="section.key=value", help="settings overrides")
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "the whole chain on one machine: ingest ... publish")
    p.add_argument("--force-promotion", action="store_true", help="make the new version champion")
    p = add("ingest", cmd_ingest, "snapshot a MovieLens release into the DVC workspace and validate it")
    p.add_argument("--dataset", choices=["ml-latest-small", "ml-20m"])
    p.add_argument("--source", help="local copy (ml-20m.zip or an extracted folder) instead of the network")
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
    p = add("score", cmd_score, "score every user with a model's ONNX graph and validate the lists")
    p.add_argument("--model", default="champion", help="version number or alias (default champion)")
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
    p.add_argument("--user", type=_user_id, required=True, help="MovieLens user id")
    p.add_argument(
        "--k",
        type=_k,
        default=10,
        help=f"list length, 1..{checks.MAX_K}, at most what the lists hold (default 10)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list of triples")
    add(
        "pairs",
        cmd_pairs,
        "mine the pairwise table of similar movies from the prepared data, validate, track",
    )
    p = add(
        "train-similar",
        cmd_train_similar,
        "train the similar-movies item tower (from the two_tower champion's item vectors, triplet loss), "
        "register movie_similar, run its gate",
    )
    p.add_argument("--force-promotion", action="store_true", help="make the new version champion")
    p = add(
        "publish-similar",
        cmd_publish_similar,
        "score every movie's similar movies with a movie_similar version and publish them",
    )
    p.add_argument("--model", default="champion", help="version number or alias (default champion)")
    p = add(
        "similar", cmd_similar, "print a movie's stored similar movies as [movie_id, score, title] triples"
    )
    p.add_argument("--movie", type=_movie_id, required=True, help="MovieLens movie id")
    p.add_argument(
        "--k",
        type=_k,
        default=10,
        help=f"list length, 1..{checks.MAX_K}, at most what the lists hold (default 10)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list of triples")
    add("up", cmd_up, "start the embedded Redis on 127.0.0.1 (idempotent)")
    add("down", cmd_down, "stop the services the project started")
    p = add(
        "serve",
        cmd_serve,
        "serve a two_tower version over HTTP: MLflow's scoring app (as `mlflow models serve` runs it) "
        "behind a guard that refuses malformed requests with a 400 or 413",
    )
    p.add_argument(
        "--model", default="champion", help="registered version number (3) or alias (default champion)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_tcp_port, default=5001, help="TCP port, 1..65535 (default 5001)")
    p.add_argument(
        "--workers",
        type=_positive,
        default=SERVE_WORKERS,
        help=f"server processes, each with the model loaded (default {SERVE_WORKERS}: "
        "one per core of a 2-core machine)",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=SERVE_TIMEOUT_S,
        help=f"seconds before a request is answered 504 (default {SERVE_TIMEOUT_S})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except RecsysError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
