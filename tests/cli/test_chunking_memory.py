"""``m3kit index`` remembers its chunking flags in the collection, as it remembers ``--model``.

A later run without them used to chunk naively at the default size: every document it read
was re-chunked (a document's version includes how it was chunked) and served other vectors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.cli_chunking import RECORD_KEY
from m3kit.store import M3Index
from m3kit.store.schema import CHUNKING, DOC_ID

TEXT = " ".join(
    f"Sentence {i} tells about rivers, hills and the towns beside them." for i in range(12)
)


def _run(capsys: pytest.CaptureFixture[str], store: Path, model: Path, *argv: str | Path) -> str:
    capsys.readouterr()
    code = main(["index", *map(str, argv), "--path", str(store), "--model", str(model), "-q"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    return out.out


def _chunkings(store: Path, model: Path) -> dict[str, tuple[str, int]]:
    """``{file name: (chunking kind, number of chunks)}`` of every stored document."""
    out: dict[str, tuple[str, int]] = {}
    with M3Index.open(M3Encoder.from_pretrained(model), str(store)) as index:
        for hit in index.store._backend.scroll(None, [DOC_ID, CHUNKING]):
            p = hit.payload
            name = Path(str(p[DOC_ID])).name
            kind, n = out.get(name, (str(p[CHUNKING]["kind"]), 0))
            assert kind == p[CHUNKING]["kind"]
            out[name] = (kind, n + 1)
    return out


def _indexed_late(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path]:
    """A folder with a.md, indexed with --late-chunking --chunk-size 16: (docs, store)."""
    docs, store = tmp_path / "docs", tmp_path / "store"
    docs.mkdir()
    (docs / "a.md").write_text(TEXT, encoding="utf-8")
    _run(capsys, store, model, docs, "--late-chunking", "--chunk-size", "16")
    return docs, store


def test_later_runs_chunk_as_the_last_flags_said(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs, store = _indexed_late(tmp_path, tiny_m3_path, capsys)
    late = _chunkings(store, tiny_m3_path)
    assert late["a.md"][0] == "late" and late["a.md"][1] > 3

    # a new file, no flags: chunked late at size 16 too; a.md is unchanged, so not rewritten
    (docs / "b.md").write_text(TEXT.replace("rivers", "lakes"), encoding="utf-8")
    out = _run(capsys, store, tiny_m3_path, docs)
    assert "indexed 2 document(s)" in out and f"({late['a.md'][1]:+d})" in out, out
    both = _chunkings(store, tiny_m3_path)
    assert both == {"a.md": late["a.md"], "b.md": ("late", late["a.md"][1])}
    # --window is accepted without --late-chunking while late chunking is remembered
    _run(capsys, store, tiny_m3_path, docs, "--window", "40")

    # --no-late-chunking goes back to each chunk encoded alone, and is remembered in turn
    _run(capsys, store, tiny_m3_path, docs, "--no-late-chunking")
    assert {k for k, _ in _chunkings(store, tiny_m3_path).values()} == {"naive"}
    _run(capsys, store, tiny_m3_path, docs)
    assert {k for k, _ in _chunkings(store, tiny_m3_path).values()} == {"naive"}
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store)) as index:
        remembered = index.store.collection_metadata()[RECORD_KEY]
    assert remembered == {
        "late": False,
        "chunk_size": 16,
        "window": None,
        "late_heads": None,
        "overlap": None,
        "placement": None,
    }
    capsys.readouterr()
    code = main(["index", str(docs), "--path", str(store), "--window", "40", "-q"])
    assert code == 1 and "--window needs --late-chunking" in capsys.readouterr().err


def test_the_remembered_flags_survive_a_reindex(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The encoder record is rewritten on a reindex; the chunking kept beside it stays."""
    from tests.reliability.killing import perturbed_checkpoint

    docs, store = _indexed_late(tmp_path, tiny_m3_path, capsys)
    other = perturbed_checkpoint(tiny_m3_path, tmp_path / "other")
    _run(capsys, store, other, "--reindex")
    (docs / "b.md").write_text(TEXT.replace("rivers", "lakes"), encoding="utf-8")
    _run(capsys, store, other, docs)
    assert {k for k, _ in _chunkings(store, other).values()} == {"late"}


