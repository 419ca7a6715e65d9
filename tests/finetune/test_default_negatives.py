"""Hard negatives per query: one default for the API and the CLI (1, measured in README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit.finetune import FinetuneConfig, TrainingExample, write_jsonl
from m3kit.finetune.data import DEFAULT_NEGATIVES
from m3kit.finetune.trainer import M3Finetuner
from tests.finetune.cli_runs import run_cli


class _Stop(Exception):
    """Raised by the stand-in ``fit`` once it has seen the CLI's config."""


def test_one_hard_negative_by_default(tmp_path: Path) -> None:
    assert DEFAULT_NEGATIVES == 1  # README "Fine-tuning": 1 scored as 3 at half the passages
    assert FinetuneConfig("model", tmp_path).num_negatives == DEFAULT_NEGATIVES
    assert FinetuneConfig.flagembedding("model", tmp_path).num_negatives == 3  # its recipe


@pytest.mark.parametrize(
    ("given", "expected"), [([], DEFAULT_NEGATIVES), (["--negatives", "3"], 3)]
)
def test_the_cli_trains_with_the_library_default_unless_told(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
    given: list[str],
    expected: int,
) -> None:
    seen: list[FinetuneConfig] = []

    def fit(self: M3Finetuner, examples: object) -> None:
        seen.append(self.config)
        raise _Stop

    monkeypatch.setattr(M3Finetuner, "fit", fit)
    train = write_jsonl(toy_examples, tmp_path / "t.jsonl")
    argv = ["finetune", "--model", str(tiny_m3_path), "--train", str(train)]
    with pytest.raises(_Stop):
        run_cli([*argv, "--output", str(tmp_path / "out"), "--quiet", *given])
    assert [c.num_negatives for c in seen] == [expected]
