"""Nothing dropped by default: ``m3kit index`` chunks long files so all of their text is indexed.

Also the direct API: ``M3Index.add_texts`` without a chunker names a too-long document and how
many of its tokens were dropped (or raises with ``truncation="error"``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from m3kit import M3Encoder, TruncationError
from m3kit.chunking import NaiveChunker, document_token_ids
from m3kit.cli import main
from m3kit.store import M3Index

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DOCS = REPO / "examples" / "sample_docs"
SMALL_WINDOW = 64  # tokens the tiny model takes per pass in these tests (specials included)


def _long_text() -> str:
    """The six sample documents in one file (~860 MiniLM tokens), volcanoes last."""
    parts = sorted(SAMPLE_DOCS.glob("*"), key=lambda p: (p.stem == "volcanoes", p.name))
    return "\n\n".join(p.read_text(encoding="utf-8") for p in parts)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main([*argv, "--dtype", "fp32", "--quiet"]) == 0
    return capsys.readouterr().out


def _stored(out: str) -> tuple[int, int]:
    """(chunks stored, change) from the index command's summary line."""
    tail = out.strip().split(": ")[-1]  # "N chunk(s) stored (+M)"
    count, change = tail.split(" chunk(s) stored (")
    return int(count), int(change.split(")")[0])


def _all_chunks(
    capsys: pytest.CaptureFixture[str], store: Path, model: Path, collection: str, n: int
) -> list[dict[str, object]]:
    out = _run(
        capsys, "search", "anything", "--path", str(store), "--model", str(model),
        "--collection", collection, "-k", str(n + 5), "--json", "--max-length", str(SMALL_WINDOW),
    )  # fmt: skip
    hits: list[dict[str, object]] = json.loads(out)["hits"]
    return sorted(hits, key=lambda h: int(h["chunk_index"]))  # type: ignore[call-overload]


def test_long_file_is_chunked_whole(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file ~14x the model's window: several chunks that tile it exactly; re-index adds 0."""
    text = _long_text()
    long_md = tmp_path / "long.md"
    long_md.write_text(text, encoding="utf-8")
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=SMALL_WINDOW)
    n_tokens = len(enc.tokenizer(text)["input_ids"])  # type: ignore[operator]
    assert n_tokens > 10 * SMALL_WINDOW, n_tokens

    store = tmp_path / "store"

    def index(collection: str, *extra: str) -> str:
        return _run(
            capsys, "index", str(long_md), "--path", str(store), "--model", str(tiny_m3_path),
            "--collection", collection, "--max-length", str(SMALL_WINDOW), *extra,
        )  # fmt: skip

    count, added = _stored(index("docs"))
    assert count == added and count >= n_tokens // SMALL_WINDOW, (count, n_tokens)

    hits = _all_chunks(capsys, store, tiny_m3_path, "docs", count)
    assert [h["chunk_index"] for h in hits] == list(range(count))
    assert {h["doc_id"] for h in hits} == {str(long_md.resolve())}
    assert "".join(str(h["text"]) for h in hits) == text, "the chunks tile the whole file"
    # the chunks are NaiveChunker's (default size: the window minus CLS and SEP)
    expected = NaiveChunker(enc).spans([text])[0]
    assert [str(h["text"]) for h in hits] == [text[s:e] for s, e in expected]

    assert _stored(index("docs")) == (count, 0), "re-indexing adds nothing"

    # --late-chunking pools the same chunks from the document pass
    assert _stored(index("late", "--late-chunking")) == (count, count)
    late_hits = _all_chunks(capsys, store, tiny_m3_path, "late", count)
    assert [h["text"] for h in late_hits] == [h["text"] for h in hits]


