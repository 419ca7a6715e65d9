"""LlamaIndex ``SentenceTransformersFinetuneEngine`` arguments read by ``M3FinetuneEngine``.

A call written for LlamaIndex's engine spells its training data ``dataset`` and may pass
``loss``, ``evaluation_steps``, ``trust_remote_code`` and the checkpoint options. Those with
an m3kit meaning are taken with it; those m3kit cannot honour are refused here by name,
saying what to do instead, rather than accepted and ignored.
"""

from __future__ import annotations

from typing import Any

__all__ = ["refuse_unsupported", "training_data"]


def training_data(train_dataset: Any, dataset: Any) -> Any:
    """The training data given as ``train_dataset`` (m3kit) or ``dataset`` (LlamaIndex).

    Raises:
        TypeError: Both or neither were given.
    """
    if train_dataset is not None and dataset is not None:
        raise TypeError(
            "train_dataset and dataset are the same argument (dataset is LlamaIndex's name "
            "for it): give only one"
        )
    if train_dataset is None and dataset is None:
        raise TypeError("no training data: give train_dataset (or dataset, LlamaIndex's name)")
    return dataset if train_dataset is None else train_dataset


def refuse_unsupported(
    *,
    loss: Any,
    evaluation_steps: int | None,
    has_val_dataset: bool,
    trust_remote_code: bool,
    save_checkpoints: bool,
    resume_from_checkpoint: bool,
) -> None:
    """Refuse the LlamaIndex options whose meaning m3kit's training cannot give.

    Args:
        loss: LlamaIndex's sentence-transformers loss object; only ``None`` is accepted.
        evaluation_steps: LlamaIndex's evaluation interval on ``val_dataset``; accepted
            without a validation set, where LlamaIndex ignores it too.
        has_val_dataset: Whether a ``val_dataset`` was given.
        trust_remote_code: Only ``False`` is accepted.
        save_checkpoints: Only ``False`` is accepted.
        resume_from_checkpoint: Only ``False`` is accepted.

    Raises:
        ValueError: Naming the option and what to use instead.
    """
    if loss is not None:
        raise ValueError(
            f"loss: M3FinetuneEngine trains the dense, sparse and ColBERT heads with its own "
            f"contrastive loss (InfoNCE over in-batch and mined negatives, as "
            f"MultipleNegativesRankingLoss, plus self-distillation); a sentence-transformers "
            f"loss object ({type(loss).__name__}) cannot train them: drop loss=, and set the "
            "loss through m3kit.finetune.FinetuneConfig (temperature, self_distill, ...) "
            "with M3Finetuner if you need to change it"
        )
    if evaluation_steps is not None and has_val_dataset:
        raise ValueError(
            "evaluation_steps: M3FinetuneEngine evaluates val_dataset once, after training "
            "(engine.val_report), not every few steps during it: drop evaluation_steps"
        )
    if trust_remote_code:
        raise ValueError(
            "trust_remote_code=True: fine-tuning a model that needs its own remote code is "
            "not supported (m3kit trains BERT / XLM-R style encoders transformers ships); "
            "start from such a model (e.g. BAAI/bge-m3) and drop trust_remote_code"
        )
    if save_checkpoints:
        raise ValueError(
            "save_checkpoints=True: M3FinetuneEngine saves only the final model, to "
            "model_output_path; for intermediate ones train in shorter runs (epochs=) "
            "starting each from the last one's model_output_path"
        )
    if resume_from_checkpoint:
        raise ValueError(
            "resume_from_checkpoint=True: M3FinetuneEngine keeps no intermediate checkpoints "
            "and cannot resume a run; start a new run from the saved model instead "
            "(model_id=<the previous model_output_path>)"
        )
