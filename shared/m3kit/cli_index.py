"""``m3kit index``: read files, chunk and encode them, write them, clean up what is stale.

Split from :mod:`m3kit.cli` (argument parsing). The chunking flags are remembered by the
collection (:mod:`m3kit.cli_chunking`); what is deleted besides what is replaced is
:mod:`m3kit.cli_prune`'s.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from m3kit import cli_open
from m3kit.cli_chunking import IndexChunking, refuse_unremembered_late_chunks
from m3kit.cli_scale import check_scale_arguments, index_on_ray

if TYPE_CHECKING:
    from m3kit.chunking import Chunker
    from m3kit.encoder import M3Encoder

__all__ = ["run_index"]

logger = logging.getLogger("m3kit.cli")


def run_index(args: argparse.Namespace) -> int:
    """Run ``m3kit index``; the exit status (1: a missing path given to ``--prune`` that
    nothing was ever pruned from).

    Raises:
        ValueError: Bad arguments or input, checked before a model loads where possible; a
            missing path given to ``--prune`` that stored documents were indexed from,
            without ``--prune-missing`` (checked before anything is written).
    """
    from m3kit.cli_ids import check_ids_of_other_files
    from m3kit.cli_links import drop_links, links_read, remember_links, save_links
    from m3kit.cli_mounts import refuse_unmounted, remember_mounts
    from m3kit.cli_prune import (
        clean_up,
        mistyped_paths,
        paths_to_read,
        refuse_vanished,
        say_pruned_only,
    )
    from m3kit.sources import SourceRead, read_sources

    check_scale_arguments(args)
    args.prune = args.prune or args.prune_missing
    storage = cli_open.storage(args)
    cli_open.payload_indexes(args)  # a key given twice with two types fails before loading
    if not args.paths and not args.reindex:
        raise ValueError("give the files or folders to index (or --reindex)")
    if not args.paths and args.prune:
        raise ValueError(
            "--prune needs the files or folders whose documents it prunes: it deletes only "
            "what was indexed from the given paths"
        )
    if not args.paths and _chunking_flags(args):
        raise ValueError(
            f"{', '.join(_chunking_flags(args))} need the files or folders to chunk: --reindex "
            "alone re-encodes each stored document's chunks as they are"
        )
    # --reindex alone re-encodes what is stored: a collection that does not exist (a mistyped
    # --collection) is an error, not a new empty one reported as re-encoded
    record = cli_open.collection_record(args, storage, missing_ok=bool(args.paths))
    cli_open.refuse_unfinished(args, record)  # before reading files or loading a model
    remembered = IndexChunking.from_record(record)
    # nothing remembered and no flag given: stored late chunks must not be re-chunked naively
    unremembered = remembered is None and not _chunking_flags(args)
    chunking = _index_chunking(args, remembered)
    # read everything first: bad input fails before loading
    paths = paths_to_read(args.paths, prune=args.prune)  # --prune: a path gone is pruned only
    missing = [p for p in args.paths if p not in paths]
    # --prune-missing: an emptied folder prunes what was indexed from it, on purpose
    read = read_sources(paths, empty_folders=args.prune_missing) if paths else SourceRead([], [])
    links = links_read(read)  # links to files outside the folders: --prune sees them go
    docs = read.documents  # none (every file emptied) still cleans up below
    encoder = cli_open.load_encoder(args, storage, record)
    chunker = _chunker(
        encoder,
        args.chunk_size,
        args.window,
        late=args.late_chunking,
        late_heads=args.late_heads,
        overlap=args.overlap,
        placement=args.placement,
    )
    index = cli_open.open_index(encoder, args, storage)
    try:
        check_ids_of_other_files(index.store, read)  # before anything is written
        if not args.prune_missing:  # an unmounted share looks like a deleted folder
            refuse_vanished(index.store, missing)
            if args.prune:  # ... or, mounted inside the tree, like deleted files
                unlinked = drop_links(index.store, links, paths, []).unlinked
                refuse_unmounted(index.store, read, paths, unlinked)
        say_pruned_only(missing)
        if unremembered:
            refuse_unremembered_late_chunks(index.store, [d.doc_id for d in docs])
        before = index.count()
        if args.paths:  # before writing: a run cut short still chunks the next one this way
            chunking.remember(index.store)
            remember_links(index.store, read, paths, links)
        if not docs:
            pass  # only emptied documents: nothing to write, their old versions go below
        elif args.ray is not None:
            index_on_ray(index, docs, args)
        else:
            index.add_texts(
                [d.text for d in docs],
                metadatas=[dict(d.metadata) for d in docs],
                doc_ids=[d.doc_id for d in docs],
                chunker=chunker,
                show_progress=not args.quiet,
            )
        emptied = 0
        if read.empty:  # an emptied file (or row): its stored version is no longer its text
            emptied = len(index.store.document_metadata(read.empty))
            index.delete(read.empty)
        dropped = drop_links(index.store, links, paths, missing) if args.prune else None
        cleanup = clean_up(
            index,
            read,
            roots=args.paths if args.prune else None,
            unlinked=None if dropped is None else dropped.unlinked,
            missing=missing if args.prune else (),
        )
        if dropped is not None:
            save_links(index.store, dropped.links)
        if paths:
            remember_mounts(index.store, read, paths, pruned=args.prune, links=links)
        after = index.count()
        reencoded = index.reencoded
        unmatched = mistyped_paths(index.store, cleanup, missing, paths) if args.prune else []
    finally:
        index.close()
    removed = f"; removed {emptied} emptied document(s)" if emptied else ""
    if cleanup.moved_rows:
        removed += f"; removed {len(cleanup.moved_rows)} jsonl row(s) no longer at their line"
    if args.prune:
        removed += f"; removed {len(cleanup.pruned)} document(s) no longer there"
    done = [f"re-encoded {reencoded} stored document(s)"] if args.reindex else []
    if args.paths or not args.reindex:
        done.append(f"indexed {len(docs)} document(s)")
    print(
        f"{' and '.join(done)} into {args.collection!r} at {cli_open.location(args)}: "
        f"{after} chunk(s) stored ({after - before:+d}){removed}"
    )
    for raw in unmatched:  # the rest of the run is done, as with `rm` of a missing file
        print(
            f"m3kit: {raw}: no such file or folder, and nothing indexed from it was pruned, "
            "now or by an earlier run (a mistyped path?)",
            file=sys.stderr,
        )
    return 1 if unmatched else 0


def _chunking_flags(args: argparse.Namespace) -> list[str]:
    """The chunking flags given on the command line (before the remembered ones fill in)."""
    given = {
        "--late-chunking/--no-late-chunking": args.late_chunking,
        "--chunk-size": args.chunk_size,
        "--window": args.window,
        "--late-heads": args.late_heads,
        "--overlap": args.overlap,
        "--placement": args.placement,
    }
    return [flag for flag, value in given.items() if value is not None]


def _index_chunking(args: argparse.Namespace, remembered: IndexChunking | None) -> IndexChunking:
    """The chunking flags given, else those the collection ``remembered`` (its record's,
    :meth:`IndexChunking.from_record`); set on ``args``."""
    chunking = IndexChunking.resolve(
        args.late_chunking,
        args.chunk_size,
        args.window,
        args.late_heads,
        remembered,
        overlap=args.overlap,
        placement=args.placement,
    )
    given = (
        args.late_chunking,
        args.chunk_size,
        args.window,
        args.late_heads,
        args.overlap,
        args.placement,
    )
    if remembered is not None and any(v is None for v in given):
        logger.info(
            "chunking (flags not given from collection %r): %s",
            args.collection,
            chunking.describe(),
        )
    args.late_chunking, args.chunk_size = chunking.late, chunking.chunk_size
    args.window, args.late_heads = chunking.window, chunking.late_heads
    args.overlap, args.placement = chunking.overlap, chunking.placement
    return chunking


def _chunker(
    encoder: M3Encoder,
    chunk_size: int | None,
    window: int | None,
    *,
    late: bool,
    late_heads: str | None = None,
    overlap: int | None = None,
    placement: str | None = None,
) -> Chunker:
    """The same sentence-packed chunks either way; ``late`` pools them from the document."""
    from m3kit.chunking import NaiveChunker, default_chunk_size
    from m3kit.late_chunking import LateChunker

    size = default_chunk_size(encoder) if chunk_size is None else chunk_size
    if late:
        heads = None if late_heads is None else [h for h in late_heads.split(",") if h.strip()]
        return LateChunker(
            encoder,
            chunk_size=size,
            window=window,
            overlap=overlap,
            late_heads=None if heads is None else [h.strip() for h in heads],
            **({} if placement is None else {"placement": placement}),
        )
    return NaiveChunker(encoder, chunk_size=size)