def test_last_paragraph_is_found(
    tmp_path: Path, minilm_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real MiniLM weights (256-token window): a question only the last paragraph answers."""
    text = _long_text()
    long_md = tmp_path / "long.md"
    long_md.write_text(text, encoding="utf-8")
    enc = M3Encoder.from_pretrained(minilm_path, dtype="fp32")
    n_tokens = len(enc.tokenizer(text)["input_ids"])  # type: ignore[operator]
    assert n_tokens > 3 * enc.max_length, n_tokens
    last = text.rindex("Shield volcanoes")
    assert len(enc.tokenizer(text[:last])["input_ids"]) > enc.max_length  # type: ignore[operator]

    store = tmp_path / "store"
    common = ["--path", str(store), "--model", str(minilm_path), "--collection", "docs"]
    count, added = _stored(_run(capsys, "index", str(long_md), *common))
    assert count == added > 3

    out = _run(
        capsys, "search", "Which kind of volcano has gentle slopes of runny basaltic lava?",
        *common, "-k", "1", "--json",
    )  # fmt: skip
    hit = json.loads(out)["hits"][0]
    assert hit["doc_id"] == str(long_md.resolve())
    assert "Shield volcanoes" in hit["text"] and hit["chunk_index"] == count - 1
    assert _stored(_run(capsys, "index", str(long_md), *common)) == (count, 0)


def test_window_still_needs_late_chunking(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text("One sentence.", encoding="utf-8")
    argv = ["index", str(tmp_path / "a.txt"), "--path", str(tmp_path / "s"), "--window", "64"]
    assert main([*argv, "--model", str(tiny_m3_path), "--quiet"]) == 1
    assert "--window needs --late-chunking" in capsys.readouterr().err


def test_chunk_size_larger_than_the_window_is_an_error(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text("One sentence.", encoding="utf-8")
    argv = ["index", str(tmp_path / "a.txt"), "--path", str(tmp_path / "s"), "--chunk-size", "99"]
    argv += ["--model", str(tiny_m3_path), "--max-length", str(SMALL_WINDOW), "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "chunk_size=99 does not fit the model" in err and "at most 62" in err, err


# -- M3Index.add_texts without a chunker ----------------------------------------------------------
@pytest.fixture
def small_encoder(tiny_m3_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=SMALL_WINDOW)


def test_add_texts_names_the_truncated_document(
    small_encoder: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    text = _long_text()
    full = len(small_encoder.tokenizer(text)["input_ids"])  # type: ignore[operator]
    assert full > SMALL_WINDOW
    index = M3Index.open(small_encoder)
    with caplog.at_level(logging.WARNING, logger="m3kit.chunking"):
        index.add_texts([text, "Short."], doc_ids=["long-doc", "short-doc"])
    messages = [r.getMessage() for r in caplog.records if r.name == "m3kit.chunking"]
    assert len(messages) == 1, messages
    dropped = full - SMALL_WINDOW  # text tokens beyond the window (the window keeps 2 specials)
    assert "'long-doc'" in messages[0] and f"last {dropped} tokens are not indexed" in messages[0]
    assert index.count() == 2


def test_add_texts_truncation_error_and_chunker(small_encoder: M3Encoder) -> None:
    text = _long_text()
    index = M3Index.open(small_encoder)
    with pytest.raises(TruncationError, match="'long-doc' is .* tokens"):
        index.add_texts([text], doc_ids=["long-doc"], truncation="error")
    assert index.count() == 0
    index.add_texts([text], doc_ids=["long-doc"], chunker=NaiveChunker(small_encoder))
    assert index.count() > 4
    before = index.count()
    # the former parameter name still works and means the same chunker (nothing re-added)
    index.add_texts([text], doc_ids=["long-doc"], late_chunker=NaiveChunker(small_encoder))
    assert index.count() == before
    with pytest.raises(TypeError, match="not both"):
        index.add_texts(
            [text], chunker=NaiveChunker(small_encoder), late_chunker=NaiveChunker(small_encoder)
        )


def test_whole_document_ids_equal_the_encoders(small_encoder: M3Encoder) -> None:
    """The loud truncation cuts exactly where the encoder's own tokenizer does."""
    texts = [_long_text(), "Short one.", "北京是中国的首都。 Emoji 🙂 ★"]
    ours = document_token_ids(small_encoder, texts, ["a", "b", "c"])
    theirs = [t.input_ids for t in small_encoder.tokenize(texts)]
    assert ours == theirs
