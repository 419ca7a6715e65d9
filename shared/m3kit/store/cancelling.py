"""Async writes that stop when cancelled: nothing is written once the call has raised.

An async write (:meth:`M3Index.aadd_texts <m3kit.store.M3Index.aadd_texts>`, the adapters'
``aadd_documents`` / ``async_add`` / ``adelete``...) runs its sync twin in a worker thread,
which cannot be stopped from outside. Cancelling the awaiting task (``task.cancel()``, an
``asyncio.wait_for`` timeout) used to raise at once while the thread went on and wrote later:
over an edit made since, or bringing back a document deleted since. :func:`in_worker` instead,
when cancelled, asks the thread to stop (:func:`stop_if_cancelled`: ``M3Index.add_texts``
checks it before each group it encodes, and before writing it once it holds the store's
write lock, as the other writes that take a write lock do) and waits for it before raising,
so a call still waiting for another write writes nothing, and once the cancelled call has
raised nothing more of it is written: the groups written before stay (as after any
interruption), and a retry writes the rest. A write waits for the lock through
:func:`holding`, so a cancelled one stops waiting at once (a timed-out delete queued behind a
long ingestion raises at its timeout, not when the ingestion ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["holding", "in_worker", "opened_in_worker", "stop_if_cancelled", "waited"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: How often a write waiting for a lock in an :func:`in_worker` call looks for its cancel (s).
LOCK_POLL_SECONDS = 0.05

#: The stop event of the :func:`in_worker` call running in this thread (``None``: none).
_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "m3kit_write_stop", default=None
)


class WriteCancelled(Exception):
    """Raised in a worker thread whose :func:`in_worker` call was cancelled (never seen by
    the caller, who gets ``asyncio.CancelledError``)."""


def stop_if_cancelled() -> None:
    """Raise :class:`WriteCancelled` when the :func:`in_worker` call running this code was
    cancelled (outside one: never).

    Raises:
        WriteCancelled: It was; the caller writes nothing more.
    """
    stop = _STOP.get()
    if stop is not None and stop.is_set():
        raise WriteCancelled("the async call writing this was cancelled")


@contextlib.contextmanager
def holding(lock: threading.Lock | threading.RLock) -> Iterator[None]:
    """``with lock:`` for a write that stops when its :func:`in_worker` call is cancelled:
    while it waits for the lock (another write, a long ingestion, holds it) and once it has
    it (:func:`stop_if_cancelled`).

    A plain ``with lock:`` waited for the lock whatever happened to the caller: a cancelled
    (timed-out) delete queued behind an ingestion raised only when that ingestion ended, and
    meanwhile held one of the event loop's executor threads; a few of those left every other
    ``to_thread`` call of the application waiting. Outside an ``in_worker`` call it is
    ``with lock:``.

    Raises:
        WriteCancelled: The ``in_worker`` call was cancelled before the lock was taken, or
            while it was waited for (nothing is written).
    """
    stop = _STOP.get()
    if stop is None:
        lock.acquire()
    else:
        while not lock.acquire(timeout=LOCK_POLL_SECONDS):
            if stop.is_set():
                raise WriteCancelled("the async call writing this was cancelled")
    try:
        stop_if_cancelled()
        yield
    finally:
        lock.release()


def waited(condition: threading.Condition, predicate: Callable[[], bool]) -> None:
    """``condition.wait_for(predicate)`` (the condition held) that stops, as :func:`holding`
    does, when the :func:`in_worker` call running it is cancelled.

    Raises:
        WriteCancelled: It was cancelled before ``predicate`` held.
    """
    if _STOP.get() is None:
        condition.wait_for(predicate)
        return
    while not condition.wait_for(predicate, timeout=LOCK_POLL_SECONDS):
        stop_if_cancelled()


async def in_worker(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` in a worker thread (as :func:`asyncio.to_thread`), stopped
    when cancelled.

    Cancelled, it sets the stop event :func:`stop_if_cancelled` reads, waits for the thread
    to return (a write under way finishes; an encoding under way finishes and is not
    written), then raises ``asyncio.CancelledError``: once it has raised, the call writes
    nothing more.
    """
    return await _run(func, args, kwargs, None)


async def opened_in_worker(
    close: Callable[[T], object], func: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """:func:`in_worker` for a call that opens something and returns it (``from_texts``: a
    store): cancelled after the thread had returned it, ``close(it)`` is called before
    ``asyncio.CancelledError`` is raised, as no caller will ever hold it (an embedded store
    left open kept its folder locked until the garbage collector found it)."""
    return await _run(func, args, kwargs, close)


async def _run(
    func: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    close: Callable[[T], object] | None,
) -> T:
    stop = threading.Event()
    context = contextvars.copy_context()
    context.run(_STOP.set, stop)
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(None, functools.partial(context.run, func, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        while not work.done():  # cancelled again meanwhile: the thread is still waited for
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([work])
        if not work.cancelled() and work.exception() is None and close is not None:
            try:  # (its own error, or WriteCancelled, gives way: read by work.exception())
                close(work.result())
            except Exception:
                logger.exception("closing what a cancelled call had opened failed")
        raise
