"""EncoderSpec: the checkpoint path a worker loads from, wherever its working directory is.

A pool worker started after the parent changed directory, a Ray actor on another node or
one run in a ``runtime_env`` ``working_dir``, does not share the parent's working directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.distributed import EncoderSpec


def test_a_relative_model_path_is_carried_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # M3Encoder.from_pretrained("models/m3") from the driver's directory: the spec carried
    # "models/m3", and a worker elsewhere failed with "checkpoint folder 'models/m3' does not
    # exist" (or loaded whatever model sat at models/m3 under its own directory)
    from m3kit.testing import build_tiny_m3_checkpoint

    project = tmp_path / "project"
    build_tiny_m3_checkpoint(project / "models" / "m3")
    monkeypatch.chdir(project)
    spec = EncoderSpec.of(M3Encoder.from_pretrained("models/m3", dtype="fp32"))
    assert spec.path == str((project / "models" / "m3").resolve())
    elsewhere = tmp_path / "actor_working_dir"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    worker = spec.load("cpu")  # the identity check between parent and worker passes
    assert worker.info is not None and worker.info.path == Path(spec.path)
