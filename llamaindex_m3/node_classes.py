"""The LlamaIndex node class a stored chunk comes back as, and that class's own fields.

LlamaIndex's own vector stores keep a whole node as JSON (``node_to_metadata_dict``) and read
it back as its class (``metadata_dict_to_node``: ``Node``, ``IndexNode``, ``ImageNode``, else
``TextNode``). m3kit stores a node's text, metadata and offsets as a chunk and the rest of
the node beside them (:data:`~llamaindex_m3.node_records.NODE_FIELDS`); this module names
the fields of the classes beyond ``TextNode`` (an ``ImageNode``'s image, path, URL and MIME
type; an ``IndexNode``'s ``index_id``; a ``Node``'s media resources) and rebuilds a node of
the class it was written as.

>>> from llama_index.core.schema import ImageNode
>>> extra = class_fields(ImageNode(text="a cat", image_path="cat.png").model_dump(mode="json"))
>>> extra["image_path"]
'cat.png'
>>> node = rebuild_node(ImageNode.class_name(), {**extra, "id_": "n1"}, "a cat", 0, 5)
>>> type(node).__name__, node.image_path, node.text
('ImageNode', 'cat.png', 'a cat')
"""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import (
    BaseNode,
    ImageDocument,
    ImageNode,
    IndexNode,
    Node,
    TextNode,
)

__all__ = ["CLASS_FIELDS", "class_fields", "node_class", "rebuild_node"]

#: Fields of ``IndexNode``, ``ImageNode`` and ``Node`` beyond what every node has (an
#: ``IndexNode``'s live ``obj`` is not kept: it is no JSON). A ``Node``'s text resource is
#: kept without its text, which is the stored chunk's text.
CLASS_FIELDS = (
    "index_id",
    "image",
    "image_path",
    "image_url",
    "image_mimetype",
    "text_embedding",
    "text_resource",
    "image_resource",
    "audio_resource",
    "video_resource",
)

#: Classes a stored node comes back as, by the ``class_name()`` it was written with; any
#: other (``TextNode``, ``Document``, a custom class) comes back as a ``TextNode``, as from
#: LlamaIndex's stores. An ``ImageDocument`` added to a store as a node comes back as an
#: ``ImageNode``, keeping its image (LlamaIndex's stores return a ``TextNode`` without it).
_CLASSES: dict[str, type[BaseNode]] = {
    Node.class_name(): Node,
    IndexNode.class_name(): IndexNode,
    ImageNode.class_name(): ImageNode,
    ImageDocument.class_name(): ImageNode,
}


def node_class(class_name: str | None) -> type[BaseNode]:
    """The class a node written as ``class_name`` is read back as.

    >>> node_class("ImageNode").__name__, node_class("Document").__name__, node_class(None).__name__
    ('ImageNode', 'TextNode', 'TextNode')
    """
    return _CLASSES.get(class_name or "", TextNode)


def class_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The :data:`CLASS_FIELDS` of a node's JSON dump (``model_dump(mode="json")``).

    >>> class_fields({"text_resource": {"text": "hi", "path": "a.txt"}, "text": "x"})
    {'text_resource': {'path': 'a.txt'}}
    """
    kept = {k: data[k] for k in CLASS_FIELDS if k in data}
    resource = kept.get("text_resource")
    if isinstance(resource, dict):
        kept["text_resource"] = {k: v for k, v in resource.items() if k != "text"}
    return kept


def rebuild_node(
    class_name: str | None, fields: dict[str, Any], text: str, start: int | None, end: int | None
) -> BaseNode:
    """A node of the class it was written as, from its stored ``fields`` (id, metadata,
    relationships, ... and :data:`CLASS_FIELDS`), text and character offsets.

    A ``Node`` keeps its text in its text resource and has no offsets.

    >>> node = rebuild_node("Node", {"id_": "n", "text_resource": {"path": "a.txt"}}, "hi", 0, 2)
    >>> node.text_resource.text, str(node.text_resource.path)
    ('hi', 'a.txt')
    """
    cls = node_class(class_name)
    if cls is Node:
        resource = fields.get("text_resource")
        if resource is not None or text:
            fields = {**fields, "text_resource": {**(resource or {}), "text": text}}
        return Node.model_validate(fields)
    values = {k: v for k, v in fields.items() if k in cls.model_fields}
    return cls.model_validate(
        {**values, "text": text, "start_char_idx": start, "end_char_idx": end}
    )
