"""``M3FinetuneEngine``: LlamaIndex-style fine-tuning of all three BGE-M3 heads.

Same call shape as LlamaIndex's ``SentenceTransformersFinetuneEngine`` (``finetune()``, then
``get_finetuned_model()``), without depending on llama-index-finetuning: the dataset is any
``EmbeddingQAFinetuneDataset`` (read by its ``queries`` / ``corpus`` / ``relevant_docs``
fields), its saved JSON path, or an :class:`m3kit.finetune.QADataset`. Its keywords are
accepted with their LlamaIndex meaning (``dataset``, ``use_all_docs``, ``device``, ...), or
refused by name where m3kit cannot give it (a ``loss`` object, ``save_checkpoints=True``,
...; :mod:`llamaindex_m3._finetune_compat`). Past the third, pass arguments by name: the
fourth positional one is ``val_dataset`` here, ``batch_size`` there. Defaults that differ:
``model_id`` (``BAAI/bge-m3``) and ``use_all_docs`` (``True``).

Example::

    from llamaindex_m3.finetune import M3FinetuneEngine

    engine = M3FinetuneEngine(train_dataset, model_id="BAAI/bge-m3",
                              model_output_path="bge-m3-ft", val_dataset=val_dataset)
    engine.finetune()
    embed_model = engine.get_finetuned_model()   # llamaindex_m3.M3Embedding
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamaindex_m3._finetune_compat import refuse_unsupported, training_data
from m3kit.encoder_inputs import whole_number
from m3kit.finetune.data import QADataset, TrainingExample
from m3kit.finetune.evaluate import RetrievalReport
from m3kit.finetune.span_data import SpanExample, read_longdoc_examples
from m3kit.finetune.sparse_start import SparseStart
from m3kit.finetune.splits import warn_validation_overlap
from m3kit.finetune.trainer import FinetuneConfig, FinetuneResult, M3Finetuner
from m3kit.outputs import ALL_HEADS, Head

if TYPE_CHECKING:
    import torch

    from llamaindex_m3.embeddings import M3Embedding
    from m3kit.encoder import M3Encoder
    from m3kit.store.fusion_calibration import FusionCalibration
    from m3kit.store.sparse_cut import SparseCut

__all__ = ["M3FinetuneEngine"]


def _qa(dataset: Any, name: str) -> QADataset:
    """``dataset`` read as a :class:`QADataset`; ``name``: the argument it was given as.

    Raises:
        TypeError: ``dataset`` is neither a dataset nor a path; the message names ``name``
            (the fourth positional argument is ``val_dataset`` here, ``batch_size`` in
            LlamaIndex's ``SentenceTransformersFinetuneEngine``).
    """
    if isinstance(dataset, QADataset):
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        return QADataset.from_json(dataset)
    try:
        return QADataset.from_llamaindex(dataset)
    except TypeError as e:
        hint = ""
        if name == "val_dataset" and isinstance(dataset, int):
            hint = (
                " (LlamaIndex's SentenceTransformersFinetuneEngine takes batch_size fourth; "
                "pass batch_size=, epochs= and val_dataset= by name)"
            )
        raise TypeError(f"{name}: {e}{hint}") from e


def _spans(dataset: Any) -> list[SpanExample]:
    if isinstance(dataset, (str, os.PathLike)):
        return read_longdoc_examples(dataset)
    examples = list(dataset)
    for i, ex in enumerate(examples):
        if not isinstance(ex, SpanExample):
            raise TypeError(
                f"with late_chunking=True train_dataset is a longdoc folder or SpanExamples; "
                f"item {i} is a {type(ex).__name__}"
            )
    return examples


def _sparse_cut(top_k: int | None, min_weight: float | None, val_dataset: Any) -> SparseCut:
    """The engine's sparse cut, checked before any training (``SparseCut()``: none).

    Raises:
        ValueError: A value an index refuses, or a cut without a ``val_dataset`` to measure.
    """
    from m3kit.store.sparse_cut import SparseCut, sparse_cut_of

    cut = sparse_cut_of(top_k, min_weight) or SparseCut()
    if cut.cuts and val_dataset is None:
        raise ValueError(
            f"{cut.describe()} was given without a val_dataset: the sparse cut applies to its "
            "evaluation and calibration (the checkpoint itself stores no cut; give it to "
            "M3Index.open)"
        )
    return cut


def _measure(encoder: M3Encoder, val: QADataset, cut: SparseCut) -> RetrievalReport:
    """The validation report of ``encoder`` (the fine-tuned checkpoint) on ``val``."""
    from m3kit.finetune.evaluate import evaluate_heads

    return evaluate_heads(
        encoder,
        val.corpus,
        val.queries,
        _qrels(val),
        sparse_top_k=cut.top_k,
        sparse_min_weight=cut.min_weight,
    )


def _calibrate(encoder: M3Encoder, val: QADataset, cut: SparseCut, path: Path) -> FusionCalibration:
    """``encoder``'s fusion calibrated on ``val``, saved in its checkpoint at ``path``."""
    from m3kit.store.calibration import calibrate_fusion

    calibration = calibrate_fusion(
        encoder,
        val.corpus,
        val.queries,
        _qrels(val),
        # no cut given: none passed on (a dense-only model refuses any given cut, even
        # "every weight kept")
        sparse_top_k=cut.top_k if cut.cuts else None,
        sparse_min_weight=cut.min_weight if cut.cuts else None,
    )
    calibration.save(path)
    return calibration


def _qrels(val: QADataset) -> dict[str, dict[str, float]]:
    # the queries it holds: relevant_docs of another query (queries trimmed to a sample)
    # are not judged, as LlamaIndex's evaluators leave them out
    return {q: dict.fromkeys(val.relevant_docs[q], 1.0) for q in val.queries}


class M3FinetuneEngine:
    """Fine-tune an M3 (or dense-only BGE / sentence-transformers) model on a QA dataset.

    Args:
        train_dataset: ``EmbeddingQAFinetuneDataset``, its JSON path, or a ``QADataset``;
            with ``late_chunking``: :class:`~m3kit.finetune.SpanExample`\\ s or a longdoc
            folder (:func:`~m3kit.finetune.read_longdoc_examples`). One without a query (or
            span example) is refused (``ValueError``).
        model_id: Start checkpoint (hub id or folder) of the first ``finetune()`` call (a
            further call continues from the last one's checkpoint). A dense-only model gets
            new sparse and ColBERT heads.
        model_output_path: Folder of the fine-tuned M3 checkpoint.
        val_dataset: Optional held-out QA dataset; after training each head is evaluated on
            it (:attr:`val_report`) and, with ``calibrate_fusion``, the checkpoint's fusion
            is fitted on it (:attr:`calibration`, saved beside the weights and used by
            ``M3Index`` and the retrievers and vector stores by default).
        epochs: Passes over the training examples.
        batch_size: Training examples (query, relevant doc pairs) per step.
        dataset: LlamaIndex's name for ``train_dataset`` (give one of the two).
        use_all_docs: One training example per (query, relevant doc) pair (default), as
            LlamaIndex's engine trains with ``use_all_docs=True``; a query's other relevant
            docs are never its negatives. ``False``: its first relevant doc only, as
            LlamaIndex's engine does by default; the others are still never its negatives,
            neither mined nor in-batch (another query's positive in the same batch).
        loss: LlamaIndex's sentence-transformers loss: only ``None`` (m3kit's own
            three-head contrastive loss); a loss object is refused (``ValueError``).
        evaluation_steps: LlamaIndex's evaluation interval. ``val_dataset`` is evaluated
            once, after training, so it is refused (``ValueError``) with a ``val_dataset``;
            without one it does nothing, as in LlamaIndex.
        trust_remote_code: Only ``False``: models needing remote code are not trained
            (``True`` raises ``ValueError``).
        save_checkpoints: Only ``False``: the final model alone is saved (``True`` raises
            ``ValueError``).
        resume_from_checkpoint: Only ``False``: a run cannot be resumed (``True`` raises
            ``ValueError``).
        checkpoint_save_steps: Accepted for LlamaIndex calls; without ``save_checkpoints``
            it does nothing there either.
        checkpoint_save_total_limit: As ``checkpoint_save_steps``.
        heads: Heads to train (default all three).
        sparse_start: How a dense-only ``model_id``'s new sparse head starts: ``"idf"``
            (default: each token weighted by its inverse document frequency over the
            training passages) or ``"uniform"`` (every token 0.1;
            ``FinetuneConfig.sparse_start``).
        mine_negatives: Hard negatives per query mined from the training corpus before each
            ``finetune()`` call with the model it trains (``model_id``, then the last call's
            checkpoint; 0: in-batch negatives only, like LlamaIndex's engine).
        learning_rate: Peak learning rate (``None``: by the start model's size, 1e-4 below
            100M parameters, else 2e-5; ``FinetuneConfig.learning_rate``).
        freeze_encoder: Train the heads only.
        frozen_layers: Keep the token embeddings and the first this many transformer layers
            fixed (cheaper steps; ``FinetuneConfig.frozen_layers``). 0: train them all.
        precision: ``"auto"`` (default: bf16 autocast where bf16 is native, else fp32),
            ``"fp32"``, ``"bf16"`` or ``"fp16"`` (GPU).
        attention_dropout: Dropout on attention probabilities while training (default: the
            model's own; ``0.0`` trains faster on CPU at a small quality cost,
            ``FinetuneConfig.attention_dropout``).
        keep_freed_memory: Training on CPU (Linux, glibc), keep freed memory in the process
            for reuse: faster steps, higher peak memory (``FinetuneConfig.keep_freed_memory``).
        device: Training device, a string or a ``torch.device`` (default: CUDA when
            available); one that cannot run here is refused (``ValueError``).
        passage_max_length: Passage truncation in tokens.
        seed: Seeds sampling and head initialisation (a whole number in ``[0, 2**32 - 1]``).
        show_progress_bar: Show the trainer's progress.
        calibrate_fusion: Fit the fusion on ``val_dataset`` after training
            (:func:`m3kit.store.calibration.calibrate_checkpoint`). The fusion is then fitted
            to those queries: measure the fused search on other queries (a held-out split),
            or its score is optimistic.
        late_chunking: Span pooling (:meth:`m3kit.finetune.M3Finetuner.fit_spans`): positives
            pooled from a window of the whole document, as late chunking pools them;
            ``passage_max_length`` is the window. Negatives: the batch's other positives, plus
            ``span_negatives`` other spans of the window. No negative mining.
        span_negatives: With ``late_chunking``: other spans of the positive's window pooled as
            its negatives (default 0, ``FinetuneConfig.span_negatives``).
        span_overlap: With ``late_chunking``: text tokens consecutive windows share (default:
            the late chunker's, ``FinetuneConfig.span_overlap``); set it and
            ``passage_max_length`` to the ``overlap`` and ``window`` you chunk with.
        sparse_top_k: The sparse cut of the collections the model will serve
            (``M3Index.open(sparse_top_k=...)``): ``val_dataset`` is evaluated and calibrated
            with only the ``k`` highest sparse weights of every passage and query
            (:attr:`val_report`'s ``sparse_cut``, the calibration's ``sparse_cut``).
            Default: every weight kept.
        sparse_min_weight: Likewise, drop sparse weights at or below this value.
    """

    def __init__(
        self,
        train_dataset: Any = None,
        model_id: str = "BAAI/bge-m3",
        model_output_path: str = "exp_finetune",
        val_dataset: Any | None = None,
        epochs: int = 2,
        batch_size: int = 10,
        *,
        dataset: Any = None,
        use_all_docs: bool = True,
        loss: Any = None,
        evaluation_steps: int | None = None,
        trust_remote_code: bool = False,
        save_checkpoints: bool = False,
        resume_from_checkpoint: bool = False,
        checkpoint_save_steps: int | None = None,
        checkpoint_save_total_limit: int | None = None,
        heads: Iterable[Head | str] = ALL_HEADS,
        sparse_start: SparseStart | str = SparseStart.IDF,
        mine_negatives: int = 0,
        learning_rate: float | None = None,
        freeze_encoder: bool = False,
        frozen_layers: int = 0,
        precision: str = "auto",
        attention_dropout: float | None = None,
        keep_freed_memory: bool = True,
        device: str | torch.device | None = None,
        passage_max_length: int = 256,
        seed: int = 42,
        show_progress_bar: bool = True,
        calibrate_fusion: bool = True,
        late_chunking: bool = False,
        span_negatives: int = 0,
        span_overlap: int | None = None,
        sparse_top_k: int | None = None,
        sparse_min_weight: float | None = None,
    ) -> None:
        train_dataset = training_data(train_dataset, dataset)
        refuse_unsupported(
            loss=loss,
            evaluation_steps=evaluation_steps,
            has_val_dataset=val_dataset is not None,
            trust_remote_code=trust_remote_code,
            save_checkpoints=save_checkpoints,
            resume_from_checkpoint=resume_from_checkpoint,
        )
        del checkpoint_save_steps, checkpoint_save_total_limit  # without save_checkpoints
        mine_negatives = whole_number("mine_negatives", mine_negatives)  # int() read 1.5 as 1
        if mine_negatives < 0:  # it was read as 0: no mining, in-batch negatives only
            raise ValueError(f"mine_negatives must be >= 0 (0: none), got {mine_negatives}")
        self.use_all_docs = bool(use_all_docs)
        self.late_chunking = bool(late_chunking)
        if self.late_chunking and mine_negatives > 0:
            raise ValueError(
                "mine_negatives does not apply with late_chunking: the negatives are the batch's "
                "other positives and span_negatives other spans of each window"
            )
        if self.late_chunking and not self.use_all_docs:
            raise ValueError(
                "use_all_docs=False does not apply with late_chunking: each span example has "
                "one answer span, its only positive"
            )
        if span_negatives and not self.late_chunking:
            raise ValueError("span_negatives applies with late_chunking=True only")
        if span_overlap is not None and not self.late_chunking:
            raise ValueError("span_overlap applies with late_chunking=True only")
        self.span_examples = _spans(train_dataset) if self.late_chunking else None
        self.train_dataset = None if self.late_chunking else _qa(train_dataset, "train_dataset")
        self.val_dataset = _qa(val_dataset, "val_dataset") if val_dataset is not None else None
        if self.span_examples == [] or (
            self.train_dataset is not None and not self.train_dataset.queries
        ):
            # refused here, not by the trainer once finetune() is called
            raise ValueError(
                "train_dataset has no queries (no span examples with late_chunking): nothing "
                "to train on; give a dataset with queries and their relevant docs"
            )
        if self.val_dataset is not None and not self.val_dataset.queries:
            # refused here, not by the evaluation after the whole training run
            raise ValueError(
                "val_dataset has no queries: nothing to evaluate or calibrate on; give held-out "
                "queries, or leave val_dataset out"
            )
        if self.val_dataset is not None:  # told now, not after the training run
            if self.span_examples is not None:
                training = [ex.query for ex in self.span_examples]
            else:
                training = list(self.train_dataset.queries.values()) if self.train_dataset else []
            warn_validation_overlap(training, self.val_dataset.queries.values())
        self.model_id = model_id
        self.model_output_path = model_output_path
        self.mine_negatives = mine_negatives
        self.config = FinetuneConfig(
            model=model_id,
            output_path=model_output_path,
            heads=Head.parse(heads),
            sparse_start=sparse_start,
            freeze_encoder=freeze_encoder,
            frozen_layers=frozen_layers,
            epochs=float(epochs),
            batch_size=batch_size,
            num_negatives=max(self.mine_negatives, 0),
            span_negatives=span_negatives,
            span_overlap=span_overlap,
            learning_rate=learning_rate,
            precision=precision,
            attention_dropout=attention_dropout,
            keep_freed_memory=keep_freed_memory,
            device=device,
            passage_max_length=passage_max_length,
            seed=seed,
            show_progress=show_progress_bar,
        )
        self.calibrate_fusion = bool(calibrate_fusion)
        self.sparse_cut: SparseCut = _sparse_cut(sparse_top_k, sparse_min_weight, val_dataset)
        self.result: FinetuneResult | None = None
        self.val_report: RetrievalReport | None = None
        self.calibration: FusionCalibration | None = None

    def _start_model(self) -> str | os.PathLike[str]:
        """Where the next ``finetune()`` call starts: the last call's checkpoint, else
        ``model_id``."""
        return self.result.path if self.result is not None else self.model_id

    def _examples(self) -> list[TrainingExample]:
        if self.train_dataset is None:
            raise RuntimeError("a late_chunking engine trains on span examples, not QA rows")
        examples = self.train_dataset.to_examples()
        if self.mine_negatives > 0:
            from m3kit.encoder import M3Encoder
            from m3kit.finetune.mining import mine_hard_negatives

            # mined with the model this call trains: negatives it ranks high now, not ones
            # model_id ranked high before the last call's training
            encoder = M3Encoder.from_pretrained(self._start_model(), device=self.config.device)
            # mined knowing every relevant doc, so none is a negative even when unused below
            examples = mine_hard_negatives(
                encoder,
                examples,
                list(self.train_dataset.corpus.values()),
                num_negatives=self.mine_negatives,
                seed=self.config.seed,
                show_progress=self.config.show_progress,  # the engine's show_progress_bar
            )
        if self.use_all_docs:  # one row per (query, relevant doc) pair, as LlamaIndex trains
            return [TrainingExample(ex.query, (pos,), ex.neg) for ex in examples for pos in ex.pos]
        return [TrainingExample(ex.query, ex.pos[:1], ex.neg) for ex in examples]

    def _relevant_texts(self) -> dict[str, frozenset[str]]:
        """Every relevant doc of each training query, by query text: the trainer masks them
        all out of its negatives, also those its rows leave out (``use_all_docs=False``)."""
        from m3kit.finetune.positives import query_positives

        if self.train_dataset is None:
            raise RuntimeError("a late_chunking engine trains on span examples, not QA rows")
        return query_positives(self.train_dataset.to_examples())

    def finetune(self) -> FinetuneResult:
        """Train and save the checkpoint; evaluate on ``val_dataset`` when one was given.

        The first call trains ``model_id``; each further call continues from the checkpoint
        the call before saved (:attr:`result`'s ``path``), as LlamaIndex's
        ``SentenceTransformersFinetuneEngine`` trains the model it loaded once further with
        each call: two calls are two rounds of ``epochs``, each with its own learning-rate
        warm-up and decay, the second saved over the first in ``model_output_path``.
        ``mine_negatives`` mines with the model the call trains. The new checkpoint replaces
        :attr:`val_report` and :attr:`calibration` (``None`` until this call's are measured:
        they describe the checkpoint of the latest call only).

        Returns:
            The saved checkpoint and the run's numbers (:class:`~m3kit.finetune.FinetuneResult`).
        """
        # the start is loaded whole before the save replaces its files (prepare_training)
        config = dataclasses.replace(self.config, model=self._start_model())
        finetuner = M3Finetuner(config)
        if self.span_examples is not None:
            result = finetuner.fit_spans(self.span_examples)
        else:
            result = finetuner.fit(self._examples(), positives=self._relevant_texts())
        # the last call's report and calibration were of the weights this save replaced
        self.result, self.val_report, self.calibration = result, None, None
        if self.val_dataset is not None:
            from m3kit.encoder import M3Encoder

            encoder = M3Encoder.from_pretrained(self.result.path, device=self.config.device)
            self.val_report = _measure(encoder, self.val_dataset, self.sparse_cut)
            if self.calibrate_fusion:  # (a failed calibration leaves the report set)
                self.calibration = _calibrate(
                    encoder, self.val_dataset, self.sparse_cut, self.result.path
                )
        return self.result

    def get_finetuned_model(self, **model_kwargs: Any) -> M3Embedding:
        """The fine-tuned model as a LlamaIndex embedding (``llamaindex_m3.M3Embedding``).

        Args:
            **model_kwargs: Passed to ``M3Embedding`` (e.g. ``dtype``, ``device``).
        """
        if self.result is None:
            raise RuntimeError("call finetune() before get_finetuned_model()")
        from llamaindex_m3.embeddings import M3Embedding

        return M3Embedding(model_name=str(self.result.path), **model_kwargs)
