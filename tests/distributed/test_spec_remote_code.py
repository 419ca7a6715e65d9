"""EncoderSpec: a checkpoint's own modelling code reaches the workers when the parent ran it.

The same weights and ``config.json`` with an ``auto_map`` build transformers' stock class
without ``trust_remote_code`` and the checkpoint's own class with it: two models of the
same fingerprint identity, so the identity check between parent and worker cannot tell.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from m3kit import M3Encoder
from m3kit.distributed import EncoderSpec

#: A checkpoint's own modelling code: the stock backbone, shifted.
_SHIFTED_MODEL = """from transformers import XLMRobertaModel


class ShiftedModel(XLMRobertaModel):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.last_hidden_state = out.last_hidden_state + 1.0
        return out
"""


def _own_code_checkpoint(tiny_m3_path: Path, folder: Path) -> Path:
    path = shutil.copytree(tiny_m3_path, folder)
    (path / "modeling_shifted.py").write_text(_SHIFTED_MODEL)
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_shifted.ShiftedModel"}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_worker_runs_the_checkpoints_own_code_when_the_parent_does(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    # the spec did not carry trust_remote_code: a worker built the stock class and encoded
    # other vectors (0.25 apart) than the parent, stored under the parent's fingerprint
    path = _own_code_checkpoint(tiny_m3_path, tmp_path / "model")
    texts = ["hello world", "a second text"]
    for trust in (True, False):
        parent = M3Encoder.from_pretrained(path, dtype="fp32", trust_remote_code=trust)
        worker = EncoderSpec.of(parent).load("cpu")
        np.testing.assert_allclose(
            worker.encode(texts).dense, parent.encode(texts).dense, atol=1e-6
        )
        assert type(worker.model.backbone) is type(parent.model.backbone)
        assert EncoderSpec.of(parent).trust_remote_code is trust
