"""An exported ONNX file run by onnxruntime, usable wherever the code expects a model module.

:class:`OnnxModel` maps ``(B, 3, T, S, S)`` float tensors to logits ``(B, classes)`` like the PyTorch model
it came from, and carries the export's metadata (class names, preprocessing, run config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from sct.config import config_from_dict
from sct.errors import ExportError


def session(path: str | Path, threads: int = 0):
    """An onnxruntime CPU session of ``path`` (``threads`` intra-op threads; 0 = torch's thread count)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnxruntime is not installed; `pip install sct[deploy]`") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable files
        raise ExportError(f"{path} is not a loadable ONNX model: {err}") from None


class OnnxModel(nn.Module):
    """``forward(video (B, 3, T, S, S)) -> logits (B, classes)`` through onnxruntime on the CPU.

    ``metadata``: the file's ``metadata_props``; ``class_names``, ``run_config`` and ``preprocessing`` are
    read from it. Raises :class:`ExportError` for a file that is missing or was not written by ``sct export``.
    """

    def __init__(self, path: str | Path, threads: int = 0):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"ONNX model {self.path} does not exist")
        self.session = session(self.path, threads)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "sct.classes" not in self.metadata:
            raise ExportError(f"{self.path} has no sct metadata (classes, preprocessing); export it with `sct export`")
        self.input_name = self.session.get_inputs()[0].name
        self.class_names: list[str] = json.loads(self.metadata["sct.classes"])
        self.preprocessing: dict = json.loads(self.metadata["sct.preprocessing"])
        self.run_config = config_from_dict(_yaml(self.metadata["sct.run_config"]))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, S, S)`` -> ``(B, classes)``; the input is moved to the CPU as float32."""
        array = video.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)
