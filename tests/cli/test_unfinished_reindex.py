"""``m3kit search`` / ``m3kit index`` on a collection part-way through an encoder reindex are
refused from the collection's record, before a model loads, with the message ``M3Index.open``
gives: before, with ``--model`` the model loaded first (a minute for BGE-M3) and only then was
the collection refused; without it the refusal was the command's own, not the library's."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.errors import FingerprintMismatchError
from m3kit.store import M3Index
from tests.reliability.killing import FailingEncoder


def _interrupted_reindex(tmp_path: Path, enc_a: M3Encoder, enc_b: M3Encoder, backend: str) -> Path:
    """A collection indexed with A whose reindex to B was cut short."""
    store = tmp_path / "store"
    with M3Index.open(enc_a, str(store), backend=backend) as index:
        index.add_texts([f"document {i} is about topic {i % 3}." for i in range(10)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(M3Index, "write_group", 4)
        with pytest.raises(RuntimeError, match="interrupted"):
            M3Index.open(
                FailingEncoder(enc_b, 2),  # type: ignore[arg-type]
                str(store),
                backend=backend,
                reindex=True,
            )
    return store


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_an_unfinished_reindex_is_refused_before_a_model_loads(
    tmp_path: Path,
    enc_a: M3Encoder,
    enc_b: M3Encoder,
    tiny_m3_path: Path,
    path_b: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    store = _interrupted_reindex(tmp_path, enc_a, enc_b, backend)
    refusals = set()
    for encoder in (enc_a, enc_b):  # the one it was indexed with, the one it goes to
        with pytest.raises(FingerprintMismatchError) as refused:
            M3Index.open(encoder, str(store), backend=backend)
        refusals.add(str(refused.value))
    assert len(refusals) == 1, refusals  # whichever encoder: the same refusal
    expected = refusals.pop().splitlines()[0]
    assert "part-way through a reindex to" in expected
    load = M3Encoder.from_pretrained

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(M3Encoder, "from_pretrained", no_model)
    where = ["--path", str(store), "--backend", backend, "--dtype", "fp32", "-q"]
    doc = tmp_path / "new.txt"
    doc.write_text("a new document about topic 1.", encoding="utf-8")
    for command in (["search", "topic"], ["index", str(doc)]):
        for model in ([], ["--model", str(tiny_m3_path)], ["--model", str(path_b)]):
            capsys.readouterr()
            assert main([*command, *where, *model]) == 1
            err = capsys.readouterr().err.strip()
            assert err == f"m3kit {command[0]}: error: {expected}", err
    # `m3kit index --reindex` still finishes it (without --model: with the pending model)
    monkeypatch.setattr(M3Encoder, "from_pretrained", load)
    assert main(["index", "--reindex", *where]) == 0, capsys.readouterr().err
    with M3Index.open(enc_b, str(store), backend=backend) as index:
        assert "reindex_to" not in index.store.collection_metadata()
    capsys.readouterr()
    assert main(["search", "topic", *where]) == 0, capsys.readouterr().err
    assert "document" in capsys.readouterr().out
