"""LlamaIndex ``M3Retriever.aadd_nodes`` / ``adelete`` cancelled while another write holds the
store write nothing (as ``aadd_documents`` and ``M3VectorStore``'s async writes do).

They ran their write once the lock came free, after the caller had been told
``CancelledError``: the cancelled add stored its node, the cancelled delete deleted.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest
from llama_index.core.schema import Document, NodeRelationship, RelatedNodeInfo, TextNode

from llamaindex_m3 import M3Retriever
from m3kit import M3Encoder
from m3kit.store import M3Index


def _node(text: str, doc: str) -> TextNode:
    source = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)}
    return TextNode(text=text, relationships=source)


CALLS: dict[str, Callable[[M3Retriever], Awaitable[object]]] = {
    "aadd_nodes": lambda r: r.aadd_nodes([_node("the cancelled add", "new")]),
    "aadd_documents": lambda r: r.aadd_documents([Document(text="the cancelled add", id_="new")]),
    "adelete": lambda r: r.adelete(["old"]),
}


@pytest.mark.parametrize("method", sorted(CALLS))
def test_a_write_cancelled_while_it_waits_writes_nothing(
    tiny_encoder: M3Encoder, method: str
) -> None:
    with M3Index.open(tiny_encoder) as index:
        retriever = M3Retriever(index)
        retriever.add_documents([Document(text="keep me", id_="old")])
        held, release = threading.Event(), threading.Event()

        def other_write() -> None:  # another request's write holding the store
            with index.store.write_lock:
                held.set()
                release.wait(30)

        async def cancel_while_waiting() -> None:
            holder = threading.Thread(target=other_write)
            holder.start()
            assert held.wait(10)
            task = asyncio.ensure_future(CALLS[method](retriever))
            await asyncio.sleep(0.3)  # the call waits for the lock
            task.cancel()
            await asyncio.sleep(0.05)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            holder.join()

        asyncio.run(cancel_while_waiting())
        assert sorted(index.store.document_metadata()) == ["old"]
