"""A failed write of a parent's children (``parent_id_key``) leaves one version of them.

With ``parent_id_key``, a write stores a parent's children under ids from the parent id and
their place, then deletes the parent's other children. A write that failed (or was cancelled)
after storing some of them used to skip that delete: the parent kept the new children written,
next to its old ones past them (the earlier version's extra children, stale hits) until the
add ran again. Now the parent holds the children of one version: its old ones, whole, when
the write stored none of its new ones; else the new ones stored (written before the failure,
or stored so already), and no old one (never none: the delete keeps what was written).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from qdrant_client import models

from langchain_m3 import M3QdrantVectorStore, M3VectorStore
from m3kit import M3Encoder
from tests.langchain.qdrant_stores import memory_qdrant_store
from tests.reliability.killing import Gate, cancel_when_held

Store = M3VectorStore | M3QdrantVectorStore

OLD = ["old child zero", "old child one", "old child two", "old child three"]


@pytest.fixture(params=["edge", "client", "qdrant"])
def store(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> Iterator[Store]:
    s: Store
    if request.param == "qdrant":
        s = memory_qdrant_store(tiny_encoder, "children")
    else:
        s = M3VectorStore.open(tiny_encoder, backend=request.param)
    s.parent_id_key = "doc_id"
    yield s
    if isinstance(s, M3VectorStore):
        s.close()
    else:
        s.client.close()


def _children(texts: list[str], parent: str = "p") -> list[Document]:
    return [Document(t, metadata={"doc_id": parent}) for t in texts]


def stored(store: Store, parent: str = "p") -> list[str]:
    """The texts of ``parent``'s stored children, sorted."""
    if isinstance(store, M3VectorStore):
        hits = store.index.store.get(filter=models.Filter())
        return sorted(h.text for h in hits if h.metadata.get("doc_id") == parent)
    points, _ = store.client.scroll(store.collection_name, limit=1000)
    payloads = [p.payload or {} for p in points]
    return sorted(p["page_content"] for p in payloads if p["metadata"].get("doc_id") == parent)


