"""How m3kit talks to a Qdrant server: the request timeout and the request size limit.

:class:`ConnectionSettings` goes with ``url=`` wherever a collection is opened
(``M3Store.open``, ``M3Index.open``, the LangChain and LlamaIndex stores and retrievers, and
``m3kit index/search --qdrant-timeout/--qdrant-max-request-mb``). The embedded engine and
qdrant-client's local mode make no requests: giving the settings there is an error, not a
setting silently dropped. The API key is not one of them (settings are saved, e.g. by the
LlamaIndex store's ``to_dict``, and a key must never be): give it as ``api_key=`` or the
``QDRANT_API_KEY`` environment variable.

>>> ConnectionSettings(timeout=30, max_request_mb=8).request_bytes
8388608
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_MAX_REQUEST_MB",
    "ConnectionSettings",
    "check_server_only",
    "settings_from_dict",
    "with_timeout",
]

#: Qdrant's default ``service.max_request_size_mb``: a server refuses a larger request (413).
DEFAULT_MAX_REQUEST_MB = 32


def _count(value: object) -> bool:
    """Whether ``value`` is an int >= 1 (a bool is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class ConnectionSettings:
    """Settings of the requests m3kit sends to a Qdrant server (with ``url=`` only).

    Attributes:
        timeout: Seconds a request may take before it fails with
            :class:`~m3kit.errors.StoreConnectionError` (``None``: qdrant-client's default,
            5). Whole seconds: qdrant-client rounds a fraction up.
        max_request_mb: The server's ``service.max_request_size_mb`` (Qdrant's default 32):
            writes are split into requests of at most this many MiB, so a server configured
            lower does not refuse them (HTTP 413) and one configured higher gets fewer, larger
            requests.
    """

    timeout: int | None = None
    max_request_mb: int = DEFAULT_MAX_REQUEST_MB

    def __post_init__(self) -> None:
        if self.timeout is not None and not _count(self.timeout):
            raise ValueError(
                "ConnectionSettings.timeout must be a whole number of seconds >= 1 (or None: "
                f"qdrant-client's default), got {self.timeout!r}"
            )
        if not _count(self.max_request_mb):
            raise ValueError(
                "ConnectionSettings.max_request_mb must be an integer >= 1 (the server's "
                f"service.max_request_size_mb; Qdrant's default {DEFAULT_MAX_REQUEST_MB}), got "
                f"{self.max_request_mb!r}"
            )

    @property
    def request_bytes(self) -> int:
        """The most bytes of one write request."""
        return self.max_request_mb * 1024 * 1024

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConnectionSettings:
        """The settings of a dict of them (as the LlamaIndex store's ``to_dict`` saves them).

        Raises:
            ValueError: A key that is no setting (a misspelt one would be dropped silently),
                or a bad value; the message names it.
        """
        return settings_from_dict(cls, data, "connection")

    def describe(self) -> str:
        """The settings as ``name=value`` pairs, e.g. ``timeout=30, max_request_mb=32``."""
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self).items())


def with_timeout(
    connection: ConnectionSettings | None, timeout: int | None
) -> ConnectionSettings | None:
    """``connection``, or ``ConnectionSettings(timeout=timeout)`` for ``M3Store.open``'s
    ``timeout=`` shorthand.

    Raises:
        ValueError: Both are given (the timeout would be said twice, perhaps differently).
    """
    if timeout is None:
        return connection
    if connection is not None:
        raise ValueError(
            "give the timeout once: timeout= or connection=ConnectionSettings(timeout=...), "
            "not both"
        )
    return ConnectionSettings(timeout=timeout)


def check_server_only(connection: ConnectionSettings | None, url: str | None) -> None:
    """Refuse connection settings without a server URL (nothing would use them).

    Raises:
        ValueError: ``connection`` is given and ``url`` is not; names the settings.
    """
    if connection is not None and url is None:
        raise ValueError(
            f"connection settings ({connection.describe()}) apply to a Qdrant server: the "
            "embedded engine and qdrant-client's local mode send no requests; give url=, or "
            "leave connection out"
        )


_Settings = TypeVar("_Settings")  # a settings dataclass


def settings_from_dict(cls: type[_Settings], data: Mapping[str, Any], kind: str) -> _Settings:
    """``cls(**data)`` for a settings dataclass, refusing keys that are none of its fields
    (pydantic and ``**`` would drop or misreport a misspelt one); ``kind`` names the settings
    in the message.

    >>> settings_from_dict(ConnectionSettings, {"timeout": 5}, "connection").timeout
    5
    >>> settings_from_dict(ConnectionSettings, {"timout": 5}, "connection")
    Traceback (most recent call last):
    ...
    ValueError: unknown connection settings ['timout']; the settings are ['timeout', ...]
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {kind} settings {unknown}; the settings are {names}")
    return cls(**data)
