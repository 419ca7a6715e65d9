"""Encoding beyond one process: a pool of encoder processes, and (extra ``m3kit[ray]``) Ray Data.

Nothing here is needed on one machine with one process; :mod:`m3kit.distributed.ray_pipeline`
imports Ray only when it is used.
"""

from m3kit.distributed.pool import EncoderPool, EncoderSpec

__all__ = ["EncoderPool", "EncoderSpec"]
