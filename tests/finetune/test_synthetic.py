"""Synthetic questions with LangChain and LlamaIndex fakes (no network, duck typing only)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from m3kit.finetune.synthetic import (
    DEFAULT_QUESTION_PROMPT,
    generate_qa_dataset,
    generate_questions,
    parse_questions,
)

CHUNKS = {
    "warsaw": "Warsaw is the capital of Poland.",
    "rhine": "The Rhine flows into the North Sea.",
}


def test_core_module_imports_neither_framework() -> None:
    import m3kit.finetune.synthetic as mod

    source = Path(mod.__file__).read_text(encoding="utf-8")
    assert "import langchain" not in source and "import llama_index" not in source
    assert "from langchain" not in source and "from llama_index" not in source


def test_langchain_fake_chat_model() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    llm = FakeListChatModel(
        responses=[
            "Here are 2 questions:\n1. What is the capital of Poland?\n"
            "2) Which country is Warsaw in?",
            "- Where does the Rhine flow?\n\n- Where does the Rhine flow?\n"
            "- What sea does it reach?",
        ]
    )
    qa = generate_qa_dataset(llm, CHUNKS, num_questions_per_chunk=2)
    assert list(qa.queries.values()) == [
        "What is the capital of Poland?",
        "Which country is Warsaw in?",
        "Where does the Rhine flow?",
        "What sea does it reach?",
    ]
    assert qa.relevant_docs["warsaw-q1"] == ["warsaw"]
    assert qa.corpus == CHUNKS
    assert [ex.pos for ex in qa.to_examples()][2] == (CHUNKS["rhine"],)


@dataclass
class _Completion:
    text: str


class _RecordingLLM:
    """LlamaIndex-shaped LLM (``.complete`` -> ``.text``) that records its prompts."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.prompts: list[str] = []

    def complete(self, prompt: str) -> _Completion:
        self.prompts.append(prompt)
        return _Completion(self.answers[len(self.prompts) - 1])


def test_llamaindex_shaped_llm_and_prompt() -> None:
    llm = _RecordingLLM(["Q1: Who?\nQ2: What?\nQ3: Extra?", "   \n", "Why?"])
    qa = generate_qa_dataset(
        llm, ["chunk a", "  ", "chunk b", "chunk c"], num_questions_per_chunk=2
    )
    assert len(llm.prompts) == 3  # the blank chunk is not sent
    assert "chunk a" in llm.prompts[0] and "Write 2 questions" in llm.prompts[0]
    assert qa.queries == {"chunk-0-q0": "Who?", "chunk-0-q1": "What?", "chunk-3-q0": "Why?"}
    assert set(qa.corpus) == {"chunk-0", "chunk-3"}  # chunk b got no question: not in the corpus


def test_llamaindex_mock_llm() -> None:
    from llama_index.core.llms import MockLLM

    questions = generate_questions(MockLLM(max_tokens=3), "any text", num_questions=1)
    assert questions == ["text text text"]
    assert "llama_index.finetuning" not in sys.modules


def test_cross_chunk_duplicates_are_dropped() -> None:
    llm = _RecordingLLM(["What is it?", "what is it?\nAnother one?"])
    qa = generate_qa_dataset(llm, ["a", "b"], num_questions_per_chunk=2)
    assert list(qa.queries.values()) == ["What is it?", "Another one?"]


def test_a_question_repeated_with_other_whitespace_is_dropped() -> None:
    """The repeat test compared case only: "What is  it?" (two spaces) asked of another
    chunk stayed, one question with two different positives."""
    llm = _RecordingLLM(["What is it?", "What is  it?\nAnother one?", "WHAT IS\tIT?"])
    qa = generate_qa_dataset(llm, ["a", "b", "c"], num_questions_per_chunk=2)
    assert list(qa.queries.values()) == ["What is it?", "Another one?"]
    assert qa.relevant_docs == {"chunk-0-q0": ["chunk-0"], "chunk-1-q0": ["chunk-1"]}


class _Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures

    def invoke(self, prompt: str) -> str:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("rate limited")
        return "1. Fine?"


def test_retries_then_raise_or_skip() -> None:
    assert generate_qa_dataset(_Flaky(2), ["a"], retries=3).queries == {"chunk-0-q0": "Fine?"}
    with pytest.raises(RuntimeError, match="failed 3 time.*chunk-0.*rate limited"):
        generate_qa_dataset(_Flaky(5), ["a"], retries=3)
    skipped = generate_qa_dataset(_Flaky(3), ["a", "b"], retries=3, on_failure="skip")
    assert skipped.queries == {"chunk-1-q0": "Fine?"}


def test_bad_llm_and_template() -> None:
    with pytest.raises(TypeError, match="neither a LangChain model"):
        generate_questions(object(), "text")
    with pytest.raises(KeyError):
        generate_qa_dataset(_Flaky(0), ["a"], prompt_template="{missing}")
    with pytest.raises(ValueError, match="num_questions"):
        generate_questions(_Flaky(0), "t", num_questions=0)
    assert "{context_str}" in DEFAULT_QUESTION_PROMPT


