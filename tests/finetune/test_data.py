"""FlagEmbedding jsonl and LlamaIndex QA dataset reading / writing, and bad input."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from m3kit.finetune import QADataset, TrainingExample, examples_from_qa, read_jsonl, write_jsonl


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_round_trip_plain_and_gzip(
    tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    for name in ("rows.jsonl", "rows.jsonl.gz"):
        path = write_jsonl(toy_examples, tmp_path / name)
        assert read_jsonl(path) == toy_examples
    with gzip.open(tmp_path / "rows.jsonl.gz", "rt", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert set(first) == {"query", "pos", "neg"}
    assert read_jsonl(tmp_path / "rows.jsonl", limit=3) == toy_examples[:3]


def test_squad_sample_training_file_reads(squad_sample_dir: Path) -> None:
    rows = read_jsonl(squad_sample_dir / "train.jsonl.gz", limit=50)
    assert len(rows) == 50
    assert all(len(r.pos) == 1 and len(r.neg) <= 7 for r in rows)


def test_empty_or_missing_neg_is_allowed(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "rows.jsonl",
        [
            json.dumps({"query": "q1", "pos": ["p1"], "neg": []}),
            json.dumps({"query": "q2", "pos": ["p2"]}),
            "",
            json.dumps({"query": "q3", "pos": ["p3"], "neg": ["n"], "extra": 1}),
        ],
    )
    rows = read_jsonl(path)
    assert [r.neg for r in rows] == [(), (), ("n",)]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.jsonl",
        [json.dumps({"query": "q1", "pos": ["p1"]}), '{"query": "q2", "pos": ["p2"'],
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_row_without_positive_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "nopos.jsonl",
        [
            json.dumps({"query": "q1", "pos": ["p1"]}),
            json.dumps({"query": "q2", "pos": [], "neg": ["n"]}),
        ],
    )
    with pytest.raises(ValueError, match=r"nopos\.jsonl:2: row has no positive"):
        read_jsonl(path)
    _write(path, [json.dumps({"query": "q", "neg": ["n"]})])
    with pytest.raises(ValueError, match=r"nopos\.jsonl:1: row has no positive"):
        read_jsonl(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"pos": ["p"]}, 'no "query"'),
        ({"query": "q", "pos": "p"}, "list of strings"),
        ({"query": "q", "pos": ["p", 3]}, "must hold strings"),
        ({"query": " ", "pos": ["p"]}, "non-empty query"),
        ({"query": "q", "pos": ["p"], "neg": ["p"]}, "positive among its negatives"),
        # the same passage with other whitespace trains it as its own negative
        ({"query": "q", "pos": ["a b"], "neg": ["a  b\n"]}, "positive among its negatives"),
        (["q", "p"], "JSON object"),
    ],
)
def test_bad_rows(tmp_path: Path, row: object, message: str) -> None:
    path = _write(tmp_path / "rows.jsonl", [json.dumps(row)])
    with pytest.raises(ValueError, match=message) as info:
        read_jsonl(path)
    assert "rows.jsonl:1" in str(info.value)


def test_non_utf8_file_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    """It was a bare UnicodeDecodeError that named no file (e.g. a latin-1 export)."""
    path = tmp_path / "latin1.jsonl"
    rows = [json.dumps({"query": "q", "pos": ["p"]}), '{"query": "caf\u00e9?", "pos": ["x"]}']
    path.write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not UTF-8 text \(byte 0xe9"):
        read_jsonl(path)
    qa = tmp_path / "qa.json"
    qa.write_bytes('{"queries": {"q": "caf\u00e9"}}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"qa\.json: not UTF-8 text"):
        QADataset.from_json(qa)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(IsADirectoryError, match="is a folder"):  # it said "does not exist"
        read_jsonl(tmp_path)


def test_a_cut_or_false_gzip_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    """gzip raised EOFError (a traceback from the CLI) / BadGzipFile naming no file."""
    rows = "".join(json.dumps({"query": f"q{i}", "pos": [f"p{i}"]}) + "\n" for i in range(500))
    whole = gzip.compress(rows.encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.jsonl\.gz: not a whole gzip file"):
        read_jsonl(cut)
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text(rows)
    with pytest.raises(ValueError, match=r"plain\.jsonl\.gz: not a whole gzip file"):
        read_jsonl(plain)


def test_qa_dataset_from_llamaindex_shaped_object_and_json(tmp_path: Path) -> None:
    live = SimpleNamespace(
        queries={"q1": "Where is Warsaw?", "q2": "What is oxygen?"},
        corpus={"n1": "Warsaw is in Poland.", "n2": "Oxygen is an element.", "n3": "Other."},
        relevant_docs={"q1": ["n1"], "q2": ["n2", "n3"]},
        mode="text",
    )
    qa = QADataset.from_llamaindex(live)
    examples = qa.to_examples()
    assert examples[0] == TrainingExample("Where is Warsaw?", ("Warsaw is in Poland.",))
    assert examples[1].pos == ("Oxygen is an element.", "Other.")
    path = qa.save_json(tmp_path / "qa.json")
    saved = json.loads(path.read_text())
    assert set(saved) == {"queries", "corpus", "relevant_docs", "mode"} and saved["mode"] == "text"
    assert QADataset.from_json(path) == qa
    assert examples_from_qa(path) == examples == examples_from_qa(live) == examples_from_qa(qa)
    back = QADataset.from_examples(examples)
    assert back.to_examples() == examples


def test_qa_dataset_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'q1' has no relevant_docs"):
        QADataset(queries={"q1": "x"}, corpus={}, relevant_docs={})
    with pytest.raises(ValueError, match="'n9' is not in the corpus"):
        QADataset(queries={"q1": "x"}, corpus={"n1": "t"}, relevant_docs={"q1": ["n9"]})
    with pytest.raises(ValueError, match='only mode "text"'):
        QADataset(queries={}, corpus={}, relevant_docs={}, mode="image")
    with pytest.raises(TypeError, match="EmbeddingQAFinetuneDataset-like"):
        QADataset.from_llamaindex(object())
    bad = tmp_path / "bad.json"
    bad.write_text('{"queries": {}, "corpus": {}}')
    with pytest.raises(ValueError, match=r'bad\.json: a QA dataset needs a "relevant_docs"'):
        QADataset.from_json(bad)
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        QADataset.from_json(bad)


@pytest.mark.parametrize(
    ("pos", "neg", "field"), [(("",), (), "pos"), (("   ",), (), "pos"), (("p",), ("\n",), "neg")]
)
def test_an_empty_passage_is_refused(
    pos: tuple[str, ...], neg: tuple[str, ...], field: str
) -> None:
    """It was trained on as if it said something."""
    with pytest.raises(ValueError, match=f'"{field}" holds an empty or whitespace-only passage'):
        TrainingExample("q", pos, neg)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"queries": {"q1": None}, "corpus": {"d1": "t"}}, "query 'q1' is not a string: None"),
        ({"queries": {"q1": 42}, "corpus": {"d1": "t"}}, r"query 'q1' is not a string: 42 \(int"),
        ({"queries": {"q1": "x?"}, "corpus": {"d1": ["a", "b"]}}, "corpus text 'd1' is not a"),
        (
            {"queries": {"q1": "x?"}, "corpus": {"d1": "t"}, "relevant_docs": {"q1": "d1"}},
            "relevant_docs of query 'q1' must be a list of ids: 'd1'",
        ),
    ],
)
def test_qa_dataset_texts_must_be_strings(data: dict[str, Any], message: str) -> None:
    """from_dict str()-converted texts: a null query became the question "None"."""
    with pytest.raises(ValueError, match=message):
        QADataset.from_dict({"relevant_docs": {"q1": ["d1"]}, **data})


def test_qa_dataset_relevant_docs_may_be_any_collection_of_ids() -> None:
    """A set of ids was accepted before the string checks; an int id names the real problem."""
    data = {"queries": {"q1": "x?"}, "corpus": {"d1": "t", "d2": "u"}}
    dataset = QADataset.from_dict({**data, "relevant_docs": {"q1": {"d2", "d1"}}})
    assert dataset.relevant_docs == {"q1": ["d1", "d2"]}
    with pytest.raises(ValueError, match=r"relevant_docs of query 1: ids must be strings: \[2\]"):
        QADataset({1: "x?"}, {2: "t"}, {1: [2]})  # type: ignore[dict-item]


def test_an_empty_corpus_text_or_query_is_refused() -> None:
    with pytest.raises(ValueError, match="corpus text 'd' is empty"):
        QADataset({"q": "question?"}, {"d": " "}, {"q": ["d"]})
    with pytest.raises(ValueError, match="query 'q' is empty"):
        QADataset({"q": ""}, {"d": "text"}, {"q": ["d"]})


@pytest.mark.parametrize(
    "row",
    [
        # a mapping (say passage -> score) was read as its keys: trained on as passages
        {"query": "q", "pos": ["a"], "neg": {"b": 0.1, "c": 0.2}},
        {"query": "q", "pos": {"a": 1.0}},
        # a scalar "neg" was read as no negatives; a scalar "pos" was a bare TypeError
        {"query": "q", "pos": ["a"], "neg": 0},
        {"query": "q", "pos": ["a"], "neg": False},
        {"query": "q", "pos": ["a"], "neg": ""},
        {"query": "q", "pos": 5},
    ],
)
def test_pos_and_neg_that_are_not_lists_are_errors_naming_the_line(
    tmp_path: Path, row: dict[str, Any]
) -> None:
    path = _write(
        tmp_path / "rows.jsonl", [json.dumps({"query": "ok", "pos": ["p"]}), json.dumps(row)]
    )
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: .*list of strings"):
        read_jsonl(path)
    with pytest.raises(ValueError, match="list of strings"):
        TrainingExample(row["query"], row["pos"], row.get("neg", ()))
    # a null "neg" still means none, as a missing one does
    _write(path, [json.dumps({"query": "q", "pos": ["a"], "neg": None})])
    assert read_jsonl(path)[0].neg == ()


def test_qa_dataset_ids_that_are_one_string_are_refused(tmp_path: Path) -> None:
    """``str(id)`` of ``1`` and ``"1"`` (or a JSON key given twice) is one id: the last
    text silently replaced the first, so a query was dropped or trained on another
    passage's text."""
    corpus = {"d1": "Warsaw is in Poland.", "d2": "Oxygen is an element."}
    with pytest.raises(ValueError, match=r"queries.*'1'"):
        QADataset.from_dict(
            {"queries": {1: "a?", "1": "b?"}, "corpus": corpus, "relevant_docs": {"1": ["d1"]}}
        )
    with pytest.raises(ValueError, match=r"corpus.*'7'"):
        QADataset.from_dict(
            {"queries": {"q": "a?"}, "corpus": {7: "x", "7": "y"}, "relevant_docs": {"q": [7]}}
        )
    with pytest.raises(ValueError, match=r"relevant_docs.*'1'"):
        QADataset.from_dict(
            {
                "queries": {"1": "a?"},
                "corpus": corpus,
                "relevant_docs": {1: ["d1"], "1": ["d2"]},
            }
        )
    path = tmp_path / "qa.json"
    path.write_text(
        '{"queries": {"q1": "Where is Warsaw?", "q1": "What is oxygen?"}, '
        '"corpus": {"d1": "Warsaw is in Poland.", "d2": "Oxygen is an element."}, '
        '"relevant_docs": {"q1": ["d1"]}}',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"qa\.json: .*'q1'"):
        QADataset.from_json(path)
    # the same id once, as an int and as text in different fields, still reads
    ok = QADataset.from_dict(
        {"queries": {1: "a?"}, "corpus": {"1": "x"}, "relevant_docs": {"1": [1]}}
    )
    assert ok.to_examples() == [TrainingExample("a?", ("x",))]


