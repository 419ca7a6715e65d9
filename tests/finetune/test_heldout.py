"""Real data: the squad_en sample split by article; training helps on held-out articles.

The full experiment (MiniLM, all three heads, on CPU for tens of minutes) is
``benchmarks/finetune.py``; this reduced one trains a tiny dense-only model (hidden 32,
XLM-R vocabulary) with new sparse and ColBERT heads on training articles and checks the
gain on other articles' questions, in a few minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.finetune import FinetuneConfig, M3Finetuner
from m3kit.finetune.evaluate import evaluate_heads
from m3kit.finetune.splits import split_by_article
from m3kit.finetune.trainer import save_start_checkpoint


def test_split_is_by_article_and_leak_free(squad_sample_dir: Path) -> None:
    split = split_by_article(squad_sample_dir, seed=0)
    assert len(split.train_articles) == len(split.eval_articles) == 4
    assert not set(split.train_articles) & set(split.eval_articles)
    assert all(d.rsplit("_p", 1)[0] in split.eval_articles for d in split.corpus)
    eval_texts = set(split.corpus.values())
    train_texts = {t for ex in split.train for t in (*ex.pos, *ex.neg)}
    assert not eval_texts & train_texts
    assert not {ex.query for ex in split.train} & set(split.queries.values())
    assert split_by_article(squad_sample_dir, seed=0).train == split.train  # seeded
    assert split_by_article(squad_sample_dir, seed=1).train_articles != split.train_articles
    small = split_by_article(squad_sample_dir, seed=0, max_train_rows=10, max_eval_articles=2)
    assert len(small.train) == 10 and len(small.eval_articles) == 2
    with pytest.raises(ValueError, match="without articles"):
        split_by_article(squad_sample_dir, train_fraction=1.0)


def test_validation_articles_come_out_of_training_only(squad_sample_dir: Path) -> None:
    plain = split_by_article(squad_sample_dir, seed=0)
    split = split_by_article(squad_sample_dir, seed=0, validation_fraction=0.25)
    assert plain.validation is None and split.validation is not None
    val = split.validation
    assert len(val.articles) == 1 and set(val.articles) < set(plain.train_articles)
    assert set(split.train_articles) == set(plain.train_articles) - set(val.articles)
    assert (split.eval_articles, split.queries) == (plain.eval_articles, plain.queries)
    assert all(d.rsplit("_p", 1)[0] in val.articles for d in val.corpus)
    train_texts = {t for ex in split.train for t in (*ex.pos, *ex.neg)}
    assert not set(val.corpus.values()) & train_texts
    assert not {ex.query for ex in split.train} & set(val.queries.values())
    assert val.queries and set(val.qrels) == set(val.queries)
    assert all(set(rel) <= set(val.corpus) for rel in val.qrels.values())
    with pytest.raises(ValueError, match="leaves no training articles"):
        split_by_article(squad_sample_dir, validation_fraction=0.9)


def test_held_out_samples_do_not_depend_on_the_training_sample(squad_sample_dir: Path) -> None:
    """One RNG drew the training rows, then the queries: max_train_rows changed them."""
    kw = {"seed": 0, "max_eval_queries": 40, "validation_fraction": 0.25}
    splits = [
        split_by_article(squad_sample_dir, **kw, max_validation_queries=20, max_train_rows=n)
        for n in (None, 10, 50)
    ]
    assert [len(s.train) for s in splits[1:]] == [10, 50]
    for split in splits[1:]:
        assert split.queries == splits[0].queries and len(split.queries) == 40
        assert split.validation == splits[0].validation
    validation = splits[0].validation
    assert validation is not None and len(validation.queries) == 20


def test_split_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"articles\.json is missing"):
        split_by_article(tmp_path)


@pytest.mark.slow
def test_finetuning_helps_on_heldout_articles(
    squad_sample_dir: Path, tiny_dense_xlmr_path: Path, tmp_path: Path
) -> None:
    """A tiny dense-only model (XLM-R vocabulary) gets new sparse and ColBERT heads and is
    fine-tuned on training articles; ColBERT and the fused score improve on other articles."""
    split = split_by_article(
        squad_sample_dir, seed=0, max_train_rows=320, max_eval_articles=2, max_eval_queries=100
    )
    before_path = save_start_checkpoint(tiny_dense_xlmr_path, tmp_path / "start", seed=0)
    config = FinetuneConfig(
        model=tiny_dense_xlmr_path,
        output_path=tmp_path / "ft",
        batch_size=16,
        num_negatives=3,
        learning_rate=1e-3,
        passage_max_length=128,
        query_max_length=32,
        seed=0,
        device="cpu",
        show_progress=False,
    )
    result = M3Finetuner(config).fit(split.train)
    assert result.steps == 20

    def ndcg(path: Path) -> dict[str, float]:
        encoder = M3Encoder.from_pretrained(path, dtype="fp32", device="cpu", max_length=128)
        report = evaluate_heads(encoder, split.corpus, split.queries, split.qrels, ks=(10,))
        return {method: m["ndcg@10"] for method, m in report.metrics.items()}

    before, after = ndcg(before_path), ndcg(result.path)
    print(f"held-out nDCG@10 before {before} after {after}")
    assert after["colbert"] > before["colbert"] + 0.05
    assert after["fused"] > before["fused"] + 0.05
    assert after["sparse"] > 0.5  # the new sparse head stays alive (no dead ReLU)


def _single_passage_articles(folder: Path, n: int = 6) -> Path:
    """A CMRC-like folder: each article is one passage; hard negatives are other articles'."""
    import gzip

    folder.mkdir()
    ids = [f"A{i}" for i in range(n)]
    text = {a: f"passage of article {a}, about topic number {i}." for i, a in enumerate(ids)}
    articles = [{"_id": a, "paragraph_id": f"{a}_doc"} for a in ids]
    (folder / "articles.json").write_text(json.dumps(articles), encoding="utf-8")
    lines = [json.dumps({"_id": f"{a}_doc", "title": a, "text": text[a]}) for a in ids]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    queries = [
        json.dumps({"_id": f"{a}_q", "text": f"what is {a} about?", "article": a}) for a in ids
    ]
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    qrels = ["query-id\tcorpus-id\tscore", *(f"{a}_q\t{a}_doc\t1" for a in ids)]
    (folder / "qrels.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    meta, rows = [], []
    for i, a in enumerate(ids):
        negs = [ids[(i + 1) % n], ids[(i + 2) % n]]
        meta.append({"query_id": f"{a}_q", "article": a, "pos_ids": [f"{a}_doc"],
                     "neg_ids": [f"{b}_doc" for b in negs]})  # fmt: skip
        rows.append(
            {"query": f"what is {a} about?", "pos": [text[a]], "neg": [text[b] for b in negs]}
        )
    (folder / "train_ids.jsonl").write_text("\n".join(map(json.dumps, meta)) + "\n", "utf-8")
    with gzip.open(folder / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(map(json.dumps, rows)) + "\n")
    return folder


def test_foreign_negatives_drop_the_row_or_only_themselves(tmp_path: Path) -> None:
    folder = _single_passage_articles(tmp_path / "zh")
    strict = split_by_article(folder, seed=0)
    kept = split_by_article(folder, seed=0, drop_foreign_negatives=True)
    eval_docs = set(kept.corpus.values())  # the evaluation articles' passages
    assert len(strict.train) < len(kept.train) == len(strict.train_articles)
    assert kept.train_articles == strict.train_articles and kept.queries == strict.queries
    for ex in kept.train:  # nothing of the evaluation articles reaches training
        assert not set(ex.pos + ex.neg) & eval_docs
    assert sum(len(ex.neg) for ex in kept.train) > 0


def test_an_article_listed_once_per_paragraph_is_on_one_side_only(tmp_path: Path) -> None:
    """articles.json listing an article once per paragraph ("paragraph_id" entries) put the
    article on both sides of most splits: its rows trained, its questions evaluated."""
    folder = _single_passage_articles(tmp_path / "zh")
    articles = json.loads((folder / "articles.json").read_text(encoding="utf-8"))
    again = [{"_id": a["_id"], "paragraph_id": f"{a['_id']}_more"} for a in articles]
    (folder / "articles.json").write_text(json.dumps(articles + again), encoding="utf-8")
    more = [json.dumps({"_id": f"{a['_id']}_more", "text": f"more on {a['_id']}."}) for a in again]
    with (folder / "corpus.jsonl").open("a", encoding="utf-8") as f:
        f.write("\n".join(more) + "\n")
    for seed in range(4):
        split = split_by_article(folder, seed=seed, validation_fraction=0.4)
        assert split.validation is not None
        sides = [split.train_articles, split.eval_articles, split.validation.articles]
        assert sum(map(len, sides)) == len(articles) == len(set().union(*sides))
        train_queries = {ex.query for ex in split.train}
        assert not train_queries & set(split.queries.values())
        assert not train_queries & set(split.validation.queries.values())


def test_a_text_shared_with_held_out_articles_stays_out_of_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An article split kept a training row whose passage text is also another article's
    (a repeated paragraph), so an evaluated passage was trained on."""
    import gzip

    folder = _single_passage_articles(tmp_path / "zh", n=12)
    base = split_by_article(folder, seed=0, drop_foreign_negatives=True)
    eval_a = base.eval_articles[0]
    # two articles whose rows do not have each other as hard negatives (the next two)
    near = {f"A{(int(eval_a[1:]) + k) % 12}" for k in (-2, -1, 1, 2)}
    train_a = next(a for a in base.train_articles if a not in near)
    corpus_file = folder / "corpus.jsonl"
    corpus = [json.loads(line) for line in corpus_file.read_text("utf-8").splitlines()]
    text = {r["_id"]: r["text"] for r in corpus}
    old, shared = text[f"{train_a}_doc"], text[f"{eval_a}_doc"] + "\n"
    for r in corpus:  # the training article's passage says what the evaluated one says
        r["text"] = shared if r["text"] == old else r["text"]
    corpus_file.write_text("\n".join(map(json.dumps, corpus)) + "\n", "utf-8")
    with gzip.open(folder / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        row["pos"] = [shared if t == old else t for t in row["pos"]]
        row["neg"] = [shared if t == old else t for t in row["neg"]]
    with gzip.open(folder / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(map(json.dumps, rows)) + "\n")

    with caplog.at_level("WARNING"):
        split = split_by_article(folder, seed=0, drop_foreign_negatives=True)
    assert split.train_articles == base.train_articles and split.queries == base.queries
    held_out = " ".join(shared.split())
    for ex in split.train:
        assert held_out not in {" ".join(t.split()) for t in ex.pos + ex.neg}
    assert f"what is {train_a} about?" not in {ex.query for ex in split.train}
    assert len(split.train) == len(base.train) - 1
    assert "shared with held-out articles" in caplog.text


def test_train_ids_out_of_step_with_the_rows_is_an_error(tmp_path: Path) -> None:
    """train_ids.jsonl gives each row its article; a file out of step with train.jsonl.gz
    (same negative counts) put rows on the wrong side of the split, silently."""
    folder = _single_passage_articles(tmp_path / "zh")
    meta = (folder / "train_ids.jsonl").read_text("utf-8").splitlines()
    meta[0], meta[1] = meta[1], meta[0]
    (folder / "train_ids.jsonl").write_text("\n".join(meta) + "\n", "utf-8")
    with pytest.raises(ValueError, match=r"train_ids\.jsonl and train\.jsonl\.gz disagree"):
        split_by_article(folder, seed=0)
