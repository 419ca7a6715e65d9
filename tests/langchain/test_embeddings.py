"""M3Embeddings and M3SparseEmbeddings: LangChain standard suites plus parity with M3Encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_qdrant import SparseVector
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import ValidationError

from langchain_m3 import M3Embeddings, M3SparseEmbeddings
from m3kit import M3Encoder
from m3kit.errors import CheckpointError, HeadNotAvailableError

TEXTS = ["Berlin is the capital of Germany.", "Oxygen has atomic number 8.", ""]


class _TinyParams:
    """Standard suites build the class from ``embedding_model_params``: point them at tiny M3."""

    _path: Path

    @pytest.fixture(autouse=True)
    def _tiny_path(self, tiny_m3_path: Path) -> None:
        self._path = tiny_m3_path

    @property
    def embeddings_class(self) -> type[M3Embeddings]:
        return M3Embeddings

    @property
    def embedding_model_params(self) -> dict[str, object]:
        return {"model_name_or_path": str(self._path), "dtype": "fp32", "device": "cpu"}


class TestM3EmbeddingsUnit(_TinyParams, EmbeddingsUnitTests):
    pass


class TestM3EmbeddingsIntegration(_TinyParams, EmbeddingsIntegrationTests):
    pass


def test_dense_matches_encoder(tiny_encoder: M3Encoder) -> None:
    emb = M3Embeddings.from_encoder(tiny_encoder)
    assert emb.encoder is tiny_encoder
    got = np.array(emb.embed_documents(TEXTS), dtype=np.float32)
    want = tiny_encoder.encode(TEXTS, heads=["dense"]).dense
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert all(isinstance(x, float) for x in emb.embed_query("capital")), "plain Python floats"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert emb.embed_documents([]) == []


def test_fields_describe_loaded_model(tiny_m3_path: Path) -> None:
    emb = M3Embeddings(
        model_name_or_path=str(tiny_m3_path), dtype="fp32", batch_size=4, max_length=64
    )
    assert emb.encoder.batch_size == 4
    assert emb.encoder.max_length == 64
    assert emb.encoder.precision.value == "fp32"
    with pytest.raises(AttributeError, match="build a new M3Embeddings"):
        emb.batch_size = 8  # frozen: changing a field would not reload the model
    with pytest.raises(ValidationError):
        M3Embeddings(model_name_or_path=str(tiny_m3_path), batch_sise=4)  # typo: extra=forbid


def test_from_encoder_refuses_conflicting_fields(tiny_encoder: M3Encoder) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        M3Embeddings.from_encoder(tiny_encoder, batch_size=2)


def test_query_instruction_only_on_queries(tiny_m3_path: Path) -> None:
    prefix = "Represent this sentence for searching relevant passages: "
    emb = M3Embeddings(model_name_or_path=str(tiny_m3_path), dtype="fp32", query_instruction=prefix)
    doc = emb.embed_documents(["capital of Germany"])[0]
    query = emb.embed_query("capital of Germany")
    same_as_doc = emb.embed_documents([prefix + "capital of Germany"])[0]
    np.testing.assert_allclose(query, same_as_doc, atol=1e-6)
    assert not np.allclose(query, doc, atol=1e-4)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        M3Embeddings(model_name_or_path=str(tmp_path / "nope"))


def test_minilm_dense_only(minilm_encoder: M3Encoder, minilm_path: Path) -> None:
    emb = M3Embeddings.from_encoder(minilm_encoder)
    assert len(emb.embed_query("what is the capital of germany")) == 384
    with pytest.raises(HeadNotAvailableError, match="dense-only"):
        M3SparseEmbeddings.from_encoder(minilm_encoder)
    with pytest.raises(HeadNotAvailableError, match="dense-only"):
        M3SparseEmbeddings(model_name_or_path=str(minilm_path), dtype="fp32")


def test_sparse_matches_encoder(tiny_encoder: M3Encoder) -> None:
    sparse = M3SparseEmbeddings.from_encoder(tiny_encoder)
    got = sparse.embed_documents(TEXTS)
    want = tiny_encoder.encode(TEXTS, heads=["sparse"]).sparse
    assert all(isinstance(v, SparseVector) for v in got)
    for g, w in zip(got, want, strict=True):
        assert g.indices == w.indices.tolist()
        np.testing.assert_allclose(g.values, w.values, atol=1e-6)
    assert got[0].indices, "a real sentence has sparse terms"
    query = sparse.embed_query(TEXTS[0])
    assert query.indices == got[0].indices  # no query instruction on the tiny checkpoint


def test_sparse_top_k(tiny_encoder: M3Encoder) -> None:
    sparse = M3SparseEmbeddings.from_encoder(tiny_encoder, sparse_top_k=2)
    vec = sparse.embed_documents([TEXTS[0]])[0]
    full = M3SparseEmbeddings.from_encoder(tiny_encoder).embed_documents([TEXTS[0]])[0]
    assert len(vec.indices) == 2
    top2 = sorted(sorted(zip(full.values, full.indices, strict=True), reverse=True)[:2])
    assert sorted(vec.indices) == sorted(i for _, i in top2)


async def test_async_matches_sync(tiny_encoder: M3Encoder) -> None:
    emb = M3Embeddings.from_encoder(tiny_encoder)
    sparse = M3SparseEmbeddings.from_encoder(tiny_encoder)
    np.testing.assert_allclose(await emb.aembed_documents(TEXTS), emb.embed_documents(TEXTS))
    np.testing.assert_allclose(await emb.aembed_query("x y"), emb.embed_query("x y"))
    assert await sparse.aembed_query("x y") == sparse.embed_query("x y")
    assert await sparse.aembed_documents(TEXTS) == sparse.embed_documents(TEXTS)


@pytest.mark.parametrize(
    ("bad", "shown"), [(float("inf"), "inf"), (float("nan"), "NaN"), (float("-inf"), "-inf")]
)
def test_sparse_min_weight_must_be_finite(tiny_encoder: M3Encoder, bad: float, shown: str) -> None:
    # inf passed ``ge=0`` and emptied every sparse vector (nothing is above it); the core's
    # check (m3kit.sparse_options.check_sparse_min_weight) now refuses it, naming the value
    with pytest.raises(ValidationError, match=f"sparse_min_weight is {shown}: "):
        M3SparseEmbeddings.from_encoder(tiny_encoder, sparse_min_weight=bad)
    with pytest.raises(ValidationError, match="sparse_min_weight"):
        M3SparseEmbeddings.from_encoder(tiny_encoder, sparse_min_weight=str(bad))
    kept = M3SparseEmbeddings.from_encoder(tiny_encoder, sparse_min_weight=0.0)
    assert kept.embed_documents([TEXTS[0]])[0].indices  # a finite cut still gives weights


def test_cache_namespace_names_the_settings_that_make_the_vectors(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """``CacheBackedEmbeddings`` keys on its namespace and the text: under the model's name, a
    query instruction or max_length changed later got the earlier setting's cached vectors.
    The namespace fits LangChain's ``LocalFileStore`` (its ``:`` failed every call there)."""
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_classic.storage import LocalFileStore

    path = str(tiny_m3_path)
    plain = M3Embeddings(model_name_or_path=path, dtype="fp32")
    again = M3Embeddings(model_name_or_path=path, dtype="fp32")
    prefixed = M3Embeddings(model_name_or_path=path, dtype="fp32", query_instruction="q: ")
    assert plain.cache_namespace == again.cache_namespace
    assert plain.cache_namespace != prefixed.cache_namespace
    shared = LocalFileStore(tmp_path / "cache")
    texts = ["Berlin is the capital of Germany. " * 3]
    for emb in (plain, M3Embeddings(model_name_or_path=path, dtype="fp32", max_length=6)):
        cached = CacheBackedEmbeddings.from_bytes_store(emb, shared, namespace=emb.cache_namespace)
        assert np.allclose(cached.embed_documents(texts), emb.embed_documents(texts))


