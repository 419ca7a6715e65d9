"""Exceptions raised by m3kit. Every error names what is wrong and what to do."""

from __future__ import annotations

__all__ = [
    "CheckpointChangedError",
    "CheckpointError",
    "CollectionNotFoundError",
    "EncoderChangedError",
    "FingerprintMismatchError",
    "HeadNotAvailableError",
    "HeadNotComputedError",
    "M3KitError",
    "MissingExtraError",
    "SchemaMismatchError",
    "StoreConnectionError",
    "TrainingDivergedError",
    "TruncationError",
]


class M3KitError(Exception):
    """Base class of every m3kit error."""


class CheckpointError(M3KitError, FileNotFoundError):
    """A checkpoint folder is missing, incomplete or unreadable."""


class CheckpointChangedError(M3KitError, RuntimeError):
    """A checkpoint's files changed on disk after an encoder loaded them (rewritten, replaced
    or touched), before its fingerprint was taken: the files no longer show which weights it
    holds. The message names the folder and the files; load the encoder again."""


class HeadNotAvailableError(M3KitError, ValueError):
    """A head (sparse or ColBERT) was asked of a checkpoint that does not have it."""


class HeadNotComputedError(M3KitError, AttributeError):
    """A head's output was read from a result that was encoded without it."""


class TruncationError(M3KitError, ValueError):
    """A text is longer than ``max_length`` and the caller asked for strict truncation."""


class SchemaMismatchError(M3KitError, ValueError):
    """An existing Qdrant collection does not match the schema the caller asked for."""


class FingerprintMismatchError(M3KitError, ValueError):
    """A collection was written by another encoder (weights, tokenizer, max length, ...).

    The message names each differing field (stored vs new) and the ways forward: open with
    ``reindex=True`` (``m3kit index --reindex``) to re-encode the stored documents with the new
    encoder, or use another collection.
    """


class EncoderChangedError(FingerprintMismatchError):
    """An encoder changed in memory (its model trained in place, given other weights, cast,
    or a setting such as ``max_length`` reassigned) after an index was opened with it: its
    vectors are no longer those of the encoder the collection records. The message names what
    changed; nothing was written or searched."""


class CollectionNotFoundError(M3KitError, ValueError):
    """A collection was opened for reading but does not exist."""


class StoreConnectionError(M3KitError, ConnectionError):
    """Qdrant could not be reached or refused the request."""


class TrainingDivergedError(M3KitError, FloatingPointError):
    """A fine-tune diverged: its loss or its weights became NaN or infinite. The message names
    the step; nothing was saved to the output folder."""


class MissingExtraError(M3KitError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


def missing_extra(package: str, extra: str) -> MissingExtraError:
    """Build the error raised when ``package`` (from extra ``extra``) is not installed."""
    return MissingExtraError(
        f"{package} is not installed. Install it with: pip install 'm3kit[{extra}]'"
    )
