"""Image nodes and the newer ``Node`` class come back as written, as from LlamaIndex's own
vector stores (``metadata_dict_to_node``): they used to come back as bare ``TextNode``s
without their image path, URL, MIME type, image data or media resources."""

from __future__ import annotations

from pathlib import Path

import PIL.Image
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import (
    BaseNode,
    ImageDocument,
    ImageNode,
    MediaResource,
    Node,
    NodeRelationship,
    RelatedNodeInfo,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from pydantic import AnyUrl

from llamaindex_m3 import M3Embedding, M3VectorStore

_IMAGE = {"image_url": "https://example.org/cat.png", "image_mimetype": "image/png"}


@pytest.fixture
def png(tmp_path: Path) -> str:
    """A real image file (an ``ImageDocument`` checks its ``image_path`` opens as one)."""
    path = tmp_path / "cat.png"
    PIL.Image.new("RGB", (2, 2), "red").save(path)
    return str(path)


def _native(node: BaseNode) -> BaseNode:
    """The node as LlamaIndex's own vector stores read it back."""
    return metadata_dict_to_node(node_to_metadata_dict(node))


def _image_fields(node: BaseNode) -> dict[str, object]:
    return {k: getattr(node, k, None) for k in (*_IMAGE, "image", "text_embedding")}


def test_image_nodes_of_an_index_come_back_as_image_nodes(
    store: M3VectorStore, tiny_embedding: M3Embedding, png: str
) -> None:
    fields = {**_IMAGE, "image_path": png}
    doc = ImageDocument(text="A tabby cat asleep on a red sofa.", id_="img", **fields)
    VectorStoreIndex.from_documents(
        [doc],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=tiny_embedding,
        transformations=[SentenceSplitter()],
    )
    # a later session: the index reopened on the store alone (no docstore to fill nodes in)
    index = VectorStoreIndex.from_vector_store(store, embed_model=tiny_embedding)
    (hit,) = index.as_retriever(similarity_top_k=1).retrieve("a cat on a sofa")
    (stored,) = store.get_nodes()
    (split,) = SentenceSplitter().get_nodes_from_documents([doc])  # what the index stored
    assert isinstance(split, ImageNode) and split.image_path == png
    for node in (hit.node, stored):
        assert isinstance(node, ImageNode)
        assert _image_fields(node) == _image_fields(split)
        assert node.ref_doc_id == "img"


def test_image_data_and_media_resources_round_trip_as_in_llamaindex_stores(
    store: M3VectorStore, png: str
) -> None:
    source = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id="album")}
    image = ImageNode(
        text="A drawing of a lighthouse.",
        id_="drawing",
        image="aGVsbG8=",  # base64 image data
        text_embedding=[0.25, -0.5],
        relationships=source,
        image_path=png,
        **_IMAGE,
    )
    media = Node(
        id_="media",
        text_resource=MediaResource(text="A recording of waves.", path=Path("/audio/waves.txt")),
        audio_resource=MediaResource(url=AnyUrl("https://example.org/waves.mp3")),
        image_resource=MediaResource(path=Path("/photos/waves.png")),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="sounds")},
    )
    store.add([image, media])
    got_image, got_media = store.get_nodes(["drawing", "media"])
    assert type(got_image) is ImageNode
    assert _image_fields(got_image) == _image_fields(_native(image))
    assert got_image.get_content() == image.get_content()
    native_media = _native(media)
    assert type(got_media) is Node and type(native_media) is Node
    for field in ("text_resource", "audio_resource", "image_resource"):
        assert getattr(got_media, field) == getattr(native_media, field), field
    assert got_media.get_content() == "A recording of waves."
    count = store.client.count()
    store.add([got_image, got_media])  # written again as read back: nothing changes
    assert store.client.count() == count
    assert store.get_nodes(["drawing", "media"]) == [got_image, got_media]


def test_a_new_image_path_alone_replaces_the_stored_one(store: M3VectorStore, png: str) -> None:
    source = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id="album")}
    node = ImageNode(text="A cat.", id_="cat", relationships=source, image_path=png, **_IMAGE)
    store.add([node])
    moved = node.model_copy(update={"image_path": png + ".moved"})
    store.add([moved])  # the text is the same; the image moved
    (back,) = store.get_nodes(["cat"])
    assert isinstance(back, ImageNode) and back.image_path == png + ".moved"
    assert store.client.count() == 1


def test_an_image_node_without_text_is_refused(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    """M3 encodes text only: an ``ImageNode`` without text was stored as a blank text's
    vectors, which every query matched alike (a stray hit in every search)."""
    from m3kit.testing import SAMPLE_TEXTS

    kept = ImageNode(text=SAMPLE_TEXTS[0], id_="captioned", **_IMAGE)
    bare = ImageNode(text="  ", id_="bare", **_IMAGE)
    with pytest.raises(ValueError, match="node 'bare' is an ImageNode without text"):
        store.add([kept, bare])
    assert store.client.count() == 0
    assert store.add([kept]) == ["captioned"]
