"""Contract tests of M3Embedding / M3SparseEmbedding / m3_sparse_fns (LlamaIndex has no suite)."""

from __future__ import annotations

import math
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llamaindex_m3.embeddings import M3Embedding, M3SparseEmbedding, m3_sparse_fns
from m3kit import HeadNotAvailableError, M3Encoder

TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has the atomic number 8 and is a gas at room temperature.",
    "The Amazon rainforest covers most of the Amazon basin of South America, "
    "a region that includes territory belonging to nine nations.",
    "ok",
]


def test_dense_single_equals_batch(tiny_embedding: M3Embedding) -> None:
    batch = tiny_embedding.get_text_embedding_batch(TEXTS)
    assert len(batch) == len(TEXTS)
    for text, row in zip(TEXTS, batch, strict=True):
        np.testing.assert_allclose(tiny_embedding.get_text_embedding(text), row, atol=1e-5)


def test_dense_batch_split_by_embed_batch_size(tiny_encoder: M3Encoder) -> None:
    small = M3Embedding.from_encoder(tiny_encoder, embed_batch_size=1)
    big = M3Embedding.from_encoder(tiny_encoder, embed_batch_size=64)
    np.testing.assert_allclose(
        small.get_text_embedding_batch(TEXTS), big.get_text_embedding_batch(TEXTS), atol=1e-5
    )


async def test_dense_sync_equals_async(tiny_embedding: M3Embedding) -> None:
    assert await tiny_embedding.aget_query_embedding("capital") == pytest.approx(
        tiny_embedding.get_query_embedding("capital"), abs=1e-6
    )
    assert await tiny_embedding.aget_text_embedding(TEXTS[0]) == pytest.approx(
        tiny_embedding.get_text_embedding(TEXTS[0]), abs=1e-6
    )
    sync = tiny_embedding.get_text_embedding_batch(TEXTS)
    asyn = await tiny_embedding.aget_text_embedding_batch(TEXTS)
    np.testing.assert_allclose(asyn, sync, atol=1e-6)


