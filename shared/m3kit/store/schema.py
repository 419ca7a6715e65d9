"""The one collection layout both adapters share: vector names, payload keys, point ids.

Payload keys match langchain-qdrant's ``QdrantVectorStore`` (``page_content``, ``metadata``)
so its store can read a collection written here.

>>> point_id("doc-1", 0) == point_id("doc-1", 0)
True
>>> point_id("doc-1", 0) != point_id("doc-1", 1)
True
>>> CollectionSchema(dense_dim=1024, colbert_dim=1024, sparse=True).describe()
'colbert: multivector size=1024 cosine MaxSim; dense: dense size=1024 cosine; sparse: sparse'
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from m3kit.errors import SchemaMismatchError

__all__ = [
    "CHUNKING",
    "CHUNK_COUNT",
    "CHUNK_ID",
    "CHUNK_INDEX",
    "COLBERT",
    "DENSE",
    "DOC_HASH",
    "DOC_ID",
    "ENCODED_TEXT",
    "ENCODER_ID",
    "END",
    "EXTRA",
    "METADATA",
    "PAGE_CONTENT",
    "POINT_ID_NAMESPACE",
    "SPARSE",
    "SPARSE_CUT",
    "START",
    "CollectionSchema",
    "PayloadIndexType",
    "VectorSpec",
    "check_collection_name",
    "check_schema",
    "flat_metadata_path",
    "is_plain_key",
    "metadata_path",
    "payload_index_fields",
    "point_id",
    "sparse_modifier",
    "storage_datatype",
]

# Vector names.
DENSE = "dense"
SPARSE = "sparse"
COLBERT = "colbert"

# Payload keys.
PAGE_CONTENT = "page_content"
METADATA = "metadata"
DOC_ID = "doc_id"
CHUNK_INDEX = "chunk_index"
START = "start"
END = "end"
DOC_HASH = "doc_hash"
CHUNK_COUNT = "chunk_count"
ENCODER_ID = "encoder_id"  # identity of the encoder that wrote the point (EncoderFingerprint)
CHUNK_ID = "chunk_id"  # the writer's own id of the chunk (a LlamaIndex node id), if it gave one
EXTRA = "extra"  # what a writer keeps beside the text (a LlamaIndex node's relationships...)
CHUNKING = "chunking"  # how the document was chunked ({"kind": "whole" | "late" | ...})
#: The text the writer encoded, when not ``page_content`` (only then stored; reindex encodes it)
ENCODED_TEXT = "encoded_text"
#: The sparse cut the point's sparse vector was cut with (:meth:`SparseCut.stamp
#: <m3kit.store.sparse_cut.SparseCut.stamp>`); absent on points written before m3kit stamped
#: it (they count as the collection's recorded cut). Only in collections with sparse vectors.
SPARSE_CUT = "sparse_cut"

#: Namespace of the uuid5 point ids (fixed forever: changing it would orphan stored points).
POINT_ID_NAMESPACE = uuid.UUID("6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10")


def point_id(doc_id: str, chunk_index: int) -> str:
    """The deterministic point id of a chunk: uuid5 of ``[doc_id, chunk_index]`` as JSON.

    JSON (not string concatenation) keeps ``("a-1", 0)`` and ``("a", 10)`` apart.
    """
    return str(uuid.uuid5(POINT_ID_NAMESPACE, json.dumps([doc_id, int(chunk_index)])))


@dataclass(frozen=True)
class VectorSpec:
    """One named vector of a collection, as m3kit compares them.

    Attributes:
        kind: ``"dense"``, ``"sparse"`` or ``"multivector"``.
        size: Dimension (``None`` for sparse).
        distance: Lower-case distance name (``None`` for sparse).
        comparator: Multivector comparator (``"MaxSim"``) or ``None``.
        datatype: A storage type that changes the stored values (``"uint8"``: m3kit's unit
            vectors would be stored as zeros); ``None`` for float32 / float16, which m3kit
            stores alike (ColBERT is float16 by design).
        modifier: A sparse scoring modifier (``"idf"``: every sparse score rescaled), or
            ``None``.
    """

    kind: str
    size: int | None = None
    distance: str | None = None
    comparator: str | None = None
    datatype: str | None = None
    modifier: str | None = None

    def describe(self) -> str:
        parts = [self.kind]
        if self.size is not None:
            parts.append(f"size={self.size}")
        if self.distance:
            parts.append(self.distance)
        if self.comparator:
            parts.append(self.comparator)
        if self.datatype:
            parts.append(f"datatype={self.datatype}")
        if self.modifier:
            parts.append(f"modifier={self.modifier}")
        return " ".join(parts)


def storage_datatype(value: object) -> str | None:
    """A vector's stored ``datatype`` as :class:`VectorSpec` keeps it: ``None`` for a float
    type (or none given), else its lower-case name (``"uint8"``)."""
    name = str(getattr(value, "value", value) or "").lower()
    return None if name in ("", "none", "float32", "float16") else name


def sparse_modifier(value: object) -> str | None:
    """A sparse vector's ``modifier`` as :class:`VectorSpec` keeps it: ``None`` for none,
    else its lower-case name (``"idf"``)."""
    name = str(getattr(value, "value", value) or "").lower()
    return None if name in ("", "none") else name


@dataclass(frozen=True)
class CollectionSchema:
    """The vectors an m3kit collection holds.

    Attributes:
        dense_dim: Size of the ``dense`` cosine vector (always present).
        colbert_dim: Size of the ``colbert`` MaxSim multivector, or ``None`` when absent.
        sparse: Whether the ``sparse`` vector is present.
    """

    dense_dim: int
    colbert_dim: int | None = None
    sparse: bool = False

    def __post_init__(self) -> None:
        if self.dense_dim < 1:
            raise ValueError(f"dense_dim must be positive, got {self.dense_dim}")
        if self.colbert_dim is not None and self.colbert_dim < 1:
            raise ValueError(f"colbert_dim must be positive or None, got {self.colbert_dim}")

    def specs(self) -> dict[str, VectorSpec]:
        """The named vectors this schema expects, by name."""
        out = {DENSE: VectorSpec("dense", self.dense_dim, "cosine")}
        if self.sparse:
            out[SPARSE] = VectorSpec("sparse")
        if self.colbert_dim is not None:
            out[COLBERT] = VectorSpec("multivector", self.colbert_dim, "cosine", "MaxSim")
        return out

    def describe(self) -> str:
        return describe_specs(self.specs())

    @classmethod
    def from_specs(cls, specs: dict[str, VectorSpec]) -> CollectionSchema | None:
        """The schema these found vectors form, or ``None`` if they are not an m3kit layout."""
        dense = specs.get(DENSE)
        if dense is None or dense.size is None:
            return None
        colbert = specs.get(COLBERT)
        schema = cls(
            dense_dim=dense.size,
            colbert_dim=colbert.size if colbert is not None else None,
            sparse=SPARSE in specs,
        )
        return schema if schema.specs() == specs else None


def describe_specs(specs: dict[str, VectorSpec]) -> str:
    """``name: description`` of each vector, sorted by name."""
    if not specs:
        return "no vectors"
    return "; ".join(f"{name}: {specs[name].describe()}" for name in sorted(specs))


def check_schema(
    expected: CollectionSchema, found: dict[str, VectorSpec], *, collection: str, where: str
) -> None:
    """Raise :class:`SchemaMismatchError` unless ``found`` is exactly ``expected``'s layout.

    Args:
        expected: What the caller asked for (from the encoder's dims and heads).
        found: The named vectors the existing collection holds.
        collection: Collection name, for the message.
        where: Where it lives (path or URL without credentials), for the message.
    """
    want = expected.specs()
    if want == found:
        return
    problems = []
    for name in sorted(set(want) | set(found)):
        if name not in found:
            problems.append(f"vector {name!r} missing (expected {want[name].describe()})")
        elif name not in want:
            problems.append(f"unexpected vector {name!r} ({found[name].describe()})")
        elif want[name] != found[name]:
            problems.append(
                f"vector {name!r}: expected {want[name].describe()}, found {found[name].describe()}"
            )
    raise SchemaMismatchError(
        f"collection {collection!r} at {where} does not match the encoder: "
        + "; ".join(problems)
        + f". Expected [{describe_specs(want)}], found [{describe_specs(found)}]. "
        "Use another collection name (or location), or an encoder with the same dimensions "
        "and heads; nothing was written."
    )


class PayloadIndexType(str, Enum):
    """Type of a payload index on a metadata key (Qdrant's payload schema types; ``UUID`` is
    refused on metadata keys: :data:`UUID_INDEX_REFUSED`)."""

    KEYWORD = "keyword"
    INTEGER = "integer"
    FLOAT = "float"
    BOOL = "bool"
    TEXT = "text"
    DATETIME = "datetime"
    UUID = "uuid"
    GEO = "geo"


#: A path part Qdrant reads as it is: a name, then array access (``tags[]``, ``a[0]``). Other
#: brackets (``"[draft]"``, ``"attrs[color]"``) are no array access: that part is quoted.
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+(?:\[\d*\])*")


def metadata_path(key: str) -> str:
    """The payload path of metadata ``key``: dots go into nested metadata, and a part with
    other characters (a space: LangChain's ``"Header 1"``) is quoted, as Qdrant reads it.

    >>> metadata_path("lang"), metadata_path("a.b"), metadata_path("Header 1")
    ('metadata.lang', 'metadata.a.b', 'metadata."Header 1"')
    >>> metadata_path("tags[]"), metadata_path("a[0].b"), metadata_path("attrs[color]")
    ('metadata.tags[]', 'metadata.a[0].b', 'metadata."attrs[color]"')

    Raises:
        ValueError: A part is empty or holds a double quote (Qdrant cannot address it).
    """
    parts = []
    for part in key.split("."):
        if not part or '"' in part:
            raise ValueError(
                f"metadata key {key!r} cannot be addressed in Qdrant (an empty part or a "
                "double quote); use a qdrant_client models.Filter with the path you mean"
            )
        parts.append(part if _PLAIN_SEGMENT.fullmatch(part) else f'"{part}"')
    return ".".join([METADATA, *parts])


_FLAT_KEY = re.compile(r"[A-Za-z0-9_\-]+")


#: Characters refused in a collection name: local engines make the name a folder (a separator
#: or ``..`` would put it outside the storage folder), and Windows forbids the others there.
_NAME_FORBIDDEN = frozenset('<>:"/\\|?*\0\x1f')


def check_collection_name(name: object) -> None:
    """Refuse a collection name Qdrant cannot hold, or one that is not a plain folder name.

    >>> check_collection_name("docs-2024_v1")
    >>> check_collection_name("../escaped")
    Traceback (most recent call last):
    ValueError: collection name '../escaped' holds '/'; use letters, digits, '-', '_' or '.'

    Raises:
        ValueError: Empty, not a string, ``.`` or ``..``, or holding ``/ \\ < > : " | ? *``
            or ``\\0`` / ``\\x1f`` (none is safe in a folder name).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("collection must be a non-empty string")
    bad = next((ch for ch in name if ch in _NAME_FORBIDDEN), None)
    if bad is not None:
        raise ValueError(
            f"collection name {name!r} holds {bad!r}; use letters, digits, '-', '_' or '.'"
        )
    if name in (".", ".."):
        raise ValueError(f"collection name {name!r} is not a name; pick another")


def is_plain_key(key: str) -> bool:
    """Whether a metadata ``key`` is one path part as it is (no dots, brackets or spaces).

    >>> is_plain_key("lang"), is_plain_key("file.name"), is_plain_key("")
    (True, False, False)
    """
    return _FLAT_KEY.fullmatch(key) is not None


def flat_metadata_path(key: str) -> str:
    """The payload path of a flat metadata ``key``, taken literally: a key with dots,
    brackets or spaces is quoted whole (LlamaIndex metadata is flat: ``"file.name"`` is one
    key, not ``file`` -> ``name``).

    >>> flat_metadata_path("lang"), flat_metadata_path("file.name"), flat_metadata_path("x[]")
    ('metadata.lang', 'metadata."file.name"', 'metadata."x[]"')

    Raises:
        ValueError: The key is empty or holds a double quote (Qdrant cannot address it).
    """
    if not key or '"' in key:
        raise ValueError(
            f"metadata key {key!r} cannot be addressed in Qdrant (empty, or a double quote); "
            "use a qdrant_client models.Filter with the path you mean"
        )
    return f"{METADATA}.{key}" if is_plain_key(key) else f'{METADATA}."{key}"'


def payload_index_fields(
    indexes: Mapping[str, PayloadIndexType | str] | None,
) -> dict[str, PayloadIndexType]:
    """Payload paths (``metadata.<key>``) and index types of declared metadata indexes.

    >>> fields = payload_index_fields({"lang": "keyword", "year": PayloadIndexType.INTEGER})
    >>> {path: kind.value for path, kind in fields.items()}
    {'metadata.lang': 'keyword', 'metadata.year': 'integer'}

    Args:
        indexes: ``{metadata key: type}``; a key may be a dotted path into nested metadata.

    Raises:
        ValueError: A key is empty or not a string, or a type is not a :class:`PayloadIndexType`
            or is ``uuid`` (:data:`UUID_INDEX_REFUSED`).
    """
    out: dict[str, PayloadIndexType] = {}
    for key, kind in (indexes or {}).items():
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise ValueError(f"payload index key {key!r} must be a non-empty metadata key")
        try:
            parsed = PayloadIndexType(kind)
        except ValueError:
            choices = ", ".join(t.value for t in PayloadIndexType if t is not PayloadIndexType.UUID)
            raise ValueError(
                f"payload index on metadata key {key!r}: type {kind!r} is not one of {choices}"
            ) from None
        if parsed is PayloadIndexType.UUID:
            raise ValueError(UUID_INDEX_REFUSED.format(key=key))
        out[metadata_path(key)] = parsed
    return out


#: Why a ``uuid`` payload index is refused (``{key}``: the metadata key).
UUID_INDEX_REFUSED = (
    "payload index on metadata key {key!r}: type 'uuid' is not supported: a uuid index serves "
    "every spelling of one UUID (upper case, without hyphens, in braces, urn:uuid:) as the "
    "same value, so a filter or a delete by one spelling would also match the others, where "
    "m3kit's filters (and an unindexed key) compare strings exactly; index it as 'keyword' "
    "(which replaces a uuid index a collection already has)"
)
