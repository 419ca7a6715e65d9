"""``m3kit eval`` and ``m3kit calibrate`` on the tiny checkpoint: the queries they count, the
fusion they use and the inputs they refuse (the other finetune subcommands:
test_cli_commands.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.store import FusionCalibration
from tests.finetune.beir_folders import numbered, write_beir
from tests.finetune.cli_runs import run_cli


def test_cli_eval_counts_the_queries_it_averages(tiny_m3_path: Path, tmp_path: Path) -> None:
    """meta.queries counted a query judged only with grade 0, which no metric averages; an
    empty folder failed in encoding ("need at least one array to stack")."""
    data = tmp_path / "beir"
    data.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        (data / name).write_text("")
    with pytest.raises(ValueError, match=f"no queries with relevant passages in {data}$"):
        run_cli(["eval", "--model", str(tmp_path / "not-loaded"), "--data", str(data)])
    texts = ["The Rhine flows to the North Sea.", "Oxygen has atomic number 8.", "Warsaw."]
    corpus, queries = numbered("d", texts), numbered("q", [t[:12] for t in texts])
    write_beir(data, corpus, queries, "q0\td0\t1\nq1\td1\t1\nq2\td2\t0\n")
    report = tmp_path / "report"
    argv = ["eval", "--model", str(tiny_m3_path), "--data", str(data), "--output", str(report)]
    assert run_cli([*argv, "--quiet"]) == 0
    saved = json.loads((report / "report.json").read_text())
    assert saved["meta"]["queries"] == saved["model"]["dense"]["queries"] == 2
    assert saved["meta"]["queries_dropped"] == 1
    caption = "2 queries averaged (1 judged only with grade 0 left out)"
    assert (report / "report.md").read_text().endswith(f"\n\n{caption}\n")


def test_cli_eval_fuses_with_the_checkpoints_calibrated_weights(
    tiny_m3_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fused row used FlagEmbedding's 0.4/0.2/0.4 whatever the checkpoint's calibration
    chose, so `m3kit eval` reported a fusion its searches never run; --weights wins."""
    from m3kit.finetune.evaluate import evaluate_heads
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.store import SearchSettings
    from m3kit.store.fusion_calibration import calibrated_encoder_identity

    model = tmp_path / "model"
    shutil.copytree(tiny_m3_path, model)
    words = [
        "river",
        "sea",
        "oxygen",
        "number",
        "city",
        "bridge",
        "music",
        "river",
        "paint",
        "glass",
        "stone",
        "wind",
    ]
    corpus = {
        f"d{i}": f"{w} {words[(i + 3) % 12]} {words[(i + 5) % 12]}" for i, w in enumerate(words)
    }
    queries = {f"q{i}": f"{words[(i + 1) % 12]} {w}" for i, w in enumerate(words)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(12)}
    qrels_text = "".join(f"q{i}\td{i}\t1\n" for i in range(12))
    data = write_beir(tmp_path / "beir", corpus, queries, qrels_text)
    encoder = M3Encoder.from_pretrained(model)
    fp = encoder_fingerprint(encoder)
    calibrated = (0.0, 1.0, 0.0)
    FusionCalibration(
        all_heads=SearchSettings(fusion="m3", weights=calibrated, rerank=True),
        dense_sparse=None,
        weights_digest=fp.weights,
        encoder_identity=calibrated_encoder_identity(fp),
    ).save(model)

    def fused_row(extra: list[str]) -> dict[str, float]:
        out = tmp_path / f"report{len(extra)}"
        argv = ["eval", "--model", str(model), "--data", str(data), "--output", str(out)]
        assert run_cli([*argv, *extra, "--quiet"]) == 0
        return dict(json.loads((out / "report.json").read_text())["model"]["fused"])

    def expected(weights: tuple[float, float, float]) -> dict[str, float]:
        report = evaluate_heads(encoder, corpus, queries, qrels, weights=weights)
        return dict(report.metrics["fused"])

    assert expected(calibrated) != expected((0.4, 0.2, 0.4))  # the weights change the row
    assert fused_row([]) == expected(calibrated)
    assert fused_row(["--weights", "0.4", "0.2", "0.4"]) == expected((0.4, 0.2, 0.4))
    with pytest.raises(SystemExit):  # argparse: --weights takes three numbers
        fused_row(["--weights", "1", "2"])
    capsys.readouterr()
    # calibrated without a sparse cut, evaluated with one: the weights are used (as an index
    # with that cut uses them), and the printed source says they were fitted to uncut scores
    fused_row(["--sparse-top-k", "2"])
    out = capsys.readouterr().out
    assert "warning: the search calibration was measured with no sparse cut" in out
    assert "this collection has sparse_top_k=2" in out
    fused_row([])
    assert "warning" not in capsys.readouterr().out
    # head subsets: no sparse head left nothing to fuse (the source said the file "chose
    # rrf for these heads", which it never did); without dense, the weights were fitted with it
    fused_row(["--heads", "dense,colbert"])
    assert "fuses dense and sparse, and these heads hold no sparse" in capsys.readouterr().out
    fused_row(["--heads", "sparse,colbert"])
    assert "fitted with the dense head in the sum" in capsys.readouterr().out


