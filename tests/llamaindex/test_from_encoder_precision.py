"""``from_encoder`` keeps the precision the encoder was asked for, not the one ``auto`` chose on
this machine: ``to_dict`` / ``from_dict`` (or a pickle) on another CPU class decides ``auto``
again there."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaindex_m3 import M3Embedding
from m3kit import M3Encoder
from m3kit.precision import Precision


@pytest.mark.parametrize(("asked", "kept"), [(None, Precision.AUTO), ("fp32", Precision.FP32)])
def test_from_encoder_keeps_the_precision_asked_for(
    tiny_m3_path: Path, asked: str | None, kept: Precision
) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_path, **({"dtype": asked} if asked else {}))
    embedding = M3Embedding.from_encoder(encoder)
    assert embedding.dtype is kept
    assert embedding.to_dict()["dtype"] == kept.value
    again = M3Embedding.from_dict(embedding.to_dict())
    assert again.dtype is kept


def test_from_encoder_keeps_no_query_instruction_over_the_checkpoints_own(
    instruction_m3_path: Path,
) -> None:
    """An encoder loaded with ``query_instruction=""`` from a checkpoint declaring one has
    none; ``from_dict(to_dict())`` (and a pickle) reloaded with ``None`` ("the checkpoint's
    own") and failed as another model."""
    import pickle

    encoder = M3Encoder.from_pretrained(instruction_m3_path, query_instruction="")
    embedding = M3Embedding.from_encoder(encoder)
    assert M3Embedding.from_dict(embedding.to_dict()).encoder.query_instruction is None
    assert pickle.loads(pickle.dumps(embedding)).encoder.query_instruction is None
    with_own = M3Embedding.from_encoder(M3Encoder.from_pretrained(instruction_m3_path))
    assert M3Embedding.from_dict(with_own.to_dict()).encoder.query_instruction == "query: "


def test_the_node_parser_keeps_no_query_instruction_too(instruction_m3_path: Path) -> None:
    """The parser shares the embeddings' settings fields: the same ``None`` / ``""`` rule."""
    from llamaindex_m3 import M3LateChunkingNodeParser

    encoder = M3Encoder.from_pretrained(instruction_m3_path, query_instruction="")
    parser = M3LateChunkingNodeParser.from_encoder(encoder, chunk_size=16)
    again = M3LateChunkingNodeParser.from_dict(parser.to_dict())
    assert again._held_encoder().query_instruction is None
