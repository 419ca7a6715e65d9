"""How many rows FlagEmbedding's ``BGEM3FlagModel.encode`` runs through the model per call.

FlagEmbedding 1.4.2 probes the batch size on every ``encode`` call: it runs its first batch
(up to 256 texts, the longest, as it sorts by length) once more before encoding. The ratio
``rows encoded / texts`` is the work FlagEmbedding does per text against m3kit's one pass
(the speed ratios in ``benchmarks/results/encode*.md`` are per call of 32 passages: the probe
doubles FlagEmbedding's work there). Rows are counted with a hook on the model's ``forward``;
the model is a tiny random M3 checkpoint (the count does not depend on the weights)::

    python benchmarks/flagembedding_probe.py --sizes 32 256 900

Texts: ``../shared/data/squad_en/corpus.jsonl`` when present, else the test sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _texts() -> list[str]:
    full = HERE.parent.parent / "shared" / "data" / "squad_en" / "corpus.jsonl"
    path = full if full.is_file() else HERE.parent / "tests" / "data" / "squad_en" / "corpus.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 900])
    parser.add_argument("--results", default=None, help="results stem (.json / .md)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(HERE))
    from _bench import (
        RunStart,
        command_line,
        machine_facts,
        machine_markdown,
        output_stem,
        refuse_existing,
        with_ext,
    )
    from FlagEmbedding import BGEM3FlagModel

    from m3kit import testing

    stem = output_stem(args.results, "flagembedding_probe")
    refuse_existing([with_ext(stem, ".json"), with_ext(stem, ".md")])  # before any work
    start = RunStart.now()
    texts = _texts()
    with tempfile.TemporaryDirectory() as tmp:
        path = testing.build_tiny_m3_checkpoint(
            Path(tmp) / "tiny", xlmr_vocab=testing.xlmr_tokenizer_file() is not None
        )
        flag = BGEM3FlagModel(str(path), devices="cpu", use_fp16=False)
        model = flag.model
        counted = {"calls": 0, "rows": 0}
        forward = model.forward

        def counting(*a: object, **k: object) -> object:
            batch = a[0] if a else k.get("text_input")
            counted["calls"] += 1
            counted["rows"] += int(batch["input_ids"].shape[0])  # type: ignore[index]
            return forward(*a, **k)

        model.forward = counting
        rows = []
        for n in args.sizes:
            if n > len(texts):
                raise SystemExit(f"error: {n} texts asked, {len(texts)} available")
            counted.update(calls=0, rows=0)
            flag.encode(texts[:n], return_dense=True, return_sparse=True, return_colbert_vecs=True)
            rows.append({"texts": n, **counted, "rows_per_text": counted["rows"] / n})
    facts = machine_facts(start, "fp32 (FlagEmbedding use_fp16=False; counts only, no timing)")
    command = command_line("flagembedding_probe.py", argv)
    with_ext(stem, ".json").write_text(
        json.dumps({"command": command, "machine": facts, "rows": rows}, indent=2),
        encoding="utf-8",
    )
    lines = [
        "# FlagEmbedding's forward work per `encode` call (`benchmarks/flagembedding_probe.py`)",
        "",
        f"`{command}`",
        "",
        machine_markdown(facts),
        "",
        "| texts in one call | forward calls | rows encoded | rows per text |",
        "|---:|---:|---:|---:|",
        *(
            f"| {r['texts']} | {r['calls']} | {r['rows']} | {r['rows_per_text']:.2f} |"
            for r in rows
        ),
    ]
    with_ext(stem, ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
