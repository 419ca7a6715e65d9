"""M3Finetuner: what each query trains against (the collator's in-batch masking of its other
positives, hard negatives dropped or counted short); split from test_trainer.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit.finetune import FinetuneConfig, M3Finetuner, TrainingExample
from m3kit.finetune.pair_batches import PairCollator
from m3kit.finetune.positives import without_query_positives
from tests.finetune.conftest import tiny_finetune_config

_config = tiny_finetune_config


def test_collator_masks_shared_positives(tiny_m3_path: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_m3_path))
    p1, p2, p3 = "passage one", "passage two", "passage three"
    batch = [
        TrainingExample("q a", (p1,), (p2,)),
        TrainingExample("q b", (p1,), (p3,)),  # shares q a's positive
        TrainingExample("q c", (p2,), (p1,)),  # its negative is q a's positive
        TrainingExample("q d", (p3, p2), ()),  # two positives, no negative
    ]
    cfg = _config(tiny_m3_path, tmp_path / "unused", num_negatives=3, seed=0)
    out = PairCollator(tok, cfg, "")(batch)
    assert out["p_ids"].shape[0] == 3  # passages deduplicated
    targets = out["targets"].tolist()
    assert targets[0] == targets[1]  # same positive, same column, never masked for either
    exclude = out["exclude"]
    assert not exclude[0].any() and not exclude[1].any() and not exclude[2].any()
    # q d: whichever positive is its target, the other one is masked (not a negative)
    other = ({0, 1, 2} - {targets[3]} - {targets[0]}).pop()
    assert exclude[3].tolist().count(True) == 1 and exclude[3, other]

    unmasked = PairCollator(
        tok, _config(tiny_m3_path, tmp_path / "u", mask_shared_positives=False), ""
    )
    assert not unmasked(batch)["exclude"].any()


def test_collator_masks_the_positives_of_another_row_of_the_same_query(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A query with two relevant passages, written as two rows: neither row's positive is a
    negative of the other (it was trained away from it)."""
    from transformers import AutoTokenizer

    from m3kit.finetune.losses import reverse_info_nce

    tok = AutoTokenizer.from_pretrained(str(tiny_m3_path))
    batch = [
        TrainingExample("same q", ("passage one",)),
        TrainingExample("same q", ("passage two",)),
        TrainingExample("other q", ("passage three",)),
    ]
    out = PairCollator(tok, _config(tiny_m3_path, tmp_path / "unused"), "")(batch)
    targets, exclude = out["targets"].tolist(), out["exclude"]
    assert exclude[0, targets[1]] and exclude[1, targets[0]]
    assert exclude.sum() == 2 and not exclude[2].any()
    # the passage -> query term does not ask a positive to tell the two copies apart
    import torch

    scores = torch.zeros(3, 3, requires_grad=True)
    reverse_info_nce(scores, out["targets"], exclude, 0.05).backward()
    assert scores.grad is not None
    assert scores.grad[1, targets[0]] == 0 and scores.grad[0, targets[1]] == 0


