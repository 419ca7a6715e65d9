"""Synthetic training queries: ask an LLM for questions about each chunk.

Works with any LangChain chat model or LLM (duck-typed ``.invoke(prompt)`` returning a
message with ``.content`` or a string) and any LlamaIndex LLM (duck-typed
``.complete(prompt)`` returning an object with ``.text``); neither library is imported.
The prompt is adapted from LlamaIndex's ``generate_qa_embedding_pairs`` template
(llama-index-finetuning). The result is a :class:`~m3kit.finetune.data.QADataset`
(LlamaIndex's ``EmbeddingQAFinetuneDataset`` shape).
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from m3kit.finetune.data import QADataset, text_key

__all__ = [
    "DEFAULT_QUESTION_PROMPT",
    "OnFailure",
    "generate_qa_dataset",
    "generate_questions",
    "parse_questions",
]

logger = logging.getLogger(__name__)

DEFAULT_QUESTION_PROMPT = """\
Context information is below.

---------------------
{context_str}
---------------------

Using only the context above and no prior knowledge, write questions about it.

You are a teacher preparing a quiz. Write {num_questions_per_chunk} questions that \
can each be answered from the context alone. Make them diverse: cover different parts \
of the context. Write one question per line, with no numbering and no answers.
"""

#: List markers an LLM puts before a question: bullets, ``1.`` / ``1)`` / ``(1)`` / ``1:`` /
#: ``**1.**``, ``Q:`` / ``Q1.`` / ``Question 1:``. Each must be followed by whitespace (or end
#: the line); a numbered or ``Q``-marker, ``-`` and ``•`` may also touch a letter ("1.What",
#: "Q1:What", "-What"). So "Q-learning: ...", "2.5 million ..." and "1984: ..." keep their
#: first word.
#: A bold marker ("**Q1:**", "**Question 2:**") loses its asterisks too.
_SPACED = r"\*+|q(?:uestion)?\s*[.)]"
_TOUCHING = (
    r"\*{0,2}\(?\d{1,3}[.)\]]\*{0,2}|\d{1,2}:"
    r"|\*{0,2}(?:q(?:uestion)?\s*\d*\s*:|q(?:uestion)?\s*\d+\s*[.)])\*{0,2}"
    r"|[-•·]+"
)
_PREFIX = re.compile(
    rf"^\s*(?:(?:{_SPACED})(?:\s+|$)|(?:{_TOUCHING})(?:\s+|$|(?=[^\W\d_])))+", re.IGNORECASE
)

#: A line that answers a question ("Answer: ...", "A1: ...", "**A:** ..."), once its list
#: marker is removed. Lettered lists ("a) ...") are not answers.
_ANSWER = re.compile(r"^\*{0,2}\s*(?:a|answers?)\s*\d*\s*\*{0,2}\s*:", re.IGNORECASE)


class OnFailure(str, enum.Enum):
    """What to do when the LLM keeps failing on a chunk."""

    RAISE = "raise"
    SKIP = "skip"


def parse_questions(response: str, limit: int | None = None) -> list[str]:
    """Questions from an LLM answer: one per line, numbering and bullets removed.

    Empty lines, header lines ending in ``:``, answer lines (``Answer: ...``, ``A1: ...``)
    and repeats (case-insensitive) are dropped.

    >>> parse_questions("Here are two questions:\\n1. What is X?\\n2) Why Y?\\n\\n- What is X?")
    ['What is X?', 'Why Y?']
    >>> parse_questions("Q1: Who wrote it?\\n* \\"When?\\"", limit=1)
    ['Who wrote it?']
    >>> parse_questions("Q-learning: how does it work?\\n2.5 million people live where?")
    ['Q-learning: how does it work?', '2.5 million people live where?']
    >>> parse_questions("1: What is A?\\n2.What is B?\\nQ3:What is C?\\n-What is D?")
    ['What is A?', 'What is B?', 'What is C?', 'What is D?']
    >>> parse_questions("**5.** What is E?")
    ['What is E?']
    >>> parse_questions("1984: which novel?\\nQ.E.D. means what?")
    ['1984: which novel?', 'Q.E.D. means what?']
    >>> parse_questions("**Q1:** Who wrote it?\\n**A1:** Orwell.\\n2. When?\\n   Answer: 1949")
    ['Who wrote it?', 'When?']
    """
    out: list[str] = []
    seen: set[str] = set()
    for line in response.splitlines():
        text = _PREFIX.sub("", line).strip().strip("\"'“”").strip()
        if not text or text.endswith(":") or _ANSWER.match(text):
            continue
        key = text.casefold()
        if key in seen:
            continue
        seen.add(key)
        out.append(text)
        if limit is not None and len(out) >= limit:
            break
    return out


def _complete(llm: Any, prompt: str) -> str:
    """Text of one LLM call: LlamaIndex ``.complete().text`` or LangChain ``.invoke()``."""
    if hasattr(llm, "complete"):
        return str(llm.complete(prompt).text)
    if hasattr(llm, "invoke"):
        reply = llm.invoke(prompt)
        content = getattr(reply, "content", reply)
        if isinstance(content, list):  # LangChain content blocks
            return "\n".join(
                b if isinstance(b, str) else str(b.get("text", ""))
                for b in content
                if isinstance(b, (str, dict))
            )
        return str(content)
    raise TypeError(
        f"{type(llm).__name__} is neither a LangChain model (.invoke) nor a LlamaIndex LLM "
        "(.complete)"
    )


def _echoed_lines(text: str) -> set[str]:
    """The chunk's lines (and the whole chunk) in comparison form, except its questions."""
    lines = {text_key(line).casefold() for line in text.splitlines()}
    lines.add(text_key(text).casefold())
    return {line for line in lines if line and not line.endswith("?")}


