"""An encoder's identity holds its backbone's settings: an edited config.json over the same
weights, or a checkpoint's own modelling code, is another encoder; records and reindexes
written before these settings were part of it are kept and completed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.fingerprint import encoder_fingerprint
from m3kit.store import M3Index
from m3kit.store.schema import ENCODER_ID
from tests.reliability.killing import assert_same_points, index_points

from .conftest import LONG, WHOLE, fill


def _edited_config(source: Path, out: Path, **changes: object) -> Path:
    """A copy of ``source`` whose config.json has ``changes``: the same weight files."""
    import json
    import shutil

    shutil.copytree(source, out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config.update(changes)
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


def test_an_edited_config_over_the_same_weights_is_another_encoder(
    enc_a: M3Encoder, tiny_m3_path: Path, backend: str, tmp_path: Path, opened: list[M3Index]
) -> None:
    """Fewer layers read from the same weight files give other vectors: the collection
    written with all the layers refuses that encoder, naming the setting."""
    import json

    layers = json.loads((tiny_m3_path / "config.json").read_text())["num_hidden_layers"]
    assert layers > 1
    cut = _edited_config(tiny_m3_path, tmp_path / "cut", num_hidden_layers=layers - 1)
    enc_cut = M3Encoder.from_pretrained(cut, dtype="fp32")
    text = ["Berlin is the capital of Germany."]
    gap = np.abs(enc_a.encode(text).dense[0] - enc_cut.encode(text).dense[0]).max()
    assert gap > 1e-3  # other vectors (a random tiny layer changes them a little)
    a, c = encoder_fingerprint(enc_a), encoder_fingerprint(enc_cut)
    assert a.weights == c.weights
    assert [d[0] for d in a.differences(c)] == ["architecture"]

    index = M3Index.open(enc_a, tmp_path / "store", collection="c", backend=backend)
    fill(index, enc_a, WHOLE, LONG)
    index.close()
    with pytest.raises(FingerprintMismatchError, match="architecture: stored .*num_hidden_layers"):
        M3Index.open(enc_cut, tmp_path / "store", collection="c", backend=backend)
    # a setting that changes no vector (dropout, the transformers version) is the same encoder
    same = _edited_config(
        tiny_m3_path, tmp_path / "same", hidden_dropout_prob=0.3, transformers_version="9.9"
    )
    enc_same = M3Encoder.from_pretrained(same, dtype="fp32")
    assert encoder_fingerprint(enc_same).same_encoder(a)
    opened.append(M3Index.open(enc_same, tmp_path / "store", collection="c", backend=backend))


def test_a_record_from_before_the_backbone_settings_is_kept_and_completed(
    enc_a: M3Encoder, tmp_path: Path, opened: list[M3Index]
) -> None:
    """A record written before fingerprints held ``architecture`` opens with the same encoder
    (its points keep their encoder id, so nothing is re-encoded) and gains the field at its
    first write (an open to search writes nothing)."""
    index = M3Index.open(enc_a, tmp_path, collection="c")
    fill(index, enc_a, WHOLE, LONG)
    before = index_points(index)
    record = index.store.collection_metadata()
    del record["fingerprint"]["architecture"]
    index.store.set_collection_metadata(record)
    old_id = type(index.fingerprint).from_dict(record["fingerprint"]).identity
    index.close()

    again = M3Index.open(enc_a, tmp_path, collection="c")
    opened.append(again)
    assert again.store.collection_metadata() == record
    assert again.fingerprint.architecture is not None
    assert old_id != again.fingerprint.identity
    assert_same_points(index_points(again), before)
    fill(again, enc_a, WHOLE, LONG)  # the same documents again: unchanged, nothing rewritten
    assert_same_points(index_points(again), before)
    again.add_texts(["a new document"], doc_ids=["new"])
    assert again.store.collection_metadata()["fingerprint"] == again.fingerprint.to_dict()


def test_a_reindex_started_by_an_earlier_m3kit_resumes_where_it_stopped(
    enc_a: M3Encoder, enc_b: M3Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its re-encoded points carry the identity that m3kit gave the target encoder: they are
    done, not re-encoded again."""
    from qdrant_client import models

    index = M3Index.open(enc_a, tmp_path, collection="c", backend="client")
    fill(index, enc_a, WHOLE, LONG)
    index.close()
    re = M3Index.open(enc_b, tmp_path, collection="c", backend="client", reindex=True)
    target = re.fingerprint
    # as an interrupted reindex of an earlier m3kit left it: points stamped with the identity
    # it gave the target, both records without the config.json settings
    client = re.store._backend._client  # type: ignore[attr-defined]
    client.set_payload("c", {ENCODER_ID: target.legacy_identity}, points=models.Filter())
    old = {**encoder_fingerprint(enc_a).to_dict(), "architecture": None}
    pending = {**target.to_dict(), "architecture": None}
    re.store.set_collection_metadata({"format": 1, "fingerprint": old, "reindex_to": pending})
    re.close()
    with caplog.at_level(logging.INFO, logger="m3kit.store.collection_record"):
        M3Index.open(enc_b, tmp_path, collection="c", backend="client", reindex=True).close()
    assert "reindexing 0 document(s)" in caplog.text, caplog.text


def test_a_checkpoints_own_code_is_another_encoder(
    tiny_m3_path: Path, enc_a: M3Encoder, tmp_path: Path
) -> None:
    """The same weights and config.json build the checkpoint's own modelling code with
    ``trust_remote_code=True`` and transformers' class without: other vectors under one
    identity, so a collection of one was searched and extended with the other, silently."""
    from tests.distributed.test_spec_remote_code import _own_code_checkpoint

    path = _own_code_checkpoint(tiny_m3_path, tmp_path / "own")
    own = M3Encoder.from_pretrained(path, dtype="fp32", trust_remote_code=True)
    stock = M3Encoder.from_pretrained(path, dtype="fp32")
    assert encoder_fingerprint(own).identity != encoder_fingerprint(stock).identity
    # every other encoder keeps its identity: no own code, nothing added to its architecture
    assert "own_code" not in (encoder_fingerprint(enc_a).architecture or "")
    assert "own_code" not in (encoder_fingerprint(stock).architecture or "")
    with M3Index.open(own, tmp_path / "db", collection="c") as index:
        index.add_texts(["hello world"], doc_ids=["d"])
    with pytest.raises(FingerprintMismatchError, match="architecture"):
        M3Index.open(stock, tmp_path / "db", collection="c")
