"""Runs LlamaIndex's SentenceTransformersFinetuneEngine (inside a separate venv).

Called by ``benchmarks/finetune.py`` as ``<bench-python> _llamaindex_st_finetune.py
train.json val.json model out epochs batch_size``; prints one JSON line with the timing.
llama-index-finetuning is never installed in the project venv.
"""

import json
import sys
import time

from llama_index.finetuning import EmbeddingQAFinetuneDataset, SentenceTransformersFinetuneEngine


def main() -> None:
    train_json, val_json, model, out, epochs, batch_size = sys.argv[1:7]
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
            }
        )
    )


if __name__ == "__main__":
    main()
