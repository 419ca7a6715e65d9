"""Golden values for m3kit.evaluation, cross-checked by hand and against scikit-learn."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit.evaluation import (
    evaluate_rankings,
    hit_at_k,
    load_beir,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)


def test_ndcg_hand_computed_graded() -> None:
    ranked = ["d3", "d1", "x", "d2"]
    rel = {"d1": 3, "d2": 2, "d3": 1}
    dcg = 1 / math.log2(2) + 3 / math.log2(3) + 2 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, rel, 10) == pytest.approx(dcg / idcg, abs=1e-12)
    assert ndcg_at_k(ranked, rel, 10) == pytest.approx(0.7884, abs=1e-4)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_ndcg_matches_sklearn(k: int) -> None:
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(7)
    docs = [f"d{i}" for i in range(8)]
    grades = rng.integers(0, 4, size=8).astype(float)
    grades[0] = 2.0  # at least one relevant
    scores = rng.permutation(8).astype(float)  # distinct scores: no ties
    ranked = [docs[i] for i in np.argsort(-scores)]
    rel = {d: g for d, g in zip(docs, grades, strict=True) if g > 0}
    expected = ndcg_score(grades[None, :], scores[None, :], k=k)
    assert ndcg_at_k(ranked, rel, k) == pytest.approx(expected, abs=1e-12)


def test_mrr_hit_recall_golden() -> None:
    ranked = ["x", "y", "a", "z", "b"]
    rel = {"a", "b", "c"}
    assert mrr_at_k(ranked, rel, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, rel, 2) == 0.0
    assert hit_at_k(ranked, rel, 3) == 1.0
    assert hit_at_k(ranked, rel, 2) == 0.0
    assert recall_at_k(ranked, rel, 5) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, rel, 3) == pytest.approx(1 / 3)


def test_zero_grade_is_not_relevant_and_duplicates_count_once() -> None:
    assert mrr_at_k(["a", "b"], {"a": 0, "b": 1}, 10) == 0.5
    # a repeated id (two chunks of one document) does not count twice nor take a rank
    assert recall_at_k(["a", "a", "b"], {"a", "b"}, 2) == 1.0
    assert ndcg_at_k(["a", "a"], {"a"}, 10) == 1.0


def test_bad_k_is_an_error() -> None:
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(["a"], {"a"}, 0)


@pytest.mark.parametrize("k", [1.5, 10.7, 2.0, True])
def test_a_cutoff_that_is_not_an_integer_is_an_error(k: float) -> None:
    """hit@1.5, MRR@1.5 and recall@1.5 scored the whole ranking (a hit at rank 2 counted),
    ``evaluate_rankings(ks=(10.7,))`` reported it as ``@10``, and nDCG raised a bare
    TypeError about slice indices."""
    for metric in (ndcg_at_k, mrr_at_k, hit_at_k, recall_at_k):
        with pytest.raises(ValueError, match=f"k must be an int >= 1, not {k!r}"):
            metric(["x", "a"], {"a"}, k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"k must be an int >= 1, not {k!r}"):
        evaluate_rankings({"q1": ["x", "a"]}, {"q1": {"a": 1.0}}, ks=(k,))  # type: ignore[arg-type]
    assert hit_at_k(["x", "a"], {"a"}, np.int64(2)) == 1.0  # a NumPy integer is an integer


def test_a_ranking_given_as_one_string_is_an_error() -> None:
    """A string ranking was read as its characters: ``{"q1": "12"}`` scored a hit for
    document "1" (and "d1" a miss), silently."""
    with pytest.raises(ValueError, match=r"ranking of query 'q1' is the single string '12'"):
        evaluate_rankings({"q1": "12"}, {"q1": {"1": 1.0}}, ks=(1,))
    with pytest.raises(ValueError, match=r"single string 'd1'"):
        ndcg_at_k("d1", {"d1"}, 10)
    assert evaluate_rankings({"q1": ("d1",)}, {"q1": {"d1": 1.0}}, ks=(1,))["hit@1"] == 1.0


def test_a_scored_or_unordered_ranking_is_an_error() -> None:
    """A run in the ``{query: {doc: score}}`` form of trec_eval / BEIR / ranx was read in the
    dict's insertion order, not by score: the relevant "b" (0.9) ranked below "a" (0.1) and
    hit@1 was 0.0, silently. A set has no order at all."""
    with pytest.raises(ValueError, match=r"ranking of query 'q1' is a mapping .*best first"):
        evaluate_rankings({"q1": {"a": 0.1, "b": 0.9}}, {"q1": {"b": 1.0}}, ks=(1,))
    for unordered in ({"a": 0.1, "b": 0.9}, {"a", "b"}, frozenset({"a", "b"})):
        for metric in (ndcg_at_k, mrr_at_k, hit_at_k, recall_at_k):
            with pytest.raises(ValueError, match="the ranking is a (mapping|set)"):
                metric(unordered, {"b"}, 1)  # type: ignore[arg-type]
    assert evaluate_rankings({"q1": ["b", "a"]}, {"q1": {"b": 1.0}}, ks=(1,))["hit@1"] == 1.0


def test_evaluate_rankings_golden() -> None:
    run = {"q1": ["a", "b", "c"], "q2": ["x", "y", "d"], "q3": ["z"], "unjudged": ["a"]}
    qrels = {"q1": {"a": 1.0}, "q2": {"d": 1.0, "e": 1.0}, "q3": {"w": 1.0}, "q4": {"a": 1.0}}
    m = evaluate_rankings(run, qrels, ks=(1, 3))
    assert m["queries"] == 4.0  # q4 has no run: it scores 0; "unjudged" is ignored
    assert m["hit@1"] == pytest.approx(1 / 4)
    assert m["hit@3"] == pytest.approx(2 / 4)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["recall@3"] == pytest.approx((1 + 0.5) / 4)
    ndcg_q2 = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@3"] == pytest.approx((1 + ndcg_q2) / 4)
    with pytest.raises(ValueError, match="no query with a relevant"):
        evaluate_rankings(run, {"q1": {"a": 0.0}})


def test_load_beir_squad_sample(squad_sample_dir: Path) -> None:
    corpus, queries, qrels = load_beir(squad_sample_dir)
    assert len(corpus) == 214
    assert len(queries) == 991 == len(qrels)
    assert corpus["a01_p000"].startswith("Amazon rainforest The Amazon rainforest")
    assert qrels["5725b81b271a42140099d097"] == {"a01_p000": 1.0}
    plain = load_beir(squad_sample_dir, with_title=False)
    assert plain.corpus["a01_p000"].startswith("The Amazon rainforest")


def test_load_beir_squad_full(squad_dir: Path) -> None:
    corpus, queries, qrels = load_beir(squad_dir)
    assert len(corpus) == 945
    assert len(queries) == 4355 == len(qrels)
    assert qrels["5725b81b271a42140099d097"] == {"a01_p000": 1.0}


def test_load_beir_bad_input(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "t"}) + "\n")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "q"}\n{broken\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(ValueError, match=r"queries\.jsonl:2"):
        load_beir(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "q"}\n')
    (tmp_path / "qrels.tsv").write_text("q1\td9\t1\n")
    with pytest.raises(ValueError, match=r"qrels\.tsv:1: corpus id 'd9'"):
        load_beir(tmp_path)
    (tmp_path / "qrels.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="no qrels"):
        load_beir(tmp_path)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t2\n")
    assert load_beir(tmp_path).qrels == {"q1": {"d1": 2.0}}


def _beir_folder(root: Path, qrels: bytes, corpus: bytes | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = '{"_id": "d1", "text": "alpha"}\n{"_id": "d2", "text": "beta"}\n'
    (root / "corpus.jsonl").write_bytes(docs.encode() if corpus is None else corpus)
    questions = '{"_id": "q1", "text": "a?"}\n{"_id": "q2", "text": "b?"}\n'
    (root / "queries.jsonl").write_text(questions)
    (root / "qrels.tsv").write_bytes(qrels)
    return root


def test_load_beir_reads_qrels_with_a_byte_order_mark(tmp_path: Path) -> None:
    """The BOM made the header line data: "score 'score' is not a number"."""
    header = "\ufeffquery-id\tcorpus-id\tscore\nq1\td1\t1\n".encode()
    assert load_beir(_beir_folder(tmp_path / "a", header)).qrels == {"q1": {"d1": 1.0}}
    bare = "\ufeffq2\td2\t1\n".encode()
    assert load_beir(_beir_folder(tmp_path / "b", bare)).qrels == {"q2": {"d2": 1.0}}


def test_load_beir_reads_files_with_lone_cr_line_ends(tmp_path: Path) -> None:
    """Files saved with classic Mac line ends (CR only) were one line: "Extra data"."""
    corpus = b'{"_id": "d1", "text": "alpha"}\r{"_id": "d2", "text": "beta"}\r'
    folder = _beir_folder(tmp_path, b"query-id\tcorpus-id\tscore\rq1\td1\t1\rq2\td2\t2", corpus)
    data = load_beir(folder)
    assert data.corpus == {"d1": "alpha", "d2": "beta"}
    assert data.qrels == {"q1": {"d1": 1.0}, "q2": {"d2": 2.0}}


def test_load_beir_reads_qrels_quotes_literally(tmp_path: Path) -> None:
    """A stray quote joined the following judgements into one field (csv's quoting)."""
    folder = _beir_folder(tmp_path, b'q1\t"d1\t1\nq2\td2\t1"\n')
    with pytest.raises(ValueError, match=r"qrels.tsv:1: corpus id '\"d1' is not in the corpus"):
        load_beir(folder)


def test_load_beir_non_utf8_names_file_and_line(tmp_path: Path) -> None:
    latin = '{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": "caf\u00e9"}\n'.encode("latin-1")
    folder = _beir_folder(tmp_path / "c", b"q1\td1\t1\n", corpus=latin)
    with pytest.raises(ValueError, match=r"corpus\.jsonl:2: not UTF-8 text"):
        load_beir(folder)
    folder = _beir_folder(tmp_path / "q", "q1\td1\t1\nq2\td\u00e9\t1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"qrels\.tsv:2: not UTF-8 text"):
        load_beir(folder)


@pytest.mark.parametrize(
    ("corpus", "qrels", "message"),
    [
        ('{"_id": "d2", "text": "gamma"}', "", r"corpus\.jsonl:3: _id 'd2' repeats line 2"),
        ("", "q1\td1\t2\nq1\td1\t0\n", r"qrels\.tsv:2: query 'q1' and corpus id 'd1' are "),
        ("", "q1\td1\tnan\n", r"qrels\.tsv:1: score 'nan' is not a finite number"),
        ('{"_id": "d3", "text": null}', "", r'corpus\.jsonl:3: "text" must be a string, got None'),
        ('{"_id": "d3", "text": ["a", "b"]}', "", r'corpus\.jsonl:3: "text" must be a string'),
        ('{"_id": "d3", "text": "t", "title": 7}', "", r'corpus\.jsonl:3: "title" must be a'),
        ('{"_id": null, "text": "t"}', "", r'corpus\.jsonl:3: "_id" must be a string'),
    ],
)
def test_load_beir_refuses_repeats_and_non_string_texts(
    tmp_path: Path, corpus: str, qrels: str, message: str
) -> None:
    """A repeated id or judgement silently kept the last; a null text became "None"."""
    docs = '{"_id": "d1", "text": "alpha"}\n{"_id": "d2", "text": "beta"}\n' + corpus + "\n"
    folder = _beir_folder(tmp_path, (qrels or "q1\td1\t1\n").encode(), corpus=docs.encode())
    with pytest.raises(ValueError, match=message):
        load_beir(folder)


def test_load_beir_refuses_a_repeated_query_and_reads_a_null_title(tmp_path: Path) -> None:
    docs = '{"_id": "d1", "text": "alpha", "title": null}\n{"_id": 2, "text": "beta"}\n'
    folder = _beir_folder(tmp_path, b"q1\td1\t1\nq2\t2\t1\n", corpus=docs.encode())
    assert load_beir(folder).corpus == {"d1": "alpha", "2": "beta"}  # an integer id is its str
    with (folder / "queries.jsonl").open("a") as fh:
        fh.write('{"_id": "q1", "text": "other question"}\n')
    with pytest.raises(ValueError, match=r"queries\.jsonl:3: _id 'q1' repeats line 1"):
        load_beir(folder)


def test_load_beir_qrels_split_rules(tmp_path: Path) -> None:
    """BEIR's qrels/{dev,test}.tsv silently gave the test split; qrels.tsv beat split="dev"."""
    folder = _beir_folder(tmp_path, b"q1\td1\t1\n")
    with pytest.raises(FileNotFoundError, match=r"no qrels/dev\.tsv .*qrels\.tsv names no split"):
        load_beir(folder, split="dev")
    (folder / "qrels").mkdir()  # an empty qrels/ beside qrels.tsv is no second source
    assert load_beir(folder).qrels == {"q1": {"d1": 1.0}}
    (folder / "qrels" / "dev.tsv").write_text("q2\td2\t1\n")
    with pytest.raises(ValueError, match=r"both qrels\.tsv and qrels/dev\.tsv: it is not"):
        load_beir(folder, split="dev")
    with pytest.raises(ValueError, match="both qrels.tsv"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(ValueError, match=r"both qrels\.tsv and qrels/\{dev,test\}\.tsv"):
        load_beir(folder, split="test")
    (folder / "qrels" / "test.tsv").unlink()
    (folder / "qrels.tsv").unlink()
    assert load_beir(folder).qrels == {"q2": {"d2": 1.0}}  # the only split
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(ValueError, match=r"several splits \(dev, test\): name the one"):
        load_beir(folder)
    assert load_beir(folder, split="dev").qrels == {"q2": {"d2": 1.0}}
    assert load_beir(folder, split="test").qrels == {"q1": {"d1": 1.0}}
    with pytest.raises(FileNotFoundError, match=r"no qrels/train\.tsv .*splits found: dev, test"):
        load_beir(folder, split="train")


def test_integer_ids_compare_as_strings(caplog: pytest.LogCaptureFixture) -> None:
    """Mapping qrels were str()-converted but ranked ids were not: int ids scored 0."""
    int_ids: Any = [1, 2]
    assert ndcg_at_k(int_ids, {1: 1}, 10) == ndcg_at_k(int_ids, {1}, 10) == 1.0
    assert ndcg_at_k(int_ids, {"1": 1}, 10) == mrr_at_k(int_ids, {"1"}, 10) == 1.0
    run: Any = {1: ["a"], 2: ["b"]}
    m = evaluate_rankings(run, {"1": {"a": 1}, "2": {"x": 1}}, ks=(10,))
    assert (m["hit@10"], m["queries"]) == (0.5, 2.0)
    assert "judged queries are in the run" not in caplog.text


def test_a_run_missing_most_judged_queries_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    qrels = {f"q{i}": {"a": 1.0} for i in range(4)}
    evaluate_rankings({"q0": ["a"], "q1": ["a"]}, qrels, ks=(1,))  # half: no warning
    assert "judged queries" not in caplog.text
    m = evaluate_rankings({"Q0": ["a"], "q1": ["a"]}, qrels, ks=(1,))
    assert m["hit@1"] == 0.25
    assert "only 1 of the 4 judged queries are in the run" in caplog.text
