"""The sparse and ColBERT heads of BGE-M3, shared by inference and training.

File format is FlagEmbedding's: ``colbert_linear.pt`` and ``sparse_linear.pt`` hold the
``state_dict`` of a ``torch.nn.Linear`` each (``weight``, ``bias``). They are read with
``torch.load(..., weights_only=True)`` so a file carrying a pickled payload is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from m3kit.checkpoint import COLBERT_FILE, SPARSE_FILE
from m3kit.errors import CheckpointError

__all__ = ["M3Heads", "is_git_lfs_pointer", "load_state_dict_safely", "refuse_git_lfs_pointer"]

_LFS_POINTER_START = b"version https://git-lfs.github.com/spec/"


def load_state_dict_safely(path: Path) -> dict[str, torch.Tensor]:
    """Read a tensor-only state dict; refuse anything that would execute code when unpickled.

    Raises:
        CheckpointError: The file is missing, a Git LFS pointer, unreadable (truncated,
            corrupted, not a torch file), carries a pickled payload, or holds something other
            than a ``{name: tensor}`` dict; the message names the file.
    """
    if not path.is_file():
        raise CheckpointError(f"head file {path} is missing")
    refuse_git_lfs_pointer(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor state dict "
            f"(weights_only loading failed: {e})"
        ) from e
    except Exception as e:  # torch raises many types for a damaged file: name the file
        raise CheckpointError(
            f"refusing to load {path}: it is not a readable torch state dict (truncated or "
            f"corrupted?): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def refuse_git_lfs_pointer(path: Path) -> None:
    """Refuse a weight file that is a Git LFS pointer (:func:`is_git_lfs_pointer`).

    Raises:
        CheckpointError: Names the file and how to fetch it.
    """
    if is_git_lfs_pointer(path):
        raise CheckpointError(
            f"{path} is a Git LFS pointer, not the weights it names: the checkpoint was "
            "copied or cloned without Git LFS. Fetch the real file (`git lfs pull` in the "
            "clone, or download the checkpoint again)"
        )


def is_git_lfs_pointer(path: Path) -> bool:
    """Whether ``path`` holds a Git LFS pointer (the small text file a clone without Git LFS
    leaves in place of a large file) instead of its content."""
    with path.open("rb") as f:
        return f.read(len(_LFS_POINTER_START)) == _LFS_POINTER_START


class M3Heads(nn.Module):
    """``colbert_linear`` (hidden -> colbert_dim) and ``sparse_linear`` (hidden -> 1)."""

    def __init__(self, hidden_size: int, colbert_dim: int | None = None) -> None:
        super().__init__()
        self.colbert_linear = nn.Linear(hidden_size, colbert_dim or hidden_size)
        self.sparse_linear = nn.Linear(hidden_size, 1)

    @property
    def colbert_dim(self) -> int:
        return int(self.colbert_linear.out_features)

    def sparse_weights(self, hidden: torch.Tensor) -> torch.Tensor:
        """Per-token lexical weights ``ReLU(sparse_linear(h))``: ``[..., t]``."""
        return torch.relu(self.sparse_linear(hidden)).squeeze(-1)

    def colbert_vectors(self, hidden: torch.Tensor) -> torch.Tensor:
        """Per-token ColBERT projections (not normalised): ``[..., t, colbert_dim]``."""
        return self.colbert_linear(hidden)  # type: ignore[no-any-return]

    @classmethod
    def from_folder(cls, folder: Path, hidden_size: int) -> M3Heads:
        """Load both head files; either one missing, unsafe, not fitting the backbone (shape,
        missing or extra tensors) or holding NaN / inf is an error naming that file."""
        colbert = load_state_dict_safely(folder / COLBERT_FILE)
        sparse = load_state_dict_safely(folder / SPARSE_FILE)
        weight = colbert.get("weight")
        if weight is None or weight.ndim != 2 or weight.shape[1] != hidden_size:
            raise CheckpointError(
                f"{folder / COLBERT_FILE} does not fit a backbone of hidden size {hidden_size}"
            )
        heads = cls(hidden_size, int(weight.shape[0]))
        for module, state, name in (
            (heads.colbert_linear, colbert, COLBERT_FILE),
            (heads.sparse_linear, sparse, SPARSE_FILE),
        ):
            for key, tensor in state.items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise CheckpointError(
                        f"{folder / name}: {key} holds values that are not finite (NaN or "
                        "inf), e.g. from a training run that diverged; every output of this "
                        "head would be NaN or empty. Use an earlier checkpoint"
                    )
            try:
                module.load_state_dict(state)
            except RuntimeError as e:
                expected = ", ".join(f"{k} {list(v.shape)}" for k, v in module.state_dict().items())
                raise CheckpointError(
                    f"{folder / name} does not fit a backbone of hidden size {hidden_size} "
                    f"(expected {expected}): {e}"
                ) from e
        return heads

    def save(self, folder: Path) -> None:
        """Write both head files in FlagEmbedding's format (plain tensors, fp32, contiguous)."""
        folder.mkdir(parents=True, exist_ok=True)
        for module, name in (
            (self.colbert_linear, COLBERT_FILE),
            (self.sparse_linear, SPARSE_FILE),
        ):
            state = {
                k: v.detach().to("cpu", torch.float32).contiguous().clone()
                for k, v in module.state_dict().items()
            }
            torch.save(state, folder / name)
