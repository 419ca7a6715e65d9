"""How documents are cut into chunks, as a stable string (part of a document's version).

:func:`chunking_signature` names how a document is cut into chunks: a
:class:`~m3kit.late_chunking.LateChunker`'s signature, or the type and *every* setting of any
other chunker or splitter (LangChain ``TextSplitter``, LlamaIndex node parser, callable), so that
changing any setting changes the signature.

>>> chunking_signature(None)
'whole'
>>> import functools
>>> def split(text, size): ...
>>> chunking_signature(functools.partial(split, size=3)) == chunking_signature(
...     functools.partial(split, size=4))
False
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["chunking_signature", "describe_settings"]

# Containers longer than this are described by a digest of their items (e.g. a tokenizer's
# vocabulary inside a splitter), so signatures stay short.
_MAX_ITEMS = 64
_MAX_DEPTH = 4


# -- chunking ---------------------------------------------------------------------------------
def chunking_signature(chunker: Any) -> str:
    """How documents are cut into chunks, as a stable string (part of a document's version).

    ``None`` (one chunk per text) is ``"whole"``; an object with a ``signature`` string
    (:class:`~m3kit.late_chunking.LateChunker`) is that string; anything else is its type and
    all its settings (:func:`describe_settings`).
    """
    if chunker is None:
        return "whole"
    signature = getattr(chunker, "signature", None)
    if isinstance(signature, str):
        return signature
    return describe_settings(chunker)


def describe_settings(obj: Any) -> str:
    """The type and every setting of a splitter, chunker or callable, as a stable string.

    Objects are described by their qualified type name and their attributes (pydantic fields,
    dataclass fields, or ``vars()``, private ones included: LangChain splitters keep their
    settings in ``_chunk_size`` etc.), recursively; functions by their qualified name;
    ``functools.partial`` by its function and arguments. Nothing depends on memory addresses,
    so the same settings give the same string in every process. Encoders inside a chunker are
    named only (their identity is the collection's :class:`EncoderFingerprint`).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Splitter:
    ...     chunk_size: int = 100
    >>> describe_settings(Splitter(200))
    'm3kit.chunking_signature.Splitter{"chunk_size": "200"}'
    """
    return _describe(obj, 0, set())


def _qualname(obj: Any) -> str:
    kind = obj if isinstance(obj, type) or hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', kind.__name__)}"


def _describe(obj: Any, depth: int, seen: set[int]) -> str:
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return repr(obj)
    if isinstance(obj, enum.Enum):
        return f"{_qualname(obj)}.{obj.name}"
    if isinstance(obj, re.Pattern):
        return f"re({obj.pattern!r}, {int(obj.flags)})"
    if depth > _MAX_DEPTH:
        return f"<{_qualname(obj)}>"
    if isinstance(obj, functools.partial):
        args = [_describe(a, depth + 1, seen) for a in obj.args]
        kwargs = {k: _describe(v, depth + 1, seen) for k, v in sorted(obj.keywords.items())}
        return f"partial({_describe(obj.func, depth + 1, seen)}, {args}, {kwargs})"
    if inspect.ismethod(obj):  # a bound method: its function and its object's settings
        return f"{_qualname(obj)}@{_describe(obj.__self__, depth + 1, seen)}"
    if inspect.isfunction(obj):  # its name, defaults and closure values
        extra: list[Any] = [obj.__defaults__, obj.__kwdefaults__]
        extra.append([_cell(c) for c in obj.__closure__ or ()])
        if not any(extra):
            return _qualname(obj)
        return f"{_qualname(obj)}{_describe(extra, depth + 1, seen)}"
    if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
        return _qualname(obj)  # classes, builtins
    if hasattr(obj, "available_heads") and hasattr(obj, "encode"):
        return f"<encoder {type(obj).__qualname__}>"
    if type(obj).__module__.startswith("tiktoken") and isinstance(getattr(obj, "name", None), str):
        # a tiktoken Encoding is fixed by its name; its attributes hold ~100k merge ranks
        return f"{_qualname(obj)}({obj.name!r})"
    if id(obj) in seen:
        return f"<{_qualname(obj)}>"
    seen = seen | {id(obj)}
    if isinstance(obj, Mapping):
        items = sorted((str(k), _describe(v, depth + 1, seen)) for k, v in obj.items())
        return _bounded(json.dumps(dict(items), sort_keys=True, ensure_ascii=False), len(items))
    if isinstance(obj, (list, tuple, set, frozenset)):
        parts = [_describe(v, depth + 1, seen) for v in obj]
        if isinstance(obj, (set, frozenset)):
            parts.sort()
        return _bounded(json.dumps(parts, ensure_ascii=False), len(parts))
    fields = _settings(obj)
    if fields is None:
        text = repr(obj)
        return _qualname(obj) if " at 0x" in text else f"{_qualname(obj)}({text})"
    described = {k: _describe(v, depth + 1, seen) for k, v in sorted(fields.items())}
    return f"{_qualname(obj)}{json.dumps(described, sort_keys=True, ensure_ascii=False)}"


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


#: Attributes that are runtime state, not settings: LlamaIndex's ``callback_manager`` records
#: every split in its trace map (random ids), so a splitter's signature changed each time it was
#: used, and each ``add_texts`` with it re-encoded unchanged documents. It changes no chunk.
_NOT_SETTINGS = frozenset({"callback_manager"})


def _private_settings(obj: Any) -> dict[str, Any]:
    """A pydantic object's private attributes that its ``__init__`` sets from an argument of
    the same name: LlamaIndex's splitters keep ``tokenizer=`` as ``_tokenizer`` (and
    ``SentenceSplitter`` its ``chunking_tokenizer_fn=``), so two splitters that differ only
    there cut text differently under the same public fields."""
    private = getattr(obj, "__pydantic_private__", None)
    if not isinstance(private, Mapping):
        return {}
    try:
        params = inspect.signature(type(obj).__init__).parameters
    except (TypeError, ValueError):  # no signature to read
        return {}
    return {
        name: value
        for name, value in private.items()
        if name.startswith("_") and name[1:] in params and name[1:] not in _NOT_SETTINGS
    }


def _settings(obj: Any) -> dict[str, Any] | None:
    """An object's settings: pydantic fields (and the private attributes its ``__init__``
    sets from an argument of the same name), dataclass fields or its attributes."""
    model_fields = getattr(type(obj), "model_fields", None)
    if isinstance(model_fields, Mapping):
        out = {name: getattr(obj, name, None) for name in model_fields if name not in _NOT_SETTINGS}
        out.update(_private_settings(obj))
        return out
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict):
        return None
    return {k: v for k, v in attrs.items() if not k.startswith("__")}


def _bounded(text: str, items: int) -> str:
    if items <= _MAX_ITEMS:
        return text
    return f"<{items} items sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}>"
