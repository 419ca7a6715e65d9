"""``m3kit index`` cluster flags reach the server's create request; ``--ray`` equals a plain run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DOCS = REPO / "examples" / "sample_docs"
Requests = list[tuple[str, str, Any]]
#: The ``qdrant_recorder`` fixture (tests/conftest.py): url, requests, state.
Server = tuple[str, Requests, dict[str, Any]]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, folder)
    return folder


def _model_args(model: Path) -> list[str]:
    return ["--model", str(model), "--dtype", "fp32", "--quiet", "--collection", "c"]


def test_cluster_flags_are_sent_when_the_collection_is_created(
    qdrant_recorder: Server,
    docs: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, requests, _ = qdrant_recorder
    flags = ["--shards", "6", "--replication", "2", "--write-consistency", "2"]
    flags += ["--on-disk", "vectors", "--on-disk", "payload", "--quantization", "binary"]
    code = main(["index", str(docs), "--qdrant-url", url, *flags, *_model_args(tiny_m3_path)])
    assert code == 0, capsys.readouterr().err
    assert "indexed 6 document(s)" in capsys.readouterr().out
    (create,) = [b for m, p, b in requests if m == "PUT" and p == "/collections/c"]
    assert create["shard_number"] == 6
    assert create["replication_factor"] == 2
    assert create["write_consistency_factor"] == 2
    assert create["on_disk_payload"] is True
    assert create["vectors"]["dense"]["on_disk"] is True
    assert create["vectors"]["colbert"]["on_disk"] is True
    assert create["vectors"]["dense"]["quantization_config"] == {"binary": {"always_ram": True}}
    assert sum(len(b["points"]) for m, p, b in requests if p == "/collections/c/points") > 0


def test_no_cluster_flags_send_no_cluster_settings(
    qdrant_recorder: Server, docs: Path, tiny_m3_path: Path
) -> None:
    url, requests, _ = qdrant_recorder
    assert main(["index", str(docs), "--qdrant-url", url, *_model_args(tiny_m3_path)]) == 0
    (create,) = [b for m, p, b in requests if m == "PUT" and p == "/collections/c"]
    for key in ("shard_number", "replication_factor", "on_disk_payload", "quantization_config"):
        assert create.get(key) is None
    assert create["vectors"]["dense"].get("on_disk") is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shards", "2"], "--shards configure a collection on a Qdrant server: they need"),
        (["--on-disk", "vectors", "--quantization", "scalar"], "--on-disk, --quantization"),
        (["--ray-actors", "2"], "--ray-actors need"),
        (["--ray-gpus-per-actor", "1"], "--ray-gpus-per-actor need"),
        # (the reindex ran in this process, every Ray flag ignored)
        (["--reindex", "--ray", "--ray-actors", "8"], "--reindex re-encodes the stored"),
    ],
)
def test_flags_that_cannot_apply_are_errors(
    extra: list[str],
    message: str,
    docs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = ["--path", str(tmp_path / "store"), "--model", str(tmp_path / "no-model")]
    assert main(["index", str(docs), *store, *extra]) == 1
    assert message in capsys.readouterr().err


def test_write_consistency_above_replication_is_an_error(
    docs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--replication", "1", "--write-consistency", "2", "--model", "/nonexistent"]
    assert main(["index", str(docs), "--qdrant-url", "http://127.0.0.1:1", *flags]) == 1
    assert "write_consistency_factor 2 exceeds replication_factor 1" in capsys.readouterr().err


def test_ray_without_the_extra_names_it(
    docs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    store = ["--path", str(tmp_path / "store"), "--model", str(tmp_path / "no-model")]
    assert main(["index", str(docs), *store, "--ray"]) == 1
    assert 'pip install "m3kit[ray]"' in capsys.readouterr().err


def _points(store: Path) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(store))
    try:
        found, _ = client.scroll("c", limit=10_000, with_payload=True, with_vectors=True)
    finally:
        client.close()
    out = {}
    for p in found:
        vectors: Any = p.vector
        out[str(p.id)] = (dict(p.payload or {}), np.asarray(vectors["dense"], dtype=np.float32))
    return out


@pytest.mark.slow  # a local Ray and two actors on a shared 2-core machine
def test_ray_index_equals_a_plain_index(
    docs: Path, tmp_path: Path, tiny_m3_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    plain, on_ray = tmp_path / "plain", tmp_path / "ray"
    common = [str(docs), *_model_args(tiny_m3_path), "--backend", "client", "--chunk-size", "64"]
    assert main(["index", *common, "--path", str(plain)]) == 0, capsys.readouterr().err
    ray_flags = ["--ray", "--ray-actors", "2", "--ray-cpus-per-actor", "1"]
    assert main(["index", *common, "--path", str(on_ray), *ray_flags]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    a, b = _points(plain), _points(on_ray)
    assert len(a) > 6  # the sample's documents are cut into several chunks each
    assert sorted(a) == sorted(b)  # the same point ids
    for pid, (payload, dense) in a.items():
        assert payload == b[pid][0]  # doc ids, hashes, chunking, texts, metadata
        np.testing.assert_allclose(dense, b[pid][1], atol=1e-5)
    assert f"{len(a)} chunk(s) stored (+{len(a)})" in out
    # Indexing the same files again on Ray adds nothing (the driver skips stored documents).
    assert main(["index", *common, "--path", str(on_ray), *ray_flags]) == 0
    assert f"{len(a)} chunk(s) stored (+0)" in capsys.readouterr().out


def test_write_flags_reach_every_write_request(
    qdrant_recorder: Server,
    docs: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ClusterSettings.write_batch_size`` / ``write_parallelism`` had no flag: ``m3kit
    index`` wrote 64 points per request one at a time, or 256 four at a time as soon as any
    cluster flag was given, and neither could be changed."""
    url, requests, state = qdrant_recorder
    flags = ["--write-batch-size", "1", "--write-parallelism", "3"]
    code = main(["index", str(docs), "--qdrant-url", url, *flags, *_model_args(tiny_m3_path)])
    assert code == 0, capsys.readouterr().err
    writes = [b for m, p, b in requests if m == "PUT" and p == "/collections/c/points"]
    assert len(writes) > 6 and {len(b["points"]) for b in writes} == {1}
    assert state["most"] > 1  # several requests in flight at once
    (create,) = [b for m, p, b in requests if m == "PUT" and p == "/collections/c"]
    assert create.get("shard_number") is None  # write settings alone create nothing new


def test_write_flags_without_a_server_are_errors(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--path", str(tmp_path / "store"), "--model", str(tmp_path / "no-model")]
    assert main(["index", str(docs), *store, "--write-parallelism", "2"]) == 1
    assert "--write-parallelism configure a collection on a Qdrant server" in (
        capsys.readouterr().err
    )
