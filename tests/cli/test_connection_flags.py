"""``--qdrant-timeout`` / ``--qdrant-max-request-mb`` reach every request ``m3kit`` sends to
a server, and are refused without ``--qdrant-url``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from m3kit import cli_open
from m3kit.cli import build_parser, main
from m3kit.store import ConnectionSettings

REPO = Path(__file__).resolve().parents[2]
#: The ``qdrant_recorder`` fixture (tests/conftest.py): url, requests, state.
Server = tuple[str, list[tuple[str, str, Any]], dict[str, Any]]
FLAGS = ["--qdrant-timeout", "13", "--qdrant-max-request-mb", "2"]


def _model_args(model: Path) -> list[str]:
    return ["--model", str(model), "--dtype", "fp32", "--quiet", "--collection", "c"]


def test_index_sends_them_to_every_client_and_write(
    qdrant_recorder: Server,
    client_kwargs: list[dict[str, Any]],
    tiny_m3_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``m3kit index --qdrant-url`` had no way to set a timeout or the server's request
    limit: every request used qdrant-client's 5 s, every write was split to fit 32 MiB."""
    import m3kit.store.store_writes as store_writes

    limits: list[int | None] = []
    fitting = store_writes.fitting_batch_size

    def spy(points: Any, size: int, limit: int | None, values: int | None = None) -> int:
        limits.append(limit)
        return fitting(points, size, limit, values)

    monkeypatch.setattr(store_writes, "fitting_batch_size", spy)
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "examples" / "sample_docs", docs)
    url, _, state = qdrant_recorder
    code = main(["index", str(docs), "--qdrant-url", url, *FLAGS, *_model_args(tiny_m3_path)])
    assert code == 0, capsys.readouterr().err
    assert state["points"]
    servers = [kw for kw in client_kwargs if "url" in kw]
    assert len(servers) >= 2  # the record read before the model loads, then the index
    assert {kw["timeout"] for kw in servers} == {13}
    assert limits and set(limits) == {2 * 1024 * 1024}


def test_search_reads_them() -> None:
    args = build_parser().parse_args(
        ["search", "q", "--qdrant-url", "http://127.0.0.1:9", "--qdrant-timeout", "13"]
    )
    assert cli_open.storage(args)["connection"] == ConnectionSettings(timeout=13)
    args = build_parser().parse_args(["search", "q", "--qdrant-url", "http://127.0.0.1:9"])
    assert cli_open.storage(args)["connection"] is None


@pytest.mark.parametrize("command", ["index", "search"])
def test_without_a_server_they_are_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = str(tmp_path) if command == "index" else "q"
    store = ["--path", str(tmp_path / "store"), "--model", str(tmp_path / "no-model")]
    assert main([command, first, *store, *FLAGS]) == 1
    err = capsys.readouterr().err
    assert "--qdrant-timeout, --qdrant-max-request-mb configure requests to a Qdrant" in err
    assert "need --qdrant-url" in err


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "x"])
def test_bad_values_are_argument_errors(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["search", "q", "--qdrant-url", "u", "--qdrant-timeout", value])
    assert exit_.value.code == 2
    assert "--qdrant-timeout" in capsys.readouterr().err
