"""Property tests (hypothesis): arbitrary unicode never breaks the encoder or sparse conversion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3kit import M3Encoder, SparseVector

_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

texts = st.lists(
    st.one_of(
        st.text(max_size=200),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
        st.sampled_from(["", " ", "\n\n", "🙂" * 30, "中文" * 100, "a " * 400]),
    ),
    min_size=0,
    max_size=6,
)


@_SETTINGS
@given(batch=texts)
def test_encoder_never_crashes_and_shapes_are_stable(
    tiny_encoder: M3Encoder, batch: list[str]
) -> None:
    out = tiny_encoder.encode(batch, max_length=128)
    assert out.dense.shape == (len(batch), tiny_encoder.dense_dim)
    assert out.dense.dtype == np.float32 and np.isfinite(out.dense).all()
    assert len(out.sparse) == len(out.colbert) == len(batch)
    for i, vec in enumerate(out.sparse):
        assert vec.indices.dtype == np.int64 and vec.values.dtype == np.float32
        assert np.all(np.diff(vec.indices) > 0), "indices unique and sorted"
        assert np.all(vec.values > 0)
        assert out.colbert[i].shape == (out.token_counts[i] - 1, tiny_encoder.colbert_dim)
        assert 2 <= out.token_counts[i] <= 128


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.integers(min_value=0, max_value=60), max_size=80),
    data=st.data(),
)
def test_sparse_conversion_is_max_per_id(
    tiny_encoder: M3Encoder, ids: list[int], data: st.DataObject
) -> None:
    weights = data.draw(
        st.lists(st.floats(-2, 5, allow_nan=False, width=32), min_size=len(ids), max_size=len(ids))
    )
    vec = tiny_encoder.sparse_vector(
        np.array(ids, dtype=np.int64), np.array(weights, dtype=np.float32)
    )
    expected: dict[int, float] = {}
    for i, w in zip(ids, weights, strict=True):
        if i in (0, 1, 2, 3) or w <= 0:  # <s>, <pad>, </s>, <unk> and non-positive dropped
            continue
        expected[i] = max(expected.get(i, 0.0), float(np.float32(w)))
    assert vec == SparseVector.from_mapping(expected)


def test_sparse_vector_validates() -> None:
    import pytest

    with pytest.raises(ValueError, match="ascending"):
        SparseVector(np.array([3, 1]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="differ in size"):
        SparseVector(np.array([1, 2]), np.array([1.0]))
    v = SparseVector(np.array([1, 2]), np.array([0.5, 1.5]))
    with pytest.raises(ValueError):
        v.values[0] = 3.0  # frozen arrays


def test_outputs_are_read_only(tiny_encoder: M3Encoder) -> None:
    """Results are frozen dataclasses, but their dense and ColBERT arrays were writable:
    ``out.dense[0] *= 2`` changed a result another holder of it (a chunk's vectors, a list of
    hits) reads. A write raises now; the caller's own array given to ``M3Output`` is left
    writable (the result holds a read-only view)."""
    import copy
    import pickle

    import pytest

    from m3kit import Head, M3Output
    from m3kit.late_chunking import LateChunker

    out = tiny_encoder.encode(["Oxygen is O.", "Iron is Fe."])
    chunk = LateChunker(tiny_encoder, chunk_size=4).chunk(["Oxygen is O. Iron is Fe."])[0][0]
    copied = pickle.loads(pickle.dumps(out))
    arrays = [out.dense, out.colbert[1], chunk.dense, chunk.colbert, chunk.vectors.dense]
    arrays += [copied.dense, copied.colbert[0], copy.deepcopy(out).dense]
    for array in arrays:
        before = array.copy()
        with pytest.raises(ValueError, match="read-only"):
            array[0] *= 2
        assert np.array_equal(array, before)
    mine = np.ones((1, 4), dtype=np.float32)
    built = M3Output(heads=frozenset({Head.DENSE}), token_counts=(2,), _dense=mine)
    mine[0, 0] = 2.0  # the caller's array stays theirs to change
    assert not built.dense.flags.writeable


@pytest.mark.parametrize(
    ("indices", "values", "match"),
    [
        ([1, 2], [0.5, float("nan")], "weight nan of token id 2 is not a finite number >= 0"),
        ([1, 2], [0.5, -0.25], "weight -0.25 of token id 2"),
        ([1], [float("inf")], "weight inf"),
        ([-1, 3], [0.5, 0.5], r"in \[0, 2\*\*32\).*got -1"),
        ([2**32], [0.5], "got 4294967296"),
    ],
)
def test_a_sparse_vector_refuses_what_no_score_can_use(
    indices: list[int], values: list[float], match: str
) -> None:
    """NaN or negative weights made every sparse score with them meaningless (NaN propagated
    into fusion), and out-of-range ids failed only inside the engine, differently on each."""
    with pytest.raises(ValueError, match=match):
        SparseVector(np.array(indices), np.array(values))


def test_from_mapping_refuses_a_fractional_token_id() -> None:
    with pytest.raises(ValueError, match="token id 1.7 is not a whole number"):
        SparseVector.from_mapping({1.7: 0.5})  # (was truncated to id 1)
    for key in (np.float32(1.7), np.float16(2.5)):  # (not subclasses of float)
        with pytest.raises(ValueError, match="is not a whole number"):
            SparseVector.from_mapping({key: 0.5})  # type: ignore[dict-item]
    assert SparseVector.from_mapping({2.0: 0.5, 0: 0.0}).to_dict() == {0: 0.0, 2: 0.5}


def test_an_infinite_sparse_head_weight_says_why() -> None:
    from m3kit.encoder_outputs import sparse_vector

    ids = np.array([5, 6])
    with pytest.raises(ValueError, match="sparse head gave infinite weights.*fp16 overflow"):
        sparse_vector(ids, np.array([0.5, np.inf]), np.array([0]))
    assert sparse_vector(ids, np.array([0.5, np.nan]), np.array([0])).to_dict() == {5: 0.5}


def test_rrf_counts_an_id_once_per_ranking_and_refuses_a_bad_k() -> None:
    """An id listed twice in one ranking was counted twice (it beat an id ranked first in
    the other list); ``k=-1`` divided by zero and ``k=-1.5`` gave negative scores."""
    from m3kit.scoring import reciprocal_rank_fusion

    fused = reciprocal_rank_fusion([["a", "a", "b"], ["b"]], k=1)
    assert fused == {"a": 0.5, "b": 1 / 3 + 0.5}
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="RRF k must be a whole number >= 1"):
            reciprocal_rank_fusion([["a"]], k=bad)  # type: ignore[arg-type]
