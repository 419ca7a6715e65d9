"""``m3kit index`` / ``m3kit search --sparse-top-k K --sparse-min-weight W``.

The encoder's sparse cut (``sparse_top_k`` / ``sparse_min_weight``) could not be given from the
command line: every chunk and query kept every weight. The flags now reach ``M3Index.open``
(``tests/store/test_sparse_cut.py``): the cut is recorded with the collection, later commands
without the flags use it, and another cut than the stored chunks' is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.store import M3Index
from m3kit.store.sparse_cut import RECORD_KEY, SparseCut
from m3kit.testing import SAMPLE_TEXTS


def _index(tmp_path: Path, model: Path, *flags: str) -> tuple[int, Path]:
    docs = tmp_path / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(SAMPLE_TEXTS[:4]):
        (docs / f"{i}.txt").write_text(text, encoding="utf-8")
    store = tmp_path / "store"
    argv = ["index", str(docs), "--path", str(store), "--model", str(model), "-q", *flags]
    return main(argv), store


def test_index_flags_cut_and_are_recorded(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, store = _index(tmp_path, tiny_m3_path, "--sparse-top-k", "2")
    assert code == 0, capsys.readouterr().err
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store)) as index:
        assert index.store.collection_metadata()[RECORD_KEY] == {"top_k": 2, "min_weight": 0.0}
        assert index.sparse_cut == SparseCut(2)
        expected = index.search(SAMPLE_TEXTS[1], k=1, fusion="m3")[0].score
    capsys.readouterr()
    # search without the flag: the recorded cut (the same scores as the cut index's search)
    argv = ["search", SAMPLE_TEXTS[1], "--path", str(store), "-q", "--json", "--fusion", "m3"]
    assert main(argv) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["score"] == pytest.approx(expected, abs=1e-5)
    assert main([*argv, "--sparse-top-k", "2"]) == 0
    capsys.readouterr()
    # another cut than the stored chunks': refused, naming both
    assert main([*argv, "--sparse-min-weight", "0.1"]) == 1
    err = capsys.readouterr().err
    assert "stored with sparse_top_k=2" in err and "sparse_min_weight=0.1" in err


def test_the_cut_changes_the_stored_vectors(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The setting matters: the cut index scores the same query otherwise than an uncut one."""
    code, cut = _index(tmp_path / "a", tiny_m3_path, "--sparse-min-weight", "0.2")
    assert code == 0, capsys.readouterr().err
    code, full = _index(tmp_path / "b", tiny_m3_path)
    assert code == 0, capsys.readouterr().err
    scores = []
    for store in (cut, full):
        with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store)) as index:
            hits = index.search(SAMPLE_TEXTS[1], k=4, fusion="m3", weights=[0, 1, 0])
            scores.append(sorted(h.score for h in hits))
    assert scores[0] != pytest.approx(scores[1], abs=1e-5)


def test_index_reindex_changes_the_cut(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``m3kit index --reindex --sparse-top-k 2`` re-encodes a collection stored without a cut
    with it (before: refused, "index into a new collection")."""
    code, store = _index(tmp_path / "a", tiny_m3_path)
    assert code == 0, capsys.readouterr().err
    code, fresh = _index(tmp_path / "b", tiny_m3_path, "--sparse-top-k", "2")
    assert code == 0, capsys.readouterr().err
    # another cut without --reindex: refused, saying how to change it
    code, _ = _index(tmp_path / "a", tiny_m3_path, "--sparse-top-k", "2")
    assert code == 1 and "--reindex" in capsys.readouterr().err
    argv = ["index", "--reindex", "--path", str(store), "--model", str(tiny_m3_path), "-q"]
    assert main([*argv, "--sparse-top-k", "2"]) == 0, capsys.readouterr().err
    scores = []
    for where in (store, fresh):
        with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(where)) as index:
            assert index.sparse_cut == SparseCut(2)
            hits = index.search(SAMPLE_TEXTS[1], k=4, fusion="m3", weights=[0, 1, 0])
            scores.append(sorted(h.score for h in hits))
    assert scores[0] == pytest.approx(scores[1], abs=1e-5)


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--sparse-top-k", "2"], {"top_k": 2, "min_weight": 0.0}),
        (["--sparse-min-weight", "0.2"], {"top_k": None, "min_weight": 0.2}),
        ([], None),  # no cut: every weight kept
    ],
)
def test_search_json_shows_the_collections_sparse_cut(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    shown: dict[str, Any] | None,
) -> None:
    """``--json``'s ``"search"`` object did not say which cut the sparse scores came from."""
    code, store = _index(tmp_path, tiny_m3_path, *flags)
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    # the search gives no cut flag: the collection's recorded cut is the one reported
    assert main(["search", SAMPLE_TEXTS[1], "--path", str(store), "-q", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["search"]["sparse_cut"] == shown


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--sparse-top-k", "0", "0"),
        ("--sparse-min-weight", "-1", "-1 must be a number >= 0"),
        ("--sparse-min-weight", "x", "'x' is not a number"),
        # NaN / inf would drop every weight, -inf is no threshold: the core's message
        ("--sparse-min-weight", "nan", "sparse_min_weight is NaN"),
        ("--sparse-min-weight", "inf", "sparse_min_weight is inf"),
        ("--sparse-min-weight", "-inf", "sparse_min_weight is -inf"),
    ],
)
def test_bad_flag_values_are_refused(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _index(tmp_path, tiny_m3_path, f"{flag}={value}")  # (-inf as a value, not an option)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and message in err  # the value refused, not the flag


def _beir(folder: Path) -> Path:
    """A small BEIR folder of validation data (each query the start of its passage)."""
    folder.mkdir(parents=True)
    texts = SAMPLE_TEXTS[:6]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t[:20]}) + "\n" for i, t in enumerate(texts))
    )
    (folder / "qrels.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(len(texts))))
    return folder


def test_calibrate_flags_cut_and_are_recorded(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``m3kit calibrate`` measured in an uncut collection whatever the collections searched
    had; ``--sparse-top-k`` / ``--sparse-min-weight`` now cut it, and the cut is recorded."""
    import shutil

    from m3kit.store import FusionCalibration

    model = Path(shutil.copytree(tiny_m3_path, tmp_path / "model"))
    data = _beir(tmp_path / "beir")
    argv = ["calibrate", "--model", str(model), "--data", str(data), "--grid-step", "0.5"]
    assert main([*argv, "--quiet", "--sparse-top-k", "2", "--sparse-min-weight", "0.1"]) == 0
    assert "with sparse_top_k=2, sparse_min_weight=0.1; saved to" in capsys.readouterr().out
    saved = FusionCalibration.load(model)
    assert saved is not None and saved.sparse_cut == SparseCut(2, 0.1)
    # a collection indexed with another cut still uses it, with a warning naming both cuts
    encoder = M3Encoder.from_pretrained(model)
    with (
        caplog.at_level("WARNING", logger="m3kit.store.index"),
        M3Index.open(encoder, ":memory:", sparse_top_k=2) as index,
    ):
        assert index.search_source == "calibrated"
    assert "measured with sparse_top_k=2, sparse_min_weight=0.1" in caplog.text
    # without the flags: calibrated uncut, as before
    assert main([*argv, "--quiet"]) == 0
    saved = FusionCalibration.load(model)
    assert saved is not None and saved.sparse_cut == SparseCut()