@pytest.mark.parametrize(
    "key", ["negs", "negatives", "hard_negatives", "positive", "positives", "Pos", "queries"]
)
def test_a_misspelt_query_pos_or_neg_key_is_an_error_naming_it(tmp_path: Path, key: str) -> None:
    # {"negs": [...]} trained the row with no hard negatives; {"positive": ...} next to a
    # "pos" trained on "pos" alone: the key read like one of the three and was ignored
    row = {"query": "q", "pos": ["p"], key: ["x"]}
    path = _write(
        tmp_path / "rows.jsonl", [json.dumps({"query": "ok", "pos": ["a"]}), json.dumps(row)]
    )
    with pytest.raises(ValueError, match=rf'rows\.jsonl:2: .*"{key}"') as info:
        read_jsonl(path)
    assert '"query", "pos" and "neg"' in str(info.value)


def test_flagembedding_and_metadata_keys_are_still_read(tmp_path: Path) -> None:
    row = {
        "query": "q",
        "pos": ["p"],
        "neg": ["n"],
        "pos_scores": [1.0],
        "neg_scores": [0.1],
        "prompt": "",
        "query_id": "7",
        "pos_ids": ["d1"],
        "id": 3,
    }
    path = _write(tmp_path / "rows.jsonl", [json.dumps(row)])
    assert read_jsonl(path) == [TrainingExample("q", ("p",), ("n",))]


