"""The ``privkit`` command line: one subcommand per application.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; the module adds
its parser and sets ``func`` (called with the parsed args, returns an exit code). Library code
never prints; this module and the subcommand modules do.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import PrivkitError

# module path -> registered under the names that module adds
_SUBCOMMAND_MODULES = (
    "privkit.apps.demo_cli",  # privkit demo
    "privkit.apps.svae_cli",  # privkit svae train|evaluate|sample
    "privkit.apps.keys_cli",  # privkit keys generate|export-public|inspect
    "privkit.apps.apnea_cli",  # privkit apnea demo | train | infer | evaluate
    "privkit.apps.anon_cli",  # privkit anon train | apply | evaluate
    "privkit.apps.serve_cli",  # privkit serve MODEL
    "privkit.apps.client_cli",  # privkit client keys | encrypt | send | decrypt
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privkit",
        description="Privacy-preserving ML: encrypted inference (CKKS), DP training, "
        "IMU anonymisation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _SUBCOMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
