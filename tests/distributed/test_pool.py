"""EncoderPool: two CPU worker processes (1 thread each) give the single-process outputs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from m3kit import Head, M3Encoder
from m3kit.distributed import EncoderPool, EncoderSpec

# two worker processes import torch: about a minute on a loaded 2-core machine
pytestmark = pytest.mark.slow

TEXTS = [
    "Late chunking keeps the document's context.",
    "short",
    "BGE-M3 gives dense, sparse and ColBERT vectors from one forward pass. " * 6,
    "Qdrant stores the vectors.",
    "A second worker encodes other batches at the same time.",
    "ordre préservé",
    "x " * 40,
]


@pytest.fixture(scope="module")
def encoder(tiny_m3_path: Path) -> M3Encoder:
    # small batches, so the texts make several forward passes shared by both workers
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", batch_size=2)


@pytest.fixture(scope="module")
def pool(encoder: M3Encoder):  # type: ignore[no-untyped-def]
    with EncoderPool(encoder, workers=2, threads_per_worker=1) as p:
        yield p


def _same(a, b, atol: float = 1e-6) -> None:  # type: ignore[no-untyped-def]
    assert a.heads == b.heads
    assert a.token_counts == b.token_counts
    if Head.DENSE in a.heads:
        np.testing.assert_allclose(a.dense, b.dense, atol=atol)
    if Head.SPARSE in a.heads:
        for x, y in zip(a.sparse, b.sparse, strict=True):
            np.testing.assert_array_equal(x.indices, y.indices)
            np.testing.assert_allclose(x.values, y.values, atol=atol)
    if Head.COLBERT in a.heads:
        for x, y in zip(a.colbert, b.colbert, strict=True):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, atol=atol)


def test_pool_equals_single_process(encoder: M3Encoder, pool: EncoderPool) -> None:
    assert len(pool) == 2 and pool.devices == ("cpu", "cpu")
    single = encoder.encode(TEXTS, show_progress=False)
    _same(pool.encode(TEXTS, show_progress=True), single)
    # reused: a second call (another order, query side, one head) on the same workers
    rev = TEXTS[::-1]
    _same(pool.encode_queries(rev, heads=["sparse"]), encoder.encode_queries(rev, heads=["sparse"]))
    _same(
        pool.encode(TEXTS, sparse_top_k=3),
        encoder.encode(TEXTS, sparse_top_k=3, show_progress=False),
    )
    assert len(pool.encode([])) == 0


def test_cpu_workers_share_the_cores_by_default(encoder: M3Encoder, pool: EncoderPool) -> None:
    """Each worker's torch took every core: n CPU workers ran n times the cores' threads.
    By default they now share this process's torch threads (at least 1 each)."""
    import torch

    assert pool.worker_threads == (1, 1)  # threads_per_worker=1, as given
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a worker's torch alone takes every physical core
    try:
        with EncoderPool(encoder, workers=2) as shared:
            assert shared.worker_threads == (1, 1)
    finally:
        torch.set_num_threads(before)


def test_default_devices_follow_the_parents_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CUDA present, the default put workers on every GPU even for a parent on the CPU
    (int8 runs on CPU only, ONNX, device="cpu"): int8 workers then refused to load."""
    import torch

    from m3kit.distributed.pool import default_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert default_devices(None, "cuda") == ["cuda:0", "cuda:1"]
    assert set(default_devices(None, "cpu")) == {"cpu"}
    assert default_devices(3, "cuda") == ["cpu"] * 3


def test_default_cpu_workers_count_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a 64-CPU host whose container may use 4 (a cpuset, taskset, a scheduler's
    allocation) the default was 32 workers, each holding a model copy, on 4 CPUs."""
    from m3kit.distributed.pool import default_devices

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert default_devices(None, "cpu") == ["cpu", "cpu"]


