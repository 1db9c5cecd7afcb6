"""`medmrcnn` command line: a thin shell over the library. Exit codes: 0 ok, 1 some studies failed, 2 bad input/usage."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from medmrcnn.errors import MedMRCNNError


def command_modules() -> list[str]:
    """The sub-command modules: every `medmrcnn/cli/*_cmd.py`; each defines NAME, HELP, configure(p), run(args)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd"))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; given `argv`, only the sub-command named there gets its options (and heavy imports)."""
    from medmrcnn import __version__

    parser = argparse.ArgumentParser(prog="medmrcnn", description="Slice-wise Mask R-CNN for medical images.")
    parser.add_argument("--version", action="version", version=f"medmrcnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for mod_name in command_modules():
        mod = importlib.import_module(f"medmrcnn.cli.{mod_name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        if chosen is None or chosen == mod.NAME:
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the sub-command, map medmrcnn errors to one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except MedMRCNNError as e:
        if args.debug:
            raise
        print(f"medmrcnn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medmrcnn: interrupted", file=sys.stderr)
        return 130
