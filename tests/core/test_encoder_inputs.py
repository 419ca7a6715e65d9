"""Bad and edge input: clear errors, valid vectors, typed batch results."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from m3kit import (
    Head,
    HeadNotAvailableError,
    HeadNotComputedError,
    M3Encoder,
    TruncationError,
)
from m3kit.encoder_inputs import TokenizedText, position_rows, texts_to_input_ids


def test_empty_batch_gives_empty_result(tiny_encoder: M3Encoder) -> None:
    out = tiny_encoder.encode([])
    assert len(out) == 0
    assert out.dense.shape == (0, 32)
    assert out.sparse == () and out.colbert == ()


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"])
def test_empty_and_whitespace_give_valid_vectors(tiny_encoder: M3Encoder, text: str) -> None:
    out = tiny_encoder.encode([text])
    assert out.dense.shape == (1, 32)
    assert np.isfinite(out.dense).all()
    assert abs(float(np.linalg.norm(out.dense[0])) - 1.0) < 1e-5
    # "" is only special tokens (nothing lexical); whitespace may keep a word-boundary piece.
    assert len(out.sparse[0]) == 0 if text == "" else np.all(out.sparse[0].values > 0)
    assert out.colbert[0].shape[0] >= 1


@pytest.mark.parametrize("bad_index", [0, 2])
def test_non_str_names_its_position(tiny_encoder: M3Encoder, bad_index: int) -> None:
    texts: list[object] = ["a", "b", "c"]
    texts[bad_index] = None
    with pytest.raises(TypeError, match=rf"texts\[{bad_index}\] is NoneType"):
        tiny_encoder.encode(texts)  # type: ignore[arg-type]
    texts[bad_index] = 42
    with pytest.raises(TypeError, match=rf"texts\[{bad_index}\] is int"):
        tiny_encoder.encode(texts)  # type: ignore[arg-type]


def test_single_string_is_refused(tiny_encoder: M3Encoder) -> None:
    with pytest.raises(TypeError, match="list of texts"):
        tiny_encoder.encode("just one")  # type: ignore[arg-type]


def test_long_text_truncated_with_warning(
    tiny_encoder: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    text = "hello world " * 100
    with caplog.at_level(logging.WARNING, logger="m3kit.encoder"):
        out = tiny_encoder.encode([text, "short"], max_length=16)
    assert out.token_counts[0] == 16
    assert out.colbert[0].shape[0] == 15
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_long_text_strict_raises(tiny_encoder: M3Encoder) -> None:
    with pytest.raises(TruncationError, match=r"position\(s\) \[1\]"):
        tiny_encoder.encode(["short", "hello world " * 100], max_length=16, truncation="error")


def test_truncated_equals_encoding_the_prefix(tiny_encoder: M3Encoder) -> None:
    text = "hello world " * 40
    ids = tiny_encoder.tokenize([text], max_length=10)[0]
    assert ids.truncated and len(ids.input_ids) == 10
    full = tiny_encoder.tokenize([text])[0].input_ids
    assert ids.input_ids == [*full[:9], full[-1]]


@pytest.mark.parametrize("max_length", [0, 1, -5])
def test_a_max_length_below_the_special_tokens_is_an_error(
    tiny_encoder: M3Encoder, max_length: int
) -> None:
    """1 truncated nothing, 0 fell back to the encoder's own limit: both silently."""
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        tiny_encoder.encode(["hello world " * 10], max_length=max_length)


def test_heads_per_call_absent_by_type(tiny_encoder: M3Encoder) -> None:
    out = tiny_encoder.encode(["hello"], heads=["dense"])
    assert out.dense.shape == (1, 32)
    with pytest.raises(HeadNotComputedError, match="sparse"):
        _ = out.sparse
    with pytest.raises(HeadNotComputedError, match="colbert"):
        _ = out.colbert
    sparse_only = tiny_encoder.encode(["hello"], heads="sparse")
    with pytest.raises(HeadNotComputedError, match="dense"):
        _ = sparse_only.dense
    with pytest.raises(ValueError, match="unknown head"):
        tiny_encoder.encode(["hello"], heads=["bm25"])


def test_dense_only_checkpoint_refuses_other_heads(minilm_encoder: M3Encoder) -> None:
    with pytest.raises(HeadNotAvailableError, match="dense-only"):
        minilm_encoder.encode(["hello"], heads=["dense", "sparse"])
    with pytest.raises(HeadNotAvailableError, match="colbert"):
        minilm_encoder.encode(["hello"], heads=["colbert"])
    assert minilm_encoder.encode(["hello"]).dense.shape == (1, 384)