def test_flags_of_an_interrupted_run_are_remembered(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run cut short after writing some documents with new flags: the next run without
    flags finishes with those flags, instead of putting the written ones back."""
    docs, store = tmp_path / "docs", tmp_path / "store"
    docs.mkdir()
    for name in ("a", "b", "c"):
        (docs / f"{name}.txt").write_text(TEXT.replace("rivers", name), encoding="utf-8")
    _run(capsys, store, tiny_m3_path, docs)
    (before,) = {n for _, n in _chunkings(store, tiny_m3_path).values()}
    monkeypatch.setattr(M3Index, "write_group", 1)
    real, calls = M3Index.write_records, []

    def cut_short(self: M3Index, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(M3Index, "write_records", cut_short)
    assert main(["index", str(docs), "--path", str(store), "--model", str(tiny_m3_path),
                 "--chunk-size", "16", "-q"]) == 130  # fmt: skip
    monkeypatch.setattr(M3Index, "write_records", real)
    _run(capsys, store, tiny_m3_path, docs)
    chunks = _chunkings(store, tiny_m3_path)
    assert all(n > before + 3 for _, n in chunks.values()), chunks  # all at size 16


def test_reindex_alone_refuses_chunking_flags(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--reindex`` without paths re-encodes the stored chunks; a chunking flag there would
    be ignored (and remembered as not given)."""
    _, store = _indexed_late(tmp_path, tiny_m3_path, capsys)
    argv = ["index", "--reindex", "--path", str(store), "--model", str(tiny_m3_path), "-q"]
    capsys.readouterr()
    assert main([*argv, "--chunk-size", "8"]) == 1
    assert "--chunk-size need the files or folders to chunk" in capsys.readouterr().err
    assert main([*argv, "--no-late-chunking"]) == 1
    assert "--late-chunking/--no-late-chunking need the files" in capsys.readouterr().err
    assert {k for k, _ in _chunkings(store, tiny_m3_path).values()} == {"late"}


def test_late_chunks_of_a_collection_that_remembers_no_flags_are_not_rechunked_naively(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A collection an m3kit before commit ad1d095 indexed (e.g. e7a3161) remembers no
    chunking flags: its record has no ``index_chunking``, its chunks record
    ``{"kind": "late", ...}``. A run without flags after the upgrade re-chunked every
    late-chunked file naively at the default size (and remembered that): it is refused, naming
    the flags to give once; with them the run works and later runs remember them."""
    docs, store = _indexed_late(tmp_path, tiny_m3_path, capsys)
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store)) as index:
        record = index.store.collection_metadata()
        index.store.set_collection_metadata({k: v for k, v in record.items() if k != RECORD_KEY})
    late = _chunkings(store, tiny_m3_path)

    capsys.readouterr()
    argv = ["index", str(docs), "--path", str(store), "--model", str(tiny_m3_path), "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 document(s)" in err and "a.md" in err and "late-chunked" in err, err
    assert "--late-chunking --chunk-size N" in err and "--no-late-chunking" in err, err
    assert _chunkings(store, tiny_m3_path) == late  # nothing rewritten
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store)) as index:
        assert RECORD_KEY not in index.store.collection_metadata()  # nothing remembered

    # the flags given once: unchanged documents stay, and the next run needs none
    out = _run(capsys, store, tiny_m3_path, docs, "--late-chunking", "--chunk-size", "16")
    assert "(+0)" in out, out
    (docs / "b.md").write_text(TEXT.replace("rivers", "lakes"), encoding="utf-8")
    _run(capsys, store, tiny_m3_path, docs)
    assert _chunkings(store, tiny_m3_path) == {"a.md": late["a.md"], "b.md": late["a.md"]}


def test_naive_chunks_of_a_collection_that_remembers_no_flags_index_as_before(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same record-less collection holding naive chunks (the default): no refusal."""
    docs, store = tmp_path / "docs", tmp_path / "store"
    docs.mkdir()
    (docs / "a.md").write_text(TEXT, encoding="utf-8")
    _run(capsys, store, tiny_m3_path, docs)
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store)) as index:
        record = index.store.collection_metadata()
        index.store.set_collection_metadata({k: v for k, v in record.items() if k != RECORD_KEY})
    out = _run(capsys, store, tiny_m3_path, docs)
    assert "(+0)" in out, out
