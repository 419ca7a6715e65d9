"""Span-pooling fine-tuning: examples, windows, pooling equal to late chunking, training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3kit import M3Encoder
from m3kit.finetune import FinetuneConfig, M3Finetuner, SpanExample, read_longdoc_examples
from m3kit.finetune.span_data import char_chunks
from m3kit.finetune.span_training import SpanCollator, pool_spans
from m3kit.finetune.training_loop import prepare_training
from m3kit.late_chunking import LateChunker
from m3kit.outputs import ALL_HEADS
from tests.finetune.conftest import assert_flagembedding_matches, tiny_finetune_config

PARAGRAPHS = {
    "rhine": [
        "The Rhine flows from the Swiss Alps through Germany to the North Sea.",
        "Its delta in the Netherlands splits into many branches near Rotterdam.",
        "Ships carry coal and grain along the river for hundreds of kilometres.",
    ],
    "oxygen": [
        "Oxygen is a chemical element with symbol O and atomic number 8.",
        "It was discovered by Scheele and Priestley in the eighteenth century.",
        "Plants release oxygen into the air through photosynthesis.",
    ],
}
QUESTIONS = {
    ("rhine", 0): "Where does the Rhine flow?",
    ("rhine", 1): "Where is the delta of the Rhine?",
    ("oxygen", 0): "What is the atomic number of oxygen?",
    ("oxygen", 2): "How do plants release oxygen?",
}


def _doc(name: str) -> tuple[str, list[tuple[int, int]]]:
    text, spans = "", []
    for p in PARAGRAPHS[name]:
        if text:
            text += "\n\n"
        spans.append((len(text), len(text) + len(p)))
        text += p
    return text, spans


def _examples() -> list[SpanExample]:
    out = []
    for (name, i), q in QUESTIONS.items():
        text, spans = _doc(name)
        out.append(SpanExample(q, text, spans[i], tuple(s for j, s in enumerate(spans) if j != i)))
    return out


def _config(model: Path, out: Path, **overrides: object) -> FinetuneConfig:
    """The trainer tests' tiny config, with windows of 96 tokens and room for 8 negatives."""
    base: dict[str, object] = {"passage_max_length": 96, "span_negatives": 8, "precision": "fp32"}
    return tiny_finetune_config(model, out, **{**base, **overrides})


def test_span_example_validation_names_the_problem() -> None:
    doc = "First paragraph.\n\nSecond paragraph."
    with pytest.raises(ValueError, match="query is empty"):
        SpanExample("  ", doc, (0, 5))
    with pytest.raises(ValueError, match="document is empty"):
        SpanExample("q", "", (0, 0))
    with pytest.raises(ValueError, match="start must be < end"):
        SpanExample("q", doc, (5, 5))
    with pytest.raises(ValueError, match="outside the document of 35 characters"):
        SpanExample("q", doc, (0, 36))
    with pytest.raises(ValueError, match=r"negative_spans\[0\] = \(10, 20\) overlaps"):
        SpanExample("q", doc, (0, 16), ((10, 20),))
    with pytest.raises(ValueError, match=r"negative_spans\[1\].*outside"):
        SpanExample("q", doc, (0, 16), ((18, 35), (30, 99)))
    with pytest.raises(ValueError, match="not a \\(start, end\\) pair"):
        SpanExample("q", doc, (0, 1, 2))  # type: ignore[arg-type]
    ok = SpanExample("q", doc, [0, 16], ([18, 35],))  # type: ignore[arg-type]
    assert ok.span == (0, 16) and ok.negative_spans == ((18, 35),)


