"""``m3kit index`` beyond one machine: ``--ray`` encoding and Qdrant cluster settings.

Argument groups and their handling for :mod:`m3kit.cli`:

- ``--ray [ADDRESS]`` encodes on Ray actors with
  :func:`m3kit.distributed.ray_pipeline.index_with_ray` (same ids, hashes and vectors as a plain
  ``m3kit index``); without ``ADDRESS`` a local Ray starts in this process. Extra ``m3kit[ray]``.
- ``--shards``, ``--replication``, ``--write-consistency``, ``--on-disk`` and ``--quantization``
  become the :class:`~m3kit.store.cluster.ClusterSettings` a Qdrant server is given when the
  collection is created, and ``--write-batch-size`` / ``--write-parallelism`` how m3kit
  writes to it (``--qdrant-url`` only).

Example (shell)::

    m3kit index corpus/ --qdrant-url http://qdrant:6333 --shards 6 --replication 2 \\
        --quantization scalar --on-disk vectors --ray ray://head:10001 --ray-actors 8 \\
        --ray-gpus-per-actor 1
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3kit.distributed.ray_pipeline import ChunkerSpec
    from m3kit.sources import SourceDocument
    from m3kit.store import M3Index
    from m3kit.store.cluster import ClusterSettings

__all__ = [
    "LOCAL_RAY",
    "add_cluster_arguments",
    "add_ray_arguments",
    "check_scale_arguments",
    "chunker_spec",
    "cluster_settings",
    "index_on_ray",
    "non_negative_int",
    "positive_int",
]

logger = logging.getLogger(__name__)

#: ``--ray`` without an address: Ray's own name for "start a new local instance".
LOCAL_RAY = "local"
_CLUSTER_FLAGS = {
    "shards": "--shards",
    "replication": "--replication",
    "write_consistency": "--write-consistency",
    "on_disk": "--on-disk",
    "quantization": "--quantization",
    "write_batch_size": "--write-batch-size",
    "write_parallelism": "--write-parallelism",
}
_RAY_FLAGS = {
    "ray_actors": "--ray-actors",
    "ray_cpus_per_actor": "--ray-cpus-per-actor",
    "ray_gpus_per_actor": "--ray-gpus-per-actor",
}


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--ray-actors``, ``--ray-cpus-per-actor``, ``--ray-gpus-per-actor``."""
    group = parser.add_argument_group("Ray (extra m3kit[ray])")
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        default=None,
        metavar="ADDRESS",
        help="encode on Ray actors: ADDRESS of a running cluster (ray://head:10001, auto, "
        "host:6379), or none to start a local Ray in this process; this process still reads, "
        "skips unchanged documents and writes, so ids and hashes equal a plain run",
    )
    group.add_argument(
        "--ray-actors",
        type=positive_int,
        default=None,
        help="encoder actors, one model load each (default: 2); needs --ray",
    )
    group.add_argument(
        "--ray-cpus-per-actor",
        type=non_negative_float,
        default=None,
        help="CPUs reserved per actor, also its torch threads (default: 1); needs --ray",
    )
    group.add_argument(
        "--ray-gpus-per-actor",
        type=non_negative_float,
        default=None,
        help="GPUs per actor, fractions allowed (default: 0, CPU); needs --ray",
    )


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Qdrant cluster settings for a collection created on a server (``--qdrant-url``)."""
    group = parser.add_argument_group(
        "Qdrant cluster (with --qdrant-url; applied when the collection is created, checked "
        "against an existing one)"
    )
    group.add_argument("--shards", type=positive_int, default=None, help="shards (shard_number)")
    group.add_argument(
        "--replication", type=positive_int, default=None, help="copies of each shard"
    )
    group.add_argument(
        "--write-consistency",
        type=positive_int,
        default=None,
        help="replicas that must acknowledge a write (at most --replication)",
    )
    group.add_argument(
        "--on-disk",
        action="append",
        choices=("vectors", "payload"),
        default=None,
        help="keep the dense and ColBERT vectors, or the payloads, on disk (memory-mapped); "
        "repeat for both",
    )
    group.add_argument(
        "--quantization",
        choices=("scalar", "binary"),
        default=None,
        help="a quantised dense copy kept in RAM for search: scalar (int8) or binary (1 bit)",
    )
    group.add_argument(
        "--write-batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="points per write request, fewer where that many would pass the request limit "
        "(default: 64 without other cluster flags, else 256)",
    )
    group.add_argument(
        "--write-parallelism",
        type=positive_int,
        default=None,
        metavar="N",
        help="write requests in flight at once (default: 1 without other cluster flags, else 4)",
    )


def check_scale_arguments(args: argparse.Namespace) -> None:
    """Fail fast, before any model loads, on flags that cannot apply.

    Raises:
        ValueError: Ray settings without ``--ray``, ``--ray`` with ``--reindex`` (which
            re-encodes in this process), or cluster settings without ``--qdrant-url``.
        MissingExtraError: ``--ray`` without Ray Data installed.
    """
    if args.ray is None:
        given = [flag for name, flag in _RAY_FLAGS.items() if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need(s) --ray")
    else:
        if getattr(args, "reindex", False):  # (it ran in this process, silently)
            raise ValueError(
                "--reindex re-encodes the stored documents in this process: Ray does not run "
                "it. Run `m3kit index --reindex` without --ray, then index files with --ray"
            )
        from m3kit.distributed.ray_pipeline import require_ray

        require_ray()
        if not args.ray.strip():
            raise ValueError("--ray ADDRESS is empty; give an address or no value (local Ray)")
    if args.qdrant_url is None:
        given = [flag for name, flag in _CLUSTER_FLAGS.items() if getattr(args, name)]
        if given:
            raise ValueError(
                f"{', '.join(given)} configure a collection on a Qdrant server: they need "
                "--qdrant-url (the local engines have no shards, replicas, quantisation or "
                "write requests)"
            )
    cluster_settings(args)  # bad combinations (write consistency > replication) fail here


def cluster_settings(args: argparse.Namespace) -> ClusterSettings | None:
    """The :class:`ClusterSettings` the flags ask for (``None``: none given)."""
    from m3kit.store.cluster import ClusterSettings, Quantization

    if not any(getattr(args, name, None) for name in _CLUSTER_FLAGS):
        return None
    on_disk = set(args.on_disk or ())
    writes = {
        name: getattr(args, name)
        for name in ("write_batch_size", "write_parallelism")
        if getattr(args, name, None) is not None
    }  # left out: ClusterSettings' defaults
    return ClusterSettings(
        shard_number=args.shards,
        replication_factor=args.replication,
        write_consistency_factor=args.write_consistency,
        on_disk_vectors="vectors" in on_disk,
        on_disk_payload=True if "payload" in on_disk else None,
        quantization=Quantization(args.quantization or Quantization.NONE.value),
        **writes,
    )


def chunker_spec(args: argparse.Namespace) -> ChunkerSpec:
    """The chunking ``m3kit index`` would do, as a spec each Ray actor rebuilds."""
    from m3kit.distributed.ray_pipeline import ChunkerSpec, ChunkingKind

    if not args.late_chunking:
        return ChunkerSpec(ChunkingKind.NAIVE, chunk_size=args.chunk_size)
    heads = None
    if args.late_heads is not None:
        heads = tuple(h.strip() for h in args.late_heads.split(",") if h.strip())
    return ChunkerSpec(
        ChunkingKind.LATE,
        chunk_size=args.chunk_size,
        window=args.window,
        late_heads=heads,
        overlap=args.overlap,
        placement=args.placement,
    )


def index_on_ray(index: M3Index, docs: Sequence[SourceDocument], args: argparse.Namespace) -> None:
    """Encode ``docs`` on Ray actors and write them through ``index``.

    Connects to ``args.ray`` (or starts a local Ray), runs
    :func:`~m3kit.distributed.ray_pipeline.index_with_ray`, and shuts the connection down.

    Raises:
        ValueError: A local Ray has fewer CPUs or GPUs than the actors ask for (they would
            wait forever).
    """
    from m3kit.distributed.ray_pipeline import index_with_ray, require_ray

    if not docs:
        return
    ray = require_ray()
    actors = args.ray_actors if args.ray_actors is not None else 2
    cpus = args.ray_cpus_per_actor if args.ray_cpus_per_actor is not None else 1.0
    gpus = args.ray_gpus_per_actor if args.ray_gpus_per_actor is not None else 0.0
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; m3kit index starts it")
    kwargs: dict[str, Any] = {"address": args.ray}
    if args.ray == LOCAL_RAY:  # settings of a new instance; a running cluster keeps its own
        kwargs.update(include_dashboard=False, log_to_driver=not args.quiet)
    ray.init(**kwargs)
    try:
        if args.ray == LOCAL_RAY:
            _check_local_resources(ray.cluster_resources(), actors, cpus, gpus)
        logger.info("Ray at %s: %d actor(s), %g CPU and %g GPU each", args.ray, actors, cpus, gpus)
        index_with_ray(
            index,
            docs,
            chunker=chunker_spec(args),
            num_actors=actors,
            num_cpus=cpus,
            num_gpus=gpus,
            show_progress=False if args.quiet else None,
        )
    finally:
        ray.shutdown()


def _check_local_resources(
    resources: dict[str, float], actors: int, cpus: float, gpus: float
) -> None:
    for name, per_actor, flag in (("CPU", cpus, "cpus"), ("GPU", gpus, "gpus")):
        have = float(resources.get(name, 0.0))
        need = actors * per_actor
        if need > have + 1e-9:
            raise ValueError(
                f"the local Ray has {have:g} {name}(s) but {actors} actor(s) x {per_actor:g} "
                f"ask for {need:g}; lower --ray-actors or --ray-{flag}-per-actor (at most "
                f"{math.floor(have / per_actor) if per_actor else actors} actor(s) fit)"
            )


def _int_at_least(value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
    return number


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (shared by every m3kit subcommand)."""
    return _int_at_least(value, 1)


def non_negative_float(value: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value} must be a number >= 0")
    return number


def non_negative_int(value: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(value, 0)
