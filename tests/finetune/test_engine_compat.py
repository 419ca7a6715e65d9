"""``M3FinetuneEngine`` called as LlamaIndex's ``SentenceTransformersFinetuneEngine`` is, and
a ``torch.device`` as the training device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from m3kit.finetune import M3Finetuner, QADataset, TrainingExample
from tests.finetune.conftest import tiny_finetune_config


class _Stop(Exception):
    """Raised by the spies below once they have what the test checks."""


def test_a_torch_device_cpu_trains_on_the_cpu(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``device=torch.device("cpu")`` (what LlamaIndex's engine and sentence-transformers
    take) compared unequal to ``"cpu"``, so the Trainer was not told to use the CPU and
    trained on the GPU where there is one."""
    import transformers

    seen: dict[str, Any] = {}

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(transformers, "TrainingArguments", spy)
    cfg = tiny_finetune_config(tiny_m3_path, tmp_path / "ft", device=torch.device("cpu"))
    assert cfg.device == "cpu"
    with pytest.raises(_Stop):
        M3Finetuner(cfg).fit(toy_examples)
    assert seen["use_cpu"] is True


def _engine(**kwargs: Any) -> Any:
    from llamaindex_m3.finetune import M3FinetuneEngine

    return M3FinetuneEngine(**kwargs)


def _two_docs_dataset() -> QADataset:
    """Two queries; the first has two relevant docs."""
    return QADataset(
        queries={"q0": "Where does the Rhine flow?", "q1": "What is oxygen?"},
        corpus={"a": "The Rhine flows to the North Sea.", "b": "The Rhine starts in the Alps."}
        | {"c": "Oxygen is element 8."},
        relevant_docs={"q0": ["a", "b"], "q1": ["c"]},
    )


def test_a_sentence_transformers_engine_call_is_accepted_with_its_meaning(
    tmp_path: Path,
) -> None:
    """LlamaIndex's keywords (``dataset=``, ``loss=None``, ``use_all_docs``, ``device``, the
    checkpoint options at their defaults, ...) raised "unexpected keyword argument"."""
    data = _two_docs_dataset()
    engine = _engine(
        dataset=data,
        model_id="BAAI/bge-m3",
        model_output_path=str(tmp_path / "out"),
        batch_size=4,
        val_dataset=data,
        loss=None,
        epochs=3,
        show_progress_bar=False,
        use_all_docs=False,
        trust_remote_code=False,
        device=torch.device("cpu"),
        save_checkpoints=False,
        resume_from_checkpoint=False,
        checkpoint_save_steps=500,
        checkpoint_save_total_limit=0,
    )
    assert engine.train_dataset == data and engine.val_dataset == data
    assert (engine.config.batch_size, engine.config.epochs) == (4, 3.0)
    assert engine.config.device == "cpu" and engine.config.show_progress is False
    # use_all_docs=False: the first relevant doc of each query, as LlamaIndex trains
    assert [ex.pos for ex in engine._examples()] == [
        ("The Rhine flows to the North Sea.",),
        ("Oxygen is element 8.",),
    ]
    every = _engine(dataset=data, model_output_path=str(tmp_path / "o"))
    assert every.use_all_docs is True
    # use_all_docs=True: one example per (query, relevant doc) pair, as LlamaIndex trains
    assert [(ex.query, ex.pos) for ex in every._examples()] == [
        ("Where does the Rhine flow?", ("The Rhine flows to the North Sea.",)),
        ("Where does the Rhine flow?", ("The Rhine starts in the Alps.",)),
        ("What is oxygen?", ("Oxygen is element 8.",)),
    ]


