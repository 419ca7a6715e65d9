"""``--keep-freed-memory`` of the ``m3kit`` subcommands that encode a corpus in their own
process (``index``, ``eval``, ``calibrate``, ``mine-negatives``): the flag, and the block its
handler runs in (:func:`m3kit.heap.keep_freed_memory`).

The CLI owns its process, so glibc may keep freed blocks for the whole run: each batch's large
tensors then reuse the last one's pages instead of faulting in fresh ones (the README's "The
`m3kit` command" has the measurements). The library's own classes leave that choice to the
application (it changes the process's allocator settings).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["add_keep_freed_memory_argument", "keeping_freed_memory"]


def add_keep_freed_memory_argument(
    parser: argparse.ArgumentParser, work: str, note: str = ""
) -> None:
    """Add ``--keep-freed-memory`` / ``--no-keep-freed-memory`` (default on).

    Args:
        parser: The subcommand's parser.
        work: What the process does meanwhile, for the help (``"indexing"``).
        note: Added to the help's parenthesis (``"; --ray actors are processes of their own"``).
    """
    parser.add_argument(
        "--keep-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"on Linux (glibc): keep the memory freed tensors leave for reuse while {work} "
        "instead of unmapping it; faster encoding, given back when the run ends (default: on"
        f"{note})",
    )


def keeping_freed_memory(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """``handler`` run inside ``keep_freed_memory(args.keep_freed_memory)``.

    >>> def count(args: argparse.Namespace) -> int:
    ...     return 7
    >>> run = keeping_freed_memory(count)
    >>> run.__name__, run(argparse.Namespace(keep_freed_memory=False))
    ('count', 7)
    """

    def run(args: argparse.Namespace) -> int:
        from m3kit import heap

        with heap.keep_freed_memory(args.keep_freed_memory):
            return handler(args)

    run.__name__ = getattr(handler, "__name__", "run")
    run.__doc__ = handler.__doc__
    return run
