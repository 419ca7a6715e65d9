"""The public names are a contract: adding or removing one is a deliberate change."""

from __future__ import annotations

import m3kit

EXPECTED_ALL = [
    "DEFAULT_MODEL",
    "CheckpointChangedError",
    "EncoderChangedError",
    "CheckpointError",
    "CheckpointKind",
    "CollectionNotFoundError",
    "Chunk",
    "FingerprintMismatchError",
    "Head",
    "HeadNotAvailableError",
    "HeadNotComputedError",
    "M3Encoder",
    "M3KitError",
    "M3Output",
    "MachineInfo",
    "MissingExtraError",
    "Pooling",
    "Precision",
    "SchemaMismatchError",
    "SparseVector",
    "StoreConnectionError",
    "TrainingDivergedError",
    "Truncation",
    "TruncationError",
    "describe_machine",
]


def test_all_is_locked() -> None:
    assert sorted(m3kit.__all__) == sorted(EXPECTED_ALL)
    for name in m3kit.__all__:
        assert hasattr(m3kit, name), name


def test_core_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, m3kit, m3kit.encoder, m3kit.scoring, m3kit.checkpoint\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'langchain_qdrant', 'llama_index', 'FlagEmbedding')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