def test_sparse_pruning(tiny_encoder: M3Encoder) -> None:
    text = ["The quick brown fox jumps over the lazy dog and the quick cat."]
    full = tiny_encoder.encode(text, heads="sparse").sparse[0]
    top = tiny_encoder.encode(text, heads="sparse", sparse_top_k=3).sparse[0]
    assert len(top) == 3 < len(full)
    best3 = np.sort(full.indices[np.argsort(-full.values, kind="stable")[:3]])
    assert top.indices.tolist() == best3.tolist()
    cut = float(np.median(full.values))
    pruned = tiny_encoder.encode(text, heads="sparse", sparse_min_weight=cut).sparse[0]
    assert np.all(pruned.values > cut) and len(pruned) < len(full)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_sparse_top_k_must_be_a_positive_integer(tiny_encoder: M3Encoder, bad: object) -> None:
    # 0 or a negative k used to keep every weight, silently
    with pytest.raises(ValueError, match="sparse_top_k must be a positive integer"):
        tiny_encoder.encode(["a text"], heads="sparse", sparse_top_k=bad)  # type: ignore[arg-type]


def test_query_instruction_only_on_queries(tiny_m3_path: object) -> None:
    enc = M3Encoder.from_pretrained(
        tiny_m3_path,
        dtype="fp32",  # type: ignore[arg-type]
        query_instruction="为这个句子生成表示以用于检索相关文章：",
    )
    plain = enc.encode(["北京"])
    query = enc.encode_queries(["北京"])
    manual = enc.encode(["为这个句子生成表示以用于检索相关文章：北京"])
    np.testing.assert_allclose(query.dense, manual.dense, atol=1e-6)
    assert not np.allclose(query.dense, plain.dense)


def test_order_preserved_across_batches(tiny_m3_path: object) -> None:
    texts = [("word " * n).strip() for n in (1, 50, 3, 20, 7, 90, 2)]
    small = M3Encoder.from_pretrained(
        tiny_m3_path,
        dtype="fp32",
        batch_size=2,  # type: ignore[arg-type]
        max_batch_tokens=64,
    )
    one_by_one = np.stack([small.encode([t]).dense[0] for t in texts])
    np.testing.assert_allclose(small.encode(texts).dense, one_by_one, atol=1e-5)


class _CountingTokenizer:
    """Stands in for an encoder in ``texts_to_input_ids``: records what it was asked."""

    def __init__(self, heads: frozenset[Head], query_instruction: str | None) -> None:
        self.available_heads = heads
        self.query_instruction = query_instruction
        self.calls: list[tuple[list[str], int | None, str]] = []

    def tokenize(
        self, texts: list[str], *, max_length: int | None = None, truncation: str = "warn"
    ) -> list[TokenizedText]:
        self.calls.append((list(texts), max_length, str(truncation)))
        return [TokenizedText([0, len(t), 2], truncated=False) for t in texts]


def test_texts_to_input_ids_checks_before_tokenising() -> None:
    enc = _CountingTokenizer(frozenset({Head.DENSE}), query_instruction="Q: ")
    with pytest.raises(HeadNotAvailableError, match="sparse"):
        texts_to_input_ids(
            enc, ["a"], heads="sparse", query=False, max_length=None, truncation="warn"
        )
    with pytest.raises(TypeError, match="list of texts"):
        texts_to_input_ids(enc, "a", heads=None, query=False, max_length=None, truncation="warn")
    assert enc.calls == []  # refused before any tokenising
    wanted, ids = texts_to_input_ids(
        enc, ["ab", "c"], heads=None, query=True, max_length=7, truncation="error"
    )
    assert wanted == frozenset({Head.DENSE})
    assert enc.calls == [(["Q: ab", "Q: c"], 7, "error")]
    assert ids == [[0, 5, 2], [0, 4, 2]]


def test_encoder_and_pool_share_the_prologue(tiny_encoder: M3Encoder) -> None:
    # EncoderPool.encode runs the same helper, so the ids it sends are M3Encoder.encode's
    texts = ["Berlin is the capital of Germany.", "short"]
    wanted, ids = texts_to_input_ids(
        tiny_encoder, texts, heads=None, query=True, max_length=None, truncation="warn"
    )
    assert wanted == tiny_encoder.available_heads
    direct = tiny_encoder.encode(texts, query=True)
    via_ids = tiny_encoder.encode_tokenized(ids)
    assert direct.token_counts == via_ids.token_counts == tuple(len(i) for i in ids)
    np.testing.assert_allclose(direct.dense, via_ids.dense, atol=1e-6)


