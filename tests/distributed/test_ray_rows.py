"""A Ray Dataset's rows are stored as the same documents given as a list (payloads, hashes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.chunking import NaiveChunker
from m3kit.store import M3Index

ray = pytest.importorskip("ray")

from m3kit.distributed.ray_pipeline import ChunkerSpec, _rows, index_with_ray  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray cluster

# Rows with other keys: in one Arrow block a key a row lacks is a null column value, and a
# key a nested mapping lacks a null struct field.
ROWS: list[dict[str, Any]] = [
    {
        "doc_id": "a",
        "text": "Alpha centauri is the closest star system to the Sun.",
        "lang": "en",
        "year": 2020,
        "tags": ["x", "y"],
        "info": {"k": 1, "parts": [{"p": 1}]},
    },
    {"doc_id": "b", "text": "Berlin is the capital of Germany.", "lang": "de", "year": 1999},
    {
        "doc_id": "c",
        "text": "Gamma rays are the most energetic light.",
        "score": 1.5,
        "info": {"j": "s", "parts": [{"q": 2}]},
    },
    {"doc_id": "d", "text": "Delta is a letter of the Greek alphabet.", "metadata": {"m": 1}},
    {"doc_id": "e", "text": "Epsilon is small.", "tags": [None, "z"]},  # a null in a list stays
]


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    """What M3Index stores as the row's metadata: its other keys and its ``metadata``."""
    other = {k: v for k, v in row.items() if k not in ("doc_id", "text", "metadata")}
    return {**other, **row.get("metadata", {})}


@pytest.fixture(scope="module")
def encoder(tiny_m3_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


def _dataset(rows: list[dict[str, Any]]) -> Any:
    """The rows in one block (as read_json or read_parquet give a file's rows)."""
    return ray.data.from_items(rows, override_num_blocks=1)


def _payloads(index: M3Index) -> dict[str, dict[str, Any]]:
    ids = [h.id for h in index.store._backend.scroll(None, ["doc_id"])]
    return index.store.points(ids)


def _canonical(metas: list[dict[str, Any]]) -> list[str]:
    """JSON keeps int / float apart (``1`` is not ``1.0``), unlike ``==``."""
    return [json.dumps(m, sort_keys=True) for m in metas]


def test_dataset_rows_read_as_the_list_of_the_same_rows(local_ray: None) -> None:
    texts, metas, ids = _rows(_dataset(ROWS))
    assert (texts, ids) == ([r["text"] for r in ROWS], [r["doc_id"] for r in ROWS])
    assert _canonical(metas) == _canonical([_metadata(r) for r in ROWS])
    assert _rows(ROWS)[1] == metas


def test_a_null_value_in_a_dataset_is_a_missing_key(local_ray: None) -> None:
    # In Arrow a key a row lacks and a null are the same value: Dataset rows drop both (a
    # list of rows keeps a None: M3Index stores it as JSON null).
    row = {"doc_id": "n", "text": "Nu.", "note": None, "info": {"a": None, "b": 1}}
    assert _rows(_dataset([row]))[1] == [{"info": {"b": 1}}]
    assert _rows([row])[1] == [{"note": None, "info": {"a": None, "b": 1}}]
    # a metadata column of JSON strings is taken as it is: its nulls stay
    kept = {"doc_id": "k", "text": "Kappa.", "metadata": json.dumps({"note": None, "n": 1})}
    assert _rows(_dataset([kept, row]))[1] == [{"note": None, "n": 1}, {"info": {"b": 1}}]


def test_a_dataset_stores_what_m3index_stores_for_the_same_rows(
    local_ray: None, encoder: M3Encoder, tmp_path: Path
) -> None:
    texts, ids = [r["text"] for r in ROWS], [r["doc_id"] for r in ROWS]
    metas = [_metadata(r) for r in ROWS]
    single = M3Index.open(encoder, tmp_path / "single", collection="c")
    on_ray = M3Index.open(encoder, tmp_path / "ray", collection="c")
    try:
        single.add_texts(texts, metas, ids, chunker=NaiveChunker(encoder))
        assert index_with_ray(on_ray, _dataset(ROWS), chunker=ChunkerSpec("naive")) == ids
        a, b = _payloads(single), _payloads(on_ray)
        assert len(a) >= len(ROWS)
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        # the same versions: neither path re-encodes what the other stored
        assert on_ray.pending(texts, metas, ids, chunker=NaiveChunker(encoder))[1] == []
        d_texts, d_metas, d_ids = _rows(_dataset(ROWS))
        assert single.pending(d_texts, d_metas, d_ids, chunker=NaiveChunker(encoder))[1] == []
    finally:
        single.close()
        on_ray.close()


# -- whole documents longer than the model's window ----------------------------------------
LONG = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)  # over 32 tokens


