"""Runs LlamaIndex's SentenceTransformersFinetuneEngine (inside a separate venv).

Called by ``benchmarks/finetune.py`` as ``<bench-python> _llamaindex_st_finetune.py
train.json model out epochs batch_size [max_length]``; prints one JSON line with the timing,
the max length the engine trained at (``max_length`` 0 or absent: the model's own, 256 for
all-MiniLM-L6-v2) and this venv's package versions.

No validation set is passed (and ``evaluation_steps=0``, which recent sentence-transformers
need without one): with one, ``finetune()`` also runs sentence-transformers'
evaluator (every 50 steps and at the end) and saves the model only when the validation score
improves, so the timed part would include evaluations and saves and the scored model could be
an earlier step's. Without it, the final model is saved once, at the end of training.

What is timed (``train_seconds``) is what m3kit's ``train_seconds`` is: the transformers
``Trainer.train()`` loop alone (``SentenceTransformerTrainer.train``), less the final save
that sentence-transformers makes inside it (its ``SaveModelCallback.on_train_end``; m3kit
saves after its timer). Apart: ``build_seconds`` (building the engine: loading the model),
``finetune_seconds`` (the whole ``finetune()`` call: converting the examples to a dataset,
building the trainer, the loop and the save) and ``save_seconds``.
llama-index-finetuning is never installed in the project venv.
"""

import json
import sys
import time
from importlib import metadata

from llama_index.finetuning import EmbeddingQAFinetuneDataset, SentenceTransformersFinetuneEngine

PACKAGES = ("llama-index-finetuning", "sentence-transformers", "transformers", "torch")


def _versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _timed(method, times: dict, key: str):
    """``method``, adding the seconds each call takes to ``times[key]``."""

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            times[key] += time.perf_counter() - start

    return timed


def _patch_timers(times: dict) -> bool:
    """Time ``SentenceTransformerTrainer.train`` and the final save inside it.

    Returns whether the save could be timed (False: ``train_seconds`` includes it).
    """
    from sentence_transformers import SentenceTransformerTrainer

    SentenceTransformerTrainer.train = _timed(SentenceTransformerTrainer.train, times, "train")
    try:  # sentence-transformers >= 5 moved fit_mixin under sentence_transformer/
        from sentence_transformers.sentence_transformer.fit_mixin import SaveModelCallback
    except ImportError:
        try:
            from sentence_transformers.fit_mixin import SaveModelCallback
        except ImportError:
            return False
    SaveModelCallback.on_train_end = _timed(SaveModelCallback.on_train_end, times, "save")
    return True


def main() -> None:
    train_json, model, out, epochs, batch_size = sys.argv[1:6]
    max_length = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    import torch

    train = EmbeddingQAFinetuneDataset.from_json(train_json)
    times = {"train": 0.0, "save": 0.0}
    save_timed = _patch_timers(times)
    start = time.perf_counter()
    engine = SentenceTransformersFinetuneEngine(
        train,
        model_id=model,
        model_output_path=out,
        val_dataset=None,  # no evaluator: no evaluation in the timed loop, the final model saved
        evaluation_steps=0,  # eval_strategy "no" (recent sentence-transformers refuse "steps"
        # without an evaluator: why earlier runs passed a validation set)
        epochs=int(epochs),
        batch_size=int(batch_size),
        show_progress_bar=False,
        device="cpu",
    )
    if engine.evaluator is not None:
        raise SystemExit("error: the engine built an evaluator without a validation set")
    if max_length:
        engine.model.max_seq_length = max_length
    built = time.perf_counter()
    engine.finetune()
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "train_seconds": times["train"] - times["save"],
                "save_seconds": times["save"] if save_timed else None,
                "finetune_seconds": done - built,
                "build_seconds": built - start,
                "examples": len(engine.examples),
                "max_length": engine.model.max_seq_length,
                "timer": (
                    "SentenceTransformerTrainer.train() less the final save"
                    if save_timed
                    else "SentenceTransformerTrainer.train() with the final save"
                ),
                "torch_threads": torch.get_num_threads(),
                "precision": "fp32",
                "versions": _versions(),
            }
        )
    )


if __name__ == "__main__":
    main()
