"""Document ids Qdrant cannot store (not UTF-8) are refused by name before anything is written.

An id holding an unpaired surrogate (a file name that is not UTF-8, decoded with surrogate
escapes; a JSON ``"\\ud800"`` escape) used to fail on the embedded engine with the engine's own
argument error ("failed to extract enum Helper ('Strings | Integers')"), naming no document,
while qdrant-client's local mode stored it (a server refuses it): collections differed by
backend.
"""

from __future__ import annotations

from typing import Any

import pytest

BAD = "report-" + chr(0xDCE9) + ".txt"


def test_add_texts_refuses_an_id_that_is_not_utf8_naming_it(
    open_index: Any, tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    index.write_group = 1  # several writes: the refusal comes before the first
    with pytest.raises(ValueError, match=r"doc_ids\[2\] .*not valid UTF-8.*character 7"):
        index.add_texts(["one.", "two.", "three."], doc_ids=["a", "b", BAD])
    assert index.count() == 0


def test_lookups_and_deletes_refuse_an_id_that_is_not_utf8(
    open_index: Any, tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    index.add_texts(["one."], doc_ids=["a"])
    for call in (
        lambda: index.delete(["a", BAD]),
        lambda: index.store.document_metadata(["a", BAD]),
        lambda: index.store.complete_documents({BAD: "hash"}),
    ):
        with pytest.raises(ValueError, match=r"document id 'report-\\udce9\.txt' is not valid"):
            call()
    assert index.count() == 1


@pytest.mark.parametrize("field", ["doc_id", "chunk_id"])
def test_upsert_refuses_an_id_that_is_not_utf8_before_the_first_write(
    open_index: Any, tiny_encoder: Any, field: str
) -> None:
    # the embedded engine refused it in the middle of the write, after the first request
    from m3kit.store import ChunkRecord, output_row

    index = open_index(tiny_encoder)
    out = tiny_encoder.encode(["one.", "two."])
    good = ChunkRecord("a", 0, "one.", {}, output_row(out, 0))
    ids = {"doc_id": "b", "chunk_id": "own-b", field: BAD}
    bad = ChunkRecord(ids["doc_id"], 0, "two.", {}, output_row(out, 1), chunk_id=ids["chunk_id"])
    with pytest.raises(ValueError, match=rf"{field} .*not valid UTF-8.*character 7"):
        index.store.upsert([good, bad], batch_size=1, replace=True)
    assert index.count() == 0


def test_a_filter_on_text_that_is_not_utf8_is_refused_by_name(
    open_index: Any, tiny_encoder: Any
) -> None:
    """The embedded engine refused such a key or value with its own argument error ("failed
    to extract enum Helper ...", 15 frames down), naming neither; qdrant-client's local mode
    matched nothing."""
    from qdrant_client import models

    index = open_index(tiny_encoder)
    index.add_texts(["one."], metadatas=[{"k": "a"}], doc_ids=["a"])
    bad = "a" + chr(0xD800)
    nested = models.Filter(
        should=[models.FieldCondition(key="metadata.k", match=models.MatchAny(any=["a", bad]))]
    )
    for wrong in ({"k": bad}, {bad: "a"}, models.Filter(must=[nested])):
        with pytest.raises(ValueError, match=r"filter on 'metadata\..*not valid UTF-8"):
            index.search("one", filter=wrong)
    assert [h.doc_id for h in index.search("one", filter={"k": "a"})] == ["a"]


def test_a_chunk_id_that_is_not_utf8_is_refused_by_name() -> None:
    """LlamaIndex's node ids (a chunk's own id): refused with the engine's own error, naming
    none, on the embedded engine; found nothing on qdrant-client's."""
    from m3kit.store.filters import chunk_ids_filter

    with pytest.raises(ValueError, match=r"chunk id 'node-\\udce9\.txt' is not valid UTF-8"):
        chunk_ids_filter(["node-1", "node-" + chr(0xDCE9) + ".txt"])