def test_cli_calibrate_refuses_a_sole_test_split_by_default(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    """A BEIR folder whose only qrels split is qrels/test.tsv (most BEIR data sets) was read
    by ``m3kit calibrate`` / ``finetune --validation`` with no split named: the fusion was
    fitted on the test set that ``m3kit eval`` then reports. Fitting on it needs
    ``--split test`` (``--validation-split test``); ``eval`` still reads it by default."""
    texts = ["The Rhine flows to the North Sea.", "Oxygen has atomic number 8.", "Warsaw."]
    corpus, queries = numbered("d", texts), numbered("q", [t[:12] for t in texts])
    qrels_text = "query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n"
    data = write_beir(tmp_path / "beir", corpus, queries, qrels_text, split="test")
    model = tmp_path / "model"
    shutil.copytree(tiny_m3_path, model)
    finetune = ["finetune", "--model", str(model), "--output", str(tmp_path / "o")]
    finetune += ["--train", str(tmp_path / "unread.jsonl"), "--validation", str(data)]
    for argv, flag in (
        (["calibrate", "--model", str(model), "--data", str(data)], "--split test"),
        (finetune, "--validation-split test"),
    ):
        with pytest.raises(ValueError, match=f"only qrels split is test.*{flag}"):
            run_cli([*argv, "--quiet"])
    assert FusionCalibration.load(model) is None
    assert run_cli(["eval", "--model", str(model), "--data", str(data), "--quiet"]) == 0
    argv = ["calibrate", "--model", str(model), "--data", str(data), "--split", "test"]
    assert run_cli([*argv, "--grid-step", "0.5", "--quiet"]) == 0
    saved = FusionCalibration.load(model)
    assert saved is not None and saved.queries == 2


@pytest.mark.parametrize("weights", [["-1", "0", "0"], ["0", "0", "0"], ["nan", "1", "1"]])
def test_cli_eval_refuses_bad_weights_before_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: list[str]
) -> None:
    """`m3kit eval --weights -1 0 0` loaded the model (and the baseline, and encoded its
    corpus) before the fused row refused the weights; now no model is loaded."""
    data = write_beir(
        tmp_path / "beir",
        {"d0": "river"},
        {"q0": "river"},
        "query-id\tcorpus-id\tscore\nq0\td0\t1\n",
    )
    loads: list[object] = []
    monkeypatch.setattr(M3Encoder, "from_pretrained", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError, match="weights must be finite, >= 0 and not all 0"):
        run_cli(["eval", "--model", "x", "--data", str(data), "--weights", *weights, "--quiet"])
    assert loads == []
