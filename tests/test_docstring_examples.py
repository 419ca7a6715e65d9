"""The ``Example::`` blocks of the packages' docstrings (the ones doctest does not run) hold
together as written: Python that parses and imports what it uses, ``m3kit`` commands whose
options exist, and pools started under a main guard (as the README's, see
``tests/test_readme_snippets.py``).

A block is read as a reader copies it: the data it works on (``texts``, ``long_text``,
``documents``...) is the reader's, but a block that imports names must import every name
of a library it uses; a block with no import at all is a fragment of a larger program.
"""

from __future__ import annotations

import ast
import builtins
import re
import shlex
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("shared/m3kit", "langchain_m3", "llamaindex_m3")

#: Names a block may leave to the reader: the data (and the models) it works on.
READER_NAMES = frozenset(
    {"texts", "text", "long_text", "docs", "documents", "encoder", "embed", "cache"}
    | {"train_dataset", "val_dataset"}
)


def _examples() -> Iterator[tuple[str, str]]:
    """``(where, code)`` of every ``Example::`` / ``Examples::`` literal block."""
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                ):
                    continue
                doc = ast.get_docstring(node) or ""
                for match in re.finditer(r"^([ \t]*)Examples?::\n", doc, flags=re.M):
                    indent, lines = len(match.group(1)), []
                    for line in doc[match.end() :].splitlines():
                        if line.strip() and len(line) - len(line.lstrip()) <= indent:
                            break
                        lines.append(line)
                    name = getattr(node, "name", "<module>")
                    yield f"{path.relative_to(REPO)}:{name}", textwrap.dedent("\n".join(lines))


EXAMPLES = dict(_examples())
PYTHON = {k: v for k, v in EXAMPLES.items() if not v.strip().startswith("m3kit ")}
SHELL = {k: v for k, v in EXAMPLES.items() if k not in PYTHON}


def _unimported(code: str) -> list[str]:
    """Names ``code`` reads but neither binds nor imports (builtins aside), when it imports
    anything at all."""
    tree = ast.parse(code)
    bound: set[str] = set()
    read: set[str] = set()
    imports = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imports = True
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    if not imports:
        return []
    return sorted(read - bound - set(dir(builtins)) - READER_NAMES)


def test_examples_are_found() -> None:
    assert "shared/m3kit/distributed/ray_pipeline.py:<module>" in PYTHON
    assert "shared/m3kit/finetune/cli.py:<module>" in SHELL
    assert _unimported("from m3kit import M3Encoder\nM3Encoder(texts)\nM3Index\n") == ["M3Index"]
    assert _unimported("index.search(texts)\n") == []  # a fragment


@pytest.mark.parametrize("where", sorted(PYTHON))
def test_python_example_imports_what_it_uses(where: str) -> None:
    assert not _unimported(PYTHON[where]), f"{where} uses names it never imports:\n{PYTHON[where]}"


def test_pool_examples_start_their_pool_under_a_main_guard() -> None:
    """Pool workers are spawned and import the main module again: a script that starts a pool
    at import time has every worker fail while loading."""
    pools = {k: v for k, v in PYTHON.items() if "EncoderPool(" in v}
    assert pools
    for where, code in pools.items():
        lines = code.splitlines()
        guard = [i for i, line in enumerate(lines) if line.startswith('if __name__ == "__main__":')]
        calls = [i for i, line in enumerate(lines) if "EncoderPool(" in line]
        assert guard and all(i > guard[0] and lines[i].startswith("    ") for i in calls), where


@pytest.mark.parametrize("where", sorted(SHELL))
def test_shell_example_commands_parse(where: str) -> None:
    from m3kit.cli import build_parser

    parser = build_parser()
    joined = re.sub(r"\\\n\s*", " ", SHELL[where])
    commands = [line.split("#")[0].strip() for line in joined.splitlines() if line.strip()]
    assert commands
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"{where}: {command!r} is not a valid m3kit command")


def test_encoder_example_shows_the_shapes_bge_m3_gives(tiny_m3_xlmr_path: Path) -> None:
    """``m3kit.encoder``'s example shows BGE-M3's shapes: its ColBERT rows are the text's
    XLM-R tokens and ``</s>`` (CLS dropped), counted with BGE-M3's own tokenizer (the tiny
    checkpoint's is XLM-R's; only its width differs). It showed 7 rows for a text of 8 tokens."""
    from m3kit import M3Encoder

    code = EXAMPLES["shared/m3kit/encoder.py:<module>"]
    text = re.search(r'enc\.encode\(\["([^"]+)"\]\)', code)
    shown = re.search(r"# \(\(1, 1024\), 1, \((\d+), 1024\)\)", code)
    assert text and shown, code
    out = M3Encoder.from_pretrained(tiny_m3_xlmr_path, dtype="fp32").encode([text.group(1)])
    assert (len(out.sparse), out.colbert[0].shape[0]) == (1, int(shown.group(1)))


def test_sparse_cut_example_runs_as_written(
    tiny_encoder: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``m3kit.store.sparse_cut``'s example opened its embedded collection a second time while
    the first index still held it: run as written, the second open raised
    ``StoreConnectionError`` (an embedded collection is open once per process)."""
    from m3kit.store import M3Index

    monkeypatch.chdir(tmp_path)  # its "./store"
    ns: dict[str, object] = {"M3Index": M3Index, "encoder": tiny_encoder}
    exec(compile(PYTHON["shared/m3kit/store/sparse_cut.py:<module>"], "<example>", "exec"), ns)
    index = ns["index"]
    assert isinstance(index, M3Index)
    try:
        assert (index.sparse_cut.top_k, index.sparse_cut.min_weight) == (64, 0.0)
    finally:
        index.close()
