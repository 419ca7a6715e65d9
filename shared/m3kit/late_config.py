"""Settings of late chunking and their defaults (see :mod:`m3kit.late_chunking`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from m3kit.chunk_plan import whole_tokens
from m3kit.late_windows import WindowPlacement
from m3kit.outputs import Head

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder

__all__ = [
    "DEFAULT_OVERLAP_FRACTION",
    "DEFAULT_WINDOW_CHUNKS",
    "ChunkingConfig",
    "DensePooling",
    "default_late_heads",
    "default_overlap",
    "default_window",
    "parse_heads",
]

#: Default window: room for this many chunks of ``chunk_size`` tokens (see :func:`default_window`).
DEFAULT_WINDOW_CHUNKS = 2
#: Default overlap as a fraction of the window's text capacity (see :func:`default_overlap`).
DEFAULT_OVERLAP_FRACTION = 0.125


class DensePooling(str, enum.Enum):
    """How a chunk's dense vector is made (``late_heads`` decides it for every head)."""

    MEAN = "mean"  # mean of the chunk's token states from the document pass (late chunking)
    NAIVE = "naive"  # the model's own pooling of the chunk text encoded alone (for comparison)


def default_late_heads(encoder: M3Encoder) -> frozenset[Head]:
    """Heads pooled late by default: every head of a multi-head (M3) model, none of a
    dense-only one.

    One document pass serves every head, so late chunking costs about what naive chunking
    costs (BGE-M3-sized model, default window and overlap: ``benchmarks/late_chunking_cost.py``);
    any naive head adds a second pass over every chunk (about 2x).

    - Multi-head models (measured on three-head models fine-tuned from all-MiniLM-L6-v2, the
      held-out long SQuAD articles, ``benchmarks/results/late_chunking_span*.md``): the fused
      score with every head late was above naive chunking for the mean-pooled and the
      CLS-pooled model, and within a few tenths of keeping dense naive (which costs the extra
      pass); with chunks of 96 tokens late dense alone was below naive dense, so a
      dense-only search of such chunks should pass ``late_heads=["sparse", "colbert"]`` (or
      ``[]``). With chunks of 32 tokens every head gained from late pooling (fused +3.8 to
      +4.2 points, ``benchmarks/results/late_chunking_small_chunks.md``).
    - Dense-only models (all-MiniLM-L6-v2): late dense retrieved worse than encoding each
      chunk alone in every window, overlap and placement tried (``benchmarks/late_chunking.py``,
      chunks of 96 and 254 tokens; also at 48 and 64, though above it at 32:
      ``benchmarks/results/late_chunking_small_chunks.md``), so nothing is late: no document
      pass, the late chunks are the naive chunks. Pass ``late_heads=["dense"]`` for chunks
      of about 32 tokens.
    """
    heads = encoder.available_heads
    return heads if heads - {Head.DENSE} else frozenset()


def default_window(chunk_size: int, max_length: int, specials: int) -> int:
    """Default window: ``DEFAULT_WINDOW_CHUNKS`` chunks plus the special tokens, at most
    ``max_length``.

    >>> default_window(256, 8192, 2), default_window(96, 256, 2), default_window(256, 256, 2)
    (514, 194, 256)
    """
    return min(max_length, DEFAULT_WINDOW_CHUNKS * chunk_size + specials)


def default_overlap(capacity: int) -> int:
    """Default overlap: ``DEFAULT_OVERLAP_FRACTION`` of the window's text capacity.

    >>> default_overlap(512), default_overlap(192), default_overlap(1)
    (64, 24, 0)
    """
    return int(capacity * DEFAULT_OVERLAP_FRACTION)


def parse_heads(heads: Any) -> frozenset[Head]:
    if isinstance(heads, frozenset | set | list | tuple) and not heads:
        return frozenset()
    return Head.parse(heads)


@dataclass(frozen=True)
class ChunkingConfig:
    """Settings of a :class:`LateChunker` as given (``None``: the chunker's default).

    Attributes:
        chunk_size: Token budget per chunk for the built-in sentence splitter (special tokens
            not counted; default :func:`m3kit.chunking.default_chunk_size`: 256, or the
            model's window if smaller). Ignored when a splitter is given. A
            :class:`LateChunker`'s ``config`` holds the size it uses (the default resolved).
        window: Most tokens per forward pass, special tokens included (default
            :func:`default_window`: two chunks' worth, at most the encoder's ``max_length``).
        overlap: Text tokens shared by consecutive windows of a long document (default
            :func:`default_overlap`). With the ``"centred"`` placement every chunk then sees at
            least ``overlap // 2`` tokens beyond itself on both sides.
        placement: :class:`~m3kit.late_windows.WindowPlacement`, ``"centred"`` (default) or
            ``"chunks"``.
        late_heads: Heads pooled from the document pass; the others are encoded from the
            chunk alone (default :func:`default_late_heads`). Empty: naive chunking.
        dense_pooling: Older spelling of whether dense is in ``late_heads``: ``"mean"``
            (late) or ``"naive"``; ``None``: as ``late_heads`` says.
    """

    chunk_size: int | None = None
    window: int | None = None
    overlap: int | None = None
    dense_pooling: DensePooling | None = None
    placement: WindowPlacement = WindowPlacement.CENTRED
    late_heads: frozenset[Head] | None = None

    def __post_init__(self) -> None:
        for name, kind in (("dense_pooling", DensePooling), ("placement", WindowPlacement)):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                choices = [m.value for m in kind]
                raise ValueError(f"{name} must be one of {choices}, got {value!r}") from None
        if self.late_heads is not None:
            object.__setattr__(self, "late_heads", parse_heads(self.late_heads))
            pooling = self.dense_pooling
            if pooling is not None and (pooling is DensePooling.MEAN) != (
                Head.DENSE in self.late_heads
            ):
                raise ValueError(
                    f"dense_pooling={pooling.value!r} contradicts late_heads="
                    f"{sorted(h.value for h in self.late_heads)}; pass late_heads only"
                )
        for name in ("chunk_size", "window", "overlap"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, whole_tokens(name, value))
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 token, got {self.chunk_size}")
        if self.window is not None and self.window < 3:
            raise ValueError(f"window must be >= 3 tokens (specials + text), got {self.window}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"overlap must be >= 0 tokens, got {self.overlap}")
