"""The text and metadata of a point another program wrote, read from its own payload layout.

m3kit keeps a chunk's text at ``page_content`` and its metadata at ``metadata``, as
langchain-qdrant does, so a stock langchain-qdrant point reads as it is. Stock LlamaIndex
(``llama_index.vector_stores.qdrant``) keeps neither: it writes the node's metadata keys at the
top of the payload and the whole node, text included, as a JSON string at ``_node_content``
(``llama_index.core.vector_stores.utils.node_to_metadata_dict``). Read by m3kit's keys, such a
node came back with an empty text and no metadata, silently. The core knows no framework, so
the layout is read here from its JSON (two keys) rather than through LlamaIndex's own
``metadata_dict_to_node``, which would make llama-index a dependency of every read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from m3kit.store.schema import METADATA, PAGE_CONTENT

__all__ = ["NODE_CONTENT", "foreign_text_and_metadata"]

#: Where stock LlamaIndex keeps the node (JSON), text and metadata included.
NODE_CONTENT = "_node_content"


def foreign_text_and_metadata(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A foreign point's text and metadata: at m3kit's (langchain-qdrant's) keys, else from a
    stock LlamaIndex node's ``_node_content``; ``("", {})`` when neither holds them.

    >>> foreign_text_and_metadata({"page_content": "a", "metadata": {"k": 1}})
    ('a', {'k': 1})
    >>> node = json.dumps({"text": "Oxygen.", "metadata": {"source": "li"}})
    >>> foreign_text_and_metadata({"_node_content": node, "source": "li"})
    ('Oxygen.', {'source': 'li'})
    >>> node = json.dumps({"text_resource": {"text": "New layout."}, "metadata": {}})
    >>> foreign_text_and_metadata({"_node_content": node})
    ('New layout.', {})
    >>> foreign_text_and_metadata({"_node_content": "not json"})
    ('', {})
    """
    text = payload.get(PAGE_CONTENT)
    meta = payload.get(METADATA)
    if isinstance(text, str):
        return text, dict(meta) if isinstance(meta, Mapping) else {}
    node = _node(payload.get(NODE_CONTENT))
    if node is None:
        return "", dict(meta) if isinstance(meta, Mapping) else {}
    node_text = node.get("text")
    if not isinstance(node_text, str):  # LlamaIndex >= 0.12.x: the text in a resource
        resource = node.get("text_resource")
        node_text = resource.get("text") if isinstance(resource, Mapping) else None
    node_meta = node.get("metadata")
    return (
        node_text if isinstance(node_text, str) else "",
        dict(node_meta) if isinstance(node_meta, Mapping) else {},
    )


def _node(content: Any) -> Mapping[str, Any] | None:
    if not isinstance(content, str):
        return None
    try:
        node = json.loads(content)
    except ValueError:  # another program's string at that key: not a node
        return None
    return node if isinstance(node, Mapping) else None