def test_pool_errors_name_the_problem(encoder: M3Encoder, pool: EncoderPool) -> None:
    with pytest.raises(TypeError, match="single text"):
        pool.encode("one text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="devices= or workers="):
        EncoderPool(encoder, devices=["cpu"], workers=1)
    with pytest.raises(ValueError, match="devices is empty"):
        EncoderPool(encoder, devices=[])
    in_memory = M3Encoder(encoder.model, encoder.tokenizer, precision="fp32")
    with pytest.raises(ValueError, match="no checkpoint folder"):
        EncoderSpec.of(in_memory)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sparse_top_k": 0}, ValueError, "sparse_top_k must be a positive integer"),
        ({"sparse_top_k": 2.0}, ValueError, "sparse_top_k must be a positive integer"),
        ({"sparse_min_weight": "0.1"}, TypeError, "sparse_min_weight must be a number"),
        ({"sparse_min_weight": float("nan")}, ValueError, "sparse_min_weight is NaN"),
        ({"sparse_min_weight": float("inf")}, ValueError, "sparse_min_weight is inf"),
    ],
)
def test_bad_arguments_are_refused_before_the_workers_and_the_pool_stays_usable(
    encoder: M3Encoder,
    pool: EncoderPool,
    kwargs: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    # a worker used to fail on them: a RuntimeError, and the pool closed for good
    texts = TEXTS[:3]
    with pytest.raises(error, match=message):
        encoder.encode(texts, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        pool.encode(texts, **kwargs)  # type: ignore[arg-type]
    _same(pool.encode(texts), encoder.encode(texts, show_progress=False))


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([[0, 5, 2], []], r"input_ids\[1\] is empty"),
        ([[0, 10**6, 2]], r"input_ids\[0\] holds token id 1000000, outside the vocabulary"),
        ([[0, -1, 2]], r"input_ids\[0\] holds token id -1, outside the vocabulary"),
    ],
)
def test_bad_token_ids_are_refused_before_the_workers(
    encoder: M3Encoder, pool: EncoderPool, ids: list[list[int]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encoder.encode_tokenized(ids)
    with pytest.raises(ValueError, match=message):
        pool.encode_tokenized(ids)
    good = [[0, 5, 6, 2]]
    _same(pool.encode_tokenized(good), encoder.encode_tokenized(good))


def test_a_sequence_past_the_positions_is_refused_before_the_workers(
    encoder: M3Encoder, pool: EncoderPool
) -> None:
    """It reached a worker, failed there with torch's bare index error and closed the pool."""
    from m3kit.encoder_inputs import position_rows

    positions = position_rows(encoder.model)
    assert positions is not None
    long = [[0] + [5] * positions + [2]]
    with pytest.raises(ValueError, match=rf"holds {positions + 2} tokens, more than the"):
        pool.encode_tokenized(long)
    good = [[0, 5, 6, 2]]
    _same(pool.encode_tokenized(good), encoder.encode_tokenized(good))


def test_an_interrupted_call_leaves_nothing_for_the_next(encoder: M3Encoder) -> None:
    # Ctrl-C while a call hands out its batches: the batches already handed out are encoded
    # anyway. Their results were taken by the next call as its own (their task numbers,
    # below the new call's, indexed its batches from the end): rows of other texts, and the
    # call returned before its own batches came back, leaving them to the call after
    with EncoderPool(encoder, workers=1, threads_per_worker=1) as p:
        put, handed = p._tasks.put, []

        def interrupted(task: object) -> None:
            if len(handed) == 2:
                raise KeyboardInterrupt
            handed.append(task)
            put(task)

        p._tasks.put = interrupted
        with pytest.raises(KeyboardInterrupt):
            p.encode(TEXTS)
        del p._tasks.put
        rev = TEXTS[::-1]
        try:
            out = p.encode(rev)
        except RuntimeError as e:  # or the pool is closed, and says so
            assert "closed" in str(e)
        else:
            _same(out, encoder.encode(rev, show_progress=False))


def test_a_worker_that_died_between_calls_fails_the_next_call(encoder: M3Encoder) -> None:
    """The other worker took all its tasks: the call succeeded and the pool went on with one
    worker of the two it reports, silently (its docstring says a dead worker fails the call)."""
    import os
    import signal

    with EncoderPool(encoder, workers=2, threads_per_worker=1) as p:
        _same(p.encode(TEXTS), encoder.encode(TEXTS, show_progress=False))
        os.kill(p._procs[0].pid, signal.SIGKILL)
        p._procs[0].join(timeout=30)
        with pytest.raises(RuntimeError, match=r"worker 0 \(cpu\) exited .* last call"):
            p.encode(TEXTS)
        with pytest.raises(RuntimeError, match="closed"):
            p.encode(TEXTS)


def test_the_encoders_batch_limits_as_they_are_now_plan_the_pools_batches(
    encoder: M3Encoder,
) -> None:
    """The pool planned with the limits its workers started with: ``encoder.batch_size = 1``
    after the start (which the encoder itself honours) changed nothing in the pool."""
    lengths = [len(t.input_ids) for t in encoder.tokenize(TEXTS)]
    started = encoder.batch_size
    with EncoderPool(encoder, workers=1, threads_per_worker=1) as p:
        try:
            for size in (1, 4):
                encoder.batch_size = size
                before = p._next_task
                _same(p.encode(TEXTS), encoder.encode(TEXTS, show_progress=False))
                assert p._next_task - before == len(encoder._plan_batches(lengths)), size
        finally:
            encoder.batch_size = started


def test_a_worker_runs_each_planned_batch_in_one_pass(
    tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker encoded its task with the limits it was started with: a batch the parent
    planned larger (its encoder's ``batch_size`` raised since) was split again there. The
    worker loop runs here, in this process, to count its forward passes."""
    import queue

    from m3kit.distributed.pool import _worker
    from m3kit.distributed.spec import EncoderSpec
    from m3kit.fingerprint import encoder_fingerprint

    started = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", batch_size=1)
    spec = EncoderSpec.of(started, encoder_fingerprint(started))
    passes: list[int] = []
    forward = M3Encoder._forward

    def counting(self: M3Encoder, batch: list[list[int]], *args: object) -> object:
        passes.append(len(batch))
        return forward(self, batch, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(M3Encoder, "_forward", counting)
    ids = [t.input_ids for t in started.tokenize(TEXTS[:4])]
    tasks: queue.Queue[object] = queue.Queue()
    results: queue.Queue[tuple[str, object, object]] = queue.Queue()
    tasks.put((0, ids, ["dense"], None, 0.0))
    tasks.put(None)
    _worker(spec, "cpu", None, tasks, results, 0)
    assert results.get()[0] == "ready"
    kind, task_id, out = results.get()
    assert (kind, task_id) == ("ok", 0), out
    assert passes == [4]  # one pass, not four of the worker's starting batch_size=1
    _same(out, started.encode_tokenized(ids, heads=["dense"]))


def test_pool_closes(encoder: M3Encoder, pool: EncoderPool) -> None:
    # runs last in this module: closes the shared pool
    p = pool
    procs = list(p._procs)
    p.close()
    p.close()  # idempotent
    assert all(not proc.is_alive() for proc in procs)
    with pytest.raises(RuntimeError, match="closed"):
        p.encode(["a"])
    spec = EncoderSpec.of(encoder)
    assert spec.dtype == "fp32" and spec.device_type == "cpu" and spec.batch_size == 2


def test_a_parent_encoder_changed_after_the_workers_loaded_is_refused(
    tiny_m3_path: Path,
) -> None:
    """The workers hold the model as it was when the pool started: a parent encoder trained
    in place or given another pooling afterwards got the old model's vectors from the pool,
    silently. The pool now refuses to encode for it; what the parent alone applies
    (tokenisation: ``max_length``, the query instruction) may still change."""
    import torch

    from m3kit.checkpoint import Pooling

    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with EncoderPool(enc, workers=1, threads_per_worker=1) as p:
        enc.max_length = 16  # applied by the parent: the workers' vectors still match
        _same(p.encode(TEXTS), enc.encode(TEXTS))
        enc.model.pooling = Pooling.MEAN
        with pytest.raises(ValueError, match=r"changed since its workers loaded .*\(pooling:"):
            p.encode(TEXTS)
        enc.model.pooling = Pooling.CLS
        _same(p.encode(TEXTS[:2]), enc.encode(TEXTS[:2]))  # as the workers loaded it again
        with torch.no_grad():  # an optimiser step
            enc.model.backbone.get_input_embeddings().weight.mul_(1.5)
        with pytest.raises(ValueError, match=r"changed since its workers loaded .*\(weights:"):
            p.encode_tokenized([[0, 5, 6, 2]])


def test_a_worker_refuses_another_model_at_the_parents_path(tmp_path: Path) -> None:
    # workers load the model from the parent's checkpoint path: if that folder now holds
    # another model (changed on disk, or another machine's copy), its vectors would be stored
    # under the collection's fingerprint, so every search of them would be silently wrong
    from m3kit.testing import build_tiny_m3_checkpoint

    folder = build_tiny_m3_checkpoint(tmp_path / "m", seed=0)
    spec = EncoderSpec.of(M3Encoder.from_pretrained(folder, dtype="fp32"))
    assert spec.identity is not None
    assert spec.load("cpu").dense_dim == 32  # the same model loads
    build_tiny_m3_checkpoint(tmp_path / "m", seed=1)  # another model, same path
    with pytest.raises(ValueError, match="not the one the parent loaded"):
        spec.load("cpu")


def test_ray_rows_keep_their_other_columns_as_metadata() -> None:
    from m3kit.distributed.ray_pipeline import _rows

    texts, metas, ids = _rows(
        [
            {"doc_id": "a", "text": "Oxygen.", "title": "O", "metadata": {"year": 1774}},
            {"doc_id": "b", "text": "Iron.", "url": "https://x", "metadata": '{"n": 1}'},
        ]
    )
    assert (texts, ids) == (["Oxygen.", "Iron."], ["a", "b"])
    assert metas == [{"year": 1774, "title": "O"}, {"n": 1, "url": "https://x"}]
    with pytest.raises(ValueError, match=r"\['title'\] both as columns and in its 'metadata'"):
        _rows([{"doc_id": "a", "text": "t", "title": "x", "metadata": {"title": "y"}}])


def test_ray_rows_take_document_ids_as_add_texts_does() -> None:
    # any doc_id became its Python text ({"a": 1} the id "{'a': 1}"); add_texts refuses it
    from m3kit.distributed.ray_pipeline import _rows

    assert _rows([{"doc_id": 7, "text": "Oxygen."}])[2] == ["7"]
    for bad in ({"a": 1}, 1.5, True):
        message = re.escape(
            f"document 3's doc_id: a document id is a str or an int, not {type(bad).__name__} "
            f"{bad!r}"
        )
        with pytest.raises(TypeError, match=message):
            _rows([{"doc_id": bad, "text": "t"}], first=3)


def test_a_script_without_a_main_guard_is_told_how_to_start_the_pool(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A script building the pool at its top level (the README's snippet pasted as is) made
    every spawned worker build one too; the parent said only "exited with code 1"."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from m3kit import M3Encoder\n"
        "from m3kit.distributed import EncoderPool\n"
        f"encoder = M3Encoder.from_pretrained({str(tiny_m3_path)!r}, dtype='fp32')\n"
        "with EncoderPool(encoder, workers=1, threads_per_worker=1) as pool:\n"
        "    pool.encode(['x'])\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode != 0
    assert "exited with code 1 while the pool waited for it to load the model" in done.stderr
    assert 'build the pool under `if __name__ == "__main__":`' in done.stderr
