"""``sct export`` to ONNX and ``sct predict --runtime onnxruntime``: onnxruntime reproduces PyTorch."""

import json
import subprocess
import sys

import onnx
import pytest
import torch
from torch import nn

from engine_support import synthetic_set, tiny_config
from sct.cli import main as cli_main
from sct.deploy.export import export_onnx, model_export_source, opset_of
from sct.deploy.onnx_model import OnnxModel
from sct.engine.predict import predict
from sct.engine.train import train
from sct.errors import ExportError, SCTError

SMALL_VIT = {"dim": 64, "depth": 2, "heads": 4}
# (name, frames, size, config overrides): every family at an input small enough for a test. SCT's inputs
# leave more tokens than one LSH chunk, so the hashed (sorted, gathered) path is the one exported.
MODELS = [
    ("sct_tiny", 4, 64, {}),
    ("sct_s", 2, 48, {}),
    ("xvit_b16", 4, 32, SMALL_VIT),
    ("tsm_vit_b16", 4, 32, SMALL_VIT),
    ("timesformer_b16", 4, 32, SMALL_VIT),
]


@pytest.mark.parametrize("name,frames,size,overrides", MODELS, ids=[m[0] for m in MODELS])
def test_onnxruntime_logits_equal_pytorch(name, frames, size, overrides, tmp_path):
    torch.manual_seed(0)
    model, metadata = model_export_source(name, frames, size, num_classes=7, **overrides)
    path = export_onnx(model, tmp_path / f"{name}.onnx", metadata=metadata)
    runtime = OnnxModel(path)
    video = torch.randn(3, 3, frames, size, size)  # batch 3: the graph was traced at batch 1
    with torch.inference_mode():
        expected = model(video)
    got = runtime(video)
    assert got.shape == (3, 7)
    assert (got - expected).abs().max().item() <= 1e-4


def test_metadata_opset_and_dynamic_batch(tmp_path):
    model, metadata = model_export_source("sct_tiny", 4, 32, num_classes=3)
    path = export_onnx(model, tmp_path / "m.onnx", metadata=metadata, opset=18)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["sct.classes"]) == ["class_0", "class_1", "class_2"]
    pre = json.loads(props["sct.preprocessing"])
    assert (pre["num_frames"], pre["crop_size"]) == (4, 32)
    assert len(pre["mean"]) == len(pre["std"]) == 3 and pre["sampling_rate"] >= 1
    assert json.loads(props["sct.model_config"])["num_classes"] == 3
    assert opset_of(path) == 18
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value
    with pytest.raises(ExportError, match="opset must be >= 17"):
        export_onnx(model, tmp_path / "old.onnx", metadata=metadata, opset=13)


class ValueBranch(nn.Module):
    """Takes one of two computations depending on the input's values: a trace keeps only one."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, video):
        pooled = video.mean(dim=(2, 3, 4))
        if pooled.mean() > 0:
            return self.head(pooled)
        return -self.head(pooled)


def test_data_dependent_branch_fails_export_and_writes_nothing(tmp_path):
    _, metadata = model_export_source("sct_tiny", 2, 8, num_classes=2)
    output = tmp_path / "branch.onnx"
    with pytest.raises(ExportError, match=r"branch on tensor values at .*test_export\.py:\d+"):
        export_onnx(ValueBranch(), output, metadata=metadata)
    assert not output.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = synthetic_set(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("trained")
    return train(tiny_config(data, out / "run", "train.max_steps=2", "train.eval_every_epochs=0")) / "model.safetensors"


def test_cli_export_then_predict_with_onnxruntime_matches_pytorch(checkpoint, tmp_path, capsys):
    onnx_path = tmp_path / "model.onnx"
    assert cli_main(["export", "--checkpoint", str(checkpoint), "--output", str(onnx_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    videos = sorted(str(p) for p in (checkpoint.parents[2] / "synth6").rglob("*.mp4"))[:3]
    eager = predict(videos, checkpoint, topk=3, views="2x3")
    runtime = predict(videos, topk=3, views="2x3", runtime="onnxruntime", onnx_model=onnx_path)
    for a, b in zip(eager, runtime):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        for p, q in zip(a["predictions"], b["predictions"]):
            assert abs(p["probability"] - q["probability"]) <= 1e-5
    assert cli_main(["predict", "--runtime", "onnxruntime", "--model", str(onnx_path), "--json", *videos]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["predictions"][0]["label"] for r in printed] == [r["predictions"][0]["label"] for r in eager]


def test_runtime_options_are_checked(checkpoint, tmp_path):
    video = next((checkpoint.parents[2] / "synth6").rglob("*.mp4"))
    with pytest.raises(SCTError, match="--runtime onnxruntime takes --model"):
        predict([video], checkpoint, runtime="onnxruntime")
    with pytest.raises(SCTError, match="--runtime pytorch takes --checkpoint"):
        predict([video], runtime="pytorch", onnx_model=tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="does not exist"):
        predict([video], runtime="onnxruntime", onnx_model=tmp_path / "missing.onnx")
    not_onnx = tmp_path / "bad.onnx"
    not_onnx.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="bad.onnx is not a loadable ONNX model"):
        predict([video], runtime="onnxruntime", onnx_model=not_onnx)


def test_onnx_is_imported_only_by_the_deploy_verbs():
    code = ("import sys, sct, sct.cli, sct.engine.predict, sct.engine.train, sct.deploy.stream; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
