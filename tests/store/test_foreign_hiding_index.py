"""An ``integer`` / ``datetime`` index another program made, over values it leaves out of its
filters, is named in a warning when the collection opens.

Before, a float stored under a key another program then indexed as ``integer`` (qdrant-client's
``create_payload_index`` on a server; the engine's own call here) was silently missed by every
filter on that key; m3kit checked only its own declarations and writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.store import M3Index
from m3kit.store.schema import PayloadIndexType

LOGGER = "m3kit.store.foreign_indexes"


def _reopened(
    encoder: M3Encoder,
    where: Path,
    metadatas: list[dict[str, Any]],
    kind: PayloadIndexType,
    caplog: pytest.LogCaptureFixture,
) -> str:
    """The warnings of opening a collection holding ``metadatas`` after another program
    indexed ``metadata.price`` as ``kind``."""
    with M3Index.open(encoder, where, collection="c") as index:
        index.add_texts([f"text {i}" for i in range(len(metadatas))], metadatas)
        index.store._backend.create_payload_index("metadata.price", kind)  # "another program"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        M3Index.open(encoder, where, collection="c").close()
    return caplog.text


def test_a_float_under_a_foreign_integer_index_is_named(
    tiny_encoder: M3Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metas: list[dict[str, Any]] = [{"price": 2}, {"price": 1.5}, {"price": "n/a"}]
    text = _reopened(tiny_encoder, tmp_path / "db", metas, PayloadIndexType.INTEGER, caplog)
    assert "'price' is 1.5" in text and "a non-integer number" in text, text
    assert "index the key as 'float' in a new collection" in text


def test_a_number_under_a_foreign_datetime_index_is_named(
    tiny_encoder: M3Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metas: list[dict[str, Any]] = [{"price": "2024-01-01T00:00:00Z"}, {"price": 5}]
    text = _reopened(tiny_encoder, tmp_path / "db", metas, PayloadIndexType.DATETIME, caplog)
    assert "'price' is 5" in text and "a number" in text, text


@pytest.mark.parametrize(
    "metas",
    [[{"price": 2}, {"price": 3}], [{"price": 2}, {"price": "n/a"}, {"other": 1}]],
    ids=["integers", "a string"],
)
def test_values_the_index_serves_or_no_number_filter_matches_give_no_warning(
    tiny_encoder: M3Encoder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    metas: list[dict[str, Any]],
) -> None:
    assert not _reopened(tiny_encoder, tmp_path / "db", metas, PayloadIndexType.INTEGER, caplog)


def test_the_values_read_at_open_are_bounded(
    tiny_encoder: M3Encoder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Strings under the key make the counts differ, and every point holding the key was read
    at each open (a review: 0.5 s for 40,000); at most ``HIDDEN_SCAN_POINTS`` are."""
    from m3kit.store import foreign_indexes

    monkeypatch.setattr(foreign_indexes, "HIDDEN_SCAN_POINTS", 0)
    metas: list[dict[str, Any]] = [{"price": 2}, {"price": 1.5}]
    assert not _reopened(tiny_encoder, tmp_path / "db", metas, PayloadIndexType.INTEGER, caplog)
