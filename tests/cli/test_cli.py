"""The ``m3kit`` command: index a folder, search it, re-index (no duplicates), edits replaced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from m3kit.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DOCS = REPO / "examples" / "sample_docs"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, folder)
    return folder


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
    assert "2 chunk(s) stored (-1)" in _index(capsys, store, minilm_path, a)
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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "{tmp}/missing.md"], "missing.md: no such file or folder"),
        (["index"], "give the files or folders to index (or --reindex)"),
        (["index", "{docs}", "--model", "{tmp}/no-model"], "no-model' does not exist"),
        # the collection is looked for before any model loads (a bad --model: below)
        (["search", "x", "--model", "{tmp}/no-model"], "collection 'm3kit' does not exist at"),
        (["index", "{docs}", "--window", "512"], "--window needs --late-chunking"),
        (["index", "{docs}", "--late-heads", "dense"], "--late-heads needs --late-chunking"),
        (["index", "{docs}", "--late-chunking", "--late-heads", "splade"], "unknown head 'splade'"),
        (["search", "x", "--api-key", "secret"], "--api-key needs --qdrant-url"),
        (["index", "{docs}", "--collection", "../escaped"], "collection name '../escaped' holds"),
        (["index", "{docs}", "--collection", ".."], "collection name '..' is not a name"),
        (["search", "x", "--collection", "a/b"], "collection name 'a/b' holds '/'"),
        (
            ["search", "anything", "--collection", "never_indexed"],
            "collection 'never_indexed' does not exist at",
        ),
        (["search", "x", "--path", "{tmp}/nowhere"], "no index at"),
    ],
)
def test_bad_input_one_line_error(
    argv: list[str],
    message: str,
    docs: Path,
    tmp_path: Path,
    minilm_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.format(tmp=tmp_path, docs=docs) for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(minilm_path)]
    if "--path" not in argv:
        (tmp_path / "store").mkdir()
        argv += ["--path", str(tmp_path / "store")]
    assert main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"m3kit {argv[0]}: error: ") and message in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "x", "-k", "0"],
        ["search", "x", "--fusion", "max"],
        ["search", "x", "--filter", "novalue"],
        ["search", "x", "--dtype", "int4"],
        ["search", "x", "--runtime", "tensorrt"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["search", "late chunking"])
    # --model: none given means the model the collection was indexed with (its fingerprint);
    # ranking flags left out: the index's defaults (the model's calibration, else rrf)
    assert (args.k, args.fusion, args.collection, args.model, args.path) == (
        5,
        None,
        "m3kit",
        None,
        None,
    )
    assert (args.weights, args.rerank, args.candidates) == (None, None, None)
    args = build_parser().parse_args(["index", "a", "b", "--late-chunking", "--chunk-size", "128"])
    assert (args.paths, args.late_chunking, args.chunk_size) == (["a", "b"], True, 128)
    assert args.window is None
    args = build_parser().parse_args(["index", "a", "--late-chunking", "--window", "514"])
    assert args.window == 514


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


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    """``python -m m3kit`` failed ("No module named m3kit.__main__"): the command runs now,
    with its exit status (1 for an error, its message on stderr)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "m3kit", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("m3kit "), version.stderr
    failed = run("index")
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip() == (
        "m3kit index: error: give the files or folders to index (or --reindex)"
    )


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


def test_finetune_hook(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``m3kit.finetune.cli.add_subcommands`` is called when importable; its commands run."""
    import types

    fake = types.ModuleType("m3kit.finetune.cli")

    def add_subcommands(subparsers: object) -> None:
        sub = subparsers.add_parser("finetune", help="fine-tune")  # type: ignore[attr-defined]
        sub.add_argument("--epochs", type=int, default=1)
        sub.set_defaults(handler=lambda args: print(f"epochs={args.epochs}") or 0)

    fake.add_subcommands = add_subcommands  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "m3kit.finetune.cli", fake)
    assert main(["finetune", "--epochs", "3"]) == 0
    assert capsys.readouterr().out.strip() == "epochs=3"


def test_finetune_hook_does_not_hide_import_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def broken(name: str, package: str | None = None) -> object:
        if name == "m3kit.finetune.cli":
            raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="some_dependency"):
        build_parser()

    def absent(name: str, package: str | None = None) -> object:
        if name == "m3kit.finetune.cli":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", absent)
    assert "index" in build_parser().format_help()


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
