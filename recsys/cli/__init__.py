"""The ``recsys`` command: a thin shell over recsys.pipelines, recsys.online.reader and
recsys.ops.registry, its sub-commands grouped by topic (data, models, lists, serve).

Settings overrides go after the sub-command as ``section.key=value`` (``recsys train
model.temperature=0.1 train.max_epochs=7``). Results go to stdout, logs to stderr. Exit codes:
0 success, 1 a known error (one-line message; traceback only with --verbose), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys

from recsys.cli import data, experiments, lists, models, online, serve, takedowns
from recsys.cli.common import adder
from recsys.errors import RecsysError

log = logging.getLogger("recsys")


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
    add = adder(sub)
    data.register(add, sub)
    models.register(add)
    lists.register(add)
    online.register(add)
    serve.register(add)
    takedowns.register(add)
    experiments.register(sub)
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
