"""Fine-tuning of BGE-M3's dense, sparse and ColBERT heads (``pip install 'm3kit[finetune]'``).

Public names: :class:`M3Finetuner` / :class:`FinetuneConfig` / :class:`FinetuneResult`
(training), :class:`TrainingExample` / :class:`QADataset` and the jsonl readers (data),
:func:`mine_hard_negatives` (mining), :func:`generate_qa_dataset` (synthetic queries) and
:func:`evaluate_heads` (retrieval evaluation per head).
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
from m3kit.finetune.trainer import FinetuneConfig, FinetuneResult, M3Finetuner

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "LossConfig",
    "M3Finetuner",
    "QADataset",
    "TrainingExample",
    "examples_from_qa",
    "iter_jsonl",
    "read_jsonl",
    "write_jsonl",
]
