"""The README's instructions (everything before its ``## Changes``) work as written.

Every ```` ```python ```` block is either run here, with a tiny local checkpoint in place of
``BAAI/bge-m3`` and the names it leaves to the reader (``docs``, ``texts``, ``llm``...) defined
by a prelude, or listed with the reason it is not; a new block fails
:func:`test_every_python_snippet_is_run_or_skipped_with_a_reason` until it is classified. Every
``m3kit SUB ...`` command (in a ```` ```bash ```` block or inline) may use only options ``SUB``
has, and every ``python benchmarks/...`` / ``python examples/...`` command parses with its
script's own options.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _instructions() -> str:
    text = README.read_text(encoding="utf-8")
    head, sep, _ = text.partition("\n## Changes")
    assert sep, "README.md has no '## Changes' section"
    return head


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _instructions(), flags=re.S)


LANGCHAIN_PRELUDE = """
from langchain_core.documents import Document
docs = [
    Document(page_content="Late chunking pools token states.", metadata={"lang": "en"}),
    Document(page_content="Qdrant stores vectors.", metadata={"lang": "de"}),
]
long_docs = [  # two: a snippet may give them ids=["doc-1", "doc-2"]
    Document(page_content="A sentence about chunking. " * 120, metadata={"lang": "en"}),
    Document(page_content="Qdrant keeps vectors on disk. " * 100, metadata={"lang": "en"}),
]
"""

LLAMAINDEX_PRELUDE = """
from llama_index.core import Document
from llama_index.core.llms import MockLLM
llm = MockLLM()
documents = [
    Document(text="Late chunking pools token states. " * 20, doc_id="d1"),
    Document(text="Qdrant stores vectors.", doc_id="d2"),
]
doc = Document(text="BGE-M3 gives dense, sparse and ColBERT vectors.", doc_id="d3")
"""


@dataclass(frozen=True)
class Group:
    """README blocks run in one namespace, in README order (later ones use earlier names)."""

    markers: tuple[str, ...]  # a substring that picks out each block
    prelude: str = ""
    check: Callable[[dict[str, Any]], None] = field(default=lambda ns: None)


def _check_models(ns: dict[str, Any]) -> None:
    assert ns["out"].dense.shape[0] == 1 and ns["out"].dense.dtype.name == "float32"
    assert ns["out"].colbert[0].shape[1] == ns["out"].dense.shape[1]
    assert ns["q"].dense.shape == ns["out"].dense.shape


def _check_langchain(ns: dict[str, Any]) -> None:
    hits = ns["reranked"].invoke("late chunking")
    assert hits and all("relevance_score" in d.metadata for d in hits)
    assert ns["late"].similarity_search("chunking", k=1)


def _check_llamaindex(ns: dict[str, Any]) -> None:
    answer = ns["engine"].query("what does late chunking do?")
    assert answer.source_nodes
    # example 4: late-chunked leaves in the store, AutoMergingRetriever over them
    leaves = ns["get_leaf_nodes"](ns["nodes"])
    assert leaves and all("m3_late_chunk" in n.metadata for n in leaves)
    assert ns["retriever"].retrieve("late chunking")


def _check_late(ns: dict[str, Any]) -> None:
    chunks = ns["chunks"]
    assert len(chunks) > 1 and chunks[0].start == 0 and chunks[-1].end == len(ns["long_text"])


def _check_store(ns: dict[str, Any]) -> None:
    assert ns["ids"] == ns["doc_ids"]
    assert {h.doc_id for h in ns["hits"]} == set(ns["doc_ids"])


FINETUNE_PRELUDE = """
import json
import langchain_core, llama_index.core  # the block's adapters need them
_pairs = [
    ("how do bees share where flowers are", "Bees dance to show where the flowers are."),
    ("which planet is the largest", "Jupiter is the largest planet."),
    ("what is magma called at the surface", "Magma that reaches the surface is lava."),
    ("which gas do plants release", "Plants release oxygen in photosynthesis."),
]
with open("train.jsonl", "w", encoding="utf-8") as _f:
    for _q, _p in _pairs:
        _f.write(json.dumps({"query": _q, "pos": [_p]}) + "\\n")
