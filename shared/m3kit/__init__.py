"""m3kit: BGE-M3 dense, sparse and ColBERT retrieval, late chunking and fine-tuning."""

from m3kit.checkpoint import DEFAULT_MODEL, CheckpointKind, Pooling
from m3kit.encoder import M3Encoder, Precision, Truncation
from m3kit.errors import (
    CheckpointChangedError,
    CheckpointError,
    CollectionNotFoundError,
    EncoderChangedError,
    FingerprintMismatchError,
    HeadNotAvailableError,
    HeadNotComputedError,
    M3KitError,
    MissingExtraError,
    SchemaMismatchError,
    StoreConnectionError,
    TrainingDivergedError,
    TruncationError,
)
from m3kit.machine import MachineInfo, describe_machine
from m3kit.outputs import Chunk, Head, M3Output, SparseVector

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointChangedError",
    "CheckpointError",
    "CheckpointKind",
    "Chunk",
    "CollectionNotFoundError",
    "EncoderChangedError",
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

__version__ = "0.1.0"
