"""What the vector store tests share: four documents (text, id, topic, year) and a filter."""

from __future__ import annotations

from typing import Any

from llama_index.core import Document
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has the atomic number 8.",
    "The Amazon river flows through Brazil and Peru.",
    "Photosynthesis turns light into chemical energy.",
]
IDS = ["berlin", "oxygen", "amazon", "photo"]
TOPICS = ["geo", "chem", "geo", "bio"]
YEARS = [2020, 2021, 2022, 2023]


def _docs() -> list[Document]:
    return [
        Document(
            text=t,
            id_=i,
            metadata={"topic": p, "year": y},
            excluded_embed_metadata_keys=["topic", "year"],  # embed the text alone
        )
        for t, i, p, y in zip(TEXTS, IDS, TOPICS, YEARS, strict=True)
    ]


def _eq(key: str, value: Any) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value)])
