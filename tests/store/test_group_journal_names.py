"""A group journal is finished only in its own collection.

The journals of a folder were matched by prefix (``.m3kit-groups-docs-``): opening collection
``docs`` also finished the interrupted group replacement of ``docs-v2`` in the same folder,
deleting documents of ``docs`` that replacement did not keep.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from m3kit import M3Encoder
from m3kit.store import M3Index


def test_another_collections_journal_is_left_alone(tiny_encoder: M3Encoder, tmp_path: Path) -> None:
    folder = tmp_path / "db"
    for collection in ("docs", "docs-v2"):
        with M3Index.open(tiny_encoder, folder, collection=collection) as index:
            index.add_texts(
                ["Kept child.", "Other child."],
                [{"parent": "p"}, {"parent": "p"}],
                ["keep", "other"],
            )
    # docs-v2's replacement of parent "p" (keeping "keep") interrupted before its deletes
    journal = folder / f".m3kit-groups-docs-v2-{uuid.uuid4().hex}.json"
    groups = {"format": 1, "field": "metadata.parent", "groups": [["p", ["keep"]]]}
    journal.write_text(json.dumps(groups), encoding="utf-8")
    with M3Index.open(tiny_encoder, folder, collection="docs") as index:
        assert index.count() == 2, "docs lost a document to docs-v2's journal"
    assert journal.exists()
    with M3Index.open(tiny_encoder, folder, collection="docs-v2") as index:
        assert index.count() == 1  # its own journal, finished at its open
    assert not journal.exists()
