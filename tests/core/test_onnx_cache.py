"""The ONNX export cache under concurrency and crashes: several processes exporting the same
model at once, builds abandoned by a killed process, and models the export cannot take.

The interleavings of two processes are reproduced in one process, deterministically, by
running the other process's whole build at the moment it would interleave.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'm3kit[onnx]')")

from m3kit import M3Encoder
from m3kit.backends.onnx_cache import verified_export

TEXTS = ["Berlin is the capital of Germany.", "", "short", "北京是首都。"]


def _key_folders(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if not p.name.startswith(".")]


def test_losing_the_race_to_publish_an_export_keeps_the_winners(
    tiny_m3_path: Path,
    tiny_encoder: M3Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes miss the cache and export the same model; the other one publishes its
    export just before this one does. This load used to fail (``rename`` onto the other's
    non-empty folder: "Directory not empty"); it now uses the other's export, left intact."""
    real_rename = Path.rename
    other: dict[str, Any] = {}

    def rename(self: Path, target: Any) -> Path:
        target = Path(target)
        if not other and target.parent == tmp_path and not target.name.startswith("."):
            # the other process: the same build, finished a moment earlier
            monkeypatch.setattr(Path, "rename", real_rename)
            other["encoder"] = M3Encoder.from_pretrained(
                tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path
            )
            other["inode"] = (target / "model.onnx").stat().st_ino
            monkeypatch.setattr(Path, "rename", rename)
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert enc._onnx is not None and other
    folder = enc._onnx.path.parent
    assert folder == other["encoder"]._onnx.path.parent
    # the winner's files were not replaced under it (a reader of them never sees them vanish)
    assert (folder / "model.onnx").stat().st_ino == other["inode"]
    assert _key_folders(tmp_path) == [folder]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".building-")]
    np.testing.assert_allclose(enc.encode(TEXTS).dense, tiny_encoder.encode(TEXTS).dense, atol=1e-4)


