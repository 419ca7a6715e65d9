"""The ``m3kit`` parser and its errors: defaults, bad arguments (exit 2), bad input (one
line, exit 1), ``python -m m3kit``, and the fine-tuning subcommands' hook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from m3kit.cli import build_parser, main


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
        ["search", "x", "--score-threshold", "nan"],  # refused before the model loads
        ["search", "x", "--score-threshold", "inf"],
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


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """``m3kit search ... --json | head -1``: writing to the closed pipe was reported as
    "m3kit search: error: [Errno 32] Broken pipe" with status 1."""
    script = (  # a command whose output finds the pipe closed
        "import argparse, sys, m3kit.cli as cli\n"
        "def handler(args):\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "parse = argparse.ArgumentParser.parse_args\n"
        "def parse_args(self, *a, **k):\n"
        "    ns = parse(self, *a, **k)\n"
        "    ns.handler = handler\n"
        "    return ns\n"
        "argparse.ArgumentParser.parse_args = parse_args\n"
        "sys.exit(cli.main(['index', 'x']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (141, "")


def test_every_flag_of_every_subcommand_has_help() -> None:
    """``m3kit finetune --help`` listed ``--epochs``, ``--device``, ``--seed``... with no word
    on what they do (also ``mine-negatives``, ``eval`` and ``calibrate`` flags)."""
    import argparse

    from m3kit.cli import build_parser

    subparsers = build_parser()._subparsers
    assert subparsers is not None
    bare = {
        name: [
            a.option_strings[0] if a.option_strings else a.dest
            for a in sub._actions
            if a.help is None and not isinstance(a, argparse._HelpAction)
        ]
        for action in subparsers._group_actions
        for name, sub in (action.choices or {}).items()
    }
    assert {name: flags for name, flags in bare.items() if flags} == {}