def _ask(llm: Any, text: str, num_questions: int, prompt_template: str) -> tuple[list[str], int]:
    """``(questions, lines dropped as copied from the prompt or the chunk)``."""
    if num_questions < 1:
        raise ValueError("num_questions must be >= 1")
    prompt = prompt_template.format(context_str=text, num_questions_per_chunk=num_questions)
    reply = _complete(llm, prompt)
    echoed = 0
    at = reply.rfind(prompt.strip())
    if at >= 0:  # the prompt came back first (MockLLM, return_full_text=True): skip it
        echoed = len(parse_questions(reply[: at + len(prompt.strip())]))
        reply = reply[at + len(prompt.strip()) :]
    copied = _echoed_lines(text)
    questions = []
    for question in parse_questions(reply):
        if text_key(question).casefold() in copied:
            echoed += 1
        else:
            questions.append(question)
    return questions[:num_questions], echoed


def generate_questions(
    llm: Any,
    text: str,
    *,
    num_questions: int = 2,
    prompt_template: str = DEFAULT_QUESTION_PROMPT,
) -> list[str]:
    """Ask ``llm`` for up to ``num_questions`` questions about ``text`` (cleaned, deduped).

    A reply that repeats the prompt (an LLM echoing its input, e.g. a HuggingFace pipeline
    with ``return_full_text=True``) is read from the end of the prompt on; a line copied
    from ``text`` that is not a question (no ``?``) is dropped, so the chunk is never its own
    query. :func:`generate_qa_dataset` counts these lines in a warning.
    """
    return _ask(llm, text, num_questions, prompt_template)[0]


def _question_key(question: str) -> str:
    """The form questions are compared in: case and whitespace do not make another one."""
    return text_key(question).casefold()


