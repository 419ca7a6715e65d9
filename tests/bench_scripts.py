"""Benchmark scripts loaded from their files for the tests (``benchmarks/`` is no package)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "_bench.py"


def load_script(name: str) -> ModuleType:
    """A benchmark script loaded from its file (its ``_bench`` imports resolve beside it)."""
    folder = str(BENCH.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(
        f"m3kit_bench_{name}", BENCH.parent / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def single_passage_data(folder: Path, n: int = 8) -> Path:
    """A cmrc2018_zh-like set: every article one passage, so every hard negative is foreign."""
    folder.mkdir(parents=True)
    texts = {f"p{i}": f"Passage {i} tells of river {i} and the town of Town{i}." for i in range(n)}
    queries, qrels, rows, ids = [], ["query-id\tcorpus-id\tscore"], [], []
    for i in range(n):
        for k in range(2):
            qid, text = f"q{i}-{k}", f"Which town lies on river {i}{'?' * k}"
            negs = [f"p{(i + j) % n}" for j in (1, 2, 3)]
            queries.append({"_id": qid, "text": text, "article": f"DEV_{i}"})
            qrels.append(f"{qid}\tp{i}\t1")
            rows.append({"query": text, "pos": [texts[f"p{i}"]], "neg": [texts[d] for d in negs]})
            ids.append(
                {"query_id": qid, "article": f"DEV_{i}", "pos_ids": [f"p{i}"], "neg_ids": negs}
            )
    articles = [{"_id": f"DEV_{i}", "paragraph_id": f"p{i}"} for i in range(n)]
    (folder / "articles.json").write_text(json.dumps(articles), encoding="utf-8")
    corpus = [{"_id": d, "title": "", "text": t} for d, t in texts.items()]
    for name, items in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in items), "utf-8")
    (folder / "train_ids.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ids), "utf-8")
    (folder / "qrels.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    with gzip.open(folder / "train.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return folder