def fail_encoding(store: Store, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's encoding of a batch holding ``text`` raise (an encoder error)."""
    if isinstance(store, M3VectorStore):
        index = store.index
        records = index._records

        def m3_records(docs: Any, *args: Any, **kwargs: Any) -> Any:
            if any(d.text == text for d in docs):
                raise RuntimeError("encoder failed")
            return records(docs, *args, **kwargs)

        monkeypatch.setattr(index, "_records", m3_records)
        return
    build = store._build_vectors

    def qdrant_vectors(texts: list[str]) -> Any:
        if text in texts:
            raise RuntimeError("encoder failed")
        return build(texts)

    monkeypatch.setattr(store, "_build_vectors", qdrant_vectors)


@pytest.mark.parametrize(
    ("fail_at", "left"),
    [
        # child 0 unchanged (already stored at the new version) and child 1 written: the
        # parent keeps them, not its old children 2 and 3
        ("new child two", {"m3": ["new child one", "old child zero"]}),
        # nothing written but child 0, unchanged: M3VectorStore skips it (nothing written, the
        # old children stay whole), M3QdrantVectorStore writes it again (it alone is kept)
        ("new child one", {"m3": sorted(OLD), "qdrant": ["old child zero"]}),
    ],
)
def test_a_failed_write_leaves_no_old_child_next_to_new_ones(
    store: Store, fail_at: str, left: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_documents(_children(OLD) + _children(["other parent's child"], "q"))
    new = ["old child zero", "new child one", "new child two"]
    fail_encoding(store, fail_at, monkeypatch)
    with pytest.raises(RuntimeError, match="encoder failed"):
        store.add_documents(_children(new), batch_size=1)
    kind = "m3" if isinstance(store, M3VectorStore) else "qdrant"
    assert stored(store) == left.get(kind, left["m3"])
    assert stored(store, "q") == ["other parent's child"]
    monkeypatch.undo()
    store.add_documents(_children(new), batch_size=1)  # the retry
    assert stored(store) == sorted(new)


def test_a_write_failing_before_any_new_child_is_stored_keeps_the_old_ones(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_documents(_children(OLD))
    fail_encoding(store, "new child zero", monkeypatch)
    with pytest.raises(RuntimeError, match="encoder failed"):
        store.add_documents(_children(["new child zero", "new child one"]), batch_size=1)
    assert stored(store) == sorted(OLD)


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
def test_a_cancelled_write_leaves_no_old_child_next_to_new_ones(
    store: Store, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_documents(_children(OLD))
    if isinstance(store, M3VectorStore):
        gate = Gate(store.index._records, hold=2)  # 1: new child zero; 2: new child one
        monkeypatch.setattr(store.index, "_records", gate)
    else:
        gate = Gate(store._build_vectors, hold=2)
        monkeypatch.setattr(store, "_build_vectors", gate)
    new = _children(["new child zero", "new child one"])

    async def cancelled() -> None:
        await cancel_when_held(
            asyncio.ensure_future(store.aadd_documents(new, batch_size=1)), gate, how
        )

    asyncio.run(cancelled())  # returns once the worker thread is done
    assert stored(store) == ["new child zero"]


class _Killed(BaseException):
    """Stands for SIGKILL (or Ctrl-C): nothing after it in the write happens."""


def _replacement_interrupted_before_its_deletes(
    store: M3VectorStore, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    """Parent "p" stored with the :data:`OLD` children, then re-added with two new ones by a
    write that ``error`` stops once they are stored, before the parent's others are deleted."""
    from langchain_m3 import _vectorstore_documents

    store.parent_id_key = "doc_id"
    store.add_documents(_children(OLD))
    real = _vectorstore_documents.delete_other_children

    def stopped(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(_vectorstore_documents, "delete_other_children", stopped)
    with pytest.raises(error):
        store.add_documents(_children(["new child zero", "new child one"]))
    monkeypatch.setattr(_vectorstore_documents, "delete_other_children", real)


@pytest.mark.parametrize("backend", ["edge", "client"])
@pytest.mark.parametrize("then", ["reopen", "write"])
def test_a_replacement_killed_before_its_deletes_is_finished(
    tiny_encoder: M3Encoder,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    then: str,
) -> None:
    # the new children were stored, then the process died before the parent's other
    # children were deleted: reopened, the parent held its old children beside the new ones
    folder = tmp_path / "db"
    with M3VectorStore.open(tiny_encoder, folder, backend=backend) as store:
        _replacement_interrupted_before_its_deletes(store, monkeypatch, _Killed)
        if then == "write":  # the process's next write finishes it
            store.add_documents(_children(["another parent"], parent="q"))
            assert stored(store) == ["new child one", "new child zero"]
    with M3VectorStore.open(tiny_encoder, folder, backend=backend) as store:
        assert stored(store) == ["new child one", "new child zero"]
        assert stored(store, "q") == (["another parent"] if then == "write" else [])
    assert not list(folder.glob(".m3kit-groups-*"))


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_parent_re_added_after_an_interrupted_replacement_keeps_every_child(
    tiny_encoder: M3Encoder, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # the leftover journal was finished inside the next write, after it had found the
    # parent's unchanged children stored: it deleted them (re-adding the original text after
    # an abandoned edit left the parent without its last children)
    with M3VectorStore.open(tiny_encoder, tmp_path / "db", backend=backend) as store:
        _replacement_interrupted_before_its_deletes(store, monkeypatch, KeyboardInterrupt)
        store.add_documents(_children(OLD))  # the original, again
        assert stored(store) == sorted(OLD)


def test_replacements_of_two_parents_at_once_keep_their_own_journals(
    tiny_encoder: M3Encoder, tmp_path: Any
) -> None:
    # one journal file per collection: a write of another parent finished (and removed) the
    # journal of one under way, which then removed the other's
    folder = tmp_path / "db"
    with M3VectorStore.open(tiny_encoder, folder) as store:
        kept: dict[str, list[str]] = {}
        with store.index.store.replacing_groups("metadata.doc_id", {"a": ["a:0"]}):
            kept["a"] = sorted(p.name for p in folder.glob(".m3kit-groups-*"))
            store.index.store.finish_groups()  # another write's, meanwhile: skips "a"
            with store.index.store.replacing_groups("metadata.doc_id", {"b": ["b:0"]}):
                kept["both"] = sorted(p.name for p in folder.glob(".m3kit-groups-*"))
            kept["after b"] = sorted(p.name for p in folder.glob(".m3kit-groups-*"))
        assert len(kept["a"]) == 1 and len(kept["both"]) == 2
        assert kept["after b"] == kept["a"]  # b removed its own only
    assert not list(folder.glob(".m3kit-groups-*"))
