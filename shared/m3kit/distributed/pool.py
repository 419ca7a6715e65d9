"""``EncoderPool``: one :class:`~m3kit.encoder.M3Encoder` per GPU or CPU worker process.

The pool is started once (each worker loads the checkpoint once), reused for every call, and
shut down by :meth:`EncoderPool.close` (or a ``with`` block). The parent process tokenises
and plans the forward passes exactly as :meth:`M3Encoder.encode` does; each planned batch
goes to whichever worker is free, and the results are put back in input order. Every forward
pass holds the same texts as in a single process, so the outputs are the same (to float
rounding of the thread count; equal to 1e-6 on CPU in fp32, tested).

Example::

    from m3kit import M3Encoder
    from m3kit.distributed import EncoderPool

    if __name__ == "__main__":  # workers are spawned: they import the main module again
        enc = M3Encoder.from_pretrained("/models/bge-m3")
        with EncoderPool(enc, devices=["cuda:0", "cuda:1"]) as pool:   # or workers=4 on CPU
            out = pool.encode(texts)                                    # an M3Output, in order
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
import traceback
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from m3kit.distributed.spec import EncoderSpec
from m3kit.machine import usable_cpus
from m3kit.outputs import Head, M3Output

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from m3kit.encoder import M3Encoder, Truncation

__all__ = ["EncoderPool", "EncoderSpec", "default_devices", "worker_threads"]

logger = logging.getLogger(__name__)

#: The fingerprint fields of what the workers hold. The parent tokenises, so its tokenizer,
#: ``max_length`` and query instruction may change under a running pool.
_WORKER_FIELDS = frozenset(
    {"weights", "pooling", "heads", "dense_dim", "colbert_dim", "architecture"}
)

#: Seconds between liveness checks of the workers while waiting for results.
_POLL_S = 1.0
# Workers are spawned: each imports the parent's main script again, so a script that builds
# the pool at its top level makes every worker try to build one too, and Python stops it
# ("An attempt has been made to start a new process before the current process has finished
# its bootstrapping phase", in the worker's traceback above the error).
_SPAWN_HINT = (
    "; if the worker's traceback above says a new process was started before the current "
    "process finished its bootstrapping phase, build the pool under "
    '`if __name__ == "__main__":` in your script (workers are spawned and import it again)'
)


def _worker(
    spec: EncoderSpec,
    device: str,
    threads: int | None,
    tasks: Any,
    results: Any,
    rank: int,
) -> None:
    """Worker process: load once, then encode tasks until a ``None`` arrives."""
    try:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        encoder = spec.load(device)
    except BaseException:
        results.put(("load-error", rank, traceback.format_exc()))
        return
    results.put(("ready", rank, torch.get_num_threads()))
    while True:
        task = tasks.get()
        if task is None:
            return
        task_id, ids, heads, top_k, min_weight = task
        try:
            # the parent planned this batch with its encoder's limits as they are now: one
            # forward pass, not split again by the limits the worker was started with
            encoder.batch_size = max(1, len(ids))
            encoder.max_batch_tokens = max(1, len(ids) * max((len(s) for s in ids), default=1))
            out = encoder.encode_tokenized(
                ids,
                heads=heads,
                sparse_top_k=top_k,
                sparse_min_weight=min_weight,
                show_progress=False,
            )
            results.put(("ok", task_id, out))
        except BaseException:
            results.put(("error", task_id, f"worker {rank} ({device}): {traceback.format_exc()}"))


def default_devices(workers: int | None, parent_device: str) -> list[str]:
    """The workers' devices when none are given: every GPU when the parent encoder runs on
    CUDA (and ``workers`` is not given), else ``workers`` CPU workers (default half the cores).

    A parent on the CPU although CUDA is there (``dtype="int8"``, which runs on CPU only, the
    ONNX backend, or ``device="cpu"``) gets CPU workers: GPU workers would refuse its precision
    or run another backend than it.
    """
    import torch

    if workers is None and parent_device == "cuda" and torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    # half the CPUs this process may use (a container's cpuset), not the host's
    return ["cpu"] * (workers if workers is not None else max(1, usable_cpus() // 2))


def worker_threads(
    devices: Sequence[str], given: int | None, parent_threads: int
) -> list[int | None]:
    """torch threads of each worker: ``given`` for all, else the parent's torch threads
    shared among the CPU workers (at least 1 each); ``None`` (torch's own) for GPU workers.

    Each worker's torch defaults to every physical core, so ``n`` CPU workers on their own
    would run ``n`` times the cores' threads, contending (e.g. 32 workers x 32 threads on a
    64-thread machine).

    >>> worker_threads(["cpu"] * 4, None, 16)
    [4, 4, 4, 4]
    >>> worker_threads(["cpu"] * 3, None, 2)
    [1, 1, 1]
    >>> worker_threads(["cuda:0", "cpu"], None, 8)
    [None, 8]
    >>> worker_threads(["cpu", "cpu"], 3, 8)
    [3, 3]
    """
    if given is not None:
        return [given] * len(devices)
    cpu = sum(1 for d in devices if str(d).split(":")[0] == "cpu")
    share = max(1, parent_threads // max(1, cpu))
    return [share if str(d).split(":")[0] == "cpu" else None for d in devices]


class EncoderPool:
    """Encode with several processes (one per GPU, or CPU workers), same outputs, same order.

    The parent tokenises (with the ``encoder`` it is given) and plans batches; workers run
    the forward passes. One :meth:`encode` runs at a time (calls from several threads wait
    for each other). A worker that dies or raises makes the call raise a ``RuntimeError``
    naming it, and closes the pool.
    """

    def __init__(
        self,
        encoder: M3Encoder,
        *,
        devices: Sequence[str] | None = None,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        start_timeout: float = 600.0,
    ) -> None:
        """Start the workers and wait until each has loaded the model.

        Args:
            encoder: The encoder to replicate (built by :meth:`M3Encoder.from_pretrained`);
                it tokenises in this process.
            devices: One worker per entry (``["cuda:0", "cuda:1"]``, ``["cpu"] * 4``).
                Default: every GPU when ``encoder`` runs on CUDA (and ``workers`` is not
                given), else ``workers`` CPU workers (:func:`default_devices`).
            workers: Number of CPU workers when ``devices`` is not given (default: half the
                cores).
            threads_per_worker: ``torch.set_num_threads`` in each worker (default: this
                process's torch threads shared among the CPU workers, at least 1 each, so
                they do not oversubscribe the cores; GPU workers keep torch's own). The
                threads each worker runs are in :attr:`worker_threads`.
            start_timeout: Seconds to wait for the workers to load the model.

        Raises:
            ValueError: No devices, both ``devices`` and ``workers``, a bad thread count, or an
                encoder without a checkpoint folder.
            RuntimeError: A worker failed to load the model (its traceback is in the message).
        """
        if devices is not None and workers is not None:
            raise ValueError("give devices= or workers=, not both")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if threads_per_worker is not None and threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
        devs = (
            list(devices) if devices is not None else default_devices(workers, encoder.device.type)
        )
        if not devs:
            raise ValueError("devices is empty: give at least one device")
        self.encoder = encoder
        from m3kit.fingerprint import encoder_fingerprint

        self._loaded = encoder_fingerprint(encoder)  # what the workers load
        self.spec = EncoderSpec.of(encoder, self._loaded)
        self.devices: tuple[str, ...] = tuple(str(d) for d in devs)
        ctx = mp.get_context("spawn")  # CUDA and torch threads do not survive fork
        self._tasks: Any = ctx.Queue()
        self._results: Any = ctx.Queue()
        self._lock = threading.Lock()
        self._next_task = 0
        self._closed = False
        self._procs: list[BaseProcess] = []
        import torch

        threads = worker_threads(self.devices, threads_per_worker, torch.get_num_threads())
        #: torch threads each worker runs (reported by the worker once it has loaded).
        self.worker_threads: tuple[int, ...] = ()
        for rank, dev in enumerate(self.devices):
            p = ctx.Process(
                target=_worker,
                args=(self.spec, dev, threads[rank], self._tasks, self._results, rank),
                name=f"m3kit-encoder-{rank}",
                daemon=True,
            )
            p.start()
            self._procs.append(p)
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._tasks)
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.close()
            raise
        logger.info(
            "EncoderPool: %d workers on %s, torch threads %s",
            len(self._procs),
            ", ".join(self.devices),
            list(self.worker_threads),
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"EncoderPool(devices={list(self.devices)!r}, {state})"

    def __len__(self) -> int:
        return len(self._procs)

    def _wait_ready(self, timeout: float) -> None:
        reported: dict[int, int] = {}  # rank -> the torch threads of each worker ready
        waited = 0.0
        while len(reported) < len(self._procs):
            kind, rank, detail = self._get(waited_for="to load the model")
            if kind == "load-error":
                raise RuntimeError(
                    f"encoder worker {rank} ({self.devices[rank]}) could not load "
                    f"{self.spec.path}:\n{detail}"
                )
            if kind == "ready":
                reported[int(rank)] = int(detail)
            waited += _POLL_S if kind == "poll" else 0.0
            if waited > timeout:
                late = sorted(set(range(len(self._procs))) - set(reported))
                raise RuntimeError(
                    f"encoder workers {late} did not load the model within {timeout:.0f} s"
                )
        self.worker_threads = tuple(reported[r] for r in range(len(self._procs)))

    def _get(self, *, waited_for: str) -> tuple[str, Any, Any]:
        """The next message, or ``("poll", ...)`` after a quiet second with every worker up."""
        try:
            msg: tuple[str, Any, Any] = self._results.get(timeout=_POLL_S)
            return msg
        except queue.Empty:
            self._check_workers(f"while the pool waited for it {waited_for}")
            return ("poll", None, None)

    def _check_workers(self, when: str) -> None:
        """Raise a ``RuntimeError`` naming the first worker that is no longer running."""
        for rank, p in enumerate(self._procs):
            if not p.is_alive():
                raise RuntimeError(
                    f"encoder worker {rank} ({self.devices[rank]}) exited with code "
                    f"{p.exitcode} {when}{_SPAWN_HINT if p.exitcode == 1 else ''}"
                ) from None

    # -- encoding ---------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        *,
        heads: Sequence[Head | str] | Head | str | None = None,
        query: bool = False,
        max_length: int | None = None,
        truncation: Truncation | str = "warn",
        sparse_top_k: int | None = None,
        sparse_min_weight: float = 0.0,
        show_progress: bool | None = None,
    ) -> M3Output:
        """:meth:`M3Encoder.encode` across the workers (same arguments, same output)."""
        from m3kit.encoder_inputs import texts_to_input_ids

        wanted, input_ids = texts_to_input_ids(
            self.encoder,
            texts,
            heads=heads,
            query=query,
            max_length=max_length,
            truncation=truncation,
        )
        return self.encode_tokenized(
            input_ids,
            heads=wanted,
            sparse_top_k=sparse_top_k,
            sparse_min_weight=sparse_min_weight,
            show_progress=show_progress,
        )

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> M3Output:
        """:meth:`encode` with ``query=True`` (adds the query instruction)."""
        return self.encode(texts, query=True, **kwargs)

    def encode_tokenized(
        self,
        input_ids: Sequence[Sequence[int]],
        *,
        heads: Sequence[Head | str] | Head | str | frozenset[Head] | None = None,
        sparse_top_k: int | None = None,
        sparse_min_weight: float = 0.0,
        show_progress: bool | None = None,
    ) -> M3Output:
        """:meth:`M3Encoder.encode_tokenized` across the workers, in input order.

        Raises:
            ValueError: What :meth:`M3Encoder.encode_tokenized` refuses (a bad
                ``sparse_top_k``, a NaN ``sparse_min_weight``, empty sequences or ids outside
                the vocabulary), refused here before any worker sees it: the pool stays open.
            TypeError: ``sparse_min_weight`` is not a number (likewise).
            RuntimeError: The pool is closed, or a worker failed (the pool is then closed).
        """
        from m3kit.encoder_inputs import check_heads, check_model_input_ids, plan_batches
        from m3kit.encoder_outputs import OutputCollector
        from m3kit.sparse_options import check_sparse_options

        self._check_encoder_unchanged()
        # what a worker would refuse, refused here: a worker's error closes the pool
        check_sparse_options(sparse_top_k, sparse_min_weight)
        wanted = check_heads(self.encoder.available_heads, heads)
        ids = [list(map(int, seq)) for seq in input_ids]
        check_model_input_ids(self.encoder.model, ids)
        n = len(ids)
        batches = plan_batches(
            [len(s) for s in ids],
            # the encoder's settings now (a worker runs each batch it is given as it is)
            batch_size=self.encoder.batch_size,
            max_batch_tokens=self.encoder.max_batch_tokens,
        )
        show = len(batches) > 1 if show_progress is None else show_progress
        out = OutputCollector(wanted, self.encoder.dense_dim, [len(s) for s in ids])
        done: set[int] = set()
        with self._lock:
            if self._closed:
                raise RuntimeError("this EncoderPool is closed")
            first = self._next_task
            self._next_task += len(batches)
            mine = {first + k: batch for k, batch in enumerate(batches)}
            # From the first task handed out, any failure (Ctrl-C included) closes the pool:
            # tasks handed out are encoded anyway, and their results must never reach the
            # next call as its own.
            try:
                # a worker that died between calls: the others would take all its tasks,
                # and the pool would go on with fewer workers than it says, silently
                self._check_workers("since the pool's last call")
                for task_id, batch in mine.items():
                    task = (task_id, [ids[i] for i in batch], sorted(wanted), sparse_top_k)
                    self._tasks.put((*task, sparse_min_weight))
                with tqdm(total=n, desc="encode", unit="text", disable=not show) as bar:
                    while len(done) < len(batches):
                        kind, task_id, payload = self._get(waited_for="to encode")
                        if kind == "error":
                            raise RuntimeError(f"an encoder worker failed: {payload}")
                        if kind != "ok" or task_id not in mine or task_id in done:
                            continue  # a poll (or, never expected, a task not of this call)
                        out.add_output(mine[task_id], payload)
                        done.add(task_id)
                        bar.update(len(mine[task_id]))
            except BaseException:
                self._close_locked()
                raise
        return out.result()

    def _check_encoder_unchanged(self) -> None:
        """Refuse to encode for an encoder whose model changed since the workers loaded it.

        Raises:
            ValueError: The encoder's weights, pooling, heads or architecture changed since
                the pool started (trained in place, given other weights, ``model.pooling``
                set): the workers would encode with the model as it was. Names what changed.
        """
        from m3kit.fingerprint import encoder_fingerprint

        now = encoder_fingerprint(self.encoder)
        changed = [f for f, _, _ in self._loaded.differences(now) if f in _WORKER_FIELDS]
        if changed:
            raise ValueError(
                f"this EncoderPool's encoder changed since its workers loaded {self.spec.path} "
                f"({', '.join(changed)}: trained in place, given other weights, or "
                "model.pooling set), and the workers would encode with the model as it was. "
                "Start a new EncoderPool for the encoder as it is now (a model changed in "
                "memory must be saved with M3Model.save and loaded from there first)"
            )

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers (idempotent): each finishes its task, then exits."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(procs: list[BaseProcess], tasks: Any) -> None:
    """Ask each worker to stop, wait a little, then terminate the ones still running."""
    for _ in procs:
        try:
            tasks.put(None)
        except (OSError, ValueError):
            break
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            logger.warning("encoder worker %s did not stop; terminating it", p.name)
            p.terminate()
            p.join(timeout=5)
    tasks.cancel_join_thread()
