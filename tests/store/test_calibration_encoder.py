"""A checkpoint's fusion calibration is used by the encoder it was measured with only: one of
other weights, the same weights loaded with other settings, or an edited config.json gets the
built-in settings, with a warning; a file from before the settings were recorded matches on
the weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.checkpoint import SEARCH_FILE
from m3kit.store import FusionCalibration, M3Index, SearchSettings
from tests.store.calibration_data import CORPUS, QRELS, QUERIES


def test_a_calibration_of_other_weights_is_ignored_loudly(
    encoder: M3Encoder, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    FusionCalibration(
        all_heads=SearchSettings(fusion="m3", weights=(0.1, 0.1, 0.8), rerank=True),
        dense_sparse=None,
        weights_digest="files-sha256:" + "0" * 64,
    ).save(model_dir)
    with caplog.at_level(logging.WARNING), M3Index.open(encoder, ":memory:") as index:
        assert index.calibration is None
        assert index.search_settings() == SearchSettings()
    assert "calibrated on other weights" in caplog.text and SEARCH_FILE in caplog.text
    (model_dir / SEARCH_FILE).write_text(json.dumps({"format_version": 99}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"m3kit_search\.json is not a search calibration"):
        M3Index.open(encoder, ":memory:")


def _calibration_of(encoder: M3Encoder) -> FusionCalibration:
    """A calibration unlike every default, recorded for ``encoder`` as calibrate_fusion does."""
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.store.fusion_calibration import calibrated_encoder_identity

    fingerprint = encoder_fingerprint(encoder)
    return FusionCalibration(
        all_heads=SearchSettings(fusion="m3", weights=(0.1, 0.7, 0.2), rerank=True),
        dense_sparse=SearchSettings(fusion="dbsf", rerank=False),
        weights_digest=fingerprint.weights,
        encoder_identity=calibrated_encoder_identity(fingerprint),
    )


def test_a_calibration_records_the_encoder_settings_it_was_measured_with(
    encoder: M3Encoder, model_dir: Path
) -> None:
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.store.calibration import calibrate_checkpoint
    from m3kit.store.fusion_calibration import CALIBRATED_ENCODER_FIELDS

    fingerprint = encoder_fingerprint(encoder)
    cal = calibrate_checkpoint(model_dir, CORPUS, QUERIES, QRELS, grid_step=0.5)
    assert cal.weights_digest == fingerprint.weights
    assert cal.encoder_identity is not None
    assert set(cal.encoder_identity) == set(CALIBRATED_ENCODER_FIELDS)
    assert "weights" not in cal.encoder_identity
    assert cal.encoder_identity["pooling"] == fingerprint.pooling
    assert cal.encoder_identity["max_length"] == fingerprint.max_length
    assert cal.encoder_identity["query_instruction"] == fingerprint.query_instruction
    assert cal.encoder_identity["heads"] == list(fingerprint.heads)
    assert cal.encoder_differences(fingerprint) == []
    saved = json.loads((model_dir / SEARCH_FILE).read_text(encoding="utf-8"))
    assert saved["encoder_identity"] == cal.encoder_identity
    assert FusionCalibration.load(model_dir) == cal
    # the checkpoint as it loads by default is the encoder it was measured with
    with M3Index.open(M3Encoder.from_pretrained(model_dir), ":memory:") as index:
        assert (index.search_source, index.calibration) == ("calibrated", cal)


def test_a_calibration_on_cut_texts_is_for_the_model_loaded_at_that_length(
    encoder: M3Encoder, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``calibrate_checkpoint(max_length=6)`` (``m3kit calibrate --max-length``) recorded the
    model's own length only: the model loaded at the length it was measured at (an index
    built with ``--max-length 6``) ignored it, with a warning saying it was calibrated at the
    model's length, and no way to calibrate for that length existed."""
    from m3kit.store.calibration import calibrate_checkpoint

    cal = calibrate_checkpoint(model_dir, CORPUS, QUERIES, QRELS, grid_step=0.5, max_length=6)
    assert cal.measured_max_length == 6
    assert FusionCalibration.load(model_dir) == cal
    for length in (None, 6):  # as it loads by default, and at the length measured
        loaded = M3Encoder.from_pretrained(model_dir, dtype="fp32", max_length=length)
        with M3Index.open(loaded, ":memory:") as index:
            assert (index.search_source, index.calibration) == ("calibrated", cal)
    other = M3Encoder.from_pretrained(model_dir, dtype="fp32", max_length=8)
    with caplog.at_level(logging.WARNING), M3Index.open(other, ":memory:") as index:
        assert index.calibration is None
    assert "(measured on texts cut at 6)" in caplog.text


