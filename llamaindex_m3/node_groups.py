"""How a write of LlamaIndex nodes takes them: checked to be nodes, then encoded and written in
groups of whole documents (:func:`~llamaindex_m3.node_writes.write_nodes`)."""

from __future__ import annotations

from collections.abc import Sequence

from llama_index.core.schema import BaseNode

from m3kit.outputs import M3Output
from m3kit.store import M3Index
from m3kit.store.index_writes import WRITE_GROUP_CHARS, write_group_bounds

__all__ = ["check_node_types", "write_groups"]


def check_node_types(nodes: Sequence[BaseNode]) -> None:
    """Refuse anything but a sequence of LlamaIndex nodes, by position.

    Raises:
        TypeError: ``nodes`` is one node (a pydantic model iterates as its field pairs:
            "nodes[0] is tuple"), or holds something else.
    """
    if isinstance(nodes, BaseNode):
        raise TypeError("nodes is a list of nodes; wrap a single one as [node]")
    for i, node in enumerate(nodes):
        if not isinstance(node, BaseNode):
            raise TypeError(f"nodes[{i}] is {type(node).__name__}, not a LlamaIndex node")


_Planned = tuple[str, int, BaseNode]
_Carried = tuple[str, int, BaseNode, M3Output]


def write_groups(
    index: M3Index, todo: list[_Planned], carried: list[_Carried]
) -> list[tuple[list[_Planned], list[_Carried]]]:
    """The nodes to encode and those carrying vectors, in groups of whole documents (in
    order of first appearance): at most ``index.write_group`` documents, closed before the
    document that would take the text to encode past
    :data:`~m3kit.store.index_writes.WRITE_GROUP_CHARS` (a longer one alone)."""
    order: dict[str, tuple[list[_Planned], list[_Carried]]] = {}
    for item in todo:
        order.setdefault(item[0], ([], []))[0].append(item)
    for held in carried:
        order.setdefault(held[0], ([], []))[1].append(held)
    parts = list(order.values())
    lengths = [sum(len(node.get_content()) for _, _, node in p) for p, _ in parts]
    return [
        ([x for p, _ in parts[a:b] for x in p], [x for _, c in parts[a:b] for x in c])
        for a, b in write_group_bounds(lengths, index.write_group, WRITE_GROUP_CHARS)
    ]
