"""Data paths: the shipped squad_en sample, and scripts that name missing data.

The sample in tests/data is what scripts/make_test_data.py makes from the full set in
../shared/data (checked where that set exists); examples and benchmarks that read the full
set exit with a message naming the missing path, not a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_sample_is_up_to_date_with_the_full_set(squad_dir: Path, squad_sample_dir: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_test_data.py"),
            "--check",
            "--source",
            str(squad_dir),
            "--out",
            str(squad_sample_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sample_carries_its_license(squad_sample_dir: Path) -> None:
    readme = (squad_sample_dir / "README.md").read_text(encoding="utf-8")
    for required in ("SQuAD v1.1", "Rajpurkar", "CC BY-SA 4.0", "sampled", "reformatted"):
        assert required in readme


def test_make_test_data_names_a_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_test_data.py"), "--source", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "script",
    [
        "examples/finetune_squad.py",
        "benchmarks/finetune.py",
        "benchmarks/late_chunking.py",
        "benchmarks/span_finetune.py",
    ],
)
def test_scripts_name_missing_data(script: str, tmp_path: Path) -> None:
    missing = tmp_path / "no_data"
    proc = subprocess.run(
        [sys.executable, str(REPO / script), "--data", str(missing)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "error:" in proc.stderr and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