_qa = {
    "queries": {f"q{i}": q for i, (q, _) in enumerate(_pairs)},
    "corpus": {f"c{i}": p for i, (_, p) in enumerate(_pairs)},
    "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(len(_pairs))},
}
for _name in ("train_dataset.json", "val.json"):
    with open(_name, "w", encoding="utf-8") as _f:
        json.dump(_qa, _f)
"""


def _check_finetune(ns: dict[str, Any]) -> None:
    """Both halves of the block keep their own checkpoint: the LlamaIndex engine once saved
    into the folder the LangChain ``embeddings`` had loaded, which then refused every store
    (``CheckpointChangedError``) and embedded with weights its folder no longer held."""
    from langchain_m3 import M3VectorStore

    with M3VectorStore.from_texts(["Bees dance."], ns["embeddings"]) as store:
        assert store.similarity_search("bees", k=1)[0].page_content == "Bees dance."
    assert len(ns["embed_model"].get_query_embedding("bees")) == ns["embed_model"].encoder.dense_dim


RUN: dict[str, Group] = {
    "models": Group(("enc.encode_queries(",), check=_check_models),
    "langchain": Group(
        ("M3Retriever.from_documents(docs, enc", "M3VectorStore(retriever.index)"),
        prelude=LANGCHAIN_PRELUDE,
        check=_check_langchain,
    ),
    "llamaindex": Group(
        ("m3_sparse_fns(embed)",),
        prelude=LLAMAINDEX_PRELUDE,
        check=_check_llamaindex,
    ),
    "late-chunking": Group(
        ("LateChunker(M3Encoder.from_pretrained",),
        prelude='long_text = "Late chunking keeps the context of a document. " * 150\n',
        check=_check_late,
    ),
    "finetune": Group(
        ("M3Finetuner(FinetuneConfig(model=",), prelude=FINETUNE_PRELUDE, check=_check_finetune
    ),
    "store": Group(
        ('M3Index.open(encoder, "./m3db")',),
        prelude=(
            'texts = ["Nikola Tesla invented the AC motor.", "Ein Satz über Motoren."]\n'
            'metas = [{"lang": "en"}, {"lang": "de"}]\n'
            'doc_ids = ["tesla", "motor-de"]\n'
        ),
        check=_check_store,
    ),
}

SKIP: dict[str, str] = {
    "EncoderPool(": "starts worker processes (tests/distributed/test_pool.py runs the pool)",
    "fit_spans(examples)": "trains a model on ../shared/data (tests/finetune/test_span_*.py)",
}


def _classify(block: str) -> list[str]:
    keys = [f"run:{name}" for name, g in RUN.items() if any(m in block for m in g.markers)]
    return keys + [f"skip:{marker}" for marker in SKIP if marker in block]


def test_every_python_snippet_is_run_or_skipped_with_a_reason() -> None:
    blocks = _python_blocks()
    assert blocks, "no ```python block found before '## Changes'"
    for block in blocks:
        keys = _classify(block)
        assert len(keys) == 1, f"README block matches {keys} (want exactly one):\n{block[:300]}"
    for name, group in RUN.items():
        for marker in group.markers:
            found = sum(marker in b for b in blocks)
            assert found == 1, f"{name}: marker {marker!r} is in {found} README blocks"


def test_pool_snippet_starts_its_pool_under_a_main_guard() -> None:
    """Pool workers are spawned and import the main module again: a script that starts a pool
    at import time has every worker fail while loading (the README once showed one)."""
    (block,) = [b for b in _python_blocks() if "EncoderPool(" in b]
    lines = block.splitlines()
    guard = [i for i, line in enumerate(lines) if line.startswith('if __name__ == "__main__":')]
    calls = [i for i, line in enumerate(lines) if "EncoderPool(" in line and "import" not in line]
    assert guard and calls, block
    assert all(i > guard[0] and lines[i].startswith("    ") for i in calls), block


#: The project's own packages: a snippet that cannot import them fails (never skipped); what
#: they need is what the snippets import beside them.
OWN = ("m3kit", "langchain_m3", "llamaindex_m3")


def _blocks(group: Group) -> list[str]:
    return [b for m in group.markers for b in _python_blocks() if m in b]


def _needs(group: Group, blocks: list[str]) -> tuple[str, ...]:
    """Every module the group's prelude and blocks import (dotted, as written), the project's
    own packages aside: each must be importable for the snippets to run."""
    found: list[str] = []
    for source in (group.prelude, *blocks):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append(node.module)
    return tuple(dict.fromkeys(m for m in found if m.split(".")[0] not in OWN))


def _missing(modules: tuple[str, ...]) -> list[str]:
    """The ``modules`` that cannot be imported, each with why (a sub-package checked as
    itself, not by its top-level package; a parent package that is missing or fails to
    import makes it missing, and says so)."""
    out = []
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                out.append(module)
        except ImportError as exc:  # find_spec imports the parents; ModuleNotFoundError too
            out.append(f"{module} ({type(exc).__name__}: {exc})")
    return out


def test_missing_sees_a_missing_subpackage() -> None:
    """``llama_index`` without ``llama_index.vector_stores.qdrant`` (another distribution):
    the snippet errored instead of being skipped, as only the top-level package was checked."""
    assert _missing(("json", "json.decoder")) == []
    assert _missing(("json.no_such_module",)) == ["json.no_such_module"]
    # a missing parent (or a module as parent) raises in find_spec: reported, not raised
    (gone,) = _missing(("no_such_package_m3kit.sub",))
    assert gone.startswith("no_such_package_m3kit.sub (ModuleNotFoundError")
    (flat,) = _missing(("json.decoder.no_such_module",))
    assert flat.startswith("json.decoder.no_such_module (ModuleNotFoundError")


def test_needs_are_the_modules_the_snippets_import() -> None:
    needs = {name: _needs(group, _blocks(group)) for name, group in RUN.items()}
    assert "llama_index.vector_stores.qdrant" in needs["llamaindex"]
    assert "llama_index.core.query_engine" in needs["llamaindex"]
    assert {"langchain_qdrant", "langchain_classic.retrievers"} <= set(needs["langchain"])
    assert needs["store"] == needs["models"] == ()  # m3kit alone: never skipped


@pytest.mark.parametrize("name", sorted(RUN))
def test_python_snippet_runs(
    name: str, tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = RUN[name]
    blocks = _blocks(group)
    missing = _missing(_needs(group, blocks))
    if missing:
        pytest.skip(f"not installed (an extra of m3kit): {'; '.join(missing)}")
    monkeypatch.chdir(tmp_path)  # the snippets' relative folders (./index, ./m3db) land here
    model = repr(str(tiny_m3_path))
    ns: dict[str, Any] = {"__name__": f"readme_{name}"}
    exec(compile(group.prelude, f"<{name} prelude>", "exec"), ns)
    for i, block in enumerate(blocks):
        code = block.replace('"BAAI/bge-m3"', model).replace('"/models/bge-m3"', model)
        exec(compile(code, f"<README {name} block {i}>", "exec"), ns)
    group.check(ns)


def _cli_commands() -> list[str]:
    text = _instructions()
    commands = [
        line.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.strip().startswith("m3kit ")
    ]
    flat = re.sub(r"\s*\n\s*", " ", text)  # inline code spans broken across lines
    return commands + re.findall(r"`(m3kit [^`]+)`", flat)


def test_readme_cli_commands_use_existing_options() -> None:
    from m3kit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "index" in a.choices)  # type: ignore[operator]
    commands = _cli_commands()
    assert any(c.startswith("m3kit index ") for c in commands), commands
    problems = []
    for command in commands:
        words = shlex.split(command.replace("[", " ").replace("]", " "))
        name = words[1]
        if name not in sub.choices:  # type: ignore[operator]
            problems.append(f"{command!r}: no subcommand {name!r}")
            continue
        options = sub.choices[name]._option_string_actions  # type: ignore[index]
        for word in words[2:]:
            flag = word.split("=")[0]
            if flag.startswith("-") and not re.fullmatch(r"-[\d.]+", flag) and flag not in options:
                problems.append(f"{command!r}: m3kit {name} has no option {flag}")
    assert not problems, "\n".join(problems)


def test_readme_index_commands_chunk_as_written_on_a_new_collection() -> None:
    """``--window`` / ``--late-heads`` need ``--late-chunking`` unless the collection remembers
    it: a README command must say it, so it also works on a new collection."""
    from m3kit.cli import build_parser
    from m3kit.cli_chunking import IndexChunking

    parser = build_parser()
    problems = []
    for command in _cli_commands():
        words = shlex.split(command.replace("[", " ").replace("]", " "))
        if words[1] != "index":
            continue
        words = [re.sub(r"^(\w+)\|\w+$", r"\1", w) for w in words]  # scalar|binary: one
        args = parser.parse_args(words[1:])
        try:
            IndexChunking.resolve(
                args.late_chunking,
                args.chunk_size,
                args.window,
                args.late_heads,
                None,
                overlap=args.overlap,
            )
        except ValueError as exc:
            problems.append(f"{command!r}: {exc}")
    assert not problems, "\n".join(problems)


#: Run in a subprocess: parses each ``python SCRIPT ARGS`` given as JSON on stdin with the
#: script's own argparse (the script stops right after parsing) and prints, as JSON, each
#: command's error (``None``: it parses).
_PARSE_ONLY = """
import argparse, contextlib, io, json, runpy, shlex, sys