@pytest.fixture(scope="module")
def short_encoder(tiny_m3_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=32)


def test_ray_warns_in_this_process_of_a_truncated_document(
    local_ray: None,
    short_encoder: M3Encoder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The actors logged the warning M3Index.add_texts logs, in their own processes: lost
    # with log_to_driver=False (m3kit index --ray --quiet), never seen by this process's
    # logging (caplog, a user's handlers) otherwise.
    rows = [{"doc_id": "long", "text": LONG}, {"doc_id": "short", "text": "A short one."}]
    with M3Index.open(short_encoder, tmp_path / "single", collection="c") as single:
        with caplog.at_level("WARNING", logger="m3kit"):
            single.add_texts([r["text"] for r in rows], doc_ids=[r["doc_id"] for r in rows])
        expected = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert len(expected) == 1 and "document 'long' is" in expected[0][2]
    caplog.clear()
    with M3Index.open(short_encoder, tmp_path / "ray", collection="c") as on_ray:
        with caplog.at_level("WARNING", logger="m3kit"):
            index_with_ray(on_ray, rows, chunker=ChunkerSpec("whole"), num_actors=1)
        assert on_ray.count() == 2
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == expected


def test_ray_refuses_a_truncated_document_as_m3index_does(
    local_ray: None, short_encoder: M3Encoder, tmp_path: Path
) -> None:
    from m3kit.errors import TruncationError

    rows = [{"doc_id": "long", "text": LONG}]
    with (
        M3Index.open(short_encoder, tmp_path / "single", collection="c") as single,
        pytest.raises(TruncationError, match="document 'long' is"),
    ):
        single.add_texts([LONG], doc_ids=["long"], truncation="error")
    with M3Index.open(short_encoder, tmp_path / "ray", collection="c") as on_ray:
        with pytest.raises(TruncationError, match="document 'long' is"):
            index_with_ray(
                on_ray, rows, chunker=ChunkerSpec("whole"), num_actors=1, truncation="error"
            )
        assert on_ray.count() == 0
        with pytest.raises(ValueError, match="'cut'"):
            index_with_ray(on_ray, rows, chunker=ChunkerSpec("whole"), truncation="cut")


# -- the input, read in groups ---------------------------------------------------------------
def test_a_dataset_is_read_as_it_streams_not_pulled_whole(
    local_ray: None, encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # index_with_ray called take_all(): the whole Dataset in the driver's memory, then a
    # second copy in Ray's object store, which defeats a Dataset for a large corpus
    from m3kit.distributed import ray_pipeline

    def whole(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the whole Dataset was pulled into the driver")

    monkeypatch.setattr(ray.data.Dataset, "take_all", whole)
    monkeypatch.setattr(ray_pipeline, "_CHECK_GROUP", 2)  # ROWS in three groups
    texts, ids = [r["text"] for r in ROWS], [r["doc_id"] for r in ROWS]
    with (
        M3Index.open(encoder, tmp_path / "single", collection="c") as single,
        M3Index.open(encoder, tmp_path / "ray", collection="c") as on_ray,
    ):
        single.add_texts(texts, [_metadata(r) for r in ROWS], ids, chunker=NaiveChunker(encoder))
        assert index_with_ray(on_ray, _dataset(ROWS), docs_per_batch=2) == ids
        a, b = _payloads(single), _payloads(on_ray)
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_document_refused_in_a_later_group_leaves_the_collection_untouched(
    local_ray: None, encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every group is checked before the first document is encoded, across groups too, and
    # messages name positions in the whole input
    from m3kit.distributed import ray_pipeline

    monkeypatch.setattr(ray_pipeline, "_CHECK_GROUP", 2)
    rows = [{"doc_id": r["doc_id"], "text": r["text"]} for r in ROWS]
    with M3Index.open(encoder, tmp_path / "ray", collection="c") as on_ray:
        clash = [*rows, {"doc_id": "a", "text": "Another text for a."}]
        with pytest.raises(ValueError, match="doc_id 'a' is given twice with different content"):
            index_with_ray(on_ray, clash)
        with pytest.raises(ValueError, match="document 5 has no doc_id"):
            index_with_ray(on_ray, [*rows, {"text": "No id."}])
        with pytest.raises(ValueError, match=r"metadata of text 4\['v'\] \(nan\)"):
            index_with_ray(on_ray, [*rows[:4], {"doc_id": "x", "text": "t", "v": float("nan")}])
        assert on_ray.count() == 0
        # the same document twice, in two groups: encoded once, its id in both places
        again = [*rows, rows[0]]
        assert index_with_ray(on_ray, again) == [r["doc_id"] for r in again]
        with M3Index.open(encoder, tmp_path / "single", collection="c") as single:
            single.add_texts([r["text"] for r in rows], doc_ids=[r["doc_id"] for r in rows])
            assert on_ray.count() == single.count()


@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        ("a text", TypeError, "document 1 is a str, not a mapping with 'text' and 'doc_id'"),
        ({"doc_id": "a", "text": None}, TypeError, "document 1's text is NoneType, not str"),
        ({"doc_id": "a", "text": b"x"}, TypeError, "document 1's text is bytes, not str"),
        ({"doc_id": "a", "text": "x", "metadata": 0}, TypeError, "document 1's metadata is int"),
        ({"doc_id": "a", "text": "x", "metadata": " "}, ValueError, "document 1's metadata is no"),
        ({"doc_id": "a", "text": "x", "metadata": "{oops"}, ValueError, "document 1's metadata"),
        ({"doc_id": "a", "text": "x", "metadata": "[1]"}, TypeError, "document 1's metadata is"),
        ({"doc_id": "a", "text": "x", "metadata": [1]}, TypeError, "document 1's metadata is"),
    ],
)
def test_a_row_of_the_wrong_shape_is_refused_naming_it(
    local_ray: None, encoder: M3Encoder, tmp_path: Path, row: Any, error: type, message: str
) -> None:
    # Metadata that is not a mapping (0, False, []) was stored as none at all, silently
    # (`metadata or {}`); other bad rows failed deep inside with Python's own words, naming
    # no document ("'str' object has no attribute 'text'", "every text must be a str",
    # "'list' object is not a mapping", a bare JSONDecodeError).
    rows = [{"doc_id": "g", "text": "Good."}, row]
    with M3Index.open(encoder, tmp_path / "ray", collection="c") as on_ray:
        with pytest.raises(error, match=message):
            index_with_ray(on_ray, rows)
        assert on_ray.count() == 0
    # a missing metadata (a None) is no metadata, as M3Index.add_texts takes it, and so is an
    # empty string (a CSV's empty cell: ray.data.read_csv gives "", not None)
    assert _rows([{"doc_id": "n", "text": "t", "metadata": None}])[1] == [{}]
    assert _rows([{"doc_id": "n", "text": "t", "metadata": ""}])[1] == [{}]


def test_show_progress_false_turns_ray_datas_bars_off_for_the_run(
    local_ray: None, encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `m3kit index --ray --quiet` still printed Ray Data's progress bars (and a deprecation
    # warning of the retry limit's keyword)
    import warnings

    from m3kit.distributed import ray_pipeline

    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    seen: list[bool] = []
    real = ray_pipeline.records_from_arrow

    def spy(table: Any) -> Any:
        seen.append(ray.data.DataContext.get_current().enable_progress_bars)
        return real(table)

    monkeypatch.setattr(ray_pipeline, "records_from_arrow", spy)
    with M3Index.open(encoder, tmp_path / "db") as index, warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        index_with_ray(index, ROWS, chunker=ChunkerSpec("naive"), show_progress=False)
    assert seen and not any(seen)
    assert context.enable_progress_bars == before  # for this run only


def test_a_text_edit_on_ray_keeps_the_extras_another_writer_stored(
    local_ray: None, encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A document stored with extras (a LlamaIndex document's hidden keys and templates) whose
    # text a Ray run edits keeps them, as the same edit through M3Index.add_texts does: the
    # Ray rows carried none, so its chunks were rewritten without them.
    extra = {"excluded_embed_metadata_keys": ["path"], "template": "{key}=>{value}"}
    meta = {"path": "/data/fruit.txt"}
    with M3Index.open(encoder, tmp_path / "s", collection="c") as index:
        index.add_texts(["Apples are red."], [meta], ["fruit"], extras=[extra])
        edited = [{"doc_id": "fruit", "text": "Apples are green.", "metadata": meta}]
        assert index_with_ray(index, _dataset(edited), chunker=ChunkerSpec("whole")) == ["fruit"]
        (hit,) = index.search("green apples", k=1)
        assert (hit.text, dict(hit.extra)) == ("Apples are green.", extra)
        # the version stored is the edit with its extras: the other writer's re-add is a no-op
        encoded: list[int] = []
        encode = encoder.encode_tokenized
        monkeypatch.setattr(
            encoder, "encode_tokenized", lambda ids, **kw: encoded.append(1) or encode(ids, **kw)
        )
        index.add_texts(["Apples are green."], [meta], ["fruit"], extras=[extra])
        assert not encoded and index.count() == 1
