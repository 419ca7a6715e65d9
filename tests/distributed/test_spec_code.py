"""EncoderSpec: a worker running another m3kit refuses to load.

The parent computes each document's version; a Ray actor cuts and encodes it with its own
m3kit. An actor on a node with another m3kit (same version string, a commit apart) stored
68 chunks where the parent's code cuts 59, under the parent's version: every re-run then
skipped those documents as stored.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import m3kit
from m3kit import M3Encoder
from m3kit.distributed import EncoderSpec
from m3kit.distributed.spec import code_digest


def test_a_worker_running_other_m3kit_code_refuses_to_load(tiny_encoder: M3Encoder) -> None:
    spec = EncoderSpec.of(tiny_encoder)
    assert spec.code == code_digest()
    spec.load("cpu")  # the same code: loads
    other = dataclasses.replace(spec, code="0" * 16)
    with pytest.raises(ValueError, match="runs another m3kit than the parent"):
        other.load("cpu")


def test_the_digest_changes_with_any_source_file(tmp_path: Path) -> None:
    copy = tmp_path / "m3kit"
    shutil.copytree(Path(m3kit.__file__).parent, copy, ignore=shutil.ignore_patterns("*.pyc"))
    changed = copy / "chunk_spans.py"
    changed.write_text(changed.read_text() + "\n# a local patch\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = "import m3kit.distributed.spec as s, m3kit; print(m3kit.__file__, s.code_digest())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == str(copy / "__init__.py")
    assert out[1] != code_digest()


def test_a_worker_without_the_checkpoint_folder_is_told_every_node_needs_it(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    # a hub id resolves to the parent's snapshot folder: a node without it said only
    # "checkpoint folder '.../snapshots/0123...' does not exist", a path the user never gave
    spec = dataclasses.replace(EncoderSpec.of(tiny_encoder), path=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="every node needs that folder at that path"):
        spec.load("cpu")


def test_an_editors_lock_file_in_the_package_is_not_source(tmp_path: Path) -> None:
    # Emacs keeps ".#chunk_spans.py", a dangling link, beside a modified buffer: the digest
    # failed with FileNotFoundError, and so did pickling M3Embeddings and every Ray run
    copy = tmp_path / "m3kit"
    shutil.copytree(Path(m3kit.__file__).parent, copy, ignore=shutil.ignore_patterns("*.pyc"))
    (copy / ".#chunk_spans.py").symlink_to("user@host.1234:1700000000")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = "import m3kit.distributed.spec as s; print(s.code_digest())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [code_digest()]  # the same source as this install's