@pytest.mark.parametrize(
    ("bad", "shown"), [(float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "-inf")]
)
def test_a_non_finite_sparse_min_weight_is_refused(
    tiny_encoder: M3Encoder, bad: float, shown: str
) -> None:
    # NaN and inf used to drop every sparse weight silently (nothing is above them): empty
    # sparse vectors; -inf kept every weight, as no threshold anyone means does
    with pytest.raises(ValueError, match=f"sparse_min_weight is {shown}: "):
        tiny_encoder.encode(["a text"], heads="sparse", sparse_min_weight=bad)
    with pytest.raises(ValueError, match=f"sparse_min_weight is {shown}: "):
        tiny_encoder.encode(["a text"], heads="sparse", sparse_min_weight=np.float32(bad))


def test_a_non_number_sparse_min_weight_is_refused(tiny_encoder: M3Encoder) -> None:
    with pytest.raises(TypeError, match="sparse_min_weight must be a number"):
        tiny_encoder.encode(["a text"], sparse_min_weight="0.1")  # type: ignore[arg-type]
    assert len(tiny_encoder.encode(["a text"], sparse_min_weight=np.float32(-1)).sparse[0]) > 0


def test_token_ids_no_forward_pass_takes_are_named(tiny_encoder: M3Encoder) -> None:
    # used to fail inside the forward pass: "index out of range in self", or a reshape error
    vocab = tiny_encoder.model.backbone.get_input_embeddings().num_embeddings
    with pytest.raises(ValueError, match=r"input_ids\[1\] is empty"):
        tiny_encoder.encode_tokenized([[0, 5, 2], []])
    with pytest.raises(
        ValueError, match=rf"token id {vocab}, outside the vocabulary \[0, {vocab}\)"
    ):
        tiny_encoder.encode_tokenized([[0, vocab, 2]])
    assert tiny_encoder.encode_tokenized([[0, vocab - 1, 2]]).dense.shape[0] == 1
    # longer than the position embeddings: torch's "index 8194 is out of bounds", named nothing
    positions = position_rows(tiny_encoder.model)
    assert positions is not None
    with pytest.raises(ValueError, match=rf"\[1\] holds {positions + 1} tokens, more than the"):
        tiny_encoder.encode_tokenized([[0, 2], [0] + [5] * (positions - 1) + [2]])
    assert len(tiny_encoder.encode_tokenized([[0] + [5] * (positions - 2) + [2]])) == 1


@pytest.mark.parametrize(
    "bad",
    [[[0, 5.7, 2]], [[0, float("nan"), 2]], np.array([[0, 5, 2]], dtype=np.float32)],
)
def test_token_ids_that_are_not_integers_are_refused(tiny_encoder: M3Encoder, bad: object) -> None:
    # 5.7 was encoded as token 5 (cast into the int64 batch), silently; NaN failed inside
    # the forward pass with "index out of range in self"
    with pytest.raises(ValueError, match=r"input_ids\[0\] holds .*not integer token ids"):
        tiny_encoder.encode_tokenized(bad)  # type: ignore[arg-type]
    ints = np.array([[0, 5, 2]], dtype=np.int32)
    assert tiny_encoder.encode_tokenized(ints).token_counts == (3,)


def test_a_text_with_an_unpaired_surrogate_is_an_error_naming_it(
    tiny_encoder: M3Encoder,
) -> None:
    """The tokenizer failed with "TextInputSequence must be str", naming no text, in encode,
    the chunkers and both adapters; the text and position are now named up front."""
    from m3kit.late_chunking import LateChunker

    encoder = tiny_encoder
    bad = ["fine", "half an emoji " + chr(0xD83D)]
    with pytest.raises(ValueError, match=r"encode\(\): texts\[1\] .*surrogate at character 14"):
        encoder.encode(bad, show_progress=False)
    with pytest.raises(ValueError, match=r"chunk\(\): texts\[1\] .*surrogate"):
        LateChunker(encoder, chunk_size=16).chunk(bad)


def test_an_unknown_truncation_is_refused_before_any_text_is_cut(tiny_encoder: M3Encoder) -> None:
    """``truncation="raise"`` (meaning ``"error"``) was read only once a text was too long:
    every short batch passed, and the first long one failed with enum's "'raise' is not a valid
    Truncation". It is refused at once, naming the choices."""
    with pytest.raises(ValueError, match=r"truncation must be 'warn' or 'error', not 'raise'"):
        tiny_encoder.encode(["short"], truncation="raise")


