"""Helpers of the tests of ``examples/``: load one as a module, run one as a script, read its
output. Framework-free: each example test imports its own framework."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` imported as module ``name`` (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, model: Path, question: str) -> subprocess.CompletedProcess[str]:
    """``examples/<name>.py --model MODEL --question QUESTION`` run offline from the repository
    root, its output captured as text."""
    script = str(EXAMPLES / f"{name}.py")
    return subprocess.run(
        [sys.executable, script, "--model", str(model), "--question", question],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def output_sections(stdout: str) -> dict[str, list[str]]:
    """``{section title: [source lines]}`` from an example's output (``[title] sources:`` then
    one indented line a source)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("[") and line.endswith("] sources:"):
            current = line[1 : -len("] sources:")]
            out[current] = []
        elif current is not None and line.startswith("  "):
            out[current].append(line)
    return out


#: The question :func:`write_long_notes`' folder answers only in its long file's last sentence.
LONG_NOTES_QUESTION = "What is the lighthouse keeper's cat called?"


def write_long_notes(folder: Path) -> Path:
    """``folder`` with ``long_notes.txt`` (120 filler sentences, ~1,500 tokens, then the
    answer to :data:`LONG_NOTES_QUESTION`) and a short unrelated ``other.txt``."""
    day = "describes the weather of an ordinary day."
    filler = " ".join(f"Paragraph {i} {day}" for i in range(120))
    (folder / "long_notes.txt").write_text(
        filler + " The lighthouse keeper's cat is named Saffron.", encoding="utf-8"
    )
    (folder / "other.txt").write_text("Volcanoes erupt molten rock.", encoding="utf-8")
    return folder
