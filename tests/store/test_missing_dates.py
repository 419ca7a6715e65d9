"""A missing date (pandas' ``NaT``, what ``DataFrame.to_dict("records")`` gives for an empty
datetime cell) is refused by name, as NaN is: it failed with "'float' object cannot be
interpreted as an integer", naming neither the text, the key nor the value."""

from __future__ import annotations

from typing import Any

import pytest

pd = pytest.importorskip("pandas")


def test_a_missing_date_in_metadata_or_a_filter_is_refused_by_name(
    open_index: Any, tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    rows = pd.DataFrame({"published": pd.to_datetime(["2024-05-01", None])}).to_dict("records")
    with pytest.raises(ValueError, match=r"metadata of text 1: 'published': a missing date"):
        index.add_texts(["alpha", "beta"], metadatas=rows)
    assert index.count() == 0
    with pytest.raises(ValueError, match=r"filter on 'published': a missing date"):
        index.search("alpha", filter={"published": pd.NaT})
    nested = [{"file": {"published": pd.NaT}}]
    with pytest.raises(ValueError, match=r"metadata of text 0: 'file': 'published': a missing"):
        index.add_texts(["gamma"], metadatas=nested)
    index.add_texts(["alpha"], metadatas=rows[:1])  # a date present: stored as its ISO string
    assert index.count() == 1


def test_llamaindex_documents_name_the_missing_date(tiny_m3_path: Any) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core import Document

    from llamaindex_m3 import M3Retriever
    from m3kit import M3Encoder

    retriever = M3Retriever.open(M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32"))
    docs = [Document(text="alpha"), Document(text="beta", metadata={"when": pd.NaT})]
    with pytest.raises(ValueError, match=r"metadata of documents\[1\]: 'when': a missing date"):
        retriever.add_documents(docs)
    assert retriever.index.count() == 0


def test_llamaindex_nodes_name_the_node_of_the_missing_date(tiny_m3_path: Any) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import TextNode

    from llamaindex_m3 import M3VectorStore
    from m3kit import M3Encoder
    from m3kit.store import M3Index

    index = M3Index.open(M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32"))
    nodes = [TextNode(text="alpha", id_="n1"), TextNode(text="beta", id_="n2")]
    nodes[1].metadata["when"] = pd.NaT
    with pytest.raises(ValueError, match=r"metadata of node 'n2': 'when': a missing date"):
        M3VectorStore(index=index).add(nodes)
    assert index.count() == 0
    index.close()
