"""Server failures of :class:`~m3kit.store.client_backend.ClientBackend` as friendly errors.

Split from :mod:`m3kit.store.client_backend`: :func:`server_errors` turns qdrant-client's
transport and HTTP failures into :class:`~m3kit.errors.StoreConnectionError` naming the server
(without credentials) and what to check; secrets are scrubbed from every message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from m3kit.errors import StoreConnectionError

__all__ = ["server_errors"]


def _scrub(secrets: Sequence[str], text: str) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def server_errors(where: str, collection: str, secrets: Sequence[str]) -> Iterator[None]:
    """Turn failures to reach or use the server at ``where`` into StoreConnectionError."""
    try:
        yield
    except UnexpectedResponse as exc:
        status = exc.status_code
        if status in (401, 403):
            hint = (
                "the API key was refused: check the api_key argument or the QDRANT_API_KEY "
                "environment variable, and that the key may access this collection"
            )
        elif status in (502, 503, 504):
            hint = "the server or a proxy in front of it is unavailable; retry later"
        elif status == 413:
            detail = exc.content[:200].decode("utf-8", "replace")
            hint = (
                f"a write request was larger than the server accepts ({detail}): give its "
                "service.max_request_size_mb as connection=ConnectionSettings(max_request_mb=...) "
                "(m3kit --qdrant-max-request-mb) so that writes are split to fit it (one chunk "
                "larger than that is never accepted: make the chunks shorter)"
            )
        else:
            detail = exc.content[:200].decode("utf-8", "replace")
            raise StoreConnectionError(
                _scrub(
                    secrets,
                    f"Qdrant at {where} answered HTTP {status} ({exc.reason_phrase}) "
                    f"for collection {collection!r}: {detail}",
                )
            ) from None
        raise StoreConnectionError(
            _scrub(
                secrets, f"Qdrant at {where} answered HTTP {status} ({exc.reason_phrase}): {hint}"
            )
        ) from None
    except ResponseHandlingException as exc:
        source = exc.source
        kind = type(source).__name__
        if "Timeout" in kind:
            hint = (
                "the request timed out: check the server's load and network, or raise the "
                "timeout (connection=ConnectionSettings(timeout=...), m3kit --qdrant-timeout)"
            )
        else:
            hint = (
                "check that the server is running, the URL, port and scheme (http/https) "
                "are right, and that no firewall blocks it"
            )
        raise StoreConnectionError(
            _scrub(secrets, f"cannot reach Qdrant at {where} ({kind}: {source}); {hint}")
        ) from None
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise StoreConnectionError(
            _scrub(
                secrets,
                f"cannot reach Qdrant at {where} ({type(exc).__name__}: {exc}); check "
                "that the server is running and the URL is right",
            )
        ) from None
