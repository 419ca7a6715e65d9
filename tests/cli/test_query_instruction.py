"""``m3kit index`` / ``m3kit search --query-instruction``, and the instruction a collection records.

A collection indexed with a query instruction (``M3Encoder.from_pretrained(...,
query_instruction="query: ")``) could not be searched or added to from the command line: the
CLI loaded the model with the checkpoint's instruction (none), the collection refused that
other encoder, and no flag could give the recorded one. The CLI now takes
``--query-instruction``, and without ``--model`` uses the instruction the collection records
(as it does its model and ``max_length``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.store import M3Index
from m3kit.testing import SAMPLE_TEXTS

PREFIX = "query: "


def _search(capsys: pytest.CaptureFixture[str], store: Path, *argv: str) -> dict[str, object]:
    capsys.readouterr()
    code = main(["search", SAMPLE_TEXTS[2], "--path", str(store), "--json", "-q", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    result: dict[str, object] = json.loads(out.out)
    return result


@pytest.fixture
def python_store(tmp_path: Path, tiny_m3_path: Path) -> Path:
    """A collection indexed from Python with a query instruction."""
    enc = M3Encoder.from_pretrained(tiny_m3_path, query_instruction=PREFIX)
    with M3Index.open(enc, str(tmp_path / "store")) as index:
        index.add_texts(SAMPLE_TEXTS)
    return tmp_path / "store"


def test_search_uses_the_recorded_instruction(
    python_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hits = _search(capsys, python_store)["hits"]
    assert isinstance(hits, list) and hits


def test_search_with_model_takes_the_flag(
    python_store: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--model", str(tiny_m3_path)]
    assert _search(capsys, python_store, *model, "--query-instruction", PREFIX)["hits"]
    # the checkpoint's own (none) is another encoder: refused, naming the instruction
    capsys.readouterr()
    assert main(["search", "x", "--path", str(python_store), "-q", *model]) == 1
    assert "query_instruction" in capsys.readouterr().err


def test_index_adds_with_the_recorded_instruction(
    python_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "more.txt").write_text("Rivers run to the sea.", encoding="utf-8")
    capsys.readouterr()
    code = main(["index", str(tmp_path / "more.txt"), "--path", str(python_store), "-q"])
    assert code == 0, capsys.readouterr().err


def test_index_flag_is_recorded_and_changes_the_query(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text(SAMPLE_TEXTS[0], encoding="utf-8")
    store = tmp_path / "s"
    argv = ["index", str(tmp_path / "a.txt"), "--path", str(store), "-q"]
    assert main([*argv, "--model", str(tiny_m3_path), "--query-instruction", PREFIX]) == 0
    with M3Index.open(
        M3Encoder.from_pretrained(tiny_m3_path, query_instruction=PREFIX), str(store)
    ) as index:
        assert index.fingerprint.query_instruction == PREFIX
        expected = index.search(SAMPLE_TEXTS[2], k=1)[0].score
    got = _search(capsys, store)["hits"]
    assert isinstance(got, list) and got[0]["score"] == pytest.approx(expected, abs=1e-5)
    # the query was encoded with the prefix: the bare query scores otherwise
    bare = M3Encoder.from_pretrained(tiny_m3_path)
    q_bare = bare.encode_queries([SAMPLE_TEXTS[2]]).dense[0]
    q_pref = bare.encode([PREFIX + SAMPLE_TEXTS[2]]).dense[0]
    assert float(abs(q_bare - q_pref).max()) > 1e-4


def test_a_collection_indexed_with_mean_pooling_is_searched_and_added_to(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same dead end for the dense pooling: a collection indexed from Python with
    ``pooling="mean"`` was refused by every CLI command ("pooling: stored 'mean' vs new
    'cls'") and no flag could give it. The CLI now uses the recorded pooling, and
    ``--pooling`` gives it with ``--model``."""
    enc = M3Encoder.from_pretrained(tiny_m3_path, pooling="mean")
    with M3Index.open(enc, str(tmp_path / "store")) as index:
        index.add_texts(SAMPLE_TEXTS)
        expected = index.search(SAMPLE_TEXTS[2], k=1)[0].score
    store = tmp_path / "store"
    got = _search(capsys, store)["hits"]
    assert isinstance(got, list) and got[0]["score"] == pytest.approx(expected, abs=1e-5)
    model = ["--model", str(tiny_m3_path)]
    assert _search(capsys, store, *model, "--pooling", "mean")["hits"]
    capsys.readouterr()
    assert main(["search", "x", "--path", str(store), "-q", *model]) == 1
    assert "pooling: stored 'mean'" in capsys.readouterr().err
    (tmp_path / "more.txt").write_text("Rivers run to the sea.", encoding="utf-8")
    code = main(["index", str(tmp_path / "more.txt"), "--path", str(store), "-q"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--query-instruction", "--pooling"])
def test_the_help_says_the_recorded_setting_is_the_default_without_model_only(flag: str) -> None:
    """With --model the checkpoint's own setting is the default (the test above: the recorded
    instruction is not used), so the help must not promise the collection's."""
    from m3kit.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "search" in a.choices)
    for command in ("index", "search"):
        action = next(a for a in subparsers.choices[command]._actions if flag in a.option_strings)
        assert action.help is not None
        assert "without --model" in action.help, action.help


def test_a_collection_indexed_without_the_checkpoints_own_instruction_is_searched_so(
    tmp_path: Path, instruction_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint declaring an instruction, indexed with ``query_instruction=""`` (none): the
    record names none, which the CLI passed as ``None`` ("the checkpoint's own"), so a plain
    ``m3kit search`` loaded another encoder and was refused, advising a reindex."""
    enc = M3Encoder.from_pretrained(instruction_m3_path, query_instruction="")
    assert enc.query_instruction is None
    with M3Index.open(enc, str(tmp_path / "store")) as index:
        index.add_texts(SAMPLE_TEXTS)
    assert _search(capsys, tmp_path / "store")["hits"]