def test_use_all_docs_trains_every_query_and_relevant_doc_pair(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """LlamaIndex's engine trains one example per (query, relevant doc) pair with
    ``use_all_docs=True``; ours drew one relevant doc per query per epoch, so a query with
    three relevant docs was trained a third as often and the run took fewer steps."""
    data = QADataset(
        queries={"q0": "Where does the Rhine flow?", "q1": "What is oxygen?"},
        corpus={"a": "The Rhine flows to the North Sea.", "b": "The Rhine starts in the Alps."}
        | {"x": "The Rhine passes Basel.", "c": "Oxygen is element 8."},
        relevant_docs={"q0": ["a", "b", "x"], "q1": ["c"]},
    )
    common: dict[str, Any] = {
        "model_id": str(tiny_m3_path),
        "batch_size": 2,  # 1 is refused: with no hard negatives it would train nothing
        "epochs": 1,
        "show_progress_bar": False,
        "device": "cpu",
        "passage_max_length": 32,
    }
    every = _engine(dataset=data, model_output_path=str(tmp_path / "all"), **common).finetune()
    # LlamaIndex: 4 InputExamples, len(DataLoader(examples, batch_size=2)) == 2 steps
    assert (every.examples, every.steps) == (4, 2)
    first = _engine(
        dataset=data, model_output_path=str(tmp_path / "first"), use_all_docs=False, **common
    ).finetune()
    assert (first.examples, first.steps) == (2, 1)


def test_first_doc_training_never_mines_the_other_relevant_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``use_all_docs=False`` the mining still knows every relevant doc as a positive."""
    import m3kit.encoder
    import m3kit.finetune.mining as mining

    mined_with: list[tuple[str, ...]] = []

    def fake_mine(encoder: Any, examples: Any, corpus: Any, **kw: Any) -> Any:
        mined_with.extend(ex.pos for ex in examples)
        return [TrainingExample(ex.query, ex.pos, ("Unrelated text.",)) for ex in examples]

    monkeypatch.setattr(mining, "mine_hard_negatives", fake_mine)
    monkeypatch.setattr(m3kit.encoder.M3Encoder, "from_pretrained", lambda *a, **k: None)
    engine = _engine(
        dataset=_two_docs_dataset(),
        model_output_path=str(tmp_path),
        use_all_docs=False,
        mine_negatives=1,
    )
    examples = engine._examples()
    assert [len(p) for p in mined_with] == [2, 1]
    assert [(len(ex.pos), ex.neg) for ex in examples] == [(1, ("Unrelated text.",))] * 2


@pytest.mark.parametrize("shown", [True, False])
def test_mining_shows_progress_as_the_engine_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: bool
) -> None:
    """``show_progress_bar=False`` printed the mining's encode bars all the same."""
    import m3kit.encoder
    import m3kit.finetune.mining as mining

    given: list[Any] = []

    def fake_mine(encoder: Any, examples: Any, corpus: Any, **kw: Any) -> Any:
        given.append(kw.get("show_progress"))
        return list(examples)

    monkeypatch.setattr(mining, "mine_hard_negatives", fake_mine)
    monkeypatch.setattr(m3kit.encoder.M3Encoder, "from_pretrained", lambda *a, **k: None)
    engine = _engine(
        dataset=_two_docs_dataset(),
        model_output_path=str(tmp_path),
        mine_negatives=1,
        show_progress_bar=shown,
    )
    engine._examples()
    assert given == [shown]


def test_first_doc_training_never_makes_another_relevant_doc_an_in_batch_negative(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``use_all_docs=False`` a query's second relevant doc, in the batch as another
    query's positive, was scored as its negative (``use_all_docs=True`` masked it)."""
    from m3kit.finetune import pair_batches

    data = QADataset(
        queries={"q0": "capital of France", "q1": "which city is on the Seine"},
        corpus={"d0": "Paris is the capital of France.", "d1": "Paris lies on the Seine."},
        relevant_docs={"q0": ["d0", "d1"], "q1": ["d1"]},
    )
    batches: list[tuple[list[TrainingExample], dict[str, torch.Tensor]]] = []
    collate = pair_batches.PairCollator.__call__

    def spy(self: Any, batch: list[TrainingExample]) -> dict[str, torch.Tensor]:
        batches.append((list(batch), collate(self, batch)))
        raise _Stop

    monkeypatch.setattr(pair_batches.PairCollator, "__call__", spy)
    engine = _engine(
        dataset=data,
        model_id=str(tiny_m3_path),
        model_output_path=str(tmp_path / "ft"),
        use_all_docs=False,
        batch_size=8,
        show_progress_bar=False,
        device="cpu",
    )
    with pytest.raises(_Stop):
        engine.finetune()
    ((rows, out),) = batches
    # one row per query (its first relevant doc), in the order the trainer shuffled them to
    pairs = {ex.query: (i, ex.pos) for i, ex in enumerate(rows)}
    assert {q: pos for q, (_, pos) in pairs.items()} == {
        "capital of France": ("Paris is the capital of France.",),
        "which city is on the Seine": ("Paris lies on the Seine.",),
    }
    q0, q1 = pairs["capital of France"][0], pairs["which city is on the Seine"][0]
    targets = out["targets"].tolist()
    assert out["exclude"][q0, targets[q1]]  # d1: relevant to q0, never its negative
    assert out["exclude"].sum() == 1  # d0 stays q1's negative


def test_an_empty_train_dataset_or_a_missing_gpu_is_refused_when_the_engine_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both were accepted by ``__init__`` (an empty ``val_dataset`` is refused there) and
    failed only in ``finetune()``, the GPU after the start model had loaded."""
    empty = QADataset(queries={}, corpus={}, relevant_docs={})
    with pytest.raises(ValueError, match="train_dataset has no queries"):
        _engine(dataset=empty, model_output_path=str(tmp_path))
    with pytest.raises(ValueError, match="train_dataset has no queries"):
        _engine(dataset=[], model_output_path=str(tmp_path), late_chunking=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available here"):
        _engine(dataset=_two_docs_dataset(), model_output_path=str(tmp_path), device="cuda")
    for seed in (None, -1, 1.5):
        with pytest.raises(ValueError, match="seed must be"):
            _engine(dataset=_two_docs_dataset(), model_output_path=str(tmp_path), seed=seed)


def test_the_training_data_is_given_once(tmp_path: Path) -> None:
    data = _two_docs_dataset()
    with pytest.raises(TypeError, match=r"train_dataset and dataset .* one"):
        _engine(train_dataset=data, dataset=data)
    with pytest.raises(TypeError, match=r"no training data: give train_dataset"):
        _engine(model_output_path=str(tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": object()}, r"loss: .*own contrastive loss.*drop loss="),
        ({"trust_remote_code": True}, r"trust_remote_code=True: .*not supported"),
        ({"save_checkpoints": True}, r"save_checkpoints=True: .*only the final model"),
        ({"resume_from_checkpoint": True}, r"resume_from_checkpoint=True: .*cannot resume"),
        ({"evaluation_steps": 50, "val": True}, r"evaluation_steps: .*once, after training"),
    ],
)
def test_llamaindex_options_m3kit_cannot_honour_are_refused_by_name(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    """These were "unexpected keyword argument" errors; silently accepting them would train
    something other than what the call asks for."""
    data = _two_docs_dataset()
    if kwargs.pop("val", False):
        kwargs["val_dataset"] = data
    with pytest.raises(ValueError, match=message):
        _engine(dataset=data, model_output_path=str(tmp_path), **kwargs)


def test_evaluation_steps_without_a_validation_set_does_nothing_as_in_llamaindex(
    tmp_path: Path,
) -> None:
    engine = _engine(
        dataset=_two_docs_dataset(), model_output_path=str(tmp_path), evaluation_steps=50
    )
    assert engine.val_dataset is None


def test_a_negative_mine_negatives_is_refused(tiny_m3_path: Path, tmp_path: Path) -> None:
    """It was read as 0: no mining, and the run trained on in-batch negatives only."""
    from llamaindex_m3.finetune import M3FinetuneEngine

    data = QADataset({"q": "Where is Warsaw?"}, {"d": "Warsaw is in Poland."}, {"q": ["d"]})
    with pytest.raises(ValueError, match="mine_negatives"):
        M3FinetuneEngine(data, model_id=str(tiny_m3_path), mine_negatives=-2)


@pytest.mark.parametrize("value", [1.5, "2", True])
def test_a_mine_negatives_that_is_not_an_int_is_refused(
    value: object, tiny_m3_path: Path, tmp_path: Path
) -> None:
    """``int()`` read 1.5 as 1 and ``True`` as 1: mined and trained one negative a query, as
    ``FinetuneConfig(num_negatives=1.5)`` no longer does; ``"2"`` failed in ``int`` only
    after the dataset was read."""
    from llamaindex_m3.finetune import M3FinetuneEngine

    data = QADataset({"q": "Where is Warsaw?"}, {"d": "Warsaw is in Poland."}, {"q": ["d"]})
    with pytest.raises(ValueError, match=r"mine_negatives must be a whole number \(an int\)"):
        M3FinetuneEngine(data, model_id=str(tiny_m3_path), mine_negatives=value)
