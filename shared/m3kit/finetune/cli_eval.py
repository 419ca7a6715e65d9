"""``m3kit eval``: each head and the fused rankings of a checkpoint (and a baseline) on a
BEIR folder, under the collections' sparse cut (the subcommand's flags are in
:mod:`m3kit.finetune.cli`)."""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3kit.finetune.cli_args import check_output_place, split_list

if TYPE_CHECKING:
    from m3kit.store.sparse_cut import SparseCut

__all__ = ["fused_weights", "has_relevant", "read_beir", "run_eval", "say_identical_ids"]


def fused_weights(
    encoder: Any,
    heads: list[str] | None,
    explicit: tuple[float, float, float] | None,
    cut: SparseCut,
) -> tuple[tuple[float, float, float], str]:
    """The ``[dense, sparse, colbert]`` weights of ``m3kit eval``'s ``fused`` row, and where
    they come from: the user's ``--weights``; else the checkpoint's calibrated ``m3`` fusion
    for the evaluated heads (what its searches use), when the calibration chose ``m3`` and
    was measured on this encoder; else FlagEmbedding's published 0.4 / 0.2 / 0.4. Calibrated
    weights fitted under another sparse cut than the evaluation's ``cut`` are still used (an
    index with that cut uses them too), and the source says so.
    """
    from m3kit.fingerprint import encoder_fingerprint
    from m3kit.outputs import Head
    from m3kit.scoring import DEFAULT_M3_WEIGHTS
    from m3kit.store.fusion_calibration import SEARCH_FILE, FusionCalibration
    from m3kit.store.records import Fusion
    from m3kit.store.sparse_cut import calibration_cut_warning

    if explicit is not None:
        return explicit, "--weights"
    # the folder the encoder loaded (a hub id's local snapshot), as M3Index reads it
    folder = Path(encoder.info.path)
    calibration = FusionCalibration.for_encoder(folder, encoder_fingerprint(encoder))
    wanted = encoder.available_heads if heads is None else Head.parse(heads)
    if calibration is None:
        return DEFAULT_M3_WEIGHTS, "published; the checkpoint has no calibration for them"
    if Head.SPARSE not in wanted:  # (settings_for keeps only the rerank choice then)
        return DEFAULT_M3_WEIGHTS, (
            f"published; {folder / SEARCH_FILE} fuses dense and sparse, and these heads hold "
            "no sparse"
        )
    settings = calibration.settings_for(frozenset(wanted))
    if settings.fusion is Fusion.M3:
        source = f"calibrated, {folder / SEARCH_FILE}"
        if Head.DENSE not in wanted:  # measured with dense in the sum, which is left out here
            source += " (fitted with the dense head in the sum; its weight is left out here)"
        mismatch = calibration_cut_warning(calibration.sparse_cut, cut, frozenset(wanted))
        if mismatch is not None:
            source += f"; warning: {mismatch}"
        return settings.weights, source
    return DEFAULT_M3_WEIGHTS, (
        f"published; {folder / SEARCH_FILE} chose {settings.fusion.value} for these heads, "
        "which the fused row (a weighted sum) is not"
    )


def read_beir(
    folder: Path,
    split: str | None,
    max_queries: int | None,
    seed: int,
    *,
    fit_flag: str | None = None,
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, float]]]:
    """A BEIR folder's corpus, queries and qrels, ``max_queries`` of the queries with a
    relevant passage drawn with ``seed`` (all queries when ``None``).

    Args:
        folder: The BEIR folder.
        split: Its qrels split (``None``: :func:`~m3kit.evaluation.load_beir`'s default).
        max_queries: Queries to draw (``None``: all).
        seed: Seed of the draw.
        fit_flag: For data a calibration is fitted on, the flag naming its split
            (``--split``): with no split named, a folder whose only split is
            ``qrels/test.tsv`` is refused rather than fitted on its test set.

    Raises:
        ValueError: No query has a relevant passage, or (``fit_flag``) the split to fit on
            would be ``test`` without being named.
    """
    from m3kit.evaluation import load_beir

    if fit_flag is not None and split is None and _only_split_is_test(folder):
        raise ValueError(
            f"{folder}'s only qrels split is test (qrels/test.tsv): calibrating on it fits "
            f"the fusion to the test set that m3kit eval reports; give validation data "
            f"(e.g. a qrels/dev.tsv), or pass {fit_flag} test to fit on it knowingly"
        )
    corpus, queries, qrels = load_beir(folder, split=split)
    if not any(has_relevant(r) for r in qrels.values()):
        named = f" (qrels split {split})" if split else ""
        raise ValueError(f"no queries with relevant passages in {folder}{named}")
    # drawn from the queries the metrics average: a grade-0-only one would take a place
    scored = sorted(q for q in queries if has_relevant(qrels.get(q, {})))
    if max_queries is not None and len(scored) > max_queries:
        keep = sorted(random.Random(seed).sample(scored, max_queries))
        queries = {q: queries[q] for q in keep}
        qrels = {q: qrels[q] for q in keep if q in qrels}
    return dict(corpus), dict(queries), {q: dict(r) for q, r in qrels.items()}


