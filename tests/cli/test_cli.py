"""The ``m3kit`` command: index a folder, search it, re-index (no duplicates), edits replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from m3kit.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DOCS = REPO / "examples" / "sample_docs"


def _args(store: Path, model: Path, *rest: str) -> list[str]:
    return [*rest, "--path", str(store), "--model", str(model), "--dtype", "fp32", "--quiet"]


def _search(
    capsys: pytest.CaptureFixture[str], store: Path, model: Path, query: str, *extra: str
) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(_args(store, model, "search", query, "--collection", "docs", "--json", *extra)) == 0
    hits: list[dict[str, object]] = json.loads(capsys.readouterr().out)["hits"]
    return hits


def _index(capsys: pytest.CaptureFixture[str], store: Path, model: Path, *paths: Path) -> str:
    capsys.readouterr()
    code = main(_args(store, model, "index", *map(str, paths), "--collection", "docs"))
    assert code == 0
    return capsys.readouterr().out


def test_index_search_reindex_edit(
    docs: Path, tmp_path: Path, minilm_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    out = _index(capsys, store, minilm_path, docs)
    assert "indexed 6 document(s)" in out and "6 chunk(s) stored (+6)" in out

    hits = _search(capsys, store, minilm_path, "How do bees tell each other where flowers are?")
    assert Path(str(hits[0]["doc_id"])).name == "honeybees.txt"
    assert hits[0]["metadata"]["file_name"] == "honeybees.txt"  # type: ignore[index]
    hits = _search(capsys, store, minilm_path, "Which dynasty built most of the wall?", "-k", "2")
    assert len(hits) == 2 and Path(str(hits[0]["doc_id"])).name == "great_wall.md"

    # the same files again: nothing added
    assert "6 chunk(s) stored (+0)" in _index(capsys, store, minilm_path, docs)

    # an edited file replaces its old version
    bees = docs / "honeybees.txt"
    bees.write_text("Saturn is a gas giant with bright rings of ice.", encoding="utf-8")
    assert "6 chunk(s) stored (+0)" in _index(capsys, store, minilm_path, docs)
    hits = _search(capsys, store, minilm_path, "planet with rings made of ice", "-k", "6")
    texts = [h["text"] for h in hits]
    assert hits[0]["doc_id"] == str(bees.resolve())
    assert hits[0]["text"] == "Saturn is a gas giant with bright rings of ice."
    assert not any("waggle" in str(t) for t in texts), "the old version is gone"

    # plain-text output and a metadata filter
    capsys.readouterr()
    query = ["search", "volcano", "--collection", "docs", "--filter", "file_name=volcanoes.md"]
    assert main(_args(store, minilm_path, *query)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(" 1. ") and lines[0].endswith("volcanoes.md")
    assert not any(line.startswith(" 2. ") for line in lines)
    # the same key twice matches either value (it used to keep the last one only)
    either = ["--filter", "file_name=volcanoes.md", "--filter", "file_name=honeybees.txt"]
    hits = _search(capsys, store, minilm_path, "volcano", "-k", "6", *either)
    assert {str(h["doc_id"]).rsplit("/", 1)[-1] for h in hits} == {
        "volcanoes.md",
        "honeybees.txt",
    }


def test_prune_removes_what_left_the_given_paths_only(
    docs: Path, tmp_path: Path, minilm_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    other = tmp_path / "other"
    other.mkdir()
    (other / "moon.txt").write_text("The Moon orbits the Earth every 27 days.", encoding="utf-8")
    rows = [{"_id": "a", "text": "Berlin is in Germany."}, {"_id": "b", "text": "Oxygen is O."}]
    corpus = docs / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert "9 chunk(s) stored (+9)" in _index(capsys, store, minilm_path, docs, other)

    # without --prune nothing is deleted
    (docs / "honeybees.txt").unlink()
    corpus.write_text(json.dumps(rows[0]), encoding="utf-8")
    assert "9 chunk(s) stored (+0)" in _index(capsys, store, minilm_path, docs)

    # --prune on docs/: the removed file and the removed jsonl row go; other/ stays
    capsys.readouterr()
    argv = _args(store, minilm_path, "index", str(docs), "--collection", "docs", "--prune")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "7 chunk(s) stored (-2); removed 2 document(s) no longer there" in out, out
    ids = {str(h["doc_id"]) for h in _search(capsys, store, minilm_path, "anything", "-k", "20")}
    assert str((other / "moon.txt").resolve()) in ids and "a" in ids
    assert "b" not in ids and not any(i.endswith("honeybees.txt") for i in ids)

    # pruning again removes nothing
    capsys.readouterr()
    assert main(argv) == 0
    assert "7 chunk(s) stored (+0); removed 0 document(s)" in capsys.readouterr().out


def test_rows_with_their_own_source_and_emptied_files(
    tmp_path: Path, minilm_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, a, other = tmp_path / "store", tmp_path / "a", tmp_path / "other"
    a.mkdir()
    other.mkdir()
    note = a / "note.txt"
    note.write_text("The Moon orbits the Earth every 27 days.", encoding="utf-8")
    rows = [
        {"_id": "w", "text": "Berlin is in Germany.", "source": "wikipedia"},
        {"_id": "x", "text": "Oxygen is O.", "source": str(a.resolve() / "report.pdf")},
    ]
    (a / "rows.jsonl").write_text(json.dumps(rows[0]), encoding="utf-8")
    (other / "meta.jsonl").write_text(json.dumps(rows[1]), encoding="utf-8")
    assert "3 chunk(s) stored (+3)" in _index(capsys, store, minilm_path, a, other)
    hits = _search(capsys, store, minilm_path, "Germany")
    assert hits[0]["metadata"]["source"] == "wikipedia"  # type: ignore[index]
    # an emptied file: its old text is no longer served (it used to stay, skipped)
    note.write_text("  \n", encoding="utf-8")
    # (the summary said nothing of the document deleted)
    assert "2 chunk(s) stored (-1); removed 1 emptied document(s)" in _index(
        capsys, store, minilm_path, a
    )
    assert "; removed" not in _index(capsys, store, minilm_path, a)  # (deleted already)
    assert not any("Moon" in str(h["text"]) for h in _search(capsys, store, minilm_path, "Moon"))
    # --prune on a/ follows the file a row came from, not the row's own "source": the row
    # removed from a/rows.jsonl goes (its source "wikipedia" is no path), and other/'s row
    # naming a file under a/ stays
    (a / "rows.jsonl").write_text("", encoding="utf-8")
    capsys.readouterr()
    argv = _args(store, minilm_path, "index", str(a), "--collection", "docs", "--prune")
    assert main(argv) == 0
    assert "removed 1 document(s) no longer there" in capsys.readouterr().out
    ids = {str(h["doc_id"]) for h in _search(capsys, store, minilm_path, "anything", "-k", "9")}
    assert ids == {"x"}


def test_jsonl_rows(tmp_path: Path, minilm_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"_id": "berlin", "title": "Berlin", "text": "Berlin is the capital of Germany."},
        {"_id": "oxygen", "title": "Oxygen", "text": "Oxygen has atomic number 8.", "year": 1774},
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    store = tmp_path / "store"
    _index(capsys, store, minilm_path, corpus)
    hits = _search(capsys, store, minilm_path, "What is Germany's capital city?")
    assert [h["doc_id"] for h in hits] == ["berlin", "oxygen"]
    assert hits[1]["metadata"]["year"] == 1774  # type: ignore[index]
    assert _search(capsys, store, minilm_path, "capital", "--filter", "year=1774")[0]["doc_id"] == (
        "oxygen"
    )


def test_filter_values_that_read_as_numbers_match_their_text(
    tmp_path: Path, minilm_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--filter ver=2.0`` found nothing on ``"ver": "2.0"``, an id past 2**53 stored as a
    string was refused ("store such values as strings"), ``code=NaN`` was refused; a float
    past 2**53 (``big=1e20``), which compares exactly, was taken for text only."""
    rows = [
        {"_id": "a", "text": "Alpha row.", "tweet": "1234567890123456789", "ver": "2.0"},
        {"_id": "b", "text": "Beta row.", "code": "NaN", "ver": 2.0, "year": 1774, "big": 1e20},
        {"_id": "c", "text": "Gamma row.", "year": "1774"},
    ]
    corpus = tmp_path / "rows.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    store = tmp_path / "store"
    _index(capsys, store, minilm_path, corpus)

    def found(*pairs: str) -> set[object]:
        extra = [a for pair in pairs for a in ("--filter", pair)]
        return {h["doc_id"] for h in _search(capsys, store, minilm_path, "row", "-k", "5", *extra)}

    assert found("tweet=1234567890123456789") == {"a"}
    assert found("ver=2.0") == {"a", "b"}  # the number or its text
    assert found('ver="2.0"') == {"a"}  # quoted: text only
    assert found("code=NaN") == {"b"}
    assert found("year=1774") == {"b", "c"}
    assert found("big=1e20") == {"b"}