def test_a_max_length_the_positions_hold_is_taken_and_a_longer_one_refused(
    minilm_path: Path,
) -> None:
    """all-MiniLM-L6-v2 declares 256 tokens (sentence_bert_config.json) and has 512 positions,
    as sentence-transformers' ``max_seq_length = 512`` uses; a ``max_length`` above the
    declared length was lowered to it silently (512 gave 256), one above the positions too."""
    assert M3Encoder.from_pretrained(minilm_path).max_length == 256  # the declared default
    long = "word " * 600
    enc = M3Encoder.from_pretrained(minilm_path, max_length=512)
    assert enc.max_length == 512
    assert len(enc.tokenize([long])[0].input_ids) == 512
    with pytest.raises(ValueError, match=r"max_length=100000 .*\(512 positions\)"):
        M3Encoder.from_pretrained(minilm_path, max_length=100_000)


@pytest.mark.parametrize("name", ["batch_size", "max_batch_tokens", "max_length"])
@pytest.mark.parametrize("value", [2.5, True, "8"])
def test_size_settings_that_are_not_whole_numbers_are_refused(
    tiny_m3_path: Path, name: str, value: object
) -> None:
    """``batch_size=2.5`` became 2 (``int()``), ``True`` became 1, silently."""
    with pytest.raises(ValueError, match=f"{name} must be a whole number"):
        M3Encoder.from_pretrained(tiny_m3_path, **{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [5.5, "8", float("nan")])
def test_a_per_call_max_length_that_is_no_whole_number_is_refused(
    tiny_encoder: M3Encoder, value: object
) -> None:
    """``encode(..., max_length=5.5)`` failed in the tokenizer with "'float' object cannot be
    interpreted as an integer", ``"8"`` with "'<' not supported between instances of 'str'
    and 'int'", naming no setting; it is refused as the constructor refuses it."""
    with pytest.raises(ValueError, match="max_length must be a whole number"):
        tiny_encoder.encode(["a b c d e f g"], max_length=value)  # type: ignore[arg-type]
    assert tiny_encoder.encode(["a b c d e f g"], max_length=np.int64(5)).token_counts == (5,)


def test_token_states_refuses_token_ids_no_forward_pass_takes(tiny_encoder: M3Encoder) -> None:
    """``token_states`` (what late chunking pools) took ids ``encode_tokenized`` refuses: 5.7
    became token 5 silently, an empty sequence failed with a reshape error, an id outside the
    vocabulary with "index out of range in self"."""
    vocab = tiny_encoder.model.backbone.get_input_embeddings().num_embeddings
    with pytest.raises(ValueError, match=r"input_ids\[0\] holds .*not integer token ids"):
        tiny_encoder.token_states([[0, 5.7, 2]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"input_ids\[1\] is empty"):
        tiny_encoder.token_states([[0, 5, 2], []])
    with pytest.raises(ValueError, match=rf"token id {vocab}, outside the vocabulary"):
        tiny_encoder.token_states([[0, vocab, 2]])
    assert tiny_encoder.token_states([[0, 5, 2]])[0].hidden.shape == (3, 32)


def test_what_is_no_list_of_texts_is_named_by_the_method_called(tiny_encoder: M3Encoder) -> None:
    """``tokenize("ab")`` was refused naming ``encode()``; ``encode(b"ab")`` iterated the
    bytes ("texts[0] is int, not str"), ``encode(None)`` failed with Python's "'NoneType'
    object is not iterable"."""
    with pytest.raises(TypeError, match=r"tokenize\(\) takes a list of texts"):
        tiny_encoder.tokenize("ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"encode\(\) takes a list of texts \(str\), not bytes"):
        tiny_encoder.encode(b"ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"encode\(\) takes a list of texts, not NoneType"):
        tiny_encoder.encode(None)  # type: ignore[arg-type]
    assert len(tiny_encoder.tokenize(("a", "b"))) == 2  # any sequence of str is a batch


def test_a_declared_length_past_the_positions_is_capped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder whose sentence_bert_config.json declares 128 tokens over 64 position embeddings
    loaded with ``max_length=128``: every text past 64 tokens then failed inside the forward
    pass with a bare "index 66 is out of bounds". Its declared length is capped at the
    positions, with a warning naming the file."""
    import json

    from m3kit.testing import build_random_m3_checkpoint

    path = tmp_path / "short64"
    build_random_m3_checkpoint(
        path, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64, max_length=64
    )
    cfg = json.loads((path / "m3kit.json").read_text())
    cfg["max_length"] = None
    (path / "m3kit.json").write_text(json.dumps(cfg))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    with caplog.at_level(logging.WARNING, logger="m3kit.checkpoint"):
        enc = M3Encoder.from_pretrained(path, dtype="fp32")
    assert enc.max_length == 64
    assert "declares a max length of 128 tokens (sentence_bert_config.json)" in caplog.text
    assert enc.encode(["word " * 100]).token_counts[0] == 64


def test_position_rows_counts_the_rows_a_roberta_style_table_reserves() -> None:
    """RoBERTa-style tables start positions after their padding index (XLM-R: 8,194 rows,
    8,192 positions), whatever the model type is called (xlm-roberta-xl, roberta-prelayernorm,
    data2vec-text...); a BERT table uses every row; rotary models have no table."""
    from types import SimpleNamespace

    from torch import nn

    def model(table: object) -> object:
        return SimpleNamespace(
            backbone=SimpleNamespace(embeddings=SimpleNamespace(position_embeddings=table))
        )

    assert position_rows(model(nn.Embedding(20, 4, padding_idx=1))) == 18
    assert position_rows(model(nn.Embedding(20, 4))) == 20
    assert position_rows(model(None)) is None
    assert position_rows(SimpleNamespace(backbone=SimpleNamespace())) is None


def test_a_rotary_checkpoint_declares_no_position_limit(tmp_path: Path) -> None:
    """A checkpoint with rotary positions (``position_embedding_type`` not absolute, e.g.
    jina-embeddings-v3) was capped at ``max_position_embeddings`` with a warning about
    position embeddings it does not have."""
    import json

    from m3kit.checkpoint import position_limit

    cfg = {"model_type": "xlm-roberta", "max_position_embeddings": 8194}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert position_limit(tmp_path) == 8192
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "position_embedding_type": "rotary"}))
    assert position_limit(tmp_path) is None


@pytest.mark.parametrize("max_length", [0, 1, -5])
def test_a_loading_max_length_below_the_special_tokens_is_an_error(
    tiny_m3_path: Path, max_length: int
) -> None:
    """``from_pretrained(max_length=0)`` loaded the checkpoint's own length (8192 for
    BGE-M3), silently."""
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        M3Encoder.from_pretrained(tiny_m3_path, max_length=max_length)


def test_a_model_given_to_the_constructor_gets_its_positions_as_max_length(
    tiny_encoder: M3Encoder,
) -> None:
    """``M3Encoder(model, tokenizer)`` defaulted to 8192 tokens over a model with fewer
    positions: every longer text failed (an error naming ``input_ids`` it was never given)
    instead of being truncated with a warning."""
    from m3kit.encoder_inputs import position_rows

    positions = position_rows(tiny_encoder.model)
    assert positions is not None
    enc = M3Encoder(tiny_encoder.model, tiny_encoder.tokenizer, precision="fp32")
    assert enc.max_length == positions
    assert enc.encode(["word " * (2 * positions)]).token_counts == (positions,)
    with pytest.raises(ValueError, match=rf"max_length={positions + 1} .*{positions} positions"):
        M3Encoder(tiny_encoder.model, tiny_encoder.tokenizer, max_length=positions + 1)


def test_score_pairs_refuses_a_blank_query(tiny_encoder: M3Encoder) -> None:
    """``score`` and ``rerank`` refused a blank query; ``score_pairs`` scored it (noise)."""
    from m3kit.rerank import M3Reranker

    reranker = M3Reranker(tiny_encoder)
    with pytest.raises(ValueError, match=r"the query of pairs\[1\] is empty"):
        reranker.score_pairs([("a query", "a text"), ("  ", "a text")])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([0, 5, 2], r"input_ids\[0\] is int, not a list of token ids"),
        (None, "input_ids must be a list of token-id lists, one per text; got NoneType"),
        ("0 5 2", "got str"),
    ],
)
def test_token_ids_not_one_list_per_text_are_named(
    tiny_encoder: M3Encoder, bad: object, match: str
) -> None:
    """A flat list of one text's ids failed with ``object of type 'int' has no len()``."""
    with pytest.raises(TypeError, match=match):
        tiny_encoder.encode_tokenized(bad)  # type: ignore[arg-type]
    np_ids = np.array([[0, 5, 2]])  # a 2-D array is one row per text, as before
    assert len(tiny_encoder.encode_tokenized(np_ids).dense) == 1  # type: ignore[arg-type]
    import torch  # ... and a tokenizer's return_tensors="pt" output

    assert len(tiny_encoder.encode_tokenized(torch.tensor([[0, 5, 2]])).dense) == 1  # type: ignore[arg-type]
