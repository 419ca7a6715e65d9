"""``M3Embeddings``: BGE-M3 (or any BGE / sentence-transformers checkpoint) dense vectors.

Example:
    >>> import tempfile
    >>> from m3kit.testing import build_tiny_m3_checkpoint
    >>> path = build_tiny_m3_checkpoint(tempfile.mkdtemp())
    >>> emb = M3Embeddings(model_name_or_path=str(path), dtype="fp32")
    >>> vectors = emb.embed_documents(["Berlin is the capital of Germany.", "Oxygen is O."])
    >>> len(vectors), len(vectors[0]) == emb.encoder.dense_dim
    (2, True)
    >>> len(emb.embed_query("capital of Germany"))
    32
"""

from __future__ import annotations

from langchain_m3._encoder_model import EncoderModel
from m3kit.encoder_inputs import check_text, check_texts
from m3kit.errors import missing_extra
from m3kit.outputs import Head

try:
    from langchain_core.embeddings import Embeddings
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain-core", "langchain", e) from e

__all__ = ["M3Embeddings"]


class M3Embeddings(EncoderModel, Embeddings):
    """LangChain :class:`~langchain_core.embeddings.Embeddings` giving M3 dense vectors.

    The checkpoint is loaded once when the object is built and kept in a private attribute
    (:attr:`encoder`). To share one loaded model with :class:`~langchain_m3.M3SparseEmbeddings`
    or :class:`~langchain_m3.M3Retriever`, load an :class:`~m3kit.M3Encoder` yourself and use
    :meth:`from_encoder`.

    Vectors are L2-normalised lists of floats, so cosine and dot product agree. Queries get
    ``query_instruction`` prepended (BGE-M3 needs none; BGE v1.5 English models do). The
    inherited async methods run the sync ones in a worker thread.

    Example:
        >>> import tempfile
        >>> from m3kit import M3Encoder
        >>> from m3kit.testing import build_tiny_m3_checkpoint
        >>> enc = M3Encoder.from_pretrained(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
        >>> emb = M3Embeddings.from_encoder(enc)
        >>> emb.encoder is enc, len(emb.embed_query("hello"))
        (True, 32)
    """

    @property
    def cache_namespace(self) -> str:
        """A ``namespace`` for LangChain's ``CacheBackedEmbeddings`` naming what makes these
        vectors: the encoder's fingerprint identity (weights, tokenizer, pooling,
        ``max_length``, query instruction, heads).

        LangChain keys its cache on the namespace and the text only; the namespace it suggests,
        the model's name, stays the same when the weights change in place (a fine-tune saved
        over the folder) or ``max_length`` / ``query_instruction`` / ``pooling`` change, and
        the cache then serves the other setting's vectors. With a query instruction, give
        ``query_embedding_cache`` a store of its own, not ``True``: a query and a document of
        the same text have one key, and differ in their vectors.

        Example:
            >>> import tempfile
            >>> from langchain_classic.embeddings import CacheBackedEmbeddings
            >>> from langchain_classic.storage import LocalFileStore
            >>> from m3kit.testing import build_tiny_m3_checkpoint
            >>> path = str(build_tiny_m3_checkpoint(tempfile.mkdtemp()))
            >>> emb = M3Embeddings(model_name_or_path=path)
            >>> cached = CacheBackedEmbeddings.from_bytes_store(
            ...     emb, LocalFileStore(tempfile.mkdtemp()), namespace=emb.cache_namespace
            ... )
            >>> cached.embed_documents(["hello"]) == emb.embed_documents(["hello"])
            True
            >>> short = M3Embeddings(model_name_or_path=path, max_length=8)
            >>> emb.cache_namespace == short.cache_namespace
            False
        """
        from m3kit.fingerprint import encoder_fingerprint

        # letters, digits and "-" only: LangChain's LocalFileStore refuses a ":" in a key
        return f"m3kit-dense-{encoder_fingerprint(self.encoder).identity}"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Dense vectors of documents (no query instruction).

        Args:
            texts: The documents.

        Returns:
            One normalised vector per text, in order.

        Raises:
            TypeError: ``texts`` is a single string (``""`` too: wrap it as ``[text]``) or
                holds a non-string (named by its position).
        """
        texts = check_texts(texts, method="embed_documents")
        if not texts:
            return []
        out = self.encoder.encode(
            texts, heads=Head.DENSE, max_length=self.max_length, show_progress=self.show_progress
        )
        return [row.tolist() for row in out.dense]

    def embed_query(self, text: str) -> list[float]:
        """Dense vector of one query (with the query instruction, if any).

        Args:
            text: The query.

        Returns:
            The normalised query vector.

        Raises:
            TypeError: ``text`` is not a str.
        """
        check_text(text, method="embed_query")
        out = self.encoder.encode(
            [text], heads=Head.DENSE, query=True, max_length=self.max_length, show_progress=False
        )
        return out.dense[0].tolist()  # type: ignore[no-any-return]
