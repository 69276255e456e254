"""The command line: `python -m zoo list | info | fetch | verify | import | rm | predict | compare | eval | explain |
train | runs | degradation`. Each command group lives in its own module and registers its subcommands here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from zoo.cli import degradation, infer, models, train, weights
from zoo.errors import ZooError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo", description="ResNet Zoo: residual networks to see, "
                                     "compare, fine-tune and fetch.")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, weights, infer, train, degradation):
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m zoo list | head`
        return 0
    except KeyboardInterrupt:  # Ctrl-C: writes are atomic, so nothing half-written is left
        print("interrupted; nothing partial was kept", file=sys.stderr)
        return 130
