"""The ``m3kit`` command: index files into Qdrant and search them with BGE-M3.

Argument parsing only; the work is done by :mod:`m3kit.sources`, :class:`m3kit.M3Encoder`,
:class:`m3kit.store.M3Index` and :mod:`m3kit.late_chunking`.

Example (shell)::

    m3kit index docs/ notes.md corpus.jsonl --collection demo
    m3kit search "what is late chunking?" --collection demo -k 5 --fusion m3
    m3kit search "late chunking" --collection demo --json
    m3kit search "late chunking" --weights 0.5 0.2 0.3 --fusion m3 --candidates 200

Ranking flags left out of ``m3kit search`` take the index's defaults: the model's calibrated
fusion (``m3kit_search.json``) when it has one (:mod:`m3kit.cli_search`).

Storage is a local folder (``./.m3kit`` unless ``--path`` says otherwise), or a Qdrant server
with ``--qdrant-url`` (API key from ``--api-key`` or ``$QDRANT_API_KEY``; ``--qdrant-timeout``
and ``--qdrant-max-request-mb``: :class:`~m3kit.store.connection.ConnectionSettings`).
``--model`` defaults to the model the collection was indexed with; ``m3kit index --reindex
--model NEW`` re-encodes a collection with another model.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import importlib
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3kit import cli_open
from m3kit.checkpoint import DEFAULT_MODEL, Pooling
from m3kit.cli_filters import filter_mapping, filter_pair
from m3kit.cli_memory import add_keep_freed_memory_argument, keeping_freed_memory
from m3kit.cli_open import DEFAULT_COLLECTION, DEFAULT_PATH
from m3kit.cli_scale import (
    add_cluster_arguments,
    add_ray_arguments,
    non_negative_int,
    positive_int,
)
from m3kit.cli_search import (
    add_ranking_arguments,
    hit_dict,
    hit_text,
    ranking,
    score_threshold,
    search_report,
)
from m3kit.errors import CollectionNotFoundError, M3KitError
from m3kit.late_windows import WindowPlacement

if TYPE_CHECKING:
    pass

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "bf16", "fp16", "int8")
RUNTIMES = ("auto", "torch", "onnx")

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The ``m3kit`` argument parser (subcommands ``index`` and ``search``, plus fine-tuning
    subcommands when :mod:`m3kit.finetune.cli` is installed)."""
    parser = argparse.ArgumentParser(
        prog="m3kit",
        description="Index files into Qdrant and search them with BGE-M3 "
        "(dense + sparse + ColBERT from one forward pass).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("storage and model")
    where.add_argument(
        "--collection", default=DEFAULT_COLLECTION, help="collection name (default: %(default)s)"
    )
    where.add_argument(
        "--path",
        type=Path,
        default=None,
        help=f"local storage folder (default: ./{DEFAULT_PATH}); not with --qdrant-url",
    )
    where.add_argument("--qdrant-url", default=None, help="Qdrant server URL instead of a folder")
    where.add_argument(
        "--api-key",
        default=None,
        help="Qdrant API key (default: $QDRANT_API_KEY); only with --qdrant-url",
    )
    where.add_argument(
        "--qdrant-timeout",
        type=positive_int,
        default=None,
        metavar="SECONDS",
        help="server request timeout (default: qdrant-client's, 5); only with --qdrant-url",
    )
    where.add_argument(
        "--qdrant-max-request-mb",
        type=positive_int,
        default=None,
        metavar="MB",
        help="the server's service.max_request_size_mb, which writes are split to fit "
        "(default: Qdrant's, 32); only with --qdrant-url",
    )
    where.add_argument(
        "--backend",
        choices=("edge", "client"),
        default=None,
        help="local engine: qdrant-edge (in-process) or qdrant-client (default: the store's)",
    )
    where.add_argument(
        "--model",
        default=None,
        help="checkpoint folder or hub id (default: the model the collection was indexed "
        f"with, else {DEFAULT_MODEL}); another model than the collection's is an error "
        "unless `m3kit index --reindex`",
    )
    where.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="precision (default: auto); int8 is ONNX Runtime's (torch's with --runtime torch)",
    )
    where.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="encoder runtime: torch or ONNX Runtime (CPU) (default: auto)",
    )
    where.add_argument(
        "--onnx-cache-dir", type=Path, default=None, help="folder of ONNX exports (--runtime onnx)"
    )
    where.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=8192,
        help="most padded tokens per forward pass (default: %(default)s)",
    )
    where.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: auto)")
    where.add_argument("--max-length", type=positive_int, default=None, help="tokens per text")
    where.add_argument(
        "--query-instruction",
        default=None,
        help="prefix added to queries (e.g. 'query: '; default: without --model the one the "
        "collection records, else the model's own, none for BGE-M3); part of the model's "
        "identity, so index and search use the same",
    )
    where.add_argument(
        "--pooling",
        choices=[p.value for p in Pooling],
        default=None,
        help="dense pooling (default: without --model the one the collection records, else "
        "the checkpoint's own: cls for BGE-M3, mean for sentence-transformers models); part of "
        "the model's identity, so index and search use the same",
    )
    where.add_argument(
        "--sparse-top-k",
        type=positive_int,
        default=None,
        metavar="K",
        help="keep the K highest sparse weights of every chunk stored and every query "
        "(default: the cut the collection records, else every weight); recorded with the "
        "collection, so index and search use the same; another cut than the stored chunks' "
        "is an error",
    )
    where.add_argument(
        "--sparse-min-weight",
        type=cli_open.sparse_min_weight,
        default=None,
        metavar="W",
        help="drop sparse weights at or below W, of every chunk stored and every query "
        "(default: the cut the collection records, else 0); recorded as --sparse-top-k is",
    )
    where.add_argument("--quiet", "-q", action="store_true", help="no progress bars")

    index = subparsers.add_parser(
        "index",
        parents=[common],
        help="index .txt/.md/.jsonl files and folders",
        description="Index files and folders (recursively). A .txt/.md file is one document; a "
        ".jsonl file has one document per row: text, optional _id/id, title and other keys "
        "(kept as metadata). Documents are cut into chunks of whole sentences (--chunk-size), "
        "so long ones are indexed in full. Unchanged documents are skipped; edited ones "
        "replaced.",
    )
    index.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or folders (optional with --reindex)"
    )
    index.add_argument(
        "--reindex",
        action="store_true",
        help="re-encode every stored document with --model when the collection was indexed "
        "with another model (in place, from the stored texts; resumable: rerun after an "
        "interruption; in this process: not with --ray), then index PATHs if given",
    )
    index.add_argument(
        "--late-chunking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pool each chunk's vectors from a pass over the whole document (its context) "
        "instead of encoding each chunk alone; the chunking flags are remembered by the "
        "collection, so later runs without them chunk the same way (--no-late-chunking goes "
        "back to encoding each chunk alone)",
    )
    index.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help="most tokens per chunk: documents are cut into whole sentences packed up to this "
        "size, so no text is left out (default: 256, or fewer if the model's max length is "
        "smaller)",
    )
    index.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help="with --late-chunking: most tokens of context per forward pass (default: 2 x chunk "
        "size + 2, at most the model's max length; larger costs more, attention is quadratic)",
    )
    index.add_argument(
        "--late-heads",
        default=None,
        help="with --late-chunking: comma-separated heads pooled from the document pass, the "
        "others encoded from the chunk alone (default: every head of a multi-head model, one "
        "document pass; dense-only models chunk naively, which measured better on MiniLM)",
    )
    index.add_argument(
        "--overlap",
        type=non_negative_int,
        default=None,
        help="with --late-chunking: text tokens shared by consecutive windows of a long "
        "document, so each chunk sees context on both sides (default: an eighth of the "
        "window's text tokens; must be smaller than them)",
    )
    index.add_argument(
        "--placement",
        choices=[p.value for p in WindowPlacement],
        default=None,
        help="with --late-chunking: how a long document's windows are laid out: centred "
        "(default: a fixed stride, each token pooled from the window where it is most "
        "central) or chunks (windows break between chunks, each chunk pooled from one window)",
    )
    index.add_argument(
        "--prune",
        action="store_true",
        help="also delete stored documents that m3kit index read from these files and folders "
        "but are no longer there (removed files, removed jsonl rows; a PATH that no longer "
        "exists is pruned only, refused while documents indexed from it are stored (see "
        "--prune-missing), and exit status 1 says nothing was indexed from it); files still "
        "there and documents added otherwise are kept",
    )
    index.add_argument(
        "--prune-missing",
        action="store_true",
        help="--prune, also of a PATH that no longer exists while documents indexed from it "
        "are stored (a moved or deleted folder), of a folder PATH holding no file to read, "
        "and of a mount point under a PATH that is not mounted now: their documents are "
        "deleted; --prune alone refuses these, as a drive or share that is not mounted looks "
        "the same",
    )
    index.add_argument(
        "--index-field",
        action="append",
        default=[],
        metavar="KEY[:TYPE]",
        type=_index_field,
        help="create a payload index on metadata KEY for fast --filter search on a Qdrant "
        "server or the embedded engine; TYPE: keyword (default), integer, float, bool, text, "
        "datetime or geo; repeat; indexes that exist are kept",
    )
    index.add_argument("--batch-size", type=positive_int, default=32, help="texts per batch")
    add_keep_freed_memory_argument(
        index, "indexing", "; this process only: --ray actors are processes of their own"
    )
    add_ray_arguments(index)
    add_cluster_arguments(index)
    index.set_defaults(handler=keeping_freed_memory(_run_index))

    search = subparsers.add_parser(
        "search",
        parents=[common],
        help="search a collection",
        description="Hybrid search (dense + sparse + ColBERT, fused) of an indexed collection.",
    )
    search.add_argument("query", help="the question or keywords")
    search.add_argument("-k", type=positive_int, default=5, help="results (default: 5)")
    search.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=filter_pair,
        help="keep results whose metadata KEY equals VALUE (JSON value or plain text; a bare "
        "number also matches its text, quote it for text only: KEY='\"2.0\"'); repeat for "
        "more keys (all must match); the same KEY twice matches either VALUE",
    )
    search.add_argument(
        "--score-threshold",
        type=score_threshold,
        default=None,
        help="drop results scoring below this",
    )
    search.add_argument(
        "--json",
        action="store_true",
        help='print {"search": settings it ran with (and the collection\'s sparse_cut), '
        '"hits": [...]} as JSON',
    )
    add_ranking_arguments(search)
    search.set_defaults(handler=_run_search)

    _add_finetune_subcommands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 bad arguments).

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    _escape_unprintable()
    try:
        with _transformers_quiet(quiet=getattr(args, "quiet", False)):
            return handler(args)
    except BrokenPipeError:
        # the reader of stdout went away (``m3kit search ... | head -1``): stop quietly, as
        # command-line tools do, with the status of a process ended by SIGPIPE (128 + 13);
        # stdout points at devnull so that flushing it at exit raises nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (M3KitError, OSError, ValueError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"m3kit {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("m3kit: interrupted", file=sys.stderr)
        return 130


