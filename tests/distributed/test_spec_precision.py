"""EncoderSpec: a precision given for the encoder is what every worker loads with.

Workers on another device type than the parent's (a Ray actor with a GPU under a CPU driver)
used to load with ``"auto"`` whatever ``--dtype`` said. No GPU is needed: the worker's
``M3Encoder.from_pretrained`` is replaced, as a Ray actor on a GPU would call it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from unittest import mock

import pytest

from m3kit import M3Encoder
from m3kit.distributed import EncoderSpec


def _loaded_dtype(spec: EncoderSpec, device: str) -> str:
    """The ``dtype`` a worker on ``device`` passes to ``M3Encoder.from_pretrained``."""
    unchecked = dataclasses.replace(spec, identity=None)  # no real model is loaded
    with mock.patch.object(M3Encoder, "from_pretrained") as load:
        unchecked.load(device)
    return str(load.call_args.kwargs["dtype"])


def test_a_given_dtype_reaches_workers_on_other_devices(tiny_m3_path: Path) -> None:
    spec = EncoderSpec.of(M3Encoder.from_pretrained(tiny_m3_path, device="cpu", dtype="fp32"))
    assert (spec.device_type, spec.dtype, spec.dtype_given) == ("cpu", "fp32", True)
    assert _loaded_dtype(spec, "cuda") == "fp32"  # m3kit index --dtype fp32, a GPU actor
    assert _loaded_dtype(spec, "cpu") == "fp32"


def test_auto_resolves_per_worker_device(tiny_m3_path: Path) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_path, device="cpu")  # dtype "auto"
    spec = EncoderSpec.of(encoder)
    assert not spec.dtype_given and spec.dtype == encoder.precision.value
    assert _loaded_dtype(spec, "cuda:1") == "auto"  # a GPU picks its own (bf16 or fp16)
    # so does every worker of the parent's device type: another GPU model, or a Ray node's
    # CPU without native bf16 under a driver with it, would otherwise run the parent's choice
    assert _loaded_dtype(spec, "cuda:0") == "auto"
    assert _loaded_dtype(spec, "cpu") == "auto"


@pytest.mark.parametrize(
    ("dtype", "parent", "worker", "problem"),
    [
        ("fp16", "cuda", "cpu", "fp16 is not supported on CPU"),
        ("int8", "cpu", "cuda:0", "int8 dynamic quantisation runs on CPU only"),
    ],
)
def test_a_given_dtype_a_worker_cannot_run_is_an_error(
    dtype: str, parent: str, worker: str, problem: str
) -> None:
    spec = EncoderSpec("m", "cls", dtype, parent, 512, None, 32, 8192, dtype_given=True)
    with (
        mock.patch.object(M3Encoder, "from_pretrained") as load,
        pytest.raises(ValueError, match=rf"dtype '{dtype}' was given .* on {worker} .*{problem}"),
    ):
        spec.load(worker)
    load.assert_not_called()
    # left to "auto", the worker picks a precision its device runs
    assert dataclasses.replace(spec, dtype_given=False).worker_dtype(worker) == "auto"


def test_a_worker_runs_the_parents_backend(
    tiny_m3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # backend="torch" with dtype="int8": torch's dynamic int8. A worker left to "auto" took
    # ONNX Runtime's int8 instead (another quantisation, other vectors) and stored them
    # under the same collection fingerprint, silently
    import numpy as np

    from m3kit.backends import EncoderBackend

    monkeypatch.setenv("M3KIT_CACHE", str(tmp_path))  # an ONNX export, if any, lands here
    parent = M3Encoder.from_pretrained(tiny_m3_path, device="cpu", dtype="int8", backend="torch")
    worker = EncoderSpec.of(parent).load("cpu")
    assert (worker.backend, worker.precision) == (parent.backend, parent.precision)
    assert worker.backend is EncoderBackend.TORCH
    texts = ["Torch's int8 and ONNX Runtime's are two quantisations.", "short"]
    np.testing.assert_array_equal(worker.encode(texts).dense, parent.encode(texts).dense)
