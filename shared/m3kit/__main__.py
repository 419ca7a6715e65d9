"""``python -m m3kit``: the ``m3kit`` command (:func:`m3kit.cli.main`)."""

import sys

from m3kit.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
