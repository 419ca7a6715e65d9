"""Run the fine-tuning subcommands of the m3kit CLI in process (the CLI tests' helper)."""

from __future__ import annotations

import argparse

from m3kit.finetune.cli import add_subcommands

__all__ = ["run_cli"]


def run_cli(argv: list[str]) -> int:
    """Parse ``argv`` (``["eval", "--model", ...]``) as ``m3kit`` does and run its handler."""
    parser = argparse.ArgumentParser(prog="m3kit")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))
