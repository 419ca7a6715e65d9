"""Runs LlamaIndex's SentenceTransformersFinetuneEngine (inside a separate venv).

Called by ``benchmarks/finetune.py`` as ``<bench-python> _llamaindex_st_finetune.py
train.json val.json model out epochs batch_size [max_length]``; prints one JSON line with
the timing and the max length the engine trained at (``max_length`` 0 or absent: the
model's own, 256 for all-MiniLM-L6-v2).
llama-index-finetuning is never installed in the project venv.
"""

import json
import sys
import time

from llama_index.finetuning import EmbeddingQAFinetuneDataset, SentenceTransformersFinetuneEngine


def main() -> None:
    train_json, val_json, model, out, epochs, batch_size = sys.argv[1:7]
    max_length = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    train = EmbeddingQAFinetuneDataset.from_json(train_json)
    val = EmbeddingQAFinetuneDataset.from_json(val_json)
    start = time.perf_counter()
    engine = SentenceTransformersFinetuneEngine(
        train,
        model_id=model,
        model_output_path=out,
        val_dataset=val,
        epochs=int(epochs),
        batch_size=int(batch_size),
        show_progress_bar=False,
        device="cpu",
    )
    if max_length:
        engine.model.max_seq_length = max_length
    built = time.perf_counter()
    engine.finetune()
    done = time.perf_counter()
    # train_seconds: finetune() alone, like m3kit's (its model is loaded before the timer)
    print(
        json.dumps(
            {
                "train_seconds": done - built,
                "build_seconds": built - start,
                "examples": len(engine.examples),
                "max_length": engine.model.max_seq_length,
            }
        )
    )


if __name__ == "__main__":
    main()
