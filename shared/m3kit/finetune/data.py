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
    "read_jsonl",
    "text_key",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

#: Moved to :mod:`m3kit.finetune.positives`; still importable from here (:func:`__getattr__`).
_MOVED_TO_POSITIVES = frozenset(
    {
        "query_positives",
        "refuse_lone_positives",
        "warn_negative_shortfall",
        "without_query_positives",
    }
)


def __getattr__(name: str) -> Any:
    """The functions moved to :mod:`m3kit.finetune.positives`, imported from there when asked
    for here (a plain import would be circular: that module imports this one)."""
    if name in _MOVED_TO_POSITIVES:
        from m3kit.finetune import positives

        return getattr(positives, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def text_key(text: str) -> str:
    """``text`` with its whitespace collapsed: the form training compares texts in.

    Texts that differ only in whitespace (a trailing newline, a doubled space) say the same
    thing, so one must never be the other's negative. Mining, the checks of
    :class:`TrainingExample`, :func:`~m3kit.finetune.positives.without_query_positives` and
    the trainer's in-batch
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


#: Hard negatives per query a training step samples unless told (``FinetuneConfig.num_negatives``,
#: ``m3kit finetune --negatives``); why 1: :class:`~m3kit.finetune.trainer.FinetuneConfig`.
DEFAULT_NEGATIVES = 1


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
        IsADirectoryError: The path is a folder.
        ValueError: A line is not JSON (or gives a key twice), lacks ``query``/``pos``, has
            no positive, or a misspelt ``query``/``pos``/``neg`` key; the
            message names the file and the line number.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"training file {p} is a folder; give a .jsonl / .jsonl.gz file")
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
