"""``m3kit search`` / ``m3kit index`` on a collection part-way through a sparse cut change are
refused from the collection's record, before a model loads (as an unfinished encoder reindex
is): before, the refusal came only once the model had loaded and the index was opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.cli import main
from m3kit.store import M3Index, M3Store
from m3kit.store.sparse_cut import PENDING_KEY, SparseCut, unfinished_message


def _interrupted_cut_change(tmp_path: Path, model: Path, backend: str) -> Path:
    """A collection indexed without a cut whose change to ``sparse_top_k=2`` was cut short."""
    docs, store = tmp_path / "docs", tmp_path / "store"
    docs.mkdir()
    for i in range(10):
        (docs / f"{i}.txt").write_text(f"document {i} is about topic {i % 3}.", encoding="utf-8")
    argv = ["index", str(docs), "--path", str(store), "--model", str(model), "-q"]
    assert main([*argv, "--backend", backend]) == 0
    upsert = M3Store.upsert
    calls: list[int] = []

    def failing(self: M3Store, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("write interrupted")
        return upsert(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(M3Index, "write_group", 4)
        patch.setattr(M3Store, "upsert", failing)
        with pytest.raises(RuntimeError, match="write interrupted"):
            M3Index.open(
                M3Encoder.from_pretrained(model),
                str(store),
                backend=backend,
                sparse_top_k=2,
                reindex=True,
            )
    return store


@pytest.mark.parametrize("backend", ["edge", "client"])
def test_an_unfinished_cut_change_is_refused_before_a_model_loads(
    tmp_path: Path,
    tiny_m3_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    store = _interrupted_cut_change(tmp_path, tiny_m3_path, backend)
    expected = unfinished_message("m3kit", SparseCut(), SparseCut(2)).splitlines()[0]
    load = M3Encoder.from_pretrained

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(M3Encoder, "from_pretrained", no_model)
    where = ["--path", str(store), "--backend", backend, "-q"]
    doc = tmp_path / "docs" / "0.txt"
    for command in (["search", "topic"], ["index", str(doc)]):
        for model in ([], ["--model", str(tiny_m3_path)]):  # the recorded model, or --model
            capsys.readouterr()
            assert main([*command, *where, *model]) == 1
            err = capsys.readouterr().err.strip()
            assert err == f"m3kit {command[0]}: error: {expected}", err
    # `m3kit index --reindex` still finishes it (left out, the pending cut), then search works
    monkeypatch.setattr(M3Encoder, "from_pretrained", load)
    assert main(["index", "--reindex", *where]) == 0, capsys.readouterr().err
    with M3Index.open(M3Encoder.from_pretrained(tiny_m3_path), str(store), backend=backend) as ix:
        assert ix.sparse_cut == SparseCut(2)
        assert PENDING_KEY not in ix.store.collection_metadata()
    capsys.readouterr()
    assert main(["search", "topic", *where]) == 0, capsys.readouterr().err
    assert "document" in capsys.readouterr().out
