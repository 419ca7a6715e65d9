"""``m3kit index --placement`` and ``ChunkerSpec(placement=...)``: the late-chunking windows.

``LateChunker`` (``LateChunkingConfig.placement``) lays a long document's windows out
``"centred"`` (the default: a fixed stride, each token from the window where it is most central)
or ``"chunks"`` (windows break between chunks); the command line and the Ray pipeline's
``ChunkerSpec`` had no way to give it, so their late chunks always used the default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.cli_chunking import RECORD_KEY, IndexChunking
from m3kit.cli_scale import chunker_spec
from m3kit.distributed.ray_pipeline import ChunkerSpec
from m3kit.late_chunking import LateChunker
from m3kit.late_windows import WindowPlacement
from m3kit.store import M3Index
from m3kit.store.schema import CHUNKING

TEXT = " ".join(
    f"Sentence {i} tells about rivers, hills and the towns beside them." for i in range(12)
)
LATE = ["--late-chunking", "--chunk-size", "16", "--window", "40"]


def _run(capsys: pytest.CaptureFixture[str], store: Path, model: Path, *argv: str | Path) -> int:
    capsys.readouterr()
    return main(["index", *map(str, argv), "--path", str(store), "--model", str(model), "-q"])


def _stored(store: Path, model: Path) -> tuple[set[str], dict[str, object]]:
    """The placements of the stored chunks and the remembered chunking flags."""
    with M3Index.open(M3Encoder.from_pretrained(model), str(store)) as index:
        hits = index.store._backend.scroll(None, [CHUNKING])
        placements = {str(h.payload[CHUNKING]["placement"]) for h in hits}
        return placements, dict(index.store.collection_metadata()[RECORD_KEY])


def test_the_placement_changes_the_vectors(tiny_encoder: M3Encoder) -> None:
    """The setting matters: with several windows per document, the other placement pools
    other vectors."""
    a = LateChunker(tiny_encoder, chunk_size=16, window=40, placement="centred").chunk([TEXT])[0]
    b = LateChunker(tiny_encoder, chunk_size=16, window=40, placement="chunks").chunk([TEXT])[0]
    assert [c.text for c in a] == [c.text for c in b]
    assert any(abs(x.dense - y.dense).max() > 1e-4 for x, y in zip(a, b, strict=True))  # type: ignore[operator]


def test_index_placement_is_used_and_remembered(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs, store = tmp_path / "docs", tmp_path / "store"
    docs.mkdir()
    (docs / "a.md").write_text(TEXT, encoding="utf-8")
    assert _run(capsys, store, tiny_m3_path, docs, *LATE, "--placement", "chunks") == 0
    placements, remembered = _stored(store, tiny_m3_path)
    assert placements == {"chunks"}
    assert remembered["placement"] == "chunks"

    # a later run without the flag chunks the same way: a new file is placed by chunks too
    (docs / "b.md").write_text(TEXT.replace("rivers", "lakes"), encoding="utf-8")
    assert _run(capsys, store, tiny_m3_path, docs) == 0
    assert _stored(store, tiny_m3_path)[0] == {"chunks"}


def test_index_placement_needs_late_chunking(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.md").write_text(TEXT, encoding="utf-8")
    code = _run(capsys, tmp_path / "s", tiny_m3_path, tmp_path / "a.md", "--placement", "chunks")
    assert code == 1
    assert "--placement needs --late-chunking" in capsys.readouterr().err


def test_index_placement_choices(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _run(capsys, tmp_path / "s", tiny_m3_path, tmp_path, *LATE, "--placement", "middle")
    err = capsys.readouterr().err
    assert "argument --placement" in err and "'centred', 'chunks'" in err


def test_a_remembered_record_without_placement_still_reads() -> None:
    """Collections indexed before ``--placement`` existed remember none: the default."""
    old = {"late": True, "chunk_size": 16, "window": 40, "late_heads": None, "overlap": None}
    read = IndexChunking.from_record({RECORD_KEY: old})
    assert read is not None and read.placement is None and read.window == 40


def test_chunker_spec_placement(tiny_encoder: M3Encoder) -> None:
    built = ChunkerSpec("late", chunk_size=16, window=40, placement="chunks").build(tiny_encoder)
    assert isinstance(built, LateChunker) and built.placement is WindowPlacement.CHUNKS
    with pytest.raises(ValueError, match="placement applies to late chunking"):
        ChunkerSpec("naive", placement="chunks")
    message = r"placement must be one of \['centred', 'chunks'\], got 'middle'"
    with pytest.raises(ValueError, match=message):
        ChunkerSpec("late", placement="middle")


def test_the_command_lines_spec_carries_the_placement() -> None:
    """``m3kit index --ray --placement chunks`` builds its actors' chunkers with it."""
    args = argparse.Namespace(
        late_chunking=True,
        chunk_size=16,
        window=40,
        late_heads=None,
        overlap=None,
        placement="chunks",
    )
    assert chunker_spec(args).placement is WindowPlacement.CHUNKS
