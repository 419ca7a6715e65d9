"""Ray Data indexing equals a single-process M3Index run (embedded engine and local mode)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit import Head, M3Encoder
from m3kit.chunking import NaiveChunker
from m3kit.cli_chunking import RECORD_KEY
from m3kit.late_chunking import LateChunker
from m3kit.sources import read_documents
from m3kit.store import M3Index, QueryOptions
from tests.reliability.killing import assert_same_points, index_points

ray = pytest.importorskip("ray")

from m3kit.distributed.ray_pipeline import (  # noqa: E402
    ChunkerSpec,
    index_with_ray,
    records_from_arrow,
    records_to_arrow,
)

pytestmark = pytest.mark.slow  # a local Ray cluster and two actors: about a minute


@pytest.fixture(scope="module")
def corpus(squad_sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's first 24 paragraphs (two Ray batches of ``m3kit index --ray``)."""
    lines = (squad_sample_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    path = tmp_path_factory.mktemp("squad24") / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def docs(corpus: Path) -> list[Any]:
    return read_documents([corpus])


@pytest.fixture(scope="module")
def encoder(tiny_m3_path: Path) -> M3Encoder:
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


def _payloads(index: M3Index) -> dict[str, dict[str, Any]]:
    ids = [h.id for h in index.store._backend.scroll(None, ["doc_id"])]
    return index.store.points(ids)


def _same_vectors(a: M3Index, b: M3Index, ids: list[str]) -> None:
    ra = {
        str(p.id): p.vector for p in a.store._backend._client.retrieve("c", ids, with_vectors=True)
    }
    rb = {
        str(p.id): p.vector for p in b.store._backend._client.retrieve("c", ids, with_vectors=True)
    }
    for i in ids:
        np.testing.assert_allclose(ra[i]["dense"], rb[i]["dense"], atol=1e-5)
        np.testing.assert_allclose(ra[i]["colbert"], rb[i]["colbert"], atol=1e-5)
        assert ra[i]["sparse"].indices == rb[i]["sparse"].indices
        np.testing.assert_allclose(ra[i]["sparse"].values, rb[i]["sparse"].values, atol=1e-5)


def _same_hits(a: M3Index, b: M3Index, queries: list[str]) -> None:
    """Same hits and scores on the embedded engine, candidates covering the whole collection.

    The comparison is then of the stored vectors. With a budget below the collection size,
    near-ties at the candidate cut flip: Ray encodes other batches (fp32 padding noise
    ~1e-6) and writes points in another order (Qdrant breaks RRF ties by its internal
    order). Measured with shuffled 4-document batches: 1 of 74 queries differed at the
    default budget, 0 at this one.
    """
    for index in (a, b):
        index.store.query_options = QueryOptions(min_candidates=a.count())
    for q in queries:
        ha, hb = a.search(q, k=5), b.search(q, k=5)
        assert [h.id for h in ha] == [h.id for h in hb]
        np.testing.assert_allclose([h.score for h in ha], [h.score for h in hb], atol=1e-5)


def _same_collection(single: M3Index, other: M3Index, backend: str, queries: list[str]) -> None:
    """Same point ids, payloads (doc hashes, encoder id, chunking), vectors and record."""
    a, b = _payloads(single), _payloads(other)
    assert a == b
    if backend == "client":
        _same_vectors(single, other, list(a))
    else:  # the embedded engine: same hits and scores
        _same_hits(single, other, queries)
    # the record, less the chunking flags `m3kit index` remembers (a library re-run keeps none)
    a_record, b_record = (
        {k: v for k, v in i.store.collection_metadata().items() if k != RECORD_KEY}
        for i in (single, other)
    )
    assert b_record == a_record


def test_arrow_round_trip_is_exact(encoder: M3Encoder, docs: list[Any]) -> None:
    from m3kit.store.index import _Doc, build_records

    d = [_Doc(x.doc_id, x.text, dict(x.metadata), "h", {"kind": "naive"}) for x in docs[:3]]
    d[0] = dataclasses.replace(d[0], extra={"hidden": ["a"], "n": 1})  # (its writer's extras)
    records, _ = build_records(encoder, encoder.available_heads, d, NaiveChunker(encoder), False)
    back = records_from_arrow(records_to_arrow(records, encoder.available_heads))
    assert len(back) == len(records) > 3
    for r, s in zip(records, back, strict=True):
        assert (r.doc_id, r.chunk_index, r.text, dict(r.metadata), r.start, r.end) == (
            s.doc_id,
            s.chunk_index,
            s.text,
            dict(s.metadata),
            s.start,
            s.end,
        )
        assert r.extra == s.extra
        assert np.array_equal(r.vectors.dense, s.vectors.dense)
        assert r.vectors.sparse == s.vectors.sparse
        assert np.array_equal(r.vectors.colbert[0], s.vectors.colbert[0])


def test_arrow_vectors_of_sliced_and_chunked_tables(encoder: M3Encoder, docs: list[Any]) -> None:
    # vector columns are read as numpy views of the buffers (not Python floats): a Ray batch
    # is often a slice of a block, or several blocks
    import pyarrow as pa

    from m3kit.store.index import _Doc, build_records

    d = [_Doc(x.doc_id, x.text, dict(x.metadata), "h", {"kind": "naive"}) for x in docs[:3]]
    d[0] = dataclasses.replace(d[0], extra={"hidden": ["a"], "n": 1})  # (its writer's extras)
    records, _ = build_records(encoder, encoder.available_heads, d, NaiveChunker(encoder), False)
    table = records_to_arrow(records, encoder.available_heads)
    mixed = pa.concat_tables([table.slice(2), table.slice(0, 2)]).slice(1)
    want = [*records[3:], *records[:2]]
    back = records_from_arrow(mixed)
    assert [(r.doc_id, r.chunk_index) for r in back] == [(r.doc_id, r.chunk_index) for r in want]
    for r, s in zip(want, back, strict=True):
        assert s.vectors.dense.dtype == np.float32
        assert np.array_equal(r.vectors.dense, s.vectors.dense)
        assert r.vectors.sparse == s.vectors.sparse
        assert s.vectors.sparse[0].indices.dtype == np.int64
        assert np.array_equal(r.vectors.colbert[0], s.vectors.colbert[0])


@pytest.mark.parametrize("backend", ["client", "edge"])
def test_ray_equals_single_process_and_resumes(
    local_ray: None,
    encoder: M3Encoder,
    docs: list[Any],
    tmp_path: Path,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [d.text for d in docs]
    metas = [dict(d.metadata) for d in docs]
    ids = [d.doc_id for d in docs]
    single = M3Index.open(encoder, tmp_path / "single", collection="c", backend=backend)
    single.add_texts(texts, metas, ids, chunker=NaiveChunker(encoder))
    # An interrupted Ray run (the writer fails after its first batch), then a re-run.
    ray_index = M3Index.open(encoder, tmp_path / "ray", collection="c", backend=backend)
    calls = {"n": 0}
    original = ray_index.write_records

    def failing(records: Any, empty: Any = ()) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("killed midway")
        original(records, empty)

    monkeypatch.setattr(ray_index, "write_records", failing)
    with pytest.raises(RuntimeError, match="killed midway"):
        index_with_ray(ray_index, docs, chunker=ChunkerSpec("naive"), docs_per_batch=4)
    partial = ray_index.count()
    assert 0 < partial < single.count()
    monkeypatch.undo()
    assert index_with_ray(ray_index, docs, docs_per_batch=4, num_actors=2) == ids
    _same_collection(
        single, ray_index, backend, ["Amazon rainforest", "What is the capital?", texts[3][:80]]
    )
    # A third run stores nothing new.
    before = ray_index.count()
    index_with_ray(ray_index, docs)
    assert ray_index.count() == before
    single.close()
    ray_index.close()


@pytest.mark.parametrize("backend", ["client"])
def test_ray_late_chunking_equals_single_process(
    local_ray: None, encoder: M3Encoder, docs: list[Any], tmp_path: Path, backend: str
) -> None:
    """Late chunking through Ray stores what ``add_texts`` with the same ``LateChunker``
    stores: chunk texts, offsets, payloads and every head's vectors, for documents that span
    several windows, and texts with CRLF, emoji, combining marks and NUL characters."""
    odd = [
        ("crlf", "Line one.\r\nLine two.\r\n\r\n\tTabbed line.\r\n"),
        ("emoji", "Emoji \U0001f642 here. Cafe\u0301. \u5317\u4eac\u662f\u9996\u90fd\u3002"),
        ("nul", "Text ending with NUL.\x00\x00"),
    ]
    texts = [d.text for d in docs[:6]] + [t for _, t in odd]
    ids = [d.doc_id for d in docs[:6]] + [i for i, _ in odd]
    metas = [dict(d.metadata) for d in docs[:6]] + [{"k": i} for i, _ in odd]
    single = M3Index.open(encoder, tmp_path / "single", collection="c", backend=backend)
    late = LateChunker(encoder, chunk_size=16, window=48, overlap=8)
    single.add_texts(texts, metas, ids, chunker=late)
    rows = [
        {"doc_id": i, "text": t, "metadata": m} for i, t, m in zip(ids, texts, metas, strict=True)
    ]
    ray_index = M3Index.open(encoder, tmp_path / "ray", collection="c", backend=backend)
    chunker = ChunkerSpec("late", chunk_size=16, window=48, overlap=8)
    assert index_with_ray(ray_index, rows, chunker=chunker, docs_per_batch=3) == ids
    assert single.count() > 2 * len(ids)  # several chunks per document: windows were stitched
    _same_collection(single, ray_index, backend, ["Amazon rainforest", "Line two", "Cafe"])
    single.close()
    ray_index.close()


def _dying_actor(marker: Path) -> type:
    """An encoder actor whose process dies (``os._exit``) in the first batch any actor of the
    pool gets: the one that creates ``marker``. A class made in a function is pickled by
    value, so Ray's workers run it without importing this test module."""
    from m3kit.distributed.ray_pipeline import _EncodeActor

    class DyingActor(_EncodeActor):  # type: ignore[misc, valid-type]
        def __call__(self, batch: dict[str, Any]) -> Any:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:  # it died once already: encode as usual
                return super().__call__(batch)
            os._exit(1)  # as a worker killed by the OOM killer or a lost node

    return DyingActor


@pytest.mark.parametrize("backend", ["edge"])
def test_an_actor_dying_mid_batch_is_retried_and_stores_what_one_process_stores(
    local_ray: None,
    encoder: M3Encoder,
    docs: list[Any],
    tmp_path: Path,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ray worker process dies in the middle of a batch: Ray restarts the actor and runs
    the batch again. Only the driver writes, and point ids come from (doc_id, chunk_index),
    so the collection holds exactly what a single-process run stores: no chunk lost or
    written twice."""
    texts, ids = [d.text for d in docs], [d.doc_id for d in docs]
    single = M3Index.open(encoder, tmp_path / "single", collection="c", backend=backend)
    single.add_texts(texts, [dict(d.metadata) for d in docs], ids, chunker=NaiveChunker(encoder))
    marker = tmp_path / "died"
    monkeypatch.setattr("m3kit.distributed.ray_pipeline._EncodeActor", _dying_actor(marker))
    ray_index = M3Index.open(encoder, tmp_path / "ray", collection="c", backend=backend)
    assert index_with_ray(ray_index, docs, docs_per_batch=4, num_actors=2) == ids
    assert marker.exists()  # an actor did die
    assert_same_points(index_points(ray_index), index_points(single))
    single.close()
    ray_index.close()


def _always_dying_actor(log: Path) -> type:
    """An encoder actor whose process dies (``os._exit``) on every batch holding ``bad``
    (a document that gets its worker killed each time: out of memory), logging each death."""
    from m3kit.distributed.ray_pipeline import _EncodeActor

    class AlwaysDying(_EncodeActor):  # type: ignore[misc, valid-type]
        def __call__(self, batch: dict[str, Any]) -> Any:
            if "bad" in [str(d) for d in batch["doc_id"]]:
                with log.open("a") as f:
                    f.write("died\n")
                os._exit(1)
            return super().__call__(batch)

    return AlwaysDying


def test_a_batch_that_kills_its_actor_every_time_fails_the_run(
    local_ray: None, encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray Data retries a batch whose actor died without end by default: such a document
    hung ``index_with_ray`` (and ``m3kit index --ray``) forever, with no error."""
    from m3kit.distributed import ray_pipeline

    log = tmp_path / "deaths"
    monkeypatch.setattr(ray_pipeline, "_EncodeActor", _always_dying_actor(log))
    monkeypatch.setattr(ray_pipeline, "BATCH_RETRIES", 1)
    rows = [{"doc_id": "bad", "text": "This one kills its worker."}]
    with M3Index.open(encoder, tmp_path / "ray", collection="c") as index:
        # in a daemon thread, so that the hang this was fails the test instead of the run
        raised: list[BaseException] = []

        def run() -> None:
            try:
                index_with_ray(index, rows, num_actors=1, docs_per_batch=1)
            except BaseException as e:
                raised.append(e)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(180)
        assert not worker.is_alive(), "index_with_ray retried the dying batch without end"
        with pytest.raises(RuntimeError, match="died or became unreachable on one batch 2"):
            raise raised[0]
        # the document it died on is named (Ray does not say which batch its actor held)
        assert "1 document(s) were not written: ['bad']" in str(raised[0])
        assert index.count() == 0
    assert log.read_text().split() == ["died", "died"]


# -- a real process killed midway ---------------------------------------------------------------
DRIVER = Path(__file__).with_name("ray_kill_driver.py")


def _index_args(corpus: Path, store: Path, model: Path, backend: str, *extra: str) -> list[str]:
    """Arguments of ``m3kit index`` (without the program)."""
    return [
        "index",
        str(corpus),
        "--collection",
        "c",
        "--path",
        str(store),
        "--backend",
        backend,
        "--model",
        str(model),
        "--dtype",
        "fp32",
        "--quiet",
        *extra,
    ]


def _kill_after_first_write(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """Run ``cmd`` in its own session; SIGKILL it once it reports its first stored batch.

    Returns its exit status and stdout. The driver pauses after each write, so the kill
    lands between the first and the second write. A SIGKILLed Ray driver leaves Ray's
    per-node agents running (its raylet and GCS die with it): the whole process group is
    killed afterwards so nothing outlives the test.
    """
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True, start_new_session=True
        )
    out: list[str] = []

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line.startswith("wrote "):  # ray_kill_driver.WROTE
                proc.send_signal(signal.SIGKILL)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rc = proc.wait(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing of the group is left
            os.killpg(proc.pid, signal.SIGKILL)
        watcher.join(timeout=10)
    return rc, "".join(out)


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_sigkilled_ray_index_then_rerun_equals_single_process(
    local_ray: None,
    encoder: M3Encoder,
    tiny_m3_path: Path,
    corpus: Path,
    docs: list[Any],
    tmp_path: Path,
    backend: str,
) -> None:
    """``m3kit index --ray`` SIGKILLed after its first write, run again: a plain index."""
    from m3kit.cli import main as cli_main

    single_path, crashed_path = tmp_path / "single", tmp_path / "crashed"
    assert cli_main(_index_args(corpus, single_path, tiny_m3_path, backend)) == 0  # one process

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "M3KIT_TEST_WRITE_PAUSE": "120"}
    args = _index_args(corpus, crashed_path, tiny_m3_path, backend, "--ray", "--ray-actors", "2")
    cmd = [sys.executable, str(DRIVER), *args]  # m3kit index --ray; the writer pauses 120 s
    rc, out = _kill_after_first_write(cmd, env, tmp_path / "ray.log")
    assert rc == -signal.SIGKILL, f"the run ended with {rc} before it was killed:\n{out}"
    assert out.count("wrote ") == 1, out

    single = M3Index.open(encoder, single_path, collection="c", backend=backend)
    # Opens although the killed process never closed it: its folder lock died with it.
    crashed = M3Index.open(encoder, crashed_path, collection="c", backend=backend)
    try:
        stored = {p["doc_id"] for p in _payloads(crashed).values()}
        assert 0 < crashed.count() < single.count()
        assert 0 < len(stored) < len(docs)
        ids = [d.doc_id for d in docs]
        # The re-run: what m3kit index --ray does (index_on_ray), on this test's local Ray.
        assert index_with_ray(crashed, docs, chunker=ChunkerSpec("naive"), num_actors=2) == ids
        _same_collection(
            single, crashed, backend, ["Amazon rainforest", "What is the capital?", docs[5].text]
        )
    finally:
        single.close()
        crashed.close()


@pytest.mark.parametrize(("gpus", "device"), [(None, "cpu"), (0.0, "cpu"), (0.5, "cuda")])
def test_an_actor_encodes_on_the_device_ray_gave_it(
    encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch, gpus: float | None, device: str
) -> None:
    # Ray leaves CUDA_VISIBLE_DEVICES alone for an actor given no GPU (num_gpus=0, the
    # default): on a GPU node it sees every GPU. Such an actor loaded on "cuda" all the same,
    # unreserved, every CPU actor of the node on its first GPU, in the precision "auto" picks
    # there (or failed there: --dtype int8). The GPU is now used only when one was reserved.
    import torch

    from m3kit.distributed import EncoderSpec
    from m3kit.distributed.ray_pipeline import _EncodeActor

    loaded: list[str] = []
    load = EncoderSpec.load

    def recording(self: EncoderSpec, where: str) -> M3Encoder:
        loaded.append(where)
        return load(self, "cpu")  # no GPU here: the model itself loads on the CPU

    monkeypatch.setattr(EncoderSpec, "load", recording)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node
    args = (EncoderSpec.of(encoder), ChunkerSpec("naive"), ["dense"])
    if gpus is None:
        _EncodeActor(*args)
    else:
        _EncodeActor(*args, gpus=gpus)
    assert loaded == [device]


def test_a_chunker_spec_refuses_settings_its_kind_ignores() -> None:
    # ChunkerSpec("whole", chunk_size=128) indexed whole documents cut at the model's
    # max_length (the chunk size went nowhere), as window= and late_heads= are refused for
    # naive chunking
    with pytest.raises(ValueError, match="chunk_size applies to kind='naive' or 'late'"):
        ChunkerSpec("whole", chunk_size=128)
    with pytest.raises(ValueError, match="window applies to late chunking"):
        ChunkerSpec("naive", window=64)
    assert ChunkerSpec("naive", chunk_size=128).chunk_size == 128


@pytest.mark.parametrize(
    "given",
    [
        [Head.DENSE, Head.SPARSE],  # the library's own enum, as LateChunker takes it
        ("sparse", "dense"),
        frozenset({Head.SPARSE, Head.DENSE}),
        "colbert",  # one head
        (),  # none pooled late: every chunk encoded alone
    ],
)
def test_a_chunker_spec_takes_late_heads_as_late_chunker_does(
    encoder: M3Encoder, given: Any
) -> None:
    # ChunkerSpec kept str(h) of each head: str(Head.DENSE) is "Head.DENSE", so a spec given
    # Head members failed in index_with_ray with "unknown head 'Head.DENSE'", and one head
    # given as a string was split into its letters ("unknown head 'c'")
    spec = ChunkerSpec("late", late_heads=given)
    built, direct = spec.build(encoder), LateChunker(encoder, late_heads=given)
    assert built.late_heads == direct.late_heads
    assert built.signature == direct.signature  # the documents' versions
    assert spec.late_heads == tuple(sorted(h.value for h in direct.late_heads))


def test_a_chunker_spec_names_an_unknown_late_head() -> None:
    with pytest.raises(ValueError, match="unknown head 'dens'"):
        ChunkerSpec("late", late_heads=["dens"])  # refused here, not by each actor
