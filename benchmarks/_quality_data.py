"""What the quality benchmarks share: the held-out task, the model, BM25, the output.

Both evaluate the model built by ``quality_model.py`` on the squad_en articles it was NOT
trained on (same :func:`m3kit.finetune.splits.split_by_article` call: seed 0, half / half).
``quality_model.py`` writes the articles it trained on into the checkpoint
(:func:`record_split`); :func:`held_out` refuses an evaluation that would score the model on
one of them (another ``--seed`` or ``--data`` than the model was trained with), as it refuses
any checkpoint another benchmark trained on one of them (``_bench.check_not_trained_on``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _bench import (
    check_not_trained_on,
    machine_markdown,
    output_stem,
    record_training,
    with_ext,
)

from m3kit.finetune.splits import ArticleSplit, split_by_article

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "squad_en"
DEFAULT_MODEL = "/tmp/m3kit-bench/minilm-m3-ft"


def offline_env() -> None:
    """No hub, no tokenizer threads fighting torch's."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def record_split(
    model: str | Path, data: str, seed: int, split: ArticleSplit, *, by: str = "quality_model.py"
) -> Path:
    """Write the articles ``model`` was trained on (by the script ``by``) into it
    (``_bench.SPLIT_FILE``)."""
    return record_training(
        model,
        by=by,
        data=data,
        seed=seed,
        train_articles=split.train_articles,
        held_out_articles=split.eval_articles,
    )


def held_out(
    data: str, *, seed: int, eval_queries: int | None, model: str | None = None
) -> ArticleSplit:
    """The evaluation side of the article split ``quality_model.py`` trained on.

    Args:
        data: The squad_en folder.
        seed: The split's seed (the one ``quality_model.py`` trained with).
        eval_queries: Keep a seeded sample of at most this many queries.
        model: The checkpoint to be scored: refused when it was trained on an evaluation
            article (:func:`check_not_trained_on`).
    """
    try:
        split = split_by_article(data, seed=seed, max_eval_queries=eval_queries)
    except FileNotFoundError as e:
        raise SystemExit(
            f"error: {e}; the full squad_en set sits beside the checkout as "
            "../shared/data/squad_en (or pass --data DIR)"
        ) from None
    if model is not None:
        check_not_trained_on(model, split.eval_articles)
    return split


def check_model(path: str) -> str:
    """``path`` if it holds a three-head checkpoint, else exit naming how to build one."""
    folder = Path(path)
    missing = [n for n in ("sparse_linear.pt", "colbert_linear.pt") if not (folder / n).is_file()]
    if missing:
        raise SystemExit(
            f"error: {folder} is not a three-head M3 checkpoint ({', '.join(missing)} missing); "
            "build it with: python benchmarks/quality_model.py --out " + str(folder)
        )
    return str(folder)


def results_stem(out: str | None, name: str | None, default: str) -> Path:
    """Where results go: ``--out`` (a stem), ``--name`` (``results/<name>``), or a new
    time-stamped ``results/<default>_<UTC time>``."""
    if out is not None and name is not None:
        raise SystemExit("error: give --out or --name, not both")
    if name is not None:
        return RESULTS / name
    return output_stem(out, default)


def results_paths(stem: Path) -> list[Path]:
    """The ``.json`` and ``.md`` of ``stem``."""
    return [with_ext(stem, ".json"), with_ext(stem, ".md")]


def write_results(
    stem: Path,
    payload: Mapping[str, Any],
    table: str,
    intro: str,
    facts: Mapping[str, Any],
) -> list[Path]:
    """Write ``<stem>.json`` (payload + machine facts) and ``<stem>.md`` (facts, intro, table)."""
    json_path, md_path = results_paths(stem)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(payload)
    data["machine"] = dict(facts)
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(f"{machine_markdown(facts)}\n\n{intro}\n\n{table}\n", encoding="utf-8")
    return [json_path, md_path]


def is_chinese(texts: Iterable[str]) -> bool:
    """True when most letters of ``texts`` are CJK ideographs (BM25 then needs jieba).

    >>> is_chinese(["广茂铁路全长多少公里？"]), is_chinese(["How long is the railway?"])
    (True, False)
    """
    cjk = letters = 0
    for text in texts:
        for ch in text:
            if ch.isalpha():
                letters += 1
                cjk += "\u4e00" <= ch <= "\u9fff"
    return letters > 0 and cjk / letters > 0.5


def _jieba_tokens(texts: Sequence[str]) -> list[list[str]]:
    """Words of Chinese ``texts`` by jieba (search mode), punctuation and spaces dropped."""
    try:
        import jieba
    except ImportError as e:
        raise SystemExit("error: BM25 on Chinese text needs jieba (pip install jieba)") from e
    jieba.setLogLevel(logging.WARNING)
    return [[w for w in jieba.lcut_for_search(t) if any(ch.isalnum() for ch in w)] for t in texts]


def bm25_runs(
    corpus: Mapping[str, str], queries: Mapping[str, str], depth: int
) -> dict[str, list[str]]:
    """``{query_id: [doc_id, ...]}``: the ``depth`` best BM25 passages with a positive score.

    English text is tokenised by bm25s with English stopwords and the Snowball English stemmer
    (PyStemmer), as English BM25 is usually run (Elasticsearch's English analyzer, bm25s's
    own examples); results before this stemmed nothing, a weaker baseline (squad_en split 0:
    nDCG@10 0.8466 unstemmed, 0.8703 stemmed). Chinese text (:func:`is_chinese`) by jieba, the
    usual reference for Chinese BM25.
    """
    try:
        import bm25s
        import Stemmer
        from bm25s.tokenization import Tokenizer
    except ImportError as e:
        raise SystemExit(
            "error: this benchmark needs bm25s and PyStemmer (pip install bm25s PyStemmer; "
            "dev extra)"
        ) from e
    doc_ids = list(corpus)
    qids = list(queries)
    docs = [corpus[d] for d in doc_ids]
    texts = [queries[q] for q in qids]
    retriever = bm25s.BM25()
    if is_chinese(docs):
        retriever.index(_jieba_tokens(docs), show_progress=False)
        query_tokens: Any = _jieba_tokens(texts)
    else:
        tokenizer = Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
        corpus_tokens = tokenizer.tokenize(
            docs, update_vocab=True, return_as="ids", show_progress=False
        )
        retriever.index(corpus_tokens, show_progress=False)
        query_tokens = tokenizer.tokenize(
            texts, update_vocab=False, return_as="ids", show_progress=False
        )
    found, scores = retriever.retrieve(
        query_tokens, k=min(depth, len(doc_ids)), show_progress=False
    )
    return {
        qid: [doc_ids[int(j)] for j, s in zip(found[i], scores[i], strict=True) if s > 0]
        for i, qid in enumerate(qids)
    }
