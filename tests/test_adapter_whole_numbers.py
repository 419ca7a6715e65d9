"""Size fields of both adapters refuse what is not a whole number, as the core does.

Pydantic's lax ``int`` read ``"12"`` and ``12.0`` as 12 and ``True`` as 1, silently
(``embed_batch_size=True``: one text per forward pass), where the core refuses them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from m3kit import M3Encoder


def _builders(enc: M3Encoder) -> dict[str, Callable[[Any], object]]:
    import langchain_m3 as lc
    import llamaindex_m3 as li

    return {
        "lc splitter chunk_size": lambda v: lc.M3LateChunkingSplitter.from_encoder(
            enc, chunk_size=v
        ),
        "lc reranker top_n": lambda v: lc.M3Reranker.from_encoder(enc, top_n=v),
        "lc sparse sparse_top_k": lambda v: lc.M3SparseEmbeddings.from_encoder(enc, sparse_top_k=v),
        "li embed_batch_size": lambda v: li.M3Embedding.from_encoder(enc, embed_batch_size=v),
        "li reranker top_n": lambda v: li.M3Reranker.from_encoder(enc, top_n=v),
        "li reranker max_query_length": lambda v: li.M3Reranker.from_encoder(
            enc, max_query_length=v
        ),
    }


@pytest.mark.parametrize("bad", ["12", 12.0, True])
def test_size_fields_refuse_what_is_not_a_whole_number(tiny_encoder: M3Encoder, bad: Any) -> None:
    for name, build in _builders(tiny_encoder).items():
        with pytest.raises(ValidationError, match="must be a whole number"):
            build(bad)
        build(np.int64(12))  # a numpy integer is its value, as in the core
        assert build(12) is not None, name