def test_collator_masks_a_positive_of_the_query_given_in_a_row_outside_the_batch(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A query with two relevant passages written as two rows (FlagEmbedding's one row per
    positive, ``M3FinetuneEngine``'s pairs): when only one of its rows shared a batch with
    another query of the other passage, that passage was trained as a negative of it."""
    from transformers import AutoTokenizer

    from m3kit.finetune.positives import query_positives

    tok = AutoTokenizer.from_pretrained(str(tiny_m3_path))
    rows = [
        TrainingExample("rhine q", ("passage one",)),
        TrainingExample("rhine q", ("passage two",)),
        TrainingExample("other q", ("passage two",)),
    ]
    cfg = _config(tiny_m3_path, tmp_path / "unused")
    out = PairCollator(tok, cfg, "", query_positives(rows))([rows[0], rows[2]])
    targets, exclude = out["targets"].tolist(), out["exclude"]
    assert exclude[0, targets[1]] and exclude.sum() == 1
    # without the training set's positives only the batch's rows are known, as before
    alone = PairCollator(tok, cfg, "")([rows[0], rows[2]])
    assert not alone["exclude"].any()


def test_collator_compares_texts_with_whitespace_collapsed(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A passage that differs from a positive only in whitespace is that positive: it was
    encoded as a second column and trained as an in-batch negative of its own query."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_m3_path))
    batch = [
        TrainingExample("q a", ("passage one",)),
        TrainingExample("q b", ("passage one\n",)),  # the same passage, a trailing newline
        TrainingExample("q c ", ("passage two",)),
        TrainingExample("q c", ("passage  three",)),  # same query: both its passages relevant
    ]
    out = PairCollator(tok, _config(tiny_m3_path, tmp_path / "unused"), "")(batch)
    targets, exclude = out["targets"].tolist(), out["exclude"]
    assert out["p_ids"].shape[0] == 3 and targets[0] == targets[1]
    assert exclude[2, targets[3]] and exclude[3, targets[2]] and exclude.sum() == 2


def test_fit_drops_negatives_equal_to_a_positive_but_for_whitespace() -> None:
    rows = [
        TrainingExample("which one?", ("passage one",), ("passage two ", "passage three")),
        TrainingExample("which  one?\n", ("passage\ttwo",)),
    ]
    assert [ex.neg for ex in without_query_positives(rows)] == [("passage three",), ()]


class _Stop(Exception):
    """Raised in place of loading the start model: the checks before it are what is tested."""


def _fit_until_the_model_loads(
    cfg: FinetuneConfig, rows: list[TrainingExample], monkeypatch: pytest.MonkeyPatch
) -> None:
    import m3kit.finetune.trainer as trainer

    def stop(cfg: FinetuneConfig, passages: object) -> None:
        raise _Stop

    monkeypatch.setattr(trainer, "prepare_training", stop)
    with pytest.raises(_Stop):
        M3Finetuner(cfg).fit(rows)


def test_rows_with_fewer_negatives_than_num_negatives_are_counted_in_a_warning(
    tiny_m3_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``num_negatives=3`` on rows with fewer trained with what they had (or in-batch
    negatives only) without a word: the run looked like the 3-negative recipe it was not."""
    rows = [
        TrainingExample("q a", ("passage a",)),
        TrainingExample("q b", ("passage b",), ("n1",)),
        TrainingExample("q c", ("passage c",), ("n2",)),
        TrainingExample("q d", ("passage d",), ("n1", "n2", "n3")),
    ]
    cfg = _config(tiny_m3_path, tmp_path / "unused", num_negatives=3)
    with caplog.at_level("WARNING", logger="m3kit.finetune"):
        _fit_until_the_model_loads(cfg, rows, monkeypatch)
    shortfall = [r for r in caplog.records if "num_negatives" in r.getMessage()]
    assert len(shortfall) == 1  # once per fit
    message = shortfall[0].getMessage()
    assert message.startswith(
        "3 of 4 training rows carry fewer hard negatives than num_negatives=3 "
        "(1 row with 0, 2 rows with 1)"
    )

    caplog.clear()  # none at all: in-batch negatives only, said so
    with caplog.at_level("WARNING", logger="m3kit.finetune"):
        _fit_until_the_model_loads(cfg, [rows[0], TrainingExample("q e", ("e",))], monkeypatch)
    assert "num_negatives=3 but none of the 2 training rows carries a hard negative" in (
        caplog.text
    )

    caplog.clear()  # enough negatives, or none asked for: nothing to say
    with caplog.at_level("WARNING", logger="m3kit.finetune"):
        _fit_until_the_model_loads(cfg, rows[3:], monkeypatch)
        none_asked = _config(tiny_m3_path, tmp_path / "unused", num_negatives=0)
        _fit_until_the_model_loads(none_asked, rows, monkeypatch)
    assert "num_negatives" not in caplog.text


def test_a_negative_that_another_row_of_the_query_has_as_positive_is_dropped(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query written as one row per relevant passage, negatives mined per row: one row's
    negative is the other row's positive. In-batch masking sees it only when both rows share
    a batch; fit drops it from the row's negatives whatever the batches are."""
    import m3kit.finetune.trainer as trainer

    seen: list[list[TrainingExample]] = []

    def capture(cfg: object, setup: object, module: object, examples: list, c: object) -> None:
        seen.append(list(examples))
        raise SystemExit(0)

    monkeypatch.setattr(trainer, "run_training", capture)
    rows = [
        TrainingExample("same q", ("passage one",), ("passage two", "passage three")),
        TrainingExample("same q", ("passage two",), ("passage four",)),
        TrainingExample("other q", ("passage five",), ("passage one",)),
    ]
    for mask in (True, False):
        with pytest.raises(SystemExit):
            M3Finetuner(_config(tiny_m3_path, tmp_path / "m", mask_shared_positives=mask)).fit(rows)
    assert [ex.neg for ex in seen[0]] == [("passage three",), ("passage four",), ("passage one",)]
    assert seen[1] == rows  # mask_shared_positives=False: the rows as given


def test_a_passage_given_as_relevant_is_no_negative_of_its_query(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fit(positives=...)``: a relevant passage no row of the query carries (trained on its
    first relevant doc only) is dropped from its negatives and masked in every batch."""
    import m3kit.finetune.trainer as trainer

    seen: list[tuple[list[TrainingExample], object]] = []

    def capture(cfg: object, setup: object, module: object, examples: list, c: object) -> None:
        seen.append((list(examples), c))
        raise SystemExit(0)

    monkeypatch.setattr(trainer, "run_training", capture)
    rows = [
        TrainingExample("q one", ("passage one",), ("passage two", "passage three")),
        TrainingExample("q two", ("passage two",)),
    ]
    finetuner = M3Finetuner(_config(tiny_m3_path, tmp_path / "m"))
    with pytest.raises(SystemExit):
        finetuner.fit(rows, positives={" q  one": ["passage one", "passage two\n"]})
    ((examples, collator),) = seen
    assert [ex.neg for ex in examples] == [("passage three",), ()]
    assert collator.positives["q one"] == {"passage one", "passage two"}  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="positives must map each query text to a list"):
        finetuner.fit(rows, positives={"q one": "passage two"})


def test_relevant_passages_given_as_iterators_are_all_kept() -> None:
    """``query_positives(also=...)`` takes any iterable: an iterator was used up by the type
    check and its passages dropped."""
    from m3kit.finetune.positives import query_positives

    rows = [TrainingExample("q", ("a",))]
    assert sorted(query_positives(rows, also={"q": iter(["b", "c"])})["q"]) == ["a", "b", "c"]


def test_the_positives_functions_are_still_importable_from_data() -> None:
    """They moved to ``m3kit.finetune.positives``; ``m3kit.finetune.data`` listed them."""
    import m3kit.finetune.data as data
    import m3kit.finetune.positives as positives

    for name in sorted(data._MOVED_TO_POSITIVES):
        assert getattr(data, name) is getattr(positives, name)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        data.nothing  # noqa: B018