def _other_pooling(encoder: M3Encoder) -> dict[str, object]:
    from m3kit.fingerprint import encoder_fingerprint

    return {"pooling": "cls" if encoder_fingerprint(encoder).pooling == "mean" else "mean"}


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("pooling", None),  # the other pooling than the checkpoint's
        ("query_instruction", {"query_instruction": "Represent this query: "}),
        ("max_length", {"max_length": 64}),
    ],
)
def test_the_same_weights_loaded_otherwise_are_not_calibrated(
    encoder: M3Encoder,
    model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    field: str,
    options: dict[str, object] | None,
) -> None:
    cal = _calibration_of(encoder)
    cal.save(model_dir)
    with caplog.at_level(logging.WARNING), M3Index.open(encoder, ":memory:") as index:
        assert (index.search_source, index.calibration) == ("calibrated", cal)
        assert index.search_settings() == cal.all_heads
    assert not caplog.records
    other = M3Encoder.from_pretrained(
        model_dir, dtype="fp32", **(options or _other_pooling(encoder))
    )
    with caplog.at_level(logging.WARNING), M3Index.open(other, ":memory:") as index:
        assert index.calibration is None
        assert index.search_source == "built-in"  # what it has without a calibration
        assert index.search_settings() == SearchSettings()
        assert index.search_settings(rerank=False) == SearchSettings(rerank=False)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert SEARCH_FILE in message and "other settings" in message
    assert f"{field} " in message
    assert [name for name, _, _ in cal.encoder_differences(index.fingerprint)] == [field]