class Parsed(Exception):
    pass

parse_args = argparse.ArgumentParser.parse_args

def stop(self, args=None, namespace=None):
    parse_args(self, args, namespace)
    raise Parsed

argparse.ArgumentParser.parse_args = stop
errors = {}
for command in json.load(sys.stdin):
    script, *args = shlex.split(command)[1:]
    sys.argv, err = [script, *args], io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(script, run_name="__main__")
        errors[command] = "ran to the end without parsing its arguments"
    except Parsed:
        errors[command] = None
    except SystemExit:
        errors[command] = (err.getvalue().strip().splitlines() or ["exited"])[-1]
print(json.dumps(errors))
"""


def _script_commands() -> list[str]:
    """Every ``python benchmarks/...`` / ``python examples/...`` command of the instructions
    (a ```` ```bash ```` line or inline code), comments cut."""
    text = _instructions()
    lines = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
    ]
    flat = re.sub(r"\s*\n\s*", " ", text)  # inline code spans broken across lines
    inline = re.findall(r"`(python (?:benchmarks|examples)/[^`]+)`", flat)
    found = [c.split("#")[0].strip() for c in lines + inline]
    return list(dict.fromkeys(c for c in found if re.match(r"python (benchmarks|examples)/", c)))


@pytest.mark.skipif(
    not (README.parent / "benchmarks").is_dir(), reason="benchmarks/ not shipped here"
)
def test_readme_script_commands_parse_with_their_scripts_options() -> None:
    """``python benchmarks/encoder_check.py`` (its checkpoints are required arguments) and
    ``finetune.py --negatives {3,1}`` stopped at an argparse error as written."""
    import json
    import os
    import subprocess
    import sys

    commands = _script_commands()
    assert any(c.startswith("python examples/") for c in commands), commands
    assert any(c.startswith("python benchmarks/late_chunking_cost.py") for c in commands)
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_ONLY],
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=README.parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(errors) == set(commands), done.stderr[-2000:]
    problems = [f"{c!r}: {e}" for c, e in errors.items() if e is not None]
    assert not problems, "\n".join(problems)
