"""Training data: FlagEmbedding jsonl rows and LlamaIndex-style QA datasets.

Two interchange formats are read and written:

* FlagEmbedding's jsonl, one row per line ``{"query": str, "pos": [str], "neg": [str]}``
  (``.jsonl`` or ``.jsonl.gz``; ``neg`` may be empty or missing). Other keys are ignored
  (metadata, FlagEmbedding's ``pos_scores`` / ``neg_scores``, a ``prompt``: warned of), except
  keys that read like ``query`` / ``pos`` / ``neg`` (``negs``, ``positive``...), which are
  errors: :func:`iter_jsonl`.
* LlamaIndex's ``EmbeddingQAFinetuneDataset`` (``queries``, ``corpus``, ``relevant_docs``),
  either the live object (read by its fields, llama-index-finetuning is never imported) or
  its saved JSON ``{"queries": ..., "corpus": ..., "relevant_docs": ..., "mode": "text"}``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3kit.jsonl import iter_json_rows, not_utf8, open_text, unique_keys

__all__ = [
    "DEFAULT_NEGATIVES",
    "QADataset",
    "TrainingExample",
    "examples_from_qa",
    "iter_jsonl",
    "query_positives",
    "read_jsonl",
    "refuse_lone_positives",
    "text_key",
    "warn_negative_shortfall",
    "without_query_positives",
    "write_jsonl",
]

logger = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """``text`` with its whitespace collapsed: the form training compares texts in.

    Texts that differ only in whitespace (a trailing newline, a doubled space) say the same
    thing, so one must never be the other's negative. Mining, the checks of
    :class:`TrainingExample`, :func:`without_query_positives` and the trainer's in-batch
    masking all compare in this form.

    >>> text_key(" a\\n b  ") == text_key("a b")
    True
    """
    return " ".join(text.split())


@dataclass(frozen=True)
class TrainingExample:
    """One query with its relevant passages and (optional) hard negatives.

    Attributes:
        query: The query text.
        pos: Relevant passages (at least one).
        neg: Hard negatives (may be empty; never one of ``pos``).
    """

    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query.strip():
            raise ValueError("a training example needs a non-empty query string")
        object.__setattr__(self, "pos", _texts(self.pos, "pos"))
        object.__setattr__(self, "neg", _texts(self.neg, "neg"))
        if not self.pos:
            raise ValueError(f"training example {self.query[:60]!r} has no positive passage")
        positives = {text_key(p) for p in self.pos}
        clash = next((n for n in self.neg if text_key(n) in positives), None)
        if clash is not None:
            raise ValueError(
                f"training example {self.query[:60]!r} lists a positive among its negatives "
                f"(texts compare with whitespace collapsed): {clash[:60]!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The FlagEmbedding row ``{"query", "pos", "neg"}``."""
        return {"query": self.query, "pos": list(self.pos), "neg": list(self.neg)}


def _texts(values: Iterable[str], name: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f'"{name}" must be a list of strings, not a single string')
    # a mapping (passage -> score) would be read as its keys, a scalar is no list at all
    if isinstance(values, Mapping) or not isinstance(values, Iterable):
        raise ValueError(f'"{name}" must be a list of strings, not {type(values).__name__}')
    out = tuple(values)
    for v in out:
        if not isinstance(v, str):
            raise ValueError(f'"{name}" must hold strings, got {type(v).__name__}')
        if not v.strip():  # an empty passage would be trained on as if it said something
            raise ValueError(f'"{name}" holds an empty or whitespace-only passage')
    return out