def test_console_script_subprocess(docs: Path, tmp_path: Path, minilm_path: Path) -> None:
    """The installed ``m3kit`` entry point, in a fresh process, with the default ./.m3kit."""
    script = Path(sys.executable).parent / "m3kit"
    assert script.is_file(), "the project is not installed (pip install -e .)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = ["--model", str(minilm_path), "--collection", "demo", "--quiet"]
    run = subprocess.run(
        [str(script), "index", str(docs), *common],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / ".m3kit").is_dir(), "default storage folder is ./.m3kit"
    run = subprocess.run(
        [str(script), "search", "Which planet has the Great Red Spot?", *common, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert Path(json.loads(run.stdout)["hits"][0]["doc_id"]).name == "jupiter.txt"


def test_index_with_late_chunking(
    tmp_path: Path, minilm_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_md = tmp_path / "long.md"
    parts = sorted(SAMPLE_DOCS.glob("*"))
    long_md.write_text("\n\n".join(p.read_text(encoding="utf-8") for p in parts), encoding="utf-8")
    store = tmp_path / "store"
    capsys.readouterr()
    argv = ["index", str(long_md), "--collection", "docs", "--late-chunking", "--chunk-size", "64"]
    argv += ["--window", "130", "--late-heads", "dense"]  # several windows per document
    assert main(_args(store, minilm_path, *argv)) == 0
    out = capsys.readouterr().out
    stored = int(out.split(": ")[-1].split(" chunk")[0])
    assert stored > len(parts), out
    hits = _search(capsys, store, minilm_path, "How do bees tell each other where flowers are?")
    assert hits[0]["doc_id"] == str(long_md.resolve())
    assert "waggle" in str(hits[0]["text"]) and len(str(hits[0]["text"])) < 1000
    assert int(hits[0]["chunk_index"]) > 0  # type: ignore[call-overload]


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_three_way_hybrid_with_m3_checkpoint(
    backend: str,
    docs: Path,
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An M3 checkpoint stores dense + sparse + ColBERT; every fusion finds a copied text."""
    store = tmp_path / "store"
    capsys.readouterr()
    argv = ["index", str(docs), "--collection", "docs", "--backend", backend]
    assert main(_args(store, tiny_m3_path, *argv)) == 0
    volcano = (docs / "volcanoes.md").read_text(encoding="utf-8")
    for fusion in ("rrf", "dbsf", "m3"):
        hits = _search(
            capsys, store, tiny_m3_path, volcano, "--fusion", fusion, "--backend", backend
        )
        assert Path(str(hits[0]["doc_id"])).name == "volcanoes.md", fusion


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_search_unknown_collection_creates_nothing(
    docs: Path, tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    from m3kit import M3Encoder
    from m3kit.store import M3Store

    store = tmp_path / "store"
    assert (
        main(
            [
                *_args(store, tiny_m3_path, "index", str(docs), "--collection", "docs"),
                "--backend",
                backend,
            ]
        )
        == 0
    )
    capsys.readouterr()
    argv = [
        *_args(store, tiny_m3_path, "search", "bees", "--collection", "typo"),
        "--backend",
        backend,
    ]
    assert main(argv) == 1
    assert "collection 'typo' does not exist" in capsys.readouterr().err
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with pytest.raises(ValueError, match="does not exist"):
        M3Store.open(
            store,
            collection="typo",
            dense_dim=enc.dense_dim,
            colbert_dim=enc.colbert_dim,
            sparse=True,
            backend=backend,
            create=False,
        )
    reopened = M3Store.open(
        store,
        collection="docs",
        dense_dim=enc.dense_dim,
        colbert_dim=enc.colbert_dim,
        sparse=True,
        backend=backend,
        create=False,
    )
    assert reopened.count() == 12  # 6 files, 2 chunks each (~450 tiny-tokenizer tokens per file)
    reopened.close()


def test_quiet_shows_no_progress_bar(
    tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-q``: the chunk encoding's bar was still drawn (``chunker.chunk`` did not get it)."""
    text = " ".join(f"Sentence {i} is about subject {i}." for i in range(40))
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    argv = ["index", str(tmp_path / "a.txt"), "--path", str(tmp_path / "st")]
    argv += ["--model", str(tiny_m3_path), "--chunk-size", "16"]
    capsys.readouterr()
    assert main([*argv, "--batch-size", "2"]) == 0
    assert "it/s" in capsys.readouterr().err  # the bar this test looks for
    (tmp_path / "a.txt").write_text(text + " One more.", encoding="utf-8")
    assert main([*argv, "--batch-size", "2", "-q"]) == 0
    err = capsys.readouterr().err
    assert "it/s" not in err and "%|" not in err, err


@pytest.mark.parametrize(
    ("written", "flag", "message"),
    [
        ("client", [], "holds a qdrant-client local collection 'docs'; add --backend client"),
        (
            "edge",
            ["--backend", "client"],
            "holds an embedded-engine (qdrant-edge) collection 'docs'; use --backend edge, "
            "not client",
        ),
    ],
)
def test_path_of_the_other_backend_names_the_flag_before_loading_a_model(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    written: str,
    flag: list[str],
    message: str,
) -> None:
    from m3kit.encoder import M3Encoder

    store, doc = tmp_path / "store", tmp_path / "a.txt"
    doc.write_text("Berlin is the capital of Germany.", encoding="utf-8")
    argv = _args(store, tiny_m3_path, "index", str(doc), "--collection", "docs")
    assert main([*argv, "--backend", written]) == 0

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(M3Encoder, "from_pretrained", no_model)
    where = ["--path", str(store), "--collection", "docs", "-q", *flag]
    for command in (["search", "capital"], ["index", str(doc)]):
        for model in ([], ["--model", str(tiny_m3_path)]):  # the recorded model, or --model
            capsys.readouterr()
            assert main([*command, *where, *model]) == 1
            assert capsys.readouterr().err.strip() == (
                f"m3kit {command[0]}: error: --path {store} {message}"
            )


@pytest.mark.parametrize("where", ["edge", "client", "url"])
def test_search_of_a_missing_collection_says_so_before_loading_a_model(
    tmp_path: Path,
    tiny_m3_path: Path,
    qdrant_recorder: tuple[str, list[object], dict[str, object]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """Without ``--model`` it tried the default model first (BAAI/bge-m3: offline an error
    about that model, online a 2.2 GB download), then said the collection does not exist."""
    from m3kit.encoder import M3Encoder

    store, doc = tmp_path / "store", tmp_path / "a.txt"
    doc.write_text("Berlin is the capital of Germany.", encoding="utf-8")
    if where == "url":
        url = qdrant_recorder[0]
        place, at = ["--qdrant-url", url], url
    else:  # a folder holding another collection, as the README's demo leaves one
        place, at = ["--path", str(store), "--backend", where], str(store)
        argv = ["index", str(doc), "--collection", "demo", "--model", str(tiny_m3_path), "-q"]
        assert main([*argv, *place]) == 0
        capsys.readouterr()  # a collection that exists: a bad --model is the error
        argv = ["search", "capital", "--collection", "demo", "--model", str(tmp_path / "no")]
        assert main([*argv, "-q", *place]) == 1
        assert "no' does not exist" in capsys.readouterr().err

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(M3Encoder, "from_pretrained", no_model)
    for model in ([], ["--model", str(tiny_m3_path)]):
        capsys.readouterr()
        assert main(["search", "capital", "--collection", "c", "-q", *place, *model]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("m3kit search: error: collection 'c' does not exist at "), err
        assert at in err and err.endswith("; run `m3kit index` first"), err
        assert len(err.splitlines()) == 1


@pytest.mark.parametrize("as_json", [False, True])
def test_search_prints_any_script_on_a_stdout_of_another_encoding(
    tmp_path: Path,
    minilm_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    """On a cp1252 stdout (Windows, redirected) a hit holding Chinese text failed the whole
    search: ``'charmap' codec can't encode``, exit 1, nothing printed."""
    import io

    docs = tmp_path / "docs"
    docs.mkdir()
    text = "北京是中国的首都。 Beijing is the capital 😀"
    (docs / "beijing.txt").write_text(text, encoding="utf-8")
    store = tmp_path / "store"
    _index(capsys, store, minilm_path, docs)
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="cp1252"))
    extra = ["--json"] if as_json else []
    args = _args(store, minilm_path, "search", "capital", "--collection", "docs", *extra)
    assert main(args) == 0
    sys.stdout.flush()
    out = raw.getvalue().decode("cp1252")
    if as_json:
        assert json.loads(out)["hits"][0]["text"] == text
    else:
        assert "\\u5317\\u4eac" in out and "Beijing is the capital \\U0001f600" in out
