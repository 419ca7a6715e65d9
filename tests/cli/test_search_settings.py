"""``m3kit search``: a calibrated model's fusion is the default; ranking flags win, reach the store.

``calibrated_m3_path`` carries ``tiny_calibration`` (m3 0.1/0.7/0.2 with 7 candidates; dbsf
with 9 without ColBERT) and ``store_queries`` records each ``M3Store.query`` call
(tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m3kit.cli import main
from m3kit.testing import SAMPLE_TEXTS

QUERY = SAMPLE_TEXTS[2]


def _ranking(call: dict[str, Any]) -> tuple[str, list[float] | None, bool, int | None]:
    """What one ``M3Store.query`` call ranked with (weights ``None``: none, rank fusion)."""
    weights = None if call["weights"] is None else list(call["weights"])
    return (str(call["fusion"].value), weights, call["rerank"], call["candidates"])


def _indexed(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Index a few texts with ``model``; the storage arguments of the searches."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(SAMPLE_TEXTS):
        (docs / f"t{i}.txt").write_text(text, encoding="utf-8")
    where = ["--path", str(tmp_path / "db"), "--dtype", "fp32", "-q"]
    assert main(["index", str(docs), "--model", str(model), *where]) == 0
    capsys.readouterr()
    return where  # no --model: the collection's (the calibrated checkpoint)


def _search(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["search", QUERY, "-k", "3", "--json", *argv]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_search_runs_with_the_calibration_unless_flags_say_otherwise(
    tmp_path: Path,
    calibrated_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    store_queries: list[dict[str, Any]],
) -> None:
    where = _indexed(tmp_path, calibrated_m3_path, capsys)
    out = _search(capsys, *where)
    assert out["search"] == {
        "fusion": "m3",
        "weights": [0.1, 0.7, 0.2],
        "rerank": True,
        "candidates": 7,
        "defaults": "calibrated",
        "sparse_cut": None,
    }
    assert _ranking(store_queries[-1]) == ("m3", [0.1, 0.7, 0.2], True, 7)
    assert len(out["hits"]) == 3 and out["hits"][0]["text"] == QUERY
    # flags win, one at a time (the rest stay calibrated)
    out = _search(capsys, *where, "--fusion", "rrf", "--candidates", "11")
    assert out["search"] == {  # rrf uses no weights: none reported
        "fusion": "rrf",
        "rerank": True,
        "candidates": 11,
        "defaults": "calibrated",
        "sparse_cut": None,
    }
    assert _ranking(store_queries[-1]) == ("rrf", None, True, 11)
    out = _search(capsys, *where, "--weights", "1", "0", "0.5")
    assert out["search"]["weights"] == [1.0, 0.0, 0.5]
    assert _ranking(store_queries[-1]) == ("m3", [1.0, 0.0, 0.5], True, 7)
    # --no-rerank: the calibration measured without ColBERT
    out = _search(capsys, *where, "--no-rerank")
    assert out["search"] == {
        "fusion": "dbsf",
        "rerank": False,
        "candidates": 9,
        "defaults": "calibrated",
        "sparse_cut": None,
    }
    assert _ranking(store_queries[-1]) == ("dbsf", None, False, 9)
    # the text output searches the same way
    assert main(["search", QUERY, "-k", "1", *where]) == 0
    assert _ranking(store_queries[-1]) == ("m3", [0.1, 0.7, 0.2], True, 7)
    assert " 1. " in capsys.readouterr().out


def test_search_without_calibration_keeps_rrf(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    store_queries: list[dict[str, Any]],
) -> None:
    where = _indexed(tmp_path, tiny_m3_path, capsys)
    out = _search(capsys, *where)
    assert out["search"] == {
        "fusion": "rrf",
        "rerank": True,
        "candidates": None,
        "defaults": "built-in",
        "sparse_cut": None,
    }
    assert _ranking(store_queries[-1]) == ("rrf", None, True, None)
    out = _search(capsys, *where, "--fusion", "m3", "--rerank", "--candidates", "60")
    assert out["search"]["weights"] == [0.4, 0.2, 0.4]
    assert _ranking(store_queries[-1]) == ("m3", [0.4, 0.2, 0.4], True, 60)


def test_json_reports_the_candidates_the_search_fetched(
    tmp_path: Path,
    calibrated_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    store_queries: list[dict[str, Any]],
) -> None:
    """A budget below ``-k`` is raised to ``k`` by the store (each retriever fetches at least
    the hits asked for), but ``--json`` said ``"candidates": 2`` (or the calibration's 7 with
    ``-k 10``) for a search that fetched 5 (10) per retriever."""
    from m3kit.store.query import QueryOptions

    where = _indexed(tmp_path, calibrated_m3_path, capsys)
    for flags, fetched in (
        (["-k", "5", "--candidates", "2"], 5),
        (["-k", "10"], 10),  # the calibrated budget, 7
        (["-k", "2", "--candidates", "60"], 60),
    ):
        out = _search(capsys, *where, *flags)
        call = store_queries[-1]
        assert QueryOptions().per_retriever(call["k"], call["candidates"]) == fetched
        assert out["search"]["candidates"] == fetched, (flags, out["search"])


@pytest.mark.parametrize(
    ("model", "flags", "fusion"),
    [
        ("calibrated", ["--fusion", "rrf"], "'rrf' (given)"),
        ("calibrated", ["--no-rerank"], "'dbsf' (the index's default, calibrated)"),
        ("tiny", [], "'rrf' (the index's default, built-in)"),
    ],
)
def test_weights_without_the_m3_fusion_are_an_error(
    model: str,
    flags: list[str],
    fusion: str,
    tmp_path: Path,
    calibrated_m3_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    store_queries: list[dict[str, Any]],
) -> None:
    # --weights set the m3 sum: with rrf or dbsf they would be silently unused
    path = calibrated_m3_path if model == "calibrated" else tiny_m3_path
    where = _indexed(tmp_path, path, capsys)
    argv = ["search", QUERY, "--weights", "1", "0", "0", *flags, *where]
    assert main([*argv, "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and not store_queries
    assert captured.err.startswith("m3kit search: error: weights [1.0, 0.0, 0.0] set the m3")
    assert f"fuses with {fusion}" in captured.err and "--fusion m3" in captured.err
    assert main([*argv, "--fusion", "m3"]) == 0  # the fix the message names
    assert _ranking(store_queries[-1])[:2] == ("m3", [1.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--weights", "0", "0", "0"], "not all 0"),
        (["--weights", "1", "-1", "0"], "finite, >= 0"),
        (["--candidates", "0"], "candidates must be an int >= 1"),
    ],
)
def test_bad_ranking_flags_fail_before_loading(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no model or collection exists: the flags are refused first
    argv = ["search", "x", *flags, "--path", str(tmp_path / "none"), "--model", "missing"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3kit search: error: ") and message in err, err


def test_weights_take_three_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["search", "x", "--weights", "0.5", "0.5"])
    assert exc.value.code == 2
    assert "--weights: expected 3 arguments" in capsys.readouterr().err