@pytest.mark.parametrize("cls", [M3Embeddings, M3SparseEmbeddings])
async def test_a_single_string_given_as_documents_is_refused(
    tiny_encoder: M3Encoder, cls: type[M3Embeddings] | type[M3SparseEmbeddings]
) -> None:
    """``embed_documents("")`` returned ``[]`` silently (an empty str is falsy, so it passed
    the empty-list shortcut), and ``embed_documents("ab")`` was refused naming ``encode()``,
    which the caller never called. Both are refused naming ``embed_documents()``."""
    emb = cls.from_encoder(tiny_encoder)
    for text in ("", "ab"):
        with pytest.raises(TypeError, match=r"embed_documents\(\) takes a list of texts"):
            emb.embed_documents(text)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"embed_documents\(\) takes a list of texts"):
            await emb.aembed_documents(text)  # type: ignore[arg-type]
    assert emb.embed_documents([]) == [] == await emb.aembed_documents([])


@pytest.mark.parametrize("cls", [M3Embeddings, M3SparseEmbeddings])
@pytest.mark.parametrize(("bad", "kind"), [(None, "NoneType"), (["a query"], "list")])
async def test_a_query_that_is_no_str_is_named_as_the_query(
    tiny_encoder: M3Encoder,
    cls: type[M3Embeddings] | type[M3SparseEmbeddings],
    bad: object,
    kind: str,
) -> None:
    """``embed_query(None)`` or ``embed_query(["a query"])`` failed with "texts[0] is NoneType,
    not str": a batch position the caller never gave. The query is named as one."""
    emb = cls.from_encoder(tiny_encoder)
    with pytest.raises(TypeError, match=rf"embed_query\(\) takes one text \(a str\), not {kind}"):
        emb.embed_query(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=rf"embed_query\(\) takes one text \(a str\), not {kind}"):
        await emb.aembed_query(bad)  # type: ignore[arg-type]