def _write_longdoc(folder: Path) -> Path:
    """A tiny folder in the longdoc layout of ``shared/data/squad_en/longdoc``."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for name in PARAGRAPHS:
            fh.write(json.dumps({"_id": name, "title": name, "text": _doc(name)[0]}) + "\n")
    with (folder / "queries.jsonl").open("w") as fh:
        for (name, i), q in QUESTIONS.items():
            a, b = _doc(name)[1][i]
            row = {"_id": q, "text": q, "doc_id": name, "paragraph_start": a, "paragraph_end": b}
            # the answer: the paragraph's first 10 characters (its whole text for one question)
            row |= {"answer_start": a, "answer_end": b if (name, i) == ("oxygen", 2) else a + 10}
            fh.write(json.dumps(row) + "\n")
    return folder


def test_read_longdoc_examples_uses_other_paragraphs_as_negatives(tmp_path: Path) -> None:
    _write_longdoc(tmp_path)
    examples = read_longdoc_examples(tmp_path)
    assert [ex.query for ex in examples] == list(QUESTIONS.values())
    rhine_text, rhine_spans = _doc("rhine")
    first = examples[0]
    assert first.document == rhine_text and first.span == rhine_spans[0]
    # paragraph boundaries come from the questions: the rhine has questions on paragraphs 0, 1
    assert first.negative_spans == (rhine_spans[1],)
    only = read_longdoc_examples(tmp_path, articles=["oxygen"])
    assert [ex.query for ex in only] == [QUESTIONS[("oxygen", 0)], QUESTIONS[("oxygen", 2)]]
    with pytest.raises(ValueError, match="unknown documents"):
        read_longdoc_examples(tmp_path, articles=["nile"])
    with (tmp_path / "queries.jsonl").open("a") as fh:
        fh.write(json.dumps({"text": "x", "doc_id": "nile"}) + "\n")
    with pytest.raises(ValueError, match="lacks"):
        read_longdoc_examples(tmp_path)
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        read_longdoc_examples(tmp_path / "missing")


def test_chunk_examples_hold_the_answer_in_their_positive(tmp_path: Path) -> None:
    _write_longdoc(tmp_path)
    examples = read_longdoc_examples(tmp_path, chunk_chars=40)
    answers = {}  # query -> its answer span (as _write_longdoc writes it)
    for (name, i), q in QUESTIONS.items():
        a, b = _doc(name)[1][i]
        answers[q] = (a, b if (name, i) == ("oxygen", 2) else a + 10)
    held = [
        q
        for (name, _), q in QUESTIONS.items()
        if any(
            c[0] <= answers[q][0] and answers[q][1] <= c[1] for c in char_chunks(_doc(name)[0], 40)
        )
    ]
    # the photosynthesis answer is a whole 58-character paragraph: no 40-character chunk holds it
    assert QUESTIONS[("oxygen", 2)] not in held and len(held) >= 2
    assert [ex.query for ex in examples] == held
    for ex in examples:
        chunks = char_chunks(ex.document, 40)
        assert all(b - a <= 40 for a, b in chunks) and chunks[-1][1] == len(ex.document)
        a, b = answers[ex.query]
        assert ex.span in chunks and ex.span[0] <= a < b <= ex.span[1]
        assert set(ex.negative_spans) == set(chunks) - {ex.span}


def test_span_windows_are_the_late_chunkers(tiny_m3_path: Path, tmp_path: Path) -> None:
    """A document is cut into LateChunker's windows; a span's tokens come from their owners."""
    text = " ".join(p for name in PARAGRAPHS for p in PARAGRAPHS[name])
    cfg = _config(tiny_m3_path, tmp_path / "unused", passage_max_length=34)
    setup = prepare_training(cfg, [])  # (an M3 checkpoint: no new sparse head to fit)
    collator = SpanCollator(setup.tokenizer, cfg, setup.prefix)
    assert (collator.capacity, collator.overlap) == (32, 4)  # the chunker's default: 1/8
    doc = collator.document(text)
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    chunker = LateChunker(encoder, chunk_size=16, window=34)
    assert [(w.start, w.end, w.own_start, w.own_end) for w in doc.windows] == [
        (w.start, w.end, w.own_start, w.own_end) for w in chunker._plan(text).windows
    ]
    assert len(doc.windows) > 2
    # a span across the first windows' shared tokens: its tokens come from both windows
    cut = doc.windows[1].own_start
    a, b = int(doc.starts[cut - 3]), int(doc.starts[cut + 3])
    batch = collator([SpanExample("Where does the Rhine flow?", text, (a, b))])
    assert batch["w_ids"].shape[0] == 2 and batch["span_lengths"].tolist() == [6]
    assert batch["span_rows"][0].tolist() == [0, 0, 0, 1, 1, 1]
    first, second = doc.windows[0].start, doc.windows[1].start
    expected = [1 + t - first for t in range(cut - 3, cut)]
    expected += [1 + t - second for t in range(cut, cut + 3)]
    assert batch["span_positions"][0].tolist() == expected
    with pytest.raises(ValueError, match="span_overlap=32 must be smaller than the window's"):
        SpanCollator(
            setup.tokenizer,
            _config(tiny_m3_path, tmp_path, passage_max_length=34, span_overlap=32),
            setup.prefix,
        )
    with pytest.raises(ValueError, match="span_overlap must be >= 0"):
        _config(tiny_m3_path, tmp_path, span_overlap=-1)


@pytest.mark.parametrize(("window", "overlap"), [(512, None), (34, None), (40, 12)])
def test_pooled_span_equals_late_chunking(
    tiny_m3_path: Path, tmp_path: Path, window: int, overlap: int | None
) -> None:
    """Every span pooled in training is what LateChunker gives that chunk, window for window."""
    text = " ".join(p for name in PARAGRAPHS for p in PARAGRAPHS[name])
    starts = [text.index(para) for name in PARAGRAPHS for para in PARAGRAPHS[name]]
    spans = list(zip(starts, [*starts[1:], len(text)], strict=True))  # no gaps, as chunkers cut
    examples = [SpanExample(f"question {i}?", text, span) for i, span in enumerate(spans)]
    cfg = _config(
        tiny_m3_path, tmp_path / "unused", passage_max_length=window, span_overlap=overlap
    )
    setup = prepare_training(cfg, [])  # (an M3 checkpoint: no new sparse head to fit)
    collator = SpanCollator(setup.tokenizer, cfg, setup.prefix)
    batch = collator(examples)
    if window < 512:  # real sub-windows, some chunks pooled from two of them
        assert batch["w_ids"].shape[0] > 2
        assert any(
            len(set(r[:n].tolist())) == 2
            for r, n in zip(batch["span_rows"], batch["span_lengths"], strict=True)
        )
    model = setup.model.eval()
    with torch.no_grad():
        fwd = model(batch["w_ids"], batch["w_mask"])
        pooled = pool_spans(
            fwd,
            batch["w_ids"],
            batch["span_rows"],
            batch["span_positions"],
            batch["span_lengths"],
            collator.pad_id,
        )

    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    chunker = LateChunker(
        encoder,
        splitter=lambda t: spans,
        window=window,
        overlap=overlap,
        late_heads=ALL_HEADS,
    )
    chunks = chunker.chunk([text])[0]
    assert [(c.start, c.end) for c in chunks] == spans
    # the first chunk also owns the leading special token in late chunking: compare the rest
    for i, chunk in enumerate(chunks[1:-1], start=1):
        target = int(batch["targets"][i])
        np.testing.assert_allclose(pooled.dense[target].numpy(), chunk.vectors.dense[0], atol=1e-5)
        assert pooled.sparse is not None and pooled.colbert is not None
        n = int(pooled.mask[target].sum())
        mine = encoder.sparse_vector(
            pooled.ids[target, :n].numpy(), pooled.sparse[target, :n].numpy()
        )
        theirs = chunk.vectors.sparse[0]
        assert mine.indices.tolist() == theirs.indices.tolist()
        np.testing.assert_allclose(mine.values, theirs.values, atol=1e-5)
        np.testing.assert_allclose(
            pooled.colbert[target, :n].numpy(), chunk.vectors.colbert[0], atol=1e-5
        )


def test_collator_marks_copies_of_a_positive(tiny_m3_path: Path, tmp_path: Path) -> None:
    """Another question's negative that is my positive paragraph is never my negative."""
    examples = _examples()[:2]  # rhine paragraphs 0 and 1: each is the other's negative
    cfg = _config(tiny_m3_path, tmp_path / "unused", passage_max_length=512)
    setup = prepare_training(cfg, [])  # (an M3 checkpoint: no new sparse head to fit)
    batch = SpanCollator(setup.tokenizer, cfg, setup.prefix)(examples)
    # one window (the whole document) for both; spans: p0, p1, p2 (p2 of no question: absent)
    assert batch["w_ids"].shape[0] == 1
    assert batch["targets"].tolist() == [0, 1]
    assert batch["exclude"].sum() == 0  # distinct paragraphs: nothing to mask
    same = [examples[0], examples[0]]
    batch = SpanCollator(setup.tokenizer, cfg, setup.prefix)(same)
    assert batch["targets"].tolist() == [0, 0]  # one span, encoded once
    # one question answered by two paragraphs (two rows): neither is the other's negative
    both = [examples[0], dataclasses.replace(examples[1], query=examples[0].query)]
    batch = SpanCollator(setup.tokenizer, cfg, setup.prefix)(both)
    assert batch["targets"].tolist() == [0, 1]
    exclude = batch["exclude"]
    assert exclude[0, 1] and exclude[1, 0] and exclude.sum() == 2