def generate_qa_dataset(
    llm: Any,
    chunks: Sequence[str] | Mapping[str, str],
    *,
    num_questions_per_chunk: int = 2,
    prompt_template: str = DEFAULT_QUESTION_PROMPT,
    retries: int = 3,
    on_failure: OnFailure | str = OnFailure.RAISE,
    show_progress: bool = False,
) -> QADataset:
    """Generate questions for every chunk and return the QA dataset.

    Args:
        llm: A LangChain chat model / LLM or a LlamaIndex LLM (duck-typed).
        chunks: Chunk texts, or ``{chunk_id: text}`` (ids default to ``chunk-<i>``).
        num_questions_per_chunk: Questions asked per chunk.
        prompt_template: Needs ``{context_str}`` and ``{num_questions_per_chunk}``.
        retries: Attempts per chunk when the LLM raises.
        on_failure: ``"raise"`` (default) or ``"skip"`` a chunk whose calls all failed.
        show_progress: tqdm bar.

    Returns:
        A :class:`QADataset`; query ids are ``<chunk_id>-q<n>``. A question already asked of
        an earlier chunk (case and whitespace aside) is dropped (it would have two answers);
        chunks without questions stay out of the corpus. A question is relevant to every
        corpus chunk with its chunk's text (whitespace collapsed: repeated boilerplate).
        Chunks with no or fewer questions than asked, and reply lines copied from the
        prompt or the chunk (see :func:`generate_questions`), are counted in one warning.

    Raises:
        TypeError: ``chunks`` is a single string.
        RuntimeError: The LLM failed ``retries`` times on a chunk (``on_failure="raise"``).
    """
    policy = OnFailure(on_failure)
    if isinstance(chunks, str):
        raise TypeError(
            "chunks is a single string (each character would be a chunk): pass a list of "
            "chunk texts or a {chunk_id: text} mapping"
        )
    items = (
        list(chunks.items())
        if isinstance(chunks, Mapping)
        else [(f"chunk-{i}", t) for i, t in enumerate(chunks)]
    )
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    seen: set[str] = set()
    asked = none = fewer = echoed = 0
    for chunk_id, text in tqdm(items, desc="questions", disable=not show_progress):
        if not text.strip():
            continue
        questions: list[str] | None = None
        error: Exception | None = None
        for _ in range(max(1, retries)):
            try:
                questions, copied = _ask(llm, text, num_questions_per_chunk, prompt_template)
                break
            except (KeyError, IndexError, TypeError, ValueError):
                raise  # a broken prompt template or an unusable llm object: no retry
            except Exception as e:  # the LLM client's own errors (network, rate limit, ...)
                error = e
                logger.warning("LLM call failed for chunk %s: %s", chunk_id, e)
        if questions is None:
            if policy is OnFailure.RAISE:
                raise RuntimeError(
                    f"the LLM failed {retries} time(s) on chunk {chunk_id!r}: {error}"
                ) from error
            logger.warning("skipping chunk %s after %d failed calls", chunk_id, retries)
            continue
        kept = [q for q in questions if _question_key(q) not in seen]
        asked += 1
        echoed += copied
        none += not kept
        fewer += 0 < len(kept) < num_questions_per_chunk
        if len(kept) < num_questions_per_chunk:
            logger.info(
                "chunk %s: %d of %d questions usable", chunk_id, len(kept), num_questions_per_chunk
            )
        for n, question in enumerate(kept):
            seen.add(_question_key(question))
            qid = f"{chunk_id}-q{n}"
            queries[qid] = question
            relevant[qid] = [chunk_id]
        if kept:
            corpus[chunk_id] = text
    copies: dict[str, list[str]] = {}  # a chunk's text -> every corpus id holding it
    for chunk_id, text in corpus.items():
        copies.setdefault(text_key(text), []).append(chunk_id)
    relevant = {qid: copies[text_key(corpus[ids[0]])] for qid, ids in relevant.items()}
    if none or fewer or echoed:
        logger.warning(
            "%d of %d chunks got no question (left out of the corpus), %d of %d chunks got "
            "fewer than %d; %d lines copied from the prompt or the chunk were not used as "
            "questions",
            none,
            asked,
            fewer,
            asked,
            num_questions_per_chunk,
            echoed,
        )
    return QADataset(queries=queries, corpus=corpus, relevant_docs=relevant)
