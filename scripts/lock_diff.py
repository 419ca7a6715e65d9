"""Print how the installed packages differ from a lock file (used by scripts/test_latest.sh).

python scripts/lock_diff.py .ci/requirements.lock
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path


def main(lock: str) -> int:
    pinned: dict[str, str] = {}
    for line in Path(lock).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pinned[name.strip().lower().replace("_", "-")] = version.strip()
    installed = {
        (d.metadata["Name"] or "").lower().replace("_", "-"): d.version
        for d in metadata.distributions()
    }
    changed = [
        f"  {name}: {pinned[name]} -> {installed[name]}"
        for name in sorted(pinned)
        if name in installed and installed[name] != pinned[name]
    ]
    print(f"{len(changed)} packages newer or older than {lock}:")
    print("\n".join(changed) if changed else "  (none)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