def test_span_negatives_default_to_in_batch_only(tiny_m3_path: Path, tmp_path: Path) -> None:
    """By default a batch pools only the positives; ``span_negatives`` adds in-window ones."""
    examples = _examples()[:2]  # rhine paragraphs 0 and 1 of a 3-paragraph document
    cfg = tiny_finetune_config(tiny_m3_path, tmp_path / "unused", passage_max_length=512)
    assert cfg.span_negatives == 0 and cfg.num_negatives == 1  # passage training keeps its 1
    setup = prepare_training(cfg, [])  # (an M3 checkpoint: no new sparse head to fit)
    batch = SpanCollator(setup.tokenizer, cfg, setup.prefix)(examples)
    assert len(batch["span_lengths"]) == 2  # p0 and p1: the two positives only
    with_negatives = _config(tiny_m3_path, tmp_path / "unused", passage_max_length=512)
    batch = SpanCollator(setup.tokenizer, with_negatives, setup.prefix)(examples)
    assert len(batch["span_lengths"]) == 3  # p2, the negative of both, joins
    with pytest.raises(ValueError, match="span_negatives must be >= 0, got -1"):
        _config(tiny_m3_path, tmp_path / "unused", span_negatives=-1)


def test_span_training_lowers_the_loss_and_saves_a_loadable_checkpoint(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_m3_path, tmp_path / "ft", max_steps=10, logging_steps=1, learning_rate=3e-3)
    result = M3Finetuner(cfg).fit_spans(_examples())
    assert result.steps == 10 and result.examples == 4 and result.heads == ALL_HEADS
    assert {"dense", "sparse", "colbert", "ensemble", "total"} <= set(result.log[0])
    first, last = result.log[0]["total"], result.log[-1]["total"]
    assert last < 0.6 * first, [round(r["total"], 3) for r in result.log]
    texts = [QUESTIONS[("rhine", 0)], PARAGRAPHS["oxygen"][1]]
    out = M3Encoder.from_pretrained(result.path, dtype="fp32").encode(texts)
    start = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32").encode(texts)
    assert out.dense.shape == start.dense.shape and not np.allclose(out.dense, start.dense)
    assert_flagembedding_matches(result.path, texts)


