"""An error raised in a Ray encoder actor reaches the driver as the type the actor raised.

Ray hands the driver its own wrappers instead (``ActorDiedError`` when the actor failed to
start, ``RayTaskError(UserCodeException)`` when a batch failed), which keep only the text of
the error: a caller's ``except ValueError`` (the model at a worker's path is another one, a
precision the worker's device cannot run) did not catch them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.store import M3Index

ray = pytest.importorskip("ray")

from m3kit.distributed import EncoderSpec  # noqa: E402
from m3kit.distributed.ray_pipeline import (  # noqa: E402
    ChunkerSpec,
    _EncodeActor,
    index_with_ray,
)


class _Odd(Exception):
    """An exception that pickles but does not unpickle (its ``__init__`` takes two args)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def _batch(*texts: str) -> dict[str, Any]:
    n = len(texts)
    return {
        "doc_id": [f"d{i}" for i in range(n)],
        "text": list(texts),
        "metadata": ["{}"] * n,
        "doc_hash": ["h"] * n,
        "chunking": ['{"kind": "naive"}'] * n,
        "extra": ["null"] * n,  # (the writer keeps no extras)
    }


def test_a_batch_error_comes_back_with_its_type(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3kit.distributed import ray_actor

    actor = _EncodeActor(EncoderSpec.of(tiny_encoder), ChunkerSpec("naive"), ["dense"])
    ok = actor(_batch("one text.", "two texts."))
    ray_actor._raise_failure(ok)  # nothing to raise

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("refused in the actor")

    monkeypatch.setattr("m3kit.store.index.build_records", failing)
    table = actor(_batch("three."))
    assert table.schema == ok.schema  # one schema: Ray Data may concatenate both
    with pytest.raises(ValueError, match="refused in the actor") as info:
        ray_actor._raise_failure(table)
    assert "in a Ray encoder actor" in str(info.value.__cause__)

    def odd(*args: Any, **kwargs: Any) -> Any:
        raise _Odd("x", "y")

    monkeypatch.setattr("m3kit.store.index.build_records", odd)
    with pytest.raises(RuntimeError, match=r"failed with .*_Odd: x/y"):
        ray_actor._raise_failure(actor(_batch("four.")))


def test_a_batch_error_names_the_documents_of_its_batch(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails in an actor said only what failed, not for which documents: with
    thousands of documents the user could not tell which to look at (or leave out)."""
    from m3kit.distributed import ray_actor

    actor = _EncodeActor(EncoderSpec.of(tiny_encoder), ChunkerSpec("naive"), ["dense"])

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("refused in the actor")

    monkeypatch.setattr("m3kit.store.index.build_records", failing)
    with pytest.raises(ValueError, match=r"documents \['d0', 'd1'\].*refused in the actor"):
        ray_actor._raise_failure(actor(_batch("one.", "two.")))

    def odd(*args: Any, **kwargs: Any) -> Any:
        raise _Odd("x", "y")

    monkeypatch.setattr("m3kit.store.index.build_records", odd)
    with pytest.raises(RuntimeError, match=r"documents \['d0'\].*_Odd: x/y"):
        ray_actor._raise_failure(actor(_batch("three.")))


def _failing_actor(doc_id: str) -> type:
    """An encoder actor that raises on the batch holding ``doc_id`` (made in a function:
    pickled by value, so Ray's workers run it without importing this module)."""

    class FailingActor(_EncodeActor):  # type: ignore[misc, valid-type]
        def _encode(self, batch: dict[str, Any]) -> Any:
            if doc_id in [str(d) for d in batch["doc_id"]]:
                raise ValueError("this batch cannot be encoded")
            return super()._encode(batch)

    return FailingActor


@pytest.mark.slow  # a local Ray cluster
def test_a_failed_batch_names_its_documents_and_a_rerun_finishes_the_job(
    local_ray: None, tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"doc_id": f"d{i}", "text": f"Document {i} says something. " * (i + 1)} for i in range(6)
    ]
    with M3Index.open(tiny_encoder, tmp_path / "single", collection="c") as single:
        single.add_texts([r["text"] for r in rows], None, [r["doc_id"] for r in rows])
        expected = single.store.points([h.id for h in single.store._backend.scroll(None, [])])
    with M3Index.open(tiny_encoder, tmp_path / "ray", collection="c") as index:
        monkeypatch.setattr("m3kit.distributed.ray_pipeline._EncodeActor", _failing_actor("d3"))
        with pytest.raises(ValueError, match=r"documents \['d2', 'd3'\].*cannot be encoded"):
            index_with_ray(
                index, rows, chunker=ChunkerSpec("whole"), num_actors=1, docs_per_batch=2
            )
        assert index.count() < len(rows)
        monkeypatch.undo()
        index_with_ray(index, rows, chunker=ChunkerSpec("whole"), num_actors=1, docs_per_batch=2)
        stored = index.store.points([h.id for h in index.store._backend.scroll(None, [])])
        assert stored == expected  # the same points, none twice


@pytest.mark.slow  # a local Ray cluster
def test_an_actor_refusing_its_model_raises_value_error_here(
    local_ray: None, tmp_path: Path
) -> None:
    from m3kit.testing import build_tiny_m3_checkpoint

    folder = build_tiny_m3_checkpoint(tmp_path / "m", seed=0)
    encoder = M3Encoder.from_pretrained(folder, dtype="fp32")
    with M3Index.open(encoder, tmp_path / "store", collection="c") as index:
        build_tiny_m3_checkpoint(tmp_path / "m", seed=1)  # the actors find another model
        rows = [{"doc_id": "a", "text": "Alpha."}, {"doc_id": "b", "text": "Beta."}]
        with pytest.raises(ValueError, match="not the one the parent loaded"):
            index_with_ray(index, rows, chunker=ChunkerSpec("naive"), num_actors=1)
        assert index.count() == 0
