"""A qdrant ``HasIdCondition`` in a user filter is refused: it names point ids, not doc ids.

m3kit's point ids are uuid5 of ``(doc_id, chunk_index)``, so langchain-qdrant's pattern
``Filter(must=[HasIdCondition(has_id=[doc.id])])`` matched nothing here, on both backends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.documents import Document
from qdrant_client import models

from langchain_m3 import M3VectorStore
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

DOCS = [Document(text, id=f"d{i}") for i, text in enumerate(SAMPLE_TEXTS[:4])]
HAS_D1 = models.HasIdCondition(has_id=["d1"])
FILTERS = {
    "must": models.Filter(must=[HAS_D1]),
    "should": models.Filter(should=[HAS_D1]),
    "must_not": models.Filter(must_not=HAS_D1),
    "min_should": models.Filter(min_should=models.MinShould(conditions=[HAS_D1], min_count=1)),
    "nested": models.Filter(must=[models.Filter(should=[models.Filter(must=[HAS_D1])])]),
}


@pytest.fixture(params=["edge", "client"])
def store(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> Iterator[M3VectorStore]:
    s = M3VectorStore.from_documents(DOCS, tiny_encoder, backend=request.param)
    yield s
    s.close()


@pytest.mark.parametrize("where", list(FILTERS))
def test_has_id_condition_is_refused(store: M3VectorStore, where: str) -> None:
    with pytest.raises(ValueError, match=r"HasIdCondition.*point ids.*\{'doc_id': \[\.\.\.\]\}"):
        store.similarity_search(SAMPLE_TEXTS[1], k=2, filter=FILTERS[where])


def test_the_doc_id_filter_it_names_works(store: M3VectorStore) -> None:
    docs = store.similarity_search(SAMPLE_TEXTS[0], k=4, filter={"doc_id": ["d1"]})
    assert [d.id for d in docs] == ["d1"]
    by_field = models.Filter(
        must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=["d1"]))]
    )
    docs = store.similarity_search(SAMPLE_TEXTS[0], k=4, filter=by_field)
    assert [d.id for d in docs] == ["d1"]