def test_fit_spans_rejects_other_examples(tiny_m3_path: Path, tmp_path: Path) -> None:
    finetuner = M3Finetuner(_config(tiny_m3_path, tmp_path / "ft"))
    with pytest.raises(ValueError, match="no span training examples"):
        finetuner.fit_spans([])
    with pytest.raises(TypeError, match="not a SpanExample"):
        finetuner.fit_spans(["text"])  # type: ignore[list-item]


@pytest.mark.parametrize("negatives", [3, 7])
def test_fit_spans_refuses_num_negatives_it_would_ignore(
    tiny_m3_path: Path, tmp_path: Path, negatives: int
) -> None:
    """``num_negatives`` (query / passage rows) trained the same as its default in span
    training, silently; ``FinetuneConfig.flagembedding()`` sets it to 3."""
    cfg = _config(tiny_m3_path, tmp_path / "ft", num_negatives=negatives)
    with pytest.raises(ValueError, match=f"num_negatives={negatives} applies to query / passage"):
        M3Finetuner(cfg).fit_spans(_examples())
    assert not (tmp_path / "ft").exists()


def test_cli_finetune_late_chunking(
    tiny_m3_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from m3kit.cli import main

    seen: list[FinetuneConfig] = []
    fit_spans = M3Finetuner.fit_spans

    def recording(self: M3Finetuner, examples: Any) -> Any:
        seen.append(self.config)
        return fit_spans(self, examples)

    monkeypatch.setattr(M3Finetuner, "fit_spans", recording)
    data = _write_longdoc(tmp_path / "longdoc")
    out = tmp_path / "ft"
    common = ["--model", str(tiny_m3_path), "--output", str(out), "--quiet"]
    assert main(["finetune", "--late-chunking", "--train", str(data), *common]) == 1
    assert "--late-chunking and --longdoc go together" in capsys.readouterr().err
    assert main(["finetune", "--longdoc", str(data), *common]) == 1
    assert "--late-chunking and --longdoc go together" in capsys.readouterr().err
    assert main(["finetune", "--train", str(data), "--span-negatives", "2", *common]) == 1
    assert "--span-negatives applies with --late-chunking" in capsys.readouterr().err
    assert main(["finetune", "--train", str(data), "--span-overlap", "8", *common]) == 1
    assert "--span-overlap applies with --late-chunking" in capsys.readouterr().err
    late = ["finetune", "--late-chunking", "--longdoc", str(data), "--negatives", "3"]
    assert main([*late, *common]) == 1
    assert "with --late-chunking use --span-negatives" in capsys.readouterr().err
    argv = ["finetune", "--late-chunking", "--longdoc", str(data), "--articles", "rhine"]
    argv += [*common, "--max-steps", "1", "--batch-size", "2", "--passage-max-length", "96"]
    argv += ["--device", "cpu", "--precision", "fp32", "--lr", "1e-3"]
    assert main(argv) == 0
    assert "on 2 example(s), 1 step(s)" in capsys.readouterr().out
    assert M3Encoder.from_pretrained(out, dtype="fp32").encode(["Rhine"]).dense.shape[0] == 1
    # one example per answer that a 40-character chunk holds whole
    held = len(read_longdoc_examples(data, ["rhine"], chunk_chars=40))
    more = ["--chunk-chars", "40", "--span-negatives", "2", "--span-overlap", "30"]
    assert main([*argv, *more]) == 0
    assert f"on {held} example(s), 1 step(s)" in capsys.readouterr().out
    assert [(c.span_negatives, c.span_overlap) for c in seen] == [(0, None), (2, 30)]


def test_cli_finetune_longdoc_flags_need_longdoc(
    tiny_m3_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--chunk-chars`` (and ``--articles``) select from ``--longdoc``: with ``--train``,
    ``--chunk-chars 500`` trained on the rows as they were, without a word. Refused now,
    before anything is read or trained."""
    from m3kit.cli import main

    rows = tmp_path / "train.jsonl"
    rows.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n', encoding="utf-8")
    out = tmp_path / "ft"
    common = ["--model", str(tiny_m3_path), "--train", str(rows), "--output", str(out), "--quiet"]
    for flag, value in (("--chunk-chars", "500"), ("--articles", "rhine")):
        assert main(["finetune", *common, flag, value]) == 1
        err = capsys.readouterr().err
        assert f"m3kit finetune: error: {flag} " in err and "--longdoc" in err, err
    assert not out.exists()


def test_llamaindex_engine_late_chunking(tiny_m3_path: Path, tmp_path: Path) -> None:
    from llamaindex_m3.finetune import M3FinetuneEngine

    common = {"model_id": str(tiny_m3_path), "model_output_path": str(tmp_path / "ft")}
    with pytest.raises(ValueError, match="mine_negatives does not apply"):
        M3FinetuneEngine(_examples(), late_chunking=True, mine_negatives=2, **common)
    with pytest.raises(ValueError, match="use_all_docs=False does not apply with late_chunking"):
        M3FinetuneEngine(_examples(), late_chunking=True, use_all_docs=False, **common)
    with pytest.raises(TypeError, match="item 0 is a str"):
        M3FinetuneEngine(["text"], late_chunking=True, **common)
    with pytest.raises(ValueError, match="span_negatives applies with late_chunking=True only"):
        M3FinetuneEngine(_examples(), span_negatives=2, **common)
    longdoc = _write_longdoc(tmp_path / "longdoc")
    with pytest.raises(ValueError, match="span_overlap applies with late_chunking=True only"):
        M3FinetuneEngine(_examples(), span_overlap=16, **common)
    chosen = M3FinetuneEngine(
        longdoc, late_chunking=True, span_negatives=2, span_overlap=16, **common
    )
    assert (chosen.config.span_negatives, chosen.config.span_overlap) == (2, 16)
    engine = M3FinetuneEngine(
        longdoc,
        late_chunking=True,
        epochs=1,
        batch_size=4,
        passage_max_length=96,
        show_progress_bar=False,
        **common,
    )
    assert engine.span_examples is not None and len(engine.span_examples) == 4
    assert engine.config.span_negatives == 0 and engine.config.num_negatives == 0  # in-batch
    result = engine.finetune()
    assert result.steps == 1 and result.examples == 4
    embed = engine.get_finetuned_model(dtype="fp32")
    assert len(embed.get_query_embedding("Where does the Rhine flow?")) == 32


def test_a_question_asked_of_two_paragraphs_has_neither_as_a_negative(tmp_path: Path) -> None:
    """squad_en's longdoc asks 'Where does the Rhine begin?' of two paragraphs of one
    document (two questions, one text): each paragraph answers it, so neither is a negative
    of the other question (span training would push the query away from an answer)."""
    text, spans = _doc("rhine")
    same = "Where does the Rhine flow?"
    asked = [(same, 0), (same, 1), ("What do ships carry?", 2)]
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "rhine", "text": text}) + "\n")
    with (tmp_path / "queries.jsonl").open("w") as fh:
        for n, (q, i) in enumerate(asked):
            a, b = spans[i]
            row = {"_id": f"q{n}", "text": q, "doc_id": "rhine", "paragraph_start": a}
            row |= {"paragraph_end": b, "answer_start": a, "answer_end": a + 10}
            fh.write(json.dumps(row) + "\n")
    first, second, third = read_longdoc_examples(tmp_path)
    assert first.negative_spans == (spans[2],) and second.negative_spans == (spans[2],)
    assert third.negative_spans == (spans[0], spans[1])
    chunks = char_chunks(text, 60)  # each answer in its own chunk
    first, second, third = read_longdoc_examples(tmp_path, chunk_chars=60)
    assert second.span not in first.negative_spans and first.span not in second.negative_spans
    assert first.span in third.negative_spans and second.span in third.negative_spans
    assert len(first.negative_spans) == len(chunks) - 2


def test_a_copy_of_the_positive_text_is_never_its_negative(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A span with the positive's text (a repeated paragraph of the document, or the same
    paragraph in another document answering another question) was pooled as a negative: the
    query was trained away from its own answer's words."""
    repeated = PARAGRAPHS["rhine"][0]
    doc = f"{repeated}\n\n{PARAGRAPHS['rhine'][1]}\n\n {repeated}\n"
    p0 = (0, len(repeated))
    p1 = (p0[1] + 2, p0[1] + 2 + len(PARAGRAPHS["rhine"][1]))
    p2 = (p1[1] + 2, len(doc))  # " <repeated>\n": the same text, other whitespace
    own = SpanExample("Where does the Rhine flow?", doc, p0, (p1, p2))
    other_doc = f"Rivers of Europe.\n\n{repeated}"
    other = SpanExample("Which river reaches the North Sea?", other_doc, (19, len(other_doc)))
    for mask_shared in (True, False):
        cfg = _config(
            tiny_m3_path, tmp_path / "u", passage_max_length=512, mask_shared_positives=mask_shared
        )
        setup = prepare_training(cfg, [])  # (an M3 checkpoint: no new sparse head to fit)
        batch = SpanCollator(setup.tokenizer, cfg, setup.prefix)([own, other])
        # candidates: own p0 (0), p1 and p2 in sampled order (1, 2), other's positive (3)
        assert batch["targets"].tolist() == [0, 3] and len(batch["span_lengths"]) == 4
        exclude = batch["exclude"]
        copies = {c for c in (1, 2) if bool(exclude[0, c])}
        assert len(copies) == 1  # p2 masked, p1 (other words) stays a negative
        assert exclude[0, 3] and exclude[1, 0] and exclude[1, next(iter(copies))]
        assert int(exclude.sum()) == 4