# -- subcommands ----------------------------------------------------------------------------
def _run_index(args: argparse.Namespace) -> int:
    from m3kit.cli_index import run_index

    return run_index(args)


def _run_search(args: argparse.Namespace) -> int:
    from m3kit.encoder_inputs import check_query

    check_query(args.query)  # a blank query fails before the model loads
    given = ranking(args)  # bad --weights / --candidates fail before the model loads
    storage = cli_open.storage(args)
    location = storage.get("location")
    if location is not None and not location.is_dir():
        raise ValueError(f"no index at {location}; run `m3kit index` first (or pass --path)")
    try:  # before any model loads (the default one would be downloaded first)
        record = cli_open.collection_record(args, storage, missing_ok=False)
    except CollectionNotFoundError as e:
        raise CollectionNotFoundError(f"{e}; run `m3kit index` first") from None
    cli_open.refuse_unfinished(args, record)
    encoder = cli_open.load_encoder(args, storage, record)
    try:
        index = cli_open.open_index(encoder, args, storage, create=False)
    except CollectionNotFoundError as e:
        raise CollectionNotFoundError(f"{e}; run `m3kit index` first") from None
    try:
        if index.count() == 0:
            raise ValueError(
                f"collection {args.collection!r} at {cli_open.location(args)} is empty; "
                "run `m3kit index` first"
            )
        report = search_report(index, given, args.k)
        logger.info("search: %s", index.search_settings(**given).describe())
        hits = index.search(
            args.query,
            k=args.k,
            filter=filter_mapping(args.filter) or None,
            score_threshold=args.score_threshold,
            **given,
        )
    finally:
        index.close()
    if args.json:
        out = {"search": report, "hits": [hit_dict(h) for h in hits]}
        # \u escapes where stdout cannot hold every character (still the same JSON)
        print(json.dumps(out, ensure_ascii=not _utf8(sys.stdout), indent=2))
    elif not hits:
        print("no results")
    else:
        for rank, hit in enumerate(hits, start=1):
            print(hit_text(rank, hit))
    return 0