def _only_split_is_test(folder: Path) -> bool:
    """Whether ``load_beir`` with no split reads ``qrels/test.tsv``: no top-level
    ``qrels.tsv`` and ``test`` the only split of ``qrels/``."""
    qrels = folder / "qrels"
    if (folder / "qrels.tsv").is_file() or not qrels.is_dir():
        return False
    return [p.stem for p in qrels.glob("*.tsv")] == ["test"]


def say_identical_ids(corpus: dict[str, str], queries: dict[str, str], ignore: bool) -> None:
    """Print how many queries have their own id in the corpus, when their hits of those
    documents are left out (``ignore``; nothing when none has)."""
    in_corpus = sum(q in corpus for q in queries)
    if in_corpus and ignore:
        print(
            f"{in_corpus} of {len(queries)} queries have their own id in the corpus: hits of "
            "those documents are left out of the rankings, as BEIR's evaluator leaves them "
            "(--keep-identical-ids scores them)"
        )


def has_relevant(judgements: dict[str, float]) -> bool:
    """Whether a query has a relevant passage (grade > 0): the queries metrics average."""
    return any(grade > 0 for grade in judgements.values())


def run_eval(args: argparse.Namespace) -> int:
    """``m3kit eval``: print (and with ``--output`` write) the comparison table."""
    from m3kit.encoder import M3Encoder
    from m3kit.finetune.evaluate import (
        RetrievalReport,
        comparison_table,
        evaluate_heads,
        sparse_cut_line,
    )
    from m3kit.finetune.evaluate import write_report as write
    from m3kit.outputs import Head
    from m3kit.store.search_settings import check_m3_weights
    from m3kit.store.sparse_cut import SparseCut, sparse_cut_of

    if args.output:  # before any model encodes the corpus
        check_output_place(args.output, "--output", folder=True)
    corpus, queries, qrels = read_beir(args.data, args.split, args.max_queries, args.seed)
    ignore_identical = not args.keep_identical_ids
    say_identical_ids(corpus, queries, ignore_identical)
    reports: dict[str, RetrievalReport] = {}
    fused: dict[str, dict[str, object]] = {}
    models = [("baseline", args.baseline)] if args.baseline else []
    # checked before any model loads (the fused row refuses them only after encoding)
    explicit = None if args.weights is None else check_m3_weights(args.weights)
    cut = sparse_cut_of(args.sparse_top_k, args.sparse_min_weight) or SparseCut()
    min_weight = cut.min_weight
    for name, path in [*models, ("model", args.model)]:
        # at --max-length: per call, encode cuts at the encoder's own length, never past it
        encoder = M3Encoder.from_pretrained(path, max_length=args.max_length)
        heads = split_list(args.heads)
        wanted = encoder.available_heads if heads is None else Head.parse(heads)
        top_k, min_w = args.sparse_top_k, min_weight
        if name == "baseline" and cut.cuts and Head.SPARSE not in wanted:
            # a dense-only start model is the usual baseline: nothing of it to cut
            print(f"baseline: evaluates no sparse head; {cut.describe()} does not apply to it")
            top_k, min_w = None, 0.0
        weights, source = fused_weights(encoder, split_list(args.heads), explicit, cut)
        print(f"{name}: fused row weights {list(weights)} ({source})")
        fused[name] = {"weights": [float(w) for w in weights], "source": source}
        try:
            reports[name] = evaluate_heads(
                encoder,
                corpus,
                queries,
                qrels,
                heads=split_list(args.heads),
                weights=weights,
                max_length=args.max_length,
                show_progress=not args.quiet,
                sparse_top_k=top_k,
                sparse_min_weight=min_w,
                ignore_identical_ids=ignore_identical,
            )
        except ValueError as e:
            raise ValueError(f"{name} {path}: {e}") from e
    averaged = sum(has_relevant(r) for r in qrels.values())
    dropped = len(qrels) - averaged
    caption = f"{averaged} {'query' if averaged == 1 else 'queries'} averaged" + (
        f" ({dropped} judged only with grade 0 left out)" if dropped else ""
    )
    print(comparison_table(reports))
    cut_line = sparse_cut_line(reports)
    if cut_line:
        print(cut_line)
    print(caption)
    if args.output:
        meta = {
            "data": str(Path(args.data).expanduser().resolve()),
            "queries": averaged,
            "queries_dropped": dropped,
            # what the rows measured: a saved report names its models and settings
            "models": {name: _named_model(path) for name, path in [*models, ("model", args.model)]},
            "fused": fused,
            "max_length": args.max_length,
            "heads": split_list(args.heads),
            "split": args.split,
            "max_queries": args.max_queries,
            "seed": args.seed,
            "identical_ids": "left out" if ignore_identical else "scored",
        }
        weights_line = "; ".join(
            f"{name} fused {f['weights']} ({f['source']})" for name, f in fused.items()
        )
        paths = write(reports, args.output, extra=meta, caption=f"{weights_line}\n\n{caption}")
        print(f"wrote {paths['json']}, {paths['markdown']}, {paths['png']}")
    return 0


def _named_model(path: str) -> str:
    """A model as a report names it: a folder's absolute path, else the name given (a hub id)."""
    folder = Path(path).expanduser()
    return str(folder.resolve()) if folder.exists() else path
