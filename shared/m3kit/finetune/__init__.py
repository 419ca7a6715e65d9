"""Fine-tuning of BGE-M3's dense, sparse and ColBERT heads (``pip install 'm3kit[finetune]'``).

Public names: :class:`M3Finetuner` / :class:`FinetuneConfig` / :class:`FinetuneResult`
(training), :class:`TrainingExample` / :class:`QADataset` and the jsonl readers (data),
:class:`SpanExample` / :func:`read_longdoc_examples` (span pooling, ``M3Finetuner.fit_spans``).
Submodules:
``mining.mine_hard_negatives``, ``synthetic.generate_qa_dataset``,
``evaluate.evaluate_heads`` (retrieval metrics per head), ``splits.split_by_article``,
``cli.add_subcommands`` (``m3kit finetune`` / ``mine-negatives`` / ``eval``).
"""

from m3kit.finetune.data import (
    QADataset,
    TrainingExample,
    examples_from_qa,
    iter_jsonl,
    read_jsonl,
    write_jsonl,
)
from m3kit.finetune.losses import LossConfig
from m3kit.finetune.span_data import SpanExample, read_longdoc_examples
from m3kit.finetune.sparse_start import SparseStart
from m3kit.finetune.trainer import FinetuneConfig, FinetuneResult, M3Finetuner

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "LossConfig",
    "M3Finetuner",
    "QADataset",
    "SpanExample",
    "SparseStart",
    "TrainingExample",
    "examples_from_qa",
    "iter_jsonl",
    "read_jsonl",
    "read_longdoc_examples",
    "write_jsonl",
]
