"""A device that cannot run here is a ``ValueError`` naming it, before the model loads (it was
a traceback from deep in torch, e.g. ``AssertionError: Torch not compiled with CUDA enabled``,
which ``m3kit index`` met only after reading every file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m3kit import M3Encoder
from m3kit.cli import main


@pytest.mark.parametrize(
    ("device", "message"),
    [("foo", "not a device torch knows"), ("cuda:0", "CUDA is not available here")],
)
def test_a_device_that_cannot_run_here_is_named_before_the_load(
    tiny_m3_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    device: str,
    message: str,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loads: list[object] = []
    monkeypatch.setattr("m3kit.encoder.M3Model.from_checkpoint", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError, match=message):
        M3Encoder.from_pretrained(tiny_m3_path, device=device)
    assert loads == []
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    argv = ["index", str(docs), "--model", str(tiny_m3_path), "--path", str(docs / "db")]
    assert main([*argv, "--device", device, "-q"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
