"""``m3kit index --overlap`` and ``ChunkerSpec(overlap=...)``: the late-chunking window overlap.

``LateChunker``, ``M3LateChunkingSplitter`` and ``M3LateChunkingNodeParser`` take ``overlap``
(text tokens shared by consecutive windows); the command line and the Ray pipeline's
``ChunkerSpec`` had no way to give it, so their late chunks always used the default.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.cli_chunking import RECORD_KEY
from m3kit.distributed.ray_pipeline import ChunkerSpec
from m3kit.late_chunking import LateChunker
from m3kit.store import M3Index
from m3kit.store.schema import CHUNKING

TEXT = " ".join(
    f"Sentence {i} tells about rivers, hills and the towns beside them." for i in range(12)
)


def _run(capsys: pytest.CaptureFixture[str], store: Path, model: Path, *argv: str | Path) -> int:
    capsys.readouterr()
    return main(["index", *map(str, argv), "--path", str(store), "--model", str(model), "-q"])


def _stored(store: Path, model: Path) -> tuple[set[int], dict[str, object]]:
    """The overlaps of the stored chunks and the remembered chunking flags."""
    with M3Index.open(M3Encoder.from_pretrained(model), str(store)) as index:
        hits = index.store._backend.scroll(None, [CHUNKING])
        overlaps = {int(h.payload[CHUNKING]["overlap"]) for h in hits}
        return overlaps, dict(index.store.collection_metadata()[RECORD_KEY])


def test_the_overlap_changes_the_vectors(tiny_encoder: M3Encoder) -> None:
    """The setting matters: with several windows per document, another overlap pools other
    vectors."""
    a = LateChunker(tiny_encoder, chunk_size=16, window=40, overlap=2).chunk([TEXT])[0]
    b = LateChunker(tiny_encoder, chunk_size=16, window=40, overlap=16).chunk([TEXT])[0]
    assert [c.text for c in a] == [c.text for c in b]
    assert any(abs(x.dense - y.dense).max() > 1e-4 for x, y in zip(a, b, strict=True))  # type: ignore[operator]


def test_index_overlap_is_used_and_remembered(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs, store = tmp_path / "docs", tmp_path / "store"
    docs.mkdir()
    (docs / "a.md").write_text(TEXT, encoding="utf-8")
    late = ["--late-chunking", "--chunk-size", "16", "--window", "40"]
    assert _run(capsys, store, tiny_m3_path, docs, *late, "--overlap", "5") == 0
    overlaps, remembered = _stored(store, tiny_m3_path)
    assert overlaps == {5}
    assert remembered["overlap"] == 5

    # a later run without the flag chunks the same way: a new file gets overlap 5 too
    (docs / "b.md").write_text(TEXT.replace("rivers", "lakes"), encoding="utf-8")
    assert _run(capsys, store, tiny_m3_path, docs) == 0
    assert _stored(store, tiny_m3_path)[0] == {5}


def test_index_overlap_needs_late_chunking(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.md").write_text(TEXT, encoding="utf-8")
    assert _run(capsys, tmp_path / "s", tiny_m3_path, tmp_path / "a.md", "--overlap", "4") == 1
    assert "--overlap needs --late-chunking" in capsys.readouterr().err


def test_a_remembered_record_without_overlap_still_reads() -> None:
    """Collections indexed before ``--overlap`` existed remember no overlap: the default."""
    from m3kit.cli_chunking import IndexChunking

    old = {"late": True, "chunk_size": 16, "window": 40, "late_heads": None}
    read = IndexChunking.from_record({RECORD_KEY: old})
    assert read is not None and read.overlap is None and read.window == 40


def test_chunker_spec_overlap(tiny_encoder: M3Encoder) -> None:
    built = ChunkerSpec("late", chunk_size=16, window=40, overlap=6).build(tiny_encoder)
    assert isinstance(built, LateChunker) and built.overlap == 6
    with pytest.raises(ValueError, match="overlap applies to late chunking"):
        ChunkerSpec("naive", overlap=6)
