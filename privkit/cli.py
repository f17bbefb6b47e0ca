"""The ``privkit`` command line: one subcommand per application.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; the module adds
its parser and sets ``func`` (called with the parsed args, returns an exit code). Library code
never prints; this module and the subcommand modules do.

Start-up stays fast: the subcommand modules import only the standard library (and privkit's
light base modules) at module level, and import torch, scikit-learn, TenSEAL and the
applications inside the function that runs the subcommand. ``privkit --help`` therefore never
loads torch (tests/test_cli.py measures it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from . import __version__
from .errors import PrivkitError

__all__ = ["HelpFormatter", "build_parser", "main"]

# module path -> registered under the names that module adds
_SUBCOMMAND_MODULES = (
    "privkit.apps.demo_cli",  # privkit demo
    "privkit.apps.apnea_cli",  # privkit apnea demo | train | infer | evaluate
    "privkit.apps.svae_cli",  # privkit svae train|evaluate|sample
    "privkit.apps.anon_cli",  # privkit anon train | apply | evaluate
    "privkit.apps.keys_cli",  # privkit keys generate|export-public|inspect
    "privkit.apps.serve_cli",  # privkit serve MODEL
    "privkit.apps.client_cli",  # privkit client keys | encrypt | send | decrypt
)

_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _plain(text: str) -> str:
    """Docstring markup to plain text: ``x`` -> x, :mod:`x` -> x, a trailing '::' -> ':'."""
    text = _RST_ROLE.sub(r"\1", text)
    return text.replace("``", "").replace("::\n", ":\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (plain text), every option's default shown after its help.

    Defaults that say nothing (``None``, ``False`` of a flag) are not shown.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if "%(default)" in text or d is None or d is False or d is argparse.SUPPRESS:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += " (default: %(default)s)"
        return text

    def _format_text(self, text: str) -> str:
        return super()._format_text(_plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return _plain(super()._expand_help(action))


class PrivkitParser(argparse.ArgumentParser):
    """An ArgumentParser whose sub-parsers inherit :class:`HelpFormatter`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; builds every subcommand's options without importing torch."""
    parser = PrivkitParser(
        prog="privkit",
        description="Privacy-preserving ML in PyTorch: encrypted inference (CKKS),\n"
        "differentially private training (DP-SGD) and IMU anonymisation.\n\n"
        "Each COMMAND has its own --help. Every command takes --json (machine-readable\n"
        "results on stdout; progress bars go to stderr); the ones that train or compute\n"
        "take --smoke (tiny sizes, under 30 s).",
    )
    parser.add_argument("-V", "--version", action="version", version=f"privkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=PrivkitParser)
    for mod in _SUBCOMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``privkit`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PrivkitError as e:
        print(f"privkit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("privkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
