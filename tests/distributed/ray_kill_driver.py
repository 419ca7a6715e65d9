"""Test driver: ``m3kit index ... --ray`` whose writer reports each write and then pauses.

Run as a script by ``test_ray_pipeline.py`` (never imported by library code)::

    M3KIT_TEST_WRITE_PAUSE=60 python ray_kill_driver.py index corpus.jsonl --ray ...

After every :meth:`M3Index.write_records` call returns (the chunks are stored), it prints
``wrote <n> records`` to stdout and sleeps ``$M3KIT_TEST_WRITE_PAUSE`` seconds (default 0),
so the test can SIGKILL the run between two writes, deterministically.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

PAUSE_ENV = "M3KIT_TEST_WRITE_PAUSE"
WROTE = "wrote"


def main(argv: list[str]) -> int:
    """Patch the writer, then run the m3kit command line on ``argv``."""
    from m3kit.cli import main as cli_main
    from m3kit.store import M3Index

    pause = float(os.environ.get(PAUSE_ENV, "0"))
    original = M3Index.write_records

    def reporting(self: M3Index, records: Any, empty: Any = ()) -> None:
        original(self, records, empty)
        print(f"{WROTE} {len(records)} records", flush=True)
        time.sleep(pause)

    M3Index.write_records = reporting  # type: ignore[method-assign]
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