def _peak_concurrent_encodes(monkeypatch: pytest.MonkeyPatch, encoder: M3Encoder) -> list[int]:
    """Spy on ``encoder.encode``: ``[peak]``, the most calls running at once (each held
    50 ms, so calls run concurrently overlap)."""
    encode, lock, state = encoder.encode, threading.Lock(), {"now": 0}
    peak = [0]

    def spy(*args: Any, **kwargs: Any) -> Any:
        with lock:
            state["now"] += 1
            peak[0] = max(peak[0], state["now"])
        try:
            time.sleep(0.05)
            return encode(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(encoder, "encode", spy)
    return peak


@pytest.mark.parametrize("cls", [M3Embedding, M3SparseEmbedding])
async def test_async_batches_run_one_forward_pass_at_a_time(
    cls: type[M3Embedding] | type[M3SparseEmbedding],
    tiny_encoder: M3Encoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LlamaIndex's ``aget_text_embedding_batch`` gathers every ``embed_batch_size`` batch at
    once: each in its own thread, so as many forward passes of ``max_batch_tokens`` ran
    together as there were batches (up to the thread pool's size). The async batch is the
    sync one in a worker thread: one pass at a time, the same vectors."""
    embed = cls.from_encoder(tiny_encoder, embed_batch_size=1)
    sync = embed.get_text_embedding_batch(TEXTS)
    peak = _peak_concurrent_encodes(monkeypatch, tiny_encoder)
    assert await embed.aget_text_embedding_batch(TEXTS) == sync
    assert peak[0] == 1
    embed.num_workers = 2  # asks for LlamaIndex's concurrent batches, two at a time
    peak[0] = 0
    assert await embed.aget_text_embedding_batch(TEXTS) == sync
    assert peak[0] == 2


def test_dense_dimension_stable_and_normalised(
    tiny_embedding: M3Embedding, tiny_encoder: M3Encoder
) -> None:
    vectors = [*tiny_embedding.get_text_embedding_batch(TEXTS)]
    vectors += [tiny_embedding.get_query_embedding(t) for t in TEXTS]
    for v in vectors:
        assert len(v) == tiny_encoder.dense_dim
        assert all(isinstance(x, float) for x in v)
        assert math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-4)


def test_empty_batch(tiny_embedding: M3Embedding, tiny_sparse: M3SparseEmbedding) -> None:
    assert tiny_embedding.get_text_embedding_batch([]) == []
    assert tiny_sparse.get_text_embedding_batch([]) == []
    doc_fn, _ = m3_sparse_fns(tiny_sparse)
    assert doc_fn([]) == ([], [])


def test_instructions(tiny_encoder: M3Encoder, tiny_m3_path: Path) -> None:
    plain = M3Embedding.from_encoder(tiny_encoder)
    prefixed = M3Embedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    np.testing.assert_allclose(
        prefixed.get_text_embedding("oxygen"),
        plain.get_text_embedding("passage: oxygen"),
        atol=1e-5,
    )
    assert prefixed.get_query_embedding("oxygen") == pytest.approx(
        plain.get_query_embedding("oxygen"), abs=1e-6
    )
    queried = M3Embedding(model_name=str(tiny_m3_path), dtype="fp32", query_instruction="q: ")
    np.testing.assert_allclose(
        queried.get_query_embedding("oxygen"), plain.get_text_embedding("q: oxygen"), atol=1e-5
    )


def test_from_encoder_fields_and_serialisation(tiny_encoder: M3Encoder, tiny_m3_path: Path) -> None:
    emb = M3Embedding.from_encoder(tiny_encoder)
    assert emb.encoder is tiny_encoder
    assert emb.model_name == str(tiny_m3_path)
    assert emb.class_name() == "M3Embedding"
    data = emb.to_dict()
    assert data["class_name"] == "M3Embedding" and data["dtype"] == "fp32"
    again = M3Embedding.from_dict(data)  # reloads the checkpoint from model_name
    assert again.encoder is not tiny_encoder
    np.testing.assert_allclose(
        again.get_text_embedding(TEXTS[0]), emb.get_text_embedding(TEXTS[0]), atol=1e-5
    )


def test_bad_fields_refused(tiny_m3_path: Path) -> None:
    with pytest.raises(ValueError, match="max_length"):
        M3Embedding(model_name=str(tiny_m3_path), max_length=1)
    with pytest.raises(ValueError, match="dtype"):
        M3Embedding(model_name=str(tiny_m3_path), dtype="int4")


def test_sparse_is_int_to_float_dict(tiny_sparse: M3SparseEmbedding) -> None:
    outs = [*tiny_sparse.get_text_embedding_batch(TEXTS), tiny_sparse.get_query_embedding("gas")]
    for sparse in outs:
        assert isinstance(sparse, dict) and sparse
        assert all(type(k) is int for k in sparse)
        assert all(type(v) is float and v > 0 for v in sparse.values())


async def test_sparse_sync_async_single_batch(tiny_sparse: M3SparseEmbedding) -> None:
    batch = tiny_sparse.get_text_embedding_batch(TEXTS)
    abatch = await tiny_sparse.aget_text_embedding_batch(TEXTS)
    for text, row, arow in zip(TEXTS, batch, abatch, strict=True):
        single = tiny_sparse.get_text_embedding(text)
        assert single.keys() == row.keys() == arow.keys()
        for k in single:
            assert single[k] == pytest.approx(row[k], abs=1e-5)
            assert arow[k] == pytest.approx(row[k], abs=1e-6)
    assert await tiny_sparse.aget_query_embedding("gas") == tiny_sparse.get_query_embedding("gas")


def test_sparse_top_k(tiny_encoder: M3Encoder) -> None:
    top = M3SparseEmbedding.from_encoder(tiny_encoder)
    top.sparse_top_k = 2
    full = M3SparseEmbedding.from_encoder(tiny_encoder).get_text_embedding(TEXTS[2])
    kept = top.get_text_embedding(TEXTS[2])
    assert len(kept) == 2
    assert sorted(kept.values()) == pytest.approx(sorted(full.values())[-2:])


@pytest.mark.parametrize(
    ("bad", "shown"), [(float("inf"), "inf"), (float("nan"), "NaN"), (float("-inf"), "-inf")]
)
def test_sparse_min_weight_must_be_finite(
    tiny_m3_path: Path, tiny_encoder: M3Encoder, bad: float, shown: str
) -> None:
    # inf passed ``ge=0`` and emptied every sparse embedding (nothing is above it); the core's
    # check (m3kit.sparse_options.check_sparse_min_weight) now refuses it, naming the value
    with pytest.raises(ValueError, match=f"sparse_min_weight is {shown}: "):
        M3SparseEmbedding(model_name=str(tiny_m3_path), sparse_min_weight=bad)
    # fields are not validated on assignment: encoding refuses it, with the same message
    assigned = M3SparseEmbedding.from_encoder(tiny_encoder)
    assigned.sparse_min_weight = bad
    with pytest.raises(ValueError, match=f"sparse_min_weight is {shown}: "):
        assigned.get_text_embedding(TEXTS[0])


def test_sparse_fns_match_sparse_embedding(
    tiny_sparse: M3SparseEmbedding, tiny_encoder: M3Encoder
) -> None:
    for source in (tiny_sparse, tiny_encoder, M3Embedding.from_encoder(tiny_encoder)):
        doc_fn, query_fn = m3_sparse_fns(source)
        indices, values = doc_fn(TEXTS)
        assert len(indices) == len(values) == len(TEXTS)
        for text, idx, val in zip(TEXTS, indices, values, strict=True):
            assert all(type(i) is int for i in idx) and all(type(v) is float for v in val)
            assert idx == sorted(set(idx))
            expected = tiny_sparse.get_text_embedding(text)
            assert dict(zip(idx, val, strict=True)) == pytest.approx(expected, abs=1e-5)
        (q_idx,), (q_val,) = query_fn(["gas"])
        assert dict(zip(q_idx, q_val, strict=True)) == tiny_sparse.get_query_embedding("gas")


def test_sparse_fns_keep_text_instruction(tiny_encoder: M3Encoder) -> None:
    doc_fn, query_fn = m3_sparse_fns(
        M3Embedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    )
    plain_doc, _ = m3_sparse_fns(tiny_encoder)
    assert doc_fn(["oxygen"]) == plain_doc(["passage: oxygen"])
    assert query_fn(["oxygen"]) == m3_sparse_fns(tiny_encoder)[1](["oxygen"])


def test_dense_only_checkpoint(minilm_encoder: M3Encoder, minilm_path: Path) -> None:
    emb = M3Embedding.from_encoder(minilm_encoder)
    assert len(emb.get_query_embedding("capital of Germany")) == 384
    with pytest.raises(HeadNotAvailableError, match="dense-only"):
        M3SparseEmbedding.from_encoder(minilm_encoder)
    with pytest.raises(ValueError, match="dense-only"):
        M3SparseEmbedding(model_name=str(minilm_path), dtype="fp32")
    with pytest.raises(HeadNotAvailableError, match="m3_sparse_fns"):
        m3_sparse_fns(minilm_encoder)


def test_sparse_handoff_bounded_and_taken_once() -> None:
    from llamaindex_m3.embeddings import SparseHandoff
    from m3kit import SparseVector

    v = [SparseVector.from_mapping({i: 1.0}) for i in range(3)]
    handoff = SparseHandoff(max_items=2)
    handoff.put([("a", None), ("b", None), ("c", None)], v)  # "a" is the oldest: dropped
    assert len(handoff) == 2
    assert handoff.take(("a", None)) is None
    assert handoff.take(("c", None)) == v[2] and handoff.take(("c", None)) is None
    with pytest.raises(ValueError, match="max_items"):
        SparseHandoff(max_items=0)
    with pytest.raises(TypeError, match="max_length"):
        handoff.take("c")  # type: ignore[arg-type]  # a bare text, as keys once were


def test_doc_fn_takes_handed_off_vectors_in_order(tiny_encoder: M3Encoder) -> None:
    embed = M3Embedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    doc_fn, query_fn = m3_sparse_fns(embed)
    fresh_doc_fn, fresh_query_fn = m3_sparse_fns(
        M3SparseEmbedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    )
    embed.get_text_embedding_batch(TEXTS[1:3])  # two of four texts handed off
    assert len(embed.sparse_handoff()) == 2
    got_idx, got_val = doc_fn(TEXTS)  # mixes handed-off and freshly encoded texts
    want_idx, want_val = fresh_doc_fn(TEXTS)
    assert got_idx == want_idx
    for got, want in zip(got_val, want_val, strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    assert len(embed.sparse_handoff()) == 0
    assert query_fn(["gas"]) == fresh_query_fn(["gas"])  # queries never use the handoff


def test_doc_fn_cuts_handed_off_vectors_as_its_own(tiny_encoder: M3Encoder) -> None:
    """A doc function with a sparse cut (``dataclasses.replace(doc_fn, sparse_top_k=2)``)
    shares the embedding's handoff: the vectors taken from it (computed uncut) were returned
    uncut, while the texts it encoded itself were cut."""
    import dataclasses

    embed = M3Embedding.from_encoder(tiny_encoder)
    doc_fn, _ = m3_sparse_fns(embed)
    cut = dataclasses.replace(doc_fn, sparse_top_k=2)
    uncut = dataclasses.replace(doc_fn, handoff=None)
    embed.get_text_embedding_batch(TEXTS[:2])  # handed off
    got_idx, got_val = cut(TEXTS)
    assert [len(i) for i in got_idx] == [min(2, len(i)) for i in uncut(TEXTS)[0]]
    fresh_idx, fresh_val = dataclasses.replace(cut, handoff=None)(TEXTS)
    assert got_idx == fresh_idx
    for got, want in zip(got_val, fresh_val, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_doc_fn_takes_no_vector_made_with_other_settings(tiny_encoder: M3Encoder) -> None:
    """A copy with another ``text_instruction`` shares the original's handoff, and an
    instruction set after ``m3_sparse_fns`` changes what the embedding encodes: neither hands
    the store a sparse vector of another prefix, from another thread or this one."""
    embed = M3Embedding.from_encoder(tiny_encoder)
    doc_fn, _ = m3_sparse_fns(embed)
    fresh_doc_fn, _ = m3_sparse_fns(tiny_encoder)  # no handoff: encodes each text itself
    other = embed.model_copy(update={"text_instruction": "passage: "})
    barrier = threading.Barrier(2)

    def embed_after_barrier(model: M3Embedding) -> None:
        barrier.wait(timeout=30)
        model.get_text_embedding_batch(TEXTS)

    # the original and its copy embed the same texts at once (a second pipeline), in
    # whichever order; the copy's vectors (prefixed) must not be taken for the original's
    for _ in range(2):
        threads = [threading.Thread(target=embed_after_barrier, args=(m,)) for m in (embed, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        other.get_text_embedding_batch(TEXTS)  # the copy's puts last: over the original's
        got_idx, got_val = doc_fn(TEXTS)
        want_idx, want_val = fresh_doc_fn(TEXTS)
        assert got_idx == want_idx
        for got, want in zip(got_val, want_val, strict=True):
            assert got == pytest.approx(want, abs=1e-5)
    embed.text_instruction = "query-like: "  # after the store's functions were built
    embed.get_text_embedding_batch(TEXTS)
    assert doc_fn(TEXTS)[0] == fresh_doc_fn(TEXTS)[0]


def test_sparse_serialisation_round_trip(tiny_encoder: M3Encoder) -> None:
    """to_dict / from_dict (and JSON) as the other LlamaIndex classes have them."""
    sparse = M3SparseEmbedding.from_encoder(tiny_encoder)
    sparse.sparse_top_k = 5
    data = sparse.to_dict()
    assert data["class_name"] == "M3SparseEmbedding" and data["sparse_top_k"] == 5
    again = M3SparseEmbedding.from_dict(data)  # reloads the checkpoint from model_name
    assert again.sparse_top_k == 5
    assert again.get_text_embedding("Oxygen gas.") == sparse.get_text_embedding("Oxygen gas.")
    assert M3SparseEmbedding.from_json(sparse.to_json(), sparse_top_k=3).sparse_top_k == 3
    with pytest.raises(ValueError, match="sparse_topk"):
        M3SparseEmbedding.from_dict({**data, "sparse_topk": 2})


@pytest.mark.parametrize("cls", [M3Embedding, M3SparseEmbedding], ids=lambda c: c.__name__)
def test_pickle_reloads_the_checkpoint(cls: type[Any], tiny_m3_path: Path) -> None:
    """Both embeddings unpickle by loading their checkpoint again (the sparse one used to
    raise ``TypeError: cannot pickle '_thread.lock'``)."""
    emb = cls(model_name=str(tiny_m3_path), dtype="fp32", device="cpu", text_instruction="p: ")
    again = pickle.loads(pickle.dumps(emb))
    assert type(again) is cls and again.model_dump() == emb.model_dump()
    assert again.encoder is not emb.encoder
    assert again.get_text_embedding("Iron is Fe.") == pytest.approx(
        emb.get_text_embedding("Iron is Fe."), abs=1e-6
    )


async def test_a_single_string_given_as_a_batch_is_refused(
    tiny_embedding: M3Embedding, tiny_sparse: M3SparseEmbedding
) -> None:
    """A str is a sequence of characters: taken as a batch it gave one vector per character
    (``get_text_embedding_batch("ab")`` returned two vectors), where the core and LangChain
    refuse it. Every batch entry point of the LlamaIndex classes refuses it, naming itself."""
    doc_fn, query_fn = m3_sparse_fns(tiny_embedding)
    for embed in (tiny_embedding, tiny_sparse):
        with pytest.raises(TypeError, match=r"get_text_embedding_batch\(\) takes a list"):
            embed.get_text_embedding_batch("ab")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"aget_text_embedding_batch\(\) takes a list"):
            await embed.aget_text_embedding_batch("ab")  # type: ignore[arg-type]
    for fn in (doc_fn, query_fn):
        with pytest.raises(TypeError, match="takes a list of texts"):
            fn("ab")  # type: ignore[arg-type]


def test_a_non_str_document_is_named_with_a_text_instruction(tiny_encoder: M3Encoder) -> None:
    """With ``text_instruction`` set, a non-str document failed in the prefixing with
    Python's "can only concatenate str (not "int") to str"; it is named as without one."""
    embed = M3Embedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    with pytest.raises(TypeError, match=r"texts\[1\] is int, not str"):
        embed.get_text_embedding_batch(["ok", 5])  # type: ignore[list-item]


def test_from_encoder_refuses_an_embed_batch_size_of_zero(tiny_encoder: M3Encoder) -> None:
    """``embed_batch_size=0`` was read as "not given" (``0 or encoder.batch_size``) and became
    the encoder's 32, where the constructor refuses it; it is refused as ``-1`` is."""
    with pytest.raises(ValueError, match="embed_batch_size"):
        M3Embedding.from_encoder(tiny_encoder, embed_batch_size=0)
    with pytest.raises(ValueError, match="embed_batch_size"):
        M3SparseEmbedding.from_encoder(tiny_encoder, embed_batch_size=0)
    assert M3Embedding.from_encoder(tiny_encoder).embed_batch_size == tiny_encoder.batch_size


def test_embeddings_cache_is_refused_where_queries_are_embedded_otherwise(
    tiny_encoder: M3Encoder, tiny_m3_path: Path
) -> None:
    """LlamaIndex's ``embeddings_cache`` keys a vector by its text alone, for queries and
    documents alike: with a ``query_instruction``, ``get_query_embedding("oxygen")`` after
    ``get_text_embedding("oxygen")`` silently returned the document's vector (and a document
    embedded after a query got the query's). Refused wherever a query is prefixed otherwise
    than a document, when built, assigned or copied; kept where they are embedded alike."""
    from llama_index.core.storage.kvstore import SimpleKVStore

    with pytest.raises(ValueError, match="embeddings_cache keys each vector by its text alone"):
        M3Embedding(
            model_name=str(tiny_m3_path),
            dtype="fp32",
            query_instruction="q: ",
            embeddings_cache=SimpleKVStore(),
        )
    prefixed = M3Embedding.from_encoder(tiny_encoder, text_instruction="passage: ")
    with pytest.raises(ValueError, match="embeddings_cache"):
        prefixed.embeddings_cache = SimpleKVStore()
    with pytest.raises(ValueError, match="embeddings_cache"):
        prefixed.model_copy(update={"embeddings_cache": SimpleKVStore()})
    assert prefixed.embeddings_cache is None

    cached = M3Embedding.from_encoder(tiny_encoder)  # no instruction: a query is its text
    cached.embeddings_cache = SimpleKVStore()
    with pytest.raises(ValueError, match="embeddings_cache"):
        cached.text_instruction = "passage: "
    assert cached.text_instruction is None
    document = cached.get_text_embedding("oxygen")
    want = tiny_encoder.encode(["oxygen"], heads=["dense"], query=True).dense[0]
    np.testing.assert_allclose(cached.get_query_embedding("oxygen"), want, atol=1e-6)
    assert cached.get_query_embedding("oxygen") == document  # served from the cache
    alike = M3Embedding(
        model_name=str(tiny_m3_path),
        dtype="fp32",
        query_instruction="q: ",
        text_instruction="q: ",
        embeddings_cache=SimpleKVStore(),
    )
    assert alike.get_text_embedding("oxygen") == alike.get_query_embedding("oxygen")


@pytest.mark.parametrize(("bad", "kind"), [(None, "NoneType"), (["a text"], "list")])
async def test_a_single_text_that_is_no_str_is_named_as_such(
    tiny_embedding: M3Embedding, tiny_sparse: M3SparseEmbedding, bad: object, kind: str
) -> None:
    """``get_query_embedding(None)`` or ``get_text_embedding(["a text"])`` failed with
    "texts[0] is NoneType, not str": a batch position the caller never gave. The one text is
    named by the method it went to."""
    for embed in (tiny_embedding, tiny_sparse):
        for method in ("get_query_embedding", "get_text_embedding"):
            message = rf"{method}\(\) takes one text \(a str\), not {kind}"
            with pytest.raises(TypeError, match=message):
                getattr(embed, method)(bad)
            with pytest.raises(TypeError, match=rf"a{message}"):
                await getattr(embed, f"a{method}")(bad)