# -- helpers --------------------------------------------------------------------------------
def _utf8(stream: object) -> bool:
    encoding = getattr(stream, "encoding", None)
    return bool(encoding) and codecs.lookup(str(encoding)).name == "utf-8"


def _escape_unprintable() -> None:
    """Print what stdout / stderr cannot encode as backslash escapes: a hit's Chinese text or
    emoji on a cp1252 pipe (Windows) or under a non-UTF-8 locale failed the whole search
    (``'charmap' codec can't encode``, exit 1, no result printed)."""
    for stream in (sys.stdout, sys.stderr):
        if not _utf8(stream) and isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _index_field(value: str) -> tuple[str, Any]:
    from m3kit.store.schema import PayloadIndexType, payload_index_fields

    key, sep, kind = value.rpartition(":")
    if not sep:
        key, kind = value, PayloadIndexType.KEYWORD.value
    if not key.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY[:TYPE]")
    try:
        (parsed,) = payload_index_fields({key: kind}).values()  # (uuid refused, with why)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--index-field {value!r}: {e}") from None
    return key, parsed


@contextlib.contextmanager
def _transformers_quiet(*, quiet: bool) -> Iterator[None]:
    """Silence transformers' own bars and load reports while a ``--quiet`` command runs."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _version() -> str:
    from m3kit import __version__

    return __version__


def _add_finetune_subcommands(subparsers: Any) -> None:
    """Let :mod:`m3kit.finetune.cli` add its subcommands, when that module exists.

    Only the module's absence is tolerated; any other import error (a bug, a missing
    dependency it imports at top level) propagates.
    """
    try:
        finetune_cli = importlib.import_module("m3kit.finetune.cli")
    except ModuleNotFoundError as e:
        if e.name in ("m3kit.finetune", "m3kit.finetune.cli"):
            return
        raise
    finetune_cli.add_subcommands(subparsers)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
