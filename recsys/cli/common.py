"""What every command of the CLI shares: the settings from the command line, JSON output, the
argument types that refuse a bad id, k or port with a usage error (exit 2), and the helper that
adds a sub-command with its settings overrides."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence

from recsys import checks
from recsys.config import Settings, load_settings
from recsys.errors import InvalidRequestError

Add = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


def settings_for(args: argparse.Namespace, extra: Sequence[str] = ()) -> Settings:
    """The settings: defaults, then the config file, the environment, ``extra`` and the overrides."""
    return load_settings(list(extra) + list(args.overrides), config_file=args.config)


def adder(sub: argparse._SubParsersAction) -> Add:
    """``add(name, func, help)``: a sub-command that runs ``func`` and takes settings overrides."""

    def add(name: str, func: Callable[[argparse.Namespace], None], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("overrides", nargs="*", metavar="section.key=value", help="settings overrides")
        p.set_defaults(func=func)
        return p

    return add


def positive_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def tcp_port_arg(text: str) -> int:
    try:
        return checks.whole_number(text, "port", 1, 65535)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def user_id_arg(text: str) -> int:
    try:
        return checks.user_id(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def movie_id_arg(text: str) -> int:
    try:
        return checks.movie_id(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def k_arg(text: str) -> int:
    try:
        return checks.list_length(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