def test_a_corrupt_export_is_replaced_when_publishing(
    tiny_m3_path: Path, tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    first = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert first._onnx is not None
    folder = first._onnx.path.parent
    manifest = json.loads((folder / "manifest.json").read_text())
    data = folder / max(manifest["files"], key=lambda n: (folder / n).stat().st_size)
    data.write_bytes(data.read_bytes()[:-64])
    again = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert again._onnx is not None and again._onnx.path.parent == folder
    assert verified_export(folder, again._onnx.digest)
    assert _key_folders(tmp_path) == [folder]
    np.testing.assert_allclose(
        again.encode(TEXTS).dense, tiny_encoder.encode(TEXTS).dense, atol=1e-4
    )


def _abandoned(cache: Path, name: str, *, age_s: float, lock: bool = True) -> Path:
    """A build folder as a process killed mid-export leaves it (a partial raw export)."""
    folder = cache / name
    (folder / "raw").mkdir(parents=True)
    (folder / "raw" / "model.onnx").write_bytes(b"\0" * 1024)
    if lock:
        (folder / ".lock").touch()
    old = time.time() - age_s
    os.utime(folder, (old, old))
    return folder


@pytest.mark.skipif(os.name != "posix", reason="build locks are POSIX file locks")
def test_builds_of_killed_processes_are_removed_live_ones_kept(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A process killed mid-export (OOM killer, SIGKILL) left its build folder behind, up to
    three copies of the weights (6.6 GB for BGE-M3), forever; the next export removes it,
    and never a build another process is still running."""
    import fcntl

    dead = _abandoned(tmp_path, ".building-dead", age_s=3600)
    older_m3kit = _abandoned(tmp_path, ".building-nolock", age_s=7 * 86400, lock=False)
    just_started = _abandoned(tmp_path, ".building-young", age_s=0, lock=False)
    live = _abandoned(tmp_path, ".building-live", age_s=3600)
    with open(live / ".lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # a running build holds it
        M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
        assert live.is_dir() and just_started.is_dir()
    assert not dead.exists() and not older_m3kit.exists()


@pytest.mark.skipif(os.name != "posix", reason="build locks are POSIX file locks")
def test_a_cache_on_a_filesystem_without_locks_still_exports(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some network filesystems take no ``flock`` (ENOLCK): exports still work there, and a
    build folder nobody can tell dead from live is kept."""
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    unknown = _abandoned(tmp_path, ".building-unknown", age_s=3600)
    enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert enc._onnx is not None and enc.encode(TEXTS).dense.shape[0] == len(TEXTS)
    assert unknown.is_dir()


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_a_model_not_in_float32_is_refused_before_exporting(
    dtype: str, tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A model another encoder cast in place (``dtype="bf16"``, which ``"auto"`` picks on
    AVX-512 BF16 / AMX CPUs, or torch int8) used to be exported anyway: the build then failed
    in ONNX Runtime ("Could not find an implementation for Add(14)") and the broken export
    stayed in the cache."""
    torch_enc = M3Encoder.from_pretrained(tiny_m3_path, dtype=dtype, backend="torch")
    with pytest.raises(ValueError, match="exports float32 models") as err:
        M3Encoder(torch_enc.model, torch_enc.tokenizer, backend="onnx", onnx_cache_dir=tmp_path)
    assert ("bfloat16" if dtype == "bf16" else "quantised") in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing exported, nothing cached


def test_an_onnx_encoder_leaves_a_model_it_was_given_usable(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """An ONNX encoder built from another encoder's model released that model's torch weights
    (moved to the meta device): the other encoder then failed at its next encode, and its
    fingerprint (taken by every index write) with torch's raw "Cannot copy out of meta
    tensor; no data!". A model given to the constructor is now left as it is; only
    ``from_pretrained``, which nobody else's model passes through, releases torch's copy."""
    from m3kit.fingerprint import encoder_fingerprint

    torch_enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", backend="torch")
    before = torch_enc.encode(TEXTS)
    onnx_enc = M3Encoder(
        torch_enc.model, torch_enc.tokenizer, backend="onnx", onnx_cache_dir=tmp_path
    )
    after = torch_enc.encode(TEXTS)
    np.testing.assert_array_equal(after.dense, before.dense)
    assert encoder_fingerprint(torch_enc).weights  # digests the weights: they are there
    np.testing.assert_allclose(onnx_enc.encode(TEXTS).dense, before.dense, atol=1e-4)
    assert torch_enc.token_states([[0, 5, 2]])


def test_a_model_an_onnx_encoder_loaded_is_released_and_refused_by_name(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """``from_pretrained(backend="onnx")`` frees torch's copy of the weights (ONNX Runtime
    holds its own); building another encoder on that empty model is refused naming why,
    rather than failing in the forward pass."""
    onnx_enc = M3Encoder.from_pretrained(
        tiny_m3_path, dtype="fp32", backend="onnx", onnx_cache_dir=tmp_path
    )
    assert {p.device.type for p in onnx_enc.model.parameters()} == {"meta"}
    assert onnx_enc.encode(TEXTS).dense.shape[0] == len(TEXTS)
    with pytest.raises(ValueError, match="holds no weights.*backend='onnx' released"):
        M3Encoder(onnx_enc.model, onnx_enc.tokenizer, backend="torch")
    with pytest.raises(ValueError, match="holds no weights.*backend='onnx' released"):
        M3Encoder(onnx_enc.model, onnx_enc.tokenizer, backend="onnx", onnx_cache_dir=tmp_path)


@pytest.mark.parametrize(
    "error",
    [OSError(30, "Read-only file system"), PermissionError(13, "Permission denied")],
    ids=["read-only", "not-ours"],
)
def test_a_cache_that_cannot_be_written_names_the_settings_that_choose_another(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    """A read-only cache (a bind mount, another user's folder) without this model's export
    failed with the bare ``OSError`` of its temporary folder; it now says which settings pick a
    writable one (root can write anywhere, so the file system's refusal is reproduced)."""
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise error

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(PermissionError) as info:
        M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path / "ro")
    message = str(info.value)
    assert f"the ONNX export cache {tmp_path / 'ro'} cannot be written" in message
    assert "onnx_cache_dir=" in message and "M3KIT_CACHE" in message
    assert info.value.__cause__ is error


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_an_export_is_readable_by_whoever_may_read_new_files(
    tiny_m3_path: Path, tmp_path: Path, dtype: str
) -> None:
    """onnx writes an export's weights (``model.onnx.data``) owner-only (0600) whatever the
    umask, so a cache exported by one user (a Docker build as root, a CI job) failed to load
    for every other user with ``PermissionError`` on that file, although its folder and
    ``model.onnx`` are readable. Every file of an export now has a new file's mode (the
    umask's); the modes are checked, since root reads any file."""
    before = os.umask(0o022)
    try:
        enc = M3Encoder.from_pretrained(
            tiny_m3_path, dtype=dtype, backend="onnx", onnx_cache_dir=tmp_path
        )
    finally:
        os.umask(before)
    assert enc._onnx is not None
    folder = enc._onnx.path.parent
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in folder.iterdir()}
    assert "model.onnx.data" in modes
    assert set(modes.values()) == {oct(0o644)}, modes
    assert verified_export(folder, enc._onnx.digest)


def test_an_export_another_user_owns_unreadable_names_the_remedy(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export built before exports got readable modes (its weights 0600, another user's)
    failed with the bare ``PermissionError`` of hashing ``model.onnx.data``; it now names the
    export and how to fix it (root reads any file, so the refusal is reproduced)."""
    from m3kit.backends import onnx_cache

    M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    real = onnx_cache.sha256_file

    def refuse(path: Path) -> str:
        if path.name == "model.onnx.data":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(onnx_cache, "sha256_file", refuse)
    with pytest.raises(PermissionError) as info:
        M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    message = str(info.value)
    assert "model.onnx.data" in message and "cannot be read" in message
    assert "chmod" in message and "onnx_cache_dir=" in message


def test_a_file_system_refusing_chmod_still_exports(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Where ``chmod`` is refused (some FUSE mounts) the export is still built and used by
    its builder; the warning names the file other users cannot read."""

    def refuse(self: Path, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", refuse)
    with caplog.at_level("WARNING", logger="m3kit.backends.onnx_cache"):
        enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert len(enc.encode(TEXTS).dense) == len(TEXTS)
    assert "model.onnx.data keeps its mode (chmod refused" in caplog.text


def test_another_users_build_folder_is_skipped(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build folder another user is filling (``mkdtemp`` makes it 0700) refused the look
    at its lock with ``PermissionError``: every other user's export failed, told that the
    cache "cannot be written", while that build lasted (or forever, if it was killed)."""
    from m3kit.backends.onnx_cache import BUILD_PREFIX

    theirs = tmp_path / f"{BUILD_PREFIX}theirs"
    theirs.mkdir()
    (theirs / ".lock").write_bytes(b"")
    old = time.time() - 3600
    os.utime(theirs, (old, old))
    is_file = Path.is_file

    def not_ours(self: Path) -> bool:
        if self.parent == theirs:
            raise PermissionError(13, "Permission denied", str(self))
        return is_file(self)

    monkeypatch.setattr(Path, "is_file", not_ours)
    enc = M3Encoder.from_pretrained(tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path)
    assert len(enc.encode(TEXTS).dense) == len(TEXTS)
    assert theirs.is_dir()  # (its owner's to remove)


def test_two_threads_export_at_once(tiny_m3_path: Path, tmp_path: Path) -> None:
    """torch's exporter keeps process-wide state: two ONNX encoders loading in two threads
    at once failed (``AssertionError: GLOBALS.in_onnx_export must be ...``)."""
    import threading

    got: dict[int, Any] = {}

    def load(i: int) -> None:
        try:
            got[i] = M3Encoder.from_pretrained(
                tiny_m3_path, backend="onnx", onnx_cache_dir=tmp_path / str(i)
            ).encode(TEXTS)
        except Exception as e:  # (the failure this was)
            got[i] = e

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [v for v in got.values() if isinstance(v, Exception)], got
    np.testing.assert_allclose(got[0].dense, got[1].dense, atol=1e-6)


def test_a_cache_folder_auto_does_not_use_is_named(
    tiny_m3_path: Path, tmp_path: Path, caplog: Any
) -> None:
    """``onnx_cache_dir`` with ``backend="auto"`` (torch, but for int8 on a CPU) was ignored
    without a word: the user who gave it expected ONNX."""
    with caplog.at_level("WARNING", logger="m3kit.encoder"):
        enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", onnx_cache_dir=tmp_path)
    assert enc.backend.value == "torch"
    assert "is not used: backend 'auto' runs torch for fp32" in caplog.text
