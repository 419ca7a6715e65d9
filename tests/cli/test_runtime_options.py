"""`m3kit index` and `search` load the encoder as --runtime, --max-batch-tokens and co. say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.backends import EncoderBackend
from m3kit.cli import main
from m3kit.testing import SAMPLE_TEXTS


def test_runtime_flags_reach_the_encoder(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[M3Encoder] = []
    original = M3Encoder.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type[M3Encoder], *args: Any, **kwargs: Any) -> M3Encoder:
        enc: M3Encoder = original(cls, *args, **kwargs)
        loaded.append(enc)
        return enc

    monkeypatch.setattr(M3Encoder, "from_pretrained", classmethod(spy))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(SAMPLE_TEXTS[:4]):
        (docs / f"t{i}.txt").write_text(text, encoding="utf-8")
    cache = tmp_path / "onnx"
    flags = ["--path", str(tmp_path / "db"), "-q", "--runtime", "onnx"]
    flags += ["--onnx-cache-dir", str(cache), "--max-batch-tokens", "64"]
    assert main(["index", str(docs), "--model", str(tiny_m3_path), *flags]) == 0
    enc = loaded[-1]
    assert (enc.backend, enc.max_batch_tokens) == (EncoderBackend.ONNX, 64)
    assert enc.onnx_cache_dir == cache and list(cache.glob("*/model.onnx"))
    capsys.readouterr()
    assert main(["search", SAMPLE_TEXTS[1], "-k", "1", "--json", *flags]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["text"] == SAMPLE_TEXTS[1]
    assert loaded[-1].backend is EncoderBackend.ONNX


def test_an_onnx_cache_folder_with_the_torch_runtime_is_an_error(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text(SAMPLE_TEXTS[0], encoding="utf-8")
    argv = ["index", str(tmp_path / "a.txt"), "--model", str(tiny_m3_path), "--path"]
    argv += [str(tmp_path / "db"), "--runtime", "torch", "--onnx-cache-dir", str(tmp_path)]
    assert main(argv) != 0
    assert "onnx_cache_dir is for backend='onnx'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [None, "--keep-freed-memory", "--no-keep-freed-memory"])
def test_index_keeps_freed_memory_unless_told_not_to(
    tmp_path: Path,
    tiny_m3_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
) -> None:
    """`m3kit index` encodes and writes inside :func:`m3kit.heap.keep_freed_memory` (on by
    default: the CLI owns its process), and `--no-keep-freed-memory` leaves glibc as it is."""
    import m3kit.heap
    from m3kit.store import M3Store
    from tests.heap_spy import KeepFreedMemorySpy

    keep = KeepFreedMemorySpy(m3kit.heap.keep_freed_memory)
    writes_inside = keep.calls_inside(monkeypatch, M3Store, "upsert")
    monkeypatch.setattr(m3kit.heap, "keep_freed_memory", keep)
    (tmp_path / "a.txt").write_text(SAMPLE_TEXTS[0], encoding="utf-8")
    argv = ["index", str(tmp_path / "a.txt"), "--model", str(tiny_m3_path), "-q"]
    argv += ["--path", str(tmp_path / "db"), *([flag] if flag else [])]
    assert main(argv) == 0
    assert keep.asked == [flag != "--no-keep-freed-memory"]
    assert writes_inside and all(writes_inside)
