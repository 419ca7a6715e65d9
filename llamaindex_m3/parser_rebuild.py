"""What :meth:`M3LateChunkingNodeParser.to_dict` records beyond its fields, checked on rebuild.

Split from :mod:`llamaindex_m3.node_parser`: the keys ``to_dict`` (and pickling) add, the
``id_func`` LlamaIndex serialised by name, and the check that a parser rebuilt by
``from_dict`` / unpickling chunks and embeds as the serialised one did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_index.core.node_parser.node_utils import default_id_func

from llamaindex_m3._encoder_fields import ENCODER_KEY
from m3kit.fingerprint import encoder_fingerprint

if TYPE_CHECKING:
    from llamaindex_m3.node_parser import M3LateChunkingNodeParser

__all__ = ["ENCODER_KEY", "SIGNATURE_KEY", "check_rebuilt", "read_id_func"]

# what to_dict records beyond the fields: IngestionPipeline's cache key is built from to_dict
SIGNATURE_KEY = "chunker_signature"
#: Fields that decide the chunks (``max_length`` bounds the default window and chunk size).
_CHUNKING_FIELDS = frozenset(
    {
        "chunk_size",
        "window",
        "overlap",
        "placement",
        "late_heads",
        "dense_pooling",
        "splitter",
        "max_length",
    }
)
#: Fields that decide the encoder's identity (another value is another encoder).
_ENCODER_FIELDS = frozenset({"model_name", "max_length", "query_instruction"})


def read_id_func(value: Any) -> Any:
    """``id_func`` as LlamaIndex serialised it (``{"id_func_name": ...}``), read back."""
    if not isinstance(value, dict):
        return value
    name = value.get("id_func_name")
    if name != default_id_func.__name__:
        raise ValueError(
            f"the serialised M3LateChunkingNodeParser names its id_func {name!r}, which "
            "LlamaIndex does not serialise: pass it again (from_dict(data, id_func=...))"
        )
    return default_id_func


def check_rebuilt(
    parser: M3LateChunkingNodeParser, recorded: dict[str, Any], *, overridden: set[str]
) -> None:
    """Raise when ``parser`` would chunk or embed otherwise than ``recorded`` says.

    What the fields in ``overridden`` decide is not checked: the chunks when one of them
    decides the chunks, the encoder when one of them is in its identity (``model_name``,
    ``max_length``, ``query_instruction``).
    """
    signature, identity = recorded[SIGNATURE_KEY], recorded[ENCODER_KEY]
    chunking_given = overridden & _CHUNKING_FIELDS
    if signature is not None and not chunking_given and signature != parser.chunker.signature:
        raise ValueError(
            f"the serialised M3LateChunkingNodeParser chunked as {signature}, the one rebuilt "
            f"from its fields as {parser.chunker.signature}: a splitter is not serialised, "
            "pass it again (from_dict(data, splitter=...))"
        )
    fingerprint = encoder_fingerprint(parser.chunker.encoder)
    encoder_given = overridden & _ENCODER_FIELDS
    if identity is not None and not encoder_given and not fingerprint.made(identity):
        raise ValueError(
            f"the serialised M3LateChunkingNodeParser embedded with encoder {identity}, the "
            f"checkpoint at {parser.model_name} is another one ({fingerprint.identity}); "
            "point model_name at the model that parsed the nodes"
        )