def test_parse_questions_cleaning() -> None:
    text = "Questions:\n1. One?\n  2.   Two?\n• Three?\n* 'Four?'\nQuestion 5: Five?\n(6) Six?"
    assert parse_questions(text) == ["One?", "Two?", "Three?", "Four?", "Five?", "Six?"]
    assert parse_questions(text, limit=2) == ["One?", "Two?"]
    assert parse_questions("\n\n") == []


@pytest.mark.parametrize(
    "question",
    [
        "Q-learning: how does it update values?",
        "2.5 million people live where?",
        "1984: which novel is it?",
        "Q.E.D. is written where?",
        "-5 degrees: is that cold?",
    ],
)
def test_parse_questions_keeps_the_first_word_of_a_real_question(question: str) -> None:
    """Only a list marker followed by whitespace is stripped ("Q-learning: how ..." became
    "learning: how ...", "2.5 million ..." became "5 million ...")."""
    assert parse_questions(question) == [question]
    assert parse_questions(f"1. {question}\n- Q2: {question[:-1]} again?") == [
        question,
        f"{question[:-1]} again?",
    ]


def test_answer_lines_are_not_questions() -> None:
    """LLMs often answer their own questions; "Answer: ..." lines were kept as questions
    (and took the place of a real one under the limit)."""
    reply = "1. What is X?\n   Answer: X is Y.\n2. Why Z?\nA: because.\n**A3:** no.\nAnswers: none"
    assert parse_questions(reply) == ["What is X?", "Why Z?"]
    assert parse_questions(reply, limit=2) == ["What is X?", "Why Z?"]
    assert parse_questions("a) Is A: the first letter?") == ["a) Is A: the first letter?"]


def test_bold_question_markers_are_stripped() -> None:
    """Chat models write "**Q1:** ..." / "**Question 2:** ..."; the marker stayed in the query."""
    reply = "**Q1:** What is X?\n**Question 2:** Why Y?\n**Q3.** How Z?"
    assert parse_questions(reply) == ["What is X?", "Why Y?", "How Z?"]


def test_an_echoed_prompt_or_chunk_gives_no_questions(caplog: pytest.LogCaptureFixture) -> None:
    """An LLM that echoes its prompt (MockLLM, a HuggingFace pipeline with
    return_full_text=True) or the chunk made the prompt's lines and the chunk itself the
    "questions" of the chunk (a query identical to its passage)."""
    from llama_index.core.llms import MockLLM

    chunk = "Warsaw is the capital of Poland.\nIt lies on the Vistula."
    assert generate_questions(MockLLM(), chunk, num_questions=2) == []
    full_text = _RecordingLLM([""])
    prompt = DEFAULT_QUESTION_PROMPT.format(context_str=chunk, num_questions_per_chunk=2)
    full_text.answers = [prompt + "\n1. Which river is Warsaw on?\n2. What is Warsaw?"]
    assert generate_questions(full_text, chunk) == ["Which river is Warsaw on?", "What is Warsaw?"]
    echo = _RecordingLLM([chunk, "1. Is it big?\nWarsaw is the capital of Poland."])
    qa = generate_qa_dataset(echo, {"a": chunk, "b": chunk + " "}, num_questions_per_chunk=2)
    assert qa.queries == {"b-q0": "Is it big?"}
    assert "1 of 2 chunks got no question" in caplog.text
    assert "1 of 2 chunks got fewer than 2" in caplog.text
    assert "3 lines copied from the prompt or the chunk" in caplog.text


def test_a_question_that_appears_in_the_chunk_is_kept() -> None:
    chunk = "FAQ\nHow do I reset my password?\nClick 'forgot password'."
    llm = _RecordingLLM(["How do I reset my password?\nWhat do I click?"])
    assert generate_questions(llm, chunk) == ["How do I reset my password?", "What do I click?"]


def test_a_single_string_is_not_a_list_of_chunks() -> None:
    """A str is a Sequence[str]: each character became a chunk sent to the LLM."""
    with pytest.raises(TypeError, match="chunks is a single string"):
        generate_qa_dataset(_RecordingLLM(["Q?"]), "Warsaw is the capital of Poland.")


def test_a_question_is_relevant_to_every_copy_of_its_chunk() -> None:
    """Repeated chunks (boilerplate, a page header) under two ids: each question was
    relevant to one copy only, so retrieving the other counted as a miss."""
    llm = _RecordingLLM(["Who wrote it?", "When was it?", "Why?"])
    qa = generate_qa_dataset(llm, {"a": "Same text.", "b": " Same  text.\n", "c": "Other."})
    assert qa.relevant_docs == {"a-q0": ["a", "b"], "b-q0": ["a", "b"], "c-q0": ["c"]}
