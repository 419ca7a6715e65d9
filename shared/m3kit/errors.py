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


def missing_extra(package: str, extra: str, error: ImportError | None = None) -> MissingExtraError:
    """Build the error raised when ``package`` (from extra ``extra``) cannot be imported.

    ``error``: the import's own error. A module not found is a package not installed; any
    other import error (``cannot import name ...``) comes from an installed package whose
    version does not fit the others installed, which "not installed" misnamed (installing the
    extra again changed nothing).

    >>> print(missing_extra("langchain-qdrant", "langchain"))
    langchain-qdrant is not installed. Install it with: pip install 'm3kit[langchain]'
    >>> print(missing_extra("x-pkg", "x", ImportError("cannot import name 'Y' from 'z'")))
    x-pkg is installed but does not import (cannot import name 'Y' from 'z'): its version does \
not fit the other packages installed. Upgrade them together: pip install -U 'm3kit[x]'
    """
    if error is not None and not _not_installed(error):
        return MissingExtraError(
            f"{package} is installed but does not import ({error}): its version does not fit "
            f"the other packages installed. Upgrade them together: pip install -U 'm3kit[{extra}]'"
        )
    missing = f" (no module named {error.name!r})" if error is not None and error.name else ""
    return MissingExtraError(
        f"{package} is not installed{missing}. Install it with: pip install 'm3kit[{extra}]'"
    )


def _not_installed(error: ImportError) -> bool:
    """Whether an import error means a package is not installed: a module not found whose
    top-level package is missing too, or is a namespace shared by several distributions
    (``llama_index``); a module missing from an installed package (``langchain_core.x``, which
    another package's newer version imports) is a version mismatch instead."""
    import importlib.util

    if not isinstance(error, ModuleNotFoundError):
        return False
    top, _, rest = (error.name or "").partition(".")
    if not top or not rest:
        return True
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # (hidden: None in sys.modules)
        return True
    return spec is None or spec.origin is None  # (a namespace package has no origin)


def require_extra(extra: str, modules: dict[str, str]) -> None:
    """Import each of ``modules`` (module name -> the package that installs it), raising
    :func:`missing_extra` for the first that does not import: an adapter package checks its
    extra first, so a module its own modules import unguarded is named too.

    Raises:
        MissingExtraError: Names the package and the extra.
    """
    import importlib

    for module, package in modules.items():
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise missing_extra(package, extra, e) from e