def test_a_row_prompt_is_read_as_flagembedding_reads_it_and_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # FlagEmbedding puts a row's "prompt" before its query only when the run sets
    # query_instruction_for_retrieval (AbsEmbedderTrainDataset.__getitem__), so rows with
    # prompts train there on the bare query by default: they are read, not refused, and the
    # first is named in a warning (m3kit has one query instruction for every row)
    rows = [
        {"query": "q", "pos": ["p"], "prompt": "Represent this question: "},
        {"query": "r", "pos": ["s"], "prompt": "Represent this question: "},
    ]
    path = _write(tmp_path / "rows.jsonl", [json.dumps(r) for r in rows])
    with caplog.at_level(logging.WARNING, logger="m3kit.finetune.data"):
        got = read_jsonl(path)
    assert got == [TrainingExample("q", ("p",)), TrainingExample("r", ("s",))]
    told = [r.getMessage() for r in caplog.records if "prompt" in r.getMessage()]
    assert len(told) == 1 and "rows.jsonl:1" in told[0] and "query_instruction" in told[0]


def test_a_key_given_twice_in_a_row_is_an_error(tmp_path: Path) -> None:
    # json keeps the last "pos" silently: the first list's passages were never trained on
    path = _write(tmp_path / "rows.jsonl", ['{"query": "q", "pos": ["a"], "pos": ["b"]}'])
    with pytest.raises(ValueError, match=r"rows\.jsonl:1: .*'pos' twice"):
        read_jsonl(path)