def test_an_edited_config_json_is_not_calibrated(
    encoder: M3Encoder, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _calibration_of(encoder).save(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config["layer_norm_eps"] = 1e-5 if config.get("layer_norm_eps") != 1e-5 else 1e-6
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    edited = M3Encoder.from_pretrained(model_dir, dtype="fp32")
    with caplog.at_level(logging.WARNING), M3Index.open(edited, ":memory:") as index:
        assert index.fingerprint.weights == _calibration_of(encoder).weights_digest
        assert (index.search_source, index.calibration) == ("built-in", None)
    assert "other settings" in caplog.text
    assert "architecture layer_norm_eps" in caplog.text  # names the key that differs


def test_a_calibration_without_encoder_settings_matches_on_the_weights(
    encoder: M3Encoder, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file written before the encoder's settings were recorded keeps working as it did."""
    cal = _calibration_of(encoder)
    cal.save(model_dir)
    data = json.loads((model_dir / SEARCH_FILE).read_text(encoding="utf-8"))
    del data["encoder_identity"]  # as an older m3kit wrote it
    (model_dir / SEARCH_FILE).write_text(json.dumps(data), encoding="utf-8")
    legacy = FusionCalibration.load(model_dir)
    assert legacy is not None and legacy.encoder_identity is None
    other = M3Encoder.from_pretrained(model_dir, dtype="fp32", **_other_pooling(encoder))
    with caplog.at_level(logging.WARNING), M3Index.open(other, ":memory:") as index:
        assert (index.search_source, index.calibration) == ("calibrated", legacy)
        assert index.search_settings() == cal.all_heads
    assert not caplog.records


def test_an_empty_query_instruction_is_the_encoder_without_one(
    encoder: M3Encoder, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``query_instruction=""`` prefixes nothing, yet it was another encoder than ``None``:
    the checkpoint's calibration was ignored (RRF served instead, with a warning) and a
    collection written without an instruction refused it. A calibration or collection
    recorded with ``""`` by an m3kit before is the same encoder too."""
    import dataclasses

    from m3kit.fingerprint import encoder_fingerprint

    cal = _calibration_of(encoder)
    cal.save(model_dir)
    empty = M3Encoder.from_pretrained(model_dir, dtype="fp32", query_instruction="")
    assert empty.query_instruction is None
    with caplog.at_level(logging.WARNING), M3Index.open(empty, ":memory:") as index:
        assert (index.search_source, index.calibration) == ("calibrated", cal)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    fingerprint = encoder_fingerprint(empty)
    old = dataclasses.replace(fingerprint, query_instruction="")  # as recorded before
    assert fingerprint.differences(old) == [] and fingerprint.made(old.identity)
    assert (
        dataclasses.replace(
            cal, encoder_identity={**(cal.encoder_identity or {}), "query_instruction": ""}
        ).encoder_differences(fingerprint)
        == []
    )


def test_search_overrides_change_only_what_they_name_of_a_calibrated_default(
    encoder: M3Encoder, model_dir: Path
) -> None:
    """``M3Index.open(..., search=SearchSettings(candidates=200))``, meant to raise the candidate
    budget, replaced the checkpoint's calibrated fusion with RRF (``SearchSettings``' own
    default). ``SearchOverrides`` changes only the settings it names; ``SearchSettings`` still
    replaces the whole default, as documented."""
    from m3kit.store import SearchOverrides

    cal = _calibration_of(encoder)
    cal.save(model_dir)
    loaded = M3Encoder.from_pretrained(model_dir)
    with M3Index.open(loaded, ":memory:", search=SearchOverrides(candidates=7)) as index:
        assert index.search_source == "calibrated"
        calibrated = cal.settings_for(index.store.heads)
        assert index.search_settings() == calibrated.merged(candidates=7)
        assert index.search_settings(rerank=False) == cal.settings_for(
            index.store.heads, False
        ).merged(candidates=7)
        assert index.search_settings(candidates=3).candidates == 3  # a call still wins
        index.add_texts(list(CORPUS.values()))
        assert index.search(next(iter(QUERIES.values())), k=2)
    with M3Index.open(loaded, ":memory:", search=SearchSettings(candidates=7)) as index:
        assert index.search_source == "given"
        assert index.search_settings() == SearchSettings(candidates=7)  # the whole default
    # rerank off picks the calibrated dense + sparse setting, as a call with rerank=False does
    with M3Index.open(loaded, ":memory:", search=SearchOverrides(rerank=False)) as index:
        assert index.search_settings() == cal.settings_for(index.store.heads, False)
    with pytest.raises(ValueError, match="fuses with 'dbsf'"):
        M3Index.open(loaded, ":memory:", search=SearchOverrides(rerank=False, weights=(1, 1, 0)))
    # weights alone fit the all-heads default (m3) but not the dense + sparse one (dbsf),
    # which every search without rerank takes: refused at open, not at the first such search
    assert cal.all_heads is not None and cal.all_heads.fusion.value == "m3"
    with pytest.raises(ValueError, match="fuses with 'dbsf'"):
        M3Index.open(loaded, ":memory:", search=SearchOverrides(weights=(1, 1, 0)))
    with pytest.raises(ValueError, match="fusion must be one of"):
        SearchOverrides(fusion="max")
    with pytest.raises(TypeError, match="SearchSettings or SearchOverrides"):
        M3Index.open(loaded, ":memory:", search={"candidates": 7})  # type: ignore[arg-type]