@dataclass(frozen=True)
class QADataset:
    """LlamaIndex's ``EmbeddingQAFinetuneDataset`` shape, without depending on it.

    Attributes:
        queries: ``{query_id: text}``.
        corpus: ``{node_id: text}``.
        relevant_docs: ``{query_id: [node_id, ...]}``.
        mode: Always ``"text"`` (the only mode m3kit trains on).
    """

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str = field(default="text")

    def __post_init__(self) -> None:
        if self.mode != "text":
            raise ValueError(f'only mode "text" datasets are supported, got {self.mode!r}')
        for kind, texts in (("query", self.queries), ("corpus text", self.corpus)):
            for key, text in texts.items():
                if not isinstance(text, str):
                    raise ValueError(
                        f"{kind} {key!r} is not a string: {text!r} ({type(text).__name__})"
                    )
                if not text.strip():
                    raise ValueError(f"{kind} {key!r} is empty: {text!r}")
        for qid in self.queries:
            docs = self.relevant_docs.get(qid)
            if not docs:
                raise ValueError(f"query {qid!r} has no relevant_docs entry")
            if isinstance(docs, str | Mapping) or not isinstance(docs, Collection):
                raise ValueError(f"relevant_docs of query {qid!r} must be a list of ids: {docs!r}")
            if not all(isinstance(d, str) for d in docs):
                raise ValueError(f"relevant_docs of query {qid!r}: ids must be strings: {docs!r}")
            missing = [d for d in docs if d not in self.corpus]
            if missing:
                raise ValueError(f"query {qid!r}: relevant doc {missing[0]!r} is not in the corpus")

    @classmethod
    def from_llamaindex(cls, dataset: Any) -> QADataset:
        """Read a LlamaIndex ``EmbeddingQAFinetuneDataset`` (or any object with its fields)."""
        try:
            queries, corpus, relevant = dataset.queries, dataset.corpus, dataset.relevant_docs
        except AttributeError as e:
            raise TypeError(
                "expected an EmbeddingQAFinetuneDataset-like object with queries, corpus and "
                f"relevant_docs; got {type(dataset).__name__}"
            ) from e
        return cls.from_dict(
            {
                "queries": queries,
                "corpus": corpus,
                "relevant_docs": relevant,
                "mode": getattr(dataset, "mode", "text"),
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QADataset:
        """Read ``{"queries", "corpus", "relevant_docs"[, "mode"]}``.

        Ids are read as strings (``str(id)``); texts must be strings and ``relevant_docs``
        values lists of ids (a null or non-string text is an error naming its id, not the
        text "None").
        """
        for key in ("queries", "corpus", "relevant_docs"):
            if not isinstance(data.get(key), Mapping):
                raise ValueError(f'a QA dataset needs a "{key}" object')
            _refuse_ids_read_as_one(data[key], key)
        relevant: dict[str, list[str]] = {}
        for qid, docs in data["relevant_docs"].items():
            if isinstance(docs, str | Mapping) or not isinstance(docs, Collection):
                raise ValueError(f"relevant_docs of query {qid!r} must be a list of ids: {docs!r}")
            relevant[str(qid)] = [
                str(d) for d in (sorted(docs, key=str) if isinstance(docs, Set) else docs)
            ]
        return cls(
            queries={str(k): v for k, v in data["queries"].items()},
            corpus={str(k): v for k, v in data["corpus"].items()},
            relevant_docs=relevant,
            mode=str(data.get("mode", "text")),
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> QADataset:
        """Read the JSON written by ``EmbeddingQAFinetuneDataset.save_json``."""
        p = Path(path)
        try:
            data = json.loads(
                p.read_text(encoding="utf-8-sig"), object_pairs_hook=unique_keys("the JSON")
            )
        except UnicodeDecodeError as e:
            raise not_utf8(p, e) from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from e
        except ValueError as e:  # a key given twice in one object
            raise ValueError(f"{p}: {e}") from e
        if not isinstance(data, Mapping):
            raise ValueError(f"{p}: expected a JSON object")
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": dict(self.queries),
            "corpus": dict(self.corpus),
            "relevant_docs": {k: list(v) for k, v in self.relevant_docs.items()},
            "mode": self.mode,
        }

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON that ``EmbeddingQAFinetuneDataset.from_json`` reads."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=4), encoding="utf-8")
        return p

    def to_examples(self) -> list[TrainingExample]:
        """One :class:`TrainingExample` per query (positives = its relevant docs, no negatives)."""
        return [
            TrainingExample(text, tuple(self.corpus[d] for d in self.relevant_docs[qid]))
            for qid, text in self.queries.items()
        ]

    @classmethod
    def from_examples(cls, examples: Sequence[TrainingExample]) -> QADataset:
        """Inverse of :meth:`to_examples` (passages get stable ids; negatives are dropped)."""
        corpus: dict[str, str] = {}
        ids: dict[str, str] = {}
        queries: dict[str, str] = {}
        relevant: dict[str, list[str]] = {}
        for i, ex in enumerate(examples):
            qid = f"q{i}"
            queries[qid] = ex.query
            for text in ex.pos:
                if text not in ids:
                    ids[text] = f"d{len(ids)}"
                    corpus[ids[text]] = text
            relevant[qid] = [ids[t] for t in ex.pos]
        return cls(queries=queries, corpus=corpus, relevant_docs=relevant)


def _refuse_ids_read_as_one(texts: Mapping[Any, Any], field_name: str) -> None:
    """Refuse two keys of ``texts`` that are one id once read as strings (``1`` and ``"1"``):
    the last value would silently replace the first.
    """
    seen: dict[str, Any] = {}
    for key in texts:
        first = seen.setdefault(str(key), key)
        if first is not key:  # a mapping's keys differ, so this is another key
            raise ValueError(
                f"{field_name}: ids {first!r} and {key!r} are both read as the id {str(key)!r}; "
                "give each entry its own id"
            )


def query_positives(examples: Iterable[TrainingExample]) -> dict[str, frozenset[str]]:
    """Every positive of each query over all its rows, keyed and valued by :func:`text_key`.

    A query with several relevant passages may be written as one row per passage
    (FlagEmbedding's rows, ``M3FinetuneEngine``'s (query, relevant doc) pairs): each of
    those passages is relevant to every row of that query.

    >>> rows = [TrainingExample("q", ("a",)), TrainingExample("q ", ("b",))]
    >>> sorted(query_positives(rows)["q"])
    ['a', 'b']
    """
    positives: dict[str, set[str]] = {}
    for ex in examples:
        positives.setdefault(text_key(ex.query), set()).update(map(text_key, ex.pos))
    return {query: frozenset(texts) for query, texts in positives.items()}


def without_query_positives(examples: Sequence[TrainingExample]) -> list[TrainingExample]:
    """The examples without the negatives that are a positive of a row asking the same query.

    A query with several relevant passages is often written as one row per passage, with
    negatives mined per row (FlagEmbedding's ``hn_mine`` keeps out only the row's own
    positive): one row's negative can be another row's positive. The trainer masks such a
    passage only when both rows share a batch; dropping it here keeps it out of every batch.
    Queries and passages compare with their whitespace collapsed (:func:`text_key`), as
    :class:`TrainingExample` compares ``pos`` and ``neg``. The number of negatives dropped
    is logged as a warning.

    >>> rows = [TrainingExample("q", ("a",), ("b ", "c")), TrainingExample("q ", ("b",))]
    >>> [ex.neg for ex in without_query_positives(rows)]
    [('c',), ()]
    """
    positives = query_positives(examples)
    out: list[TrainingExample] = []
    dropped = 0
    for ex in examples:
        own = positives[text_key(ex.query)]
        kept = tuple(n for n in ex.neg if text_key(n) not in own)
        dropped += len(ex.neg) - len(kept)
        out.append(ex if len(kept) == len(ex.neg) else TrainingExample(ex.query, ex.pos, kept))
    if dropped:
        logger.warning(
            "dropped %d negative(s) that are a positive of another row asking the same query",
            dropped,
        )
    return out


#: Hard negatives per query a training step samples unless told (``FinetuneConfig.num_negatives``,
#: ``m3kit finetune --negatives``); why 1: :class:`~m3kit.finetune.trainer.FinetuneConfig`.
DEFAULT_NEGATIVES = 1


def refuse_lone_positives(
    examples: Sequence[TrainingExample], batch_size: int, num_negatives: int
) -> None:
    """Refuse a run whose every query is scored against its positive alone.

    With one row per batch (``batch_size`` 1, or a single row) and no hard negatives, every
    contrastive loss is 0: the run would train nothing and save the start model (LlamaIndex's
    ``MultipleNegativesRankingLoss`` does the same, silently).

    >>> row = TrainingExample("q", ["p"])
    >>> refuse_lone_positives([row, row], batch_size=2, num_negatives=0)  # in-batch: fine
    >>> refuse_lone_positives([row], batch_size=16, num_negatives=1)
    Traceback (most recent call last):
    ...
    ValueError: batch_size=16 with 1 training row(s) and no hard negatives: ...

    Raises:
        ValueError: Nothing to contrast any positive with.
    """
    if min(batch_size, len(examples)) > 1 or (num_negatives and any(ex.neg for ex in examples)):
        return
    raise ValueError(
        f"batch_size={batch_size} with {len(examples)} training row(s) and no hard negatives: "
        "each query's only candidate is its positive, so every loss is 0 and nothing would "
        "train; use batch_size >= 2 (in-batch negatives) or rows with hard negatives "
        "(num_negatives >= 1)"
    )


def warn_negative_shortfall(examples: Sequence[TrainingExample], num_negatives: int) -> None:
    """Log a warning counting the rows with fewer hard negatives than ``num_negatives``.

    Such rows train with the negatives they carry and the batch's other passages. Rows
    without any (``neg`` empty or missing) are valid FlagEmbedding and QA data, so even a set
    where no row carries one is a warning, saying the run uses in-batch negatives only.

    Args:
        examples: The training rows.
        num_negatives: Hard negatives asked for per row (:attr:`FinetuneConfig.num_negatives`).
    """
    short = Counter(len(ex.neg) for ex in examples if len(ex.neg) < num_negatives)
    if not short:
        return
    if short[0] == len(examples):
        logger.warning(
            "num_negatives=%d but none of the %d training rows carries a hard negative: the run "
            "trains on in-batch negatives only (mine some with mine_hard_negatives or m3kit "
            "mine-negatives, or set num_negatives=0)",
            num_negatives,
            len(examples),
        )
        return
    counts = ", ".join(
        f"{rows} row{'s' if rows > 1 else ''} with {have}" for have, rows in sorted(short.items())
    )
    logger.warning(
        "%d of %d training rows carry fewer hard negatives than num_negatives=%d (%s): they "
        "train with those and the batch's other passages",
        sum(short.values()),
        len(examples),
        num_negatives,
        counts,
    )


def examples_from_qa(dataset: Any) -> list[TrainingExample]:
    """Training examples from a :class:`QADataset`, a LlamaIndex dataset or its JSON path."""
    if isinstance(dataset, QADataset):
        return dataset.to_examples()
    if isinstance(dataset, (str, os.PathLike)):
        return QADataset.from_json(dataset).to_examples()
    return QADataset.from_llamaindex(dataset).to_examples()


#: Keys a row may carry besides ``query``, ``pos`` and ``neg`` although they read like one
#: of them: FlagEmbedding's distillation scores and the ids of a split's metadata.
_KNOWN_LOOKALIKES = frozenset({"pos_scores", "neg_scores", "pos_ids", "neg_ids", "query_id"})


def _check_row_keys(row: Mapping[str, Any]) -> None:
    """Refuse the keys of a FlagEmbedding row that would be ignored while they change what
    the row means: misspellings of ``query`` / ``pos`` / ``neg``."""
    for key in row:
        name = str(key).strip().lower()
        if key in ("query", "pos", "neg") or name in _KNOWN_LOOKALIKES:
            continue
        if name.startswith(("pos", "neg", "quer", "hard_neg")) or name in _LOOKALIKE_NAMES:
            raise ValueError(
                f'row has the key "{key}", which m3kit would ignore: a row\'s texts are read '
                'from "query", "pos" and "neg" only (rename the key)'
            )


#: Other names given to a row's query, positives or negatives.
_LOOKALIKE_NAMES = frozenset(
    {"question", "positive", "positives", "negative", "negatives", "hard_negatives", "negs"}
)


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[TrainingExample]:
    """Stream :class:`TrainingExample` rows from a FlagEmbedding jsonl (or .jsonl.gz) file.

    Keys other than ``query``, ``pos`` and ``neg`` are ignored (metadata, ``pos_scores`` /
    ``neg_scores``), except a key that reads like one of the three (``negs``, ``positive``,
    ``Query``...), an error: the row would train on something else than it says. A row's
    ``prompt`` is not applied, as FlagEmbedding does not without
    ``query_instruction_for_retrieval``; m3kit has one query instruction for every row
    (``FinetuneConfig.query_instruction``), and the first row with one is logged as a warning.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A line is not JSON (or gives a key twice), lacks ``query``/``pos``, has
            no positive, or a misspelt ``query``/``pos``/``neg`` key; the
            message names the file and the line number.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training file {p} does not exist")
    prompt_told = False
    for line_no, row in iter_json_rows(p):
        try:
            _check_row_keys(row)
        except ValueError as e:
            raise ValueError(f"{p}:{line_no}: {e}") from e
        prompt = row.get("prompt")
        if not prompt_told and prompt is not None and (not isinstance(prompt, str) or prompt):
            prompt_told = True
            logger.warning(
                '%s:%d: rows carry a "prompt" (%r), which m3kit does not apply: FlagEmbedding '
                "puts a row's prompt before its query only when its run sets "
                "query_instruction_for_retrieval; "
                "m3kit puts FinetuneConfig.query_instruction (default: the checkpoint's) before "
                "every query",
                p,
                line_no,
                str(prompt)[:40],
            )
        if "query" not in row:
            raise ValueError(f'{p}:{line_no}: row has no "query"')
        if not row.get("pos"):
            raise ValueError(f'{p}:{line_no}: row has no positive passage ("pos" is empty)')
        try:
            neg = row.get("neg")  # null means none, as a missing "neg" does
            yield TrainingExample(row["query"], row["pos"], () if neg is None else neg)
        except ValueError as e:
            raise ValueError(f"{p}:{line_no}: {e}") from e


def read_jsonl(path: str | os.PathLike[str], *, limit: int | None = None) -> list[TrainingExample]:
    """Read a FlagEmbedding jsonl file (see :func:`iter_jsonl`); ``limit`` keeps the first rows."""
    out: list[TrainingExample] = []
    for ex in iter_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        out.append(ex)
    return out


def write_jsonl(examples: Iterable[TrainingExample], path: str | os.PathLike[str]) -> Path:
    """Write FlagEmbedding rows (gzip when the name ends in ``.gz``); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open_text(p, "w") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
    return p
