"""How a write of LlamaIndex nodes takes them: checked to be nodes, then encoded and written in
groups of whole documents (:func:`~llamaindex_m3.node_writes.write_nodes`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from llama_index.core.schema import BaseNode

from llamaindex_m3.node_encoding import check_nodes_to_encode, encode_nodes
from m3kit.outputs import M3Output
from m3kit.store import M3Index
from m3kit.store.cancelling import stop_if_cancelled
from m3kit.store.index_writes import WRITE_GROUP_CHARS, write_group_bounds

__all__ = ["check_node_types", "encoded_groups", "write_groups"]


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


def encoded_groups(
    index: M3Index,
    todo: list[_Planned],
    carried: list[_Carried],
    text_instruction: str | None,
    show_progress: bool | None,
    on_encode: Callable[[list[BaseNode]], None] | None = None,
) -> Iterator[tuple[list[_Planned], list[M3Output], list[_Carried]]]:
    """Each group of :func:`write_groups` with its nodes' vectors, to be written before the
    next is encoded (one group at least, empty when there is nothing to write); ``on_encode``
    is called with a group's nodes just before they are encoded (none for a group without).

    Every node is checked first (:func:`check_nodes_to_encode`), so only what the encoder's
    output tells (an embedding of another model of the same size) is refused as a group is
    encoded. An async write cancelled while a group was encoded or written stops before the
    next is encoded (:func:`~m3kit.store.cancelling.stop_if_cancelled`).
    """
    check_nodes_to_encode(index, [n for _, _, n in todo], text_instruction)
    for at, (part, part_carried) in enumerate(write_groups(index, todo, carried) or [([], [])]):
        if at:  # cancelled while the group before was written: nothing more is encoded
            stop_if_cancelled()
        if on_encode is not None and part:
            on_encode([n for _, _, n in part])
        encoded = encode_nodes(index, [n for _, _, n in part], text_instruction, show_progress)
        stop_if_cancelled()  # cancelled while its nodes were encoded: they are not written
        yield part, encoded, part_carried
