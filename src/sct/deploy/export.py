"""``sct export``: a trained checkpoint (or a registered model with random weights) -> an ONNX file.

The graph takes ``video`` ``(batch, 3, T, S, S)`` (normalised frames; batch is a dynamic axis) and returns
``logits`` ``(batch, classes)``. Its metadata (``metadata_props``) holds everything a consumer needs:
``sct.classes`` (JSON list), ``sct.preprocessing`` (JSON: mean, std, frames, size, sampling), and the
``sct.model`` / ``sct.model_config`` / ``sct.run_config`` the weights came from.

The graph is recorded by tracing, which fixes every Python-level decision at export time. A forward
that branches on tensor values would give a file that is right for the example input only, so every
export is checked before it is written: onnxruntime must reproduce PyTorch's logits on fresh inputs
of other batch sizes and value ranges, or the export fails naming the branch the tracer saw.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sct.config import dump_config, load_config
from sct.errors import ExportError, SCTError

MIN_OPSET = 17
DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "video", "logits"
# Relative to the logits' scale: float32 rounding between two runtimes stays far below this, a branch
# taken differently far above it.
CHECK_TOLERANCE = 1e-3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="weights written by sct train (.safetensors)")
    source.add_argument("--model", help="a registered model name, exported with random weights (benchmarking)")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="output format (default onnx)")
    parser.add_argument("--output", required=True, help="file to write, e.g. model.onnx")
    parser.add_argument("--frames", type=int, help="frames per clip (default: the checkpoint's or model's)")
    parser.add_argument("--size", type=int, help="crop size in pixels (default: the checkpoint's or model's)")
    parser.add_argument("--num-classes", type=int, help="with --model: classes of the random head")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights even if EMA weights exist")


def run(args: argparse.Namespace) -> int:
    for option in ("frames", "size", "num_classes"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise SCTError(f"--{option.replace('_', '-')} must be a positive integer, got {value}")
    if args.num_classes is not None and args.model is None:
        raise SCTError("--num-classes applies to --model only (a checkpoint has its own classes)")
    if args.checkpoint:
        model, metadata = checkpoint_export_source(args.checkpoint, args.frames, args.size, use_ema=not args.no_ema)
    else:
        model, metadata = model_export_source(args.model, args.frames, args.size, args.num_classes)
    path = export_onnx(model, args.output, metadata=metadata, opset=args.opset)
    pre, classes = json.loads(metadata["sct.preprocessing"]), json.loads(metadata["sct.classes"])
    frames, size = pre["num_frames"], pre["crop_size"]
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): input {INPUT_NAME} (batch, 3, {frames}, {size}, "
          f"{size}), output {OUTPUT_NAME} (batch, {len(classes)})")
    return 0


def preprocessing(data_cfg) -> dict:
    """What a consumer must do to a video before the graph: the test-time pipeline of ``data_cfg``."""
    keys = ("mean", "std", "num_frames", "sampling_rate", "target_fps", "short_video", "crop_size")
    info = {k: getattr(data_cfg, k) for k in keys}
    info.update(test_short_side=data_cfg.test_side(), layout="(batch, 3, frames, height, width), RGB, float32",
                normalise="(pixel / 255 - mean) / std",
                views=f"{data_cfg.num_temporal_views}x{data_cfg.num_spatial_crops}")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in info.items()}


def _metadata(model_name: str, model: nn.Module, class_names: list[str], run_cfg) -> dict[str, str]:
    return {
        "sct.model": model_name,
        "sct.model_config": json.dumps(dataclasses.asdict(model.config)),
        "sct.classes": json.dumps(list(class_names)),
        "sct.preprocessing": json.dumps(preprocessing(run_cfg.data)),
        "sct.run_config": dump_config(run_cfg),
    }


def checkpoint_export_source(checkpoint: str | Path, frames: int | None, size: int | None,
                             use_ema: bool = True) -> tuple[nn.Module, dict[str, str]]:
    """The checkpoint's model and the metadata of its export at ``frames`` x ``size`` (default: as trained)."""
    from sct.engine.checkpoint import model_from_checkpoint
    from sct.engine.evaluate import checkpoint_run_config

    run_cfg = checkpoint_run_config(checkpoint)
    data = dataclasses.replace(run_cfg.data, num_frames=frames or run_cfg.data.num_frames,
                               crop_size=size or run_cfg.data.crop_size)
    run_cfg = dataclasses.replace(run_cfg, data=data)
    model, metadata = model_from_checkpoint(checkpoint, use_ema=use_ema)
    return model, _metadata(metadata["model"], model, json.loads(metadata["classes"]), run_cfg)


def model_export_source(name: str, frames: int | None = None, size: int | None = None,
                        num_classes: int | None = None, **overrides) -> tuple[nn.Module, dict[str, str]]:
    """A registered model with random weights (``overrides``: config fields), and the metadata of its export
    (class names ``class_<i>``)."""
    import sct

    if name not in sct.list_models():
        raise SCTError(f"--model: unknown model {name!r}; choose from {', '.join(sct.list_models())}")
    sizes = {k: v for k, v in (("num_frames", frames), ("img_size", size), ("num_classes", num_classes)) if v}
    model = sct.create_model(name, **sizes, **overrides)
    c = model.config
    run_cfg = load_config(None, [f"model.name={name}", f"data.num_frames={c.num_frames}",
                                 f"data.crop_size={c.img_size}"])
    return model, _metadata(name, model, [f"class_{i}" for i in range(c.num_classes)], run_cfg)


def _probes(shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    """Inputs the export is checked on: other batch sizes, and values on both sides of zero and of the mean."""
    gen = torch.Generator().manual_seed(seed + 1)
    clip = shape[1:]
    return [torch.randn(1, *clip, generator=gen), 2.0 * torch.randn(2, *clip, generator=gen) + 1.0,
            -1.5 * torch.rand(2, *clip, generator=gen)]


def _tracer_branches(caught: list[warnings.WarningMessage]) -> list[str]:
    """``file:line`` of every place the tracer turned a tensor into a Python bool (a branch it fixed)."""
    spots = [f"{w.filename}:{w.lineno}" for w in caught
             if issubclass(w.category, torch.jit.TracerWarning) and "Python boolean" in str(w.message)]
    return list(dict.fromkeys(spots))


def _trace(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        except Exception as err:  # the exporter raises many kinds; name the model and keep the cause
            raise ExportError(f"{type(model).__name__} cannot be exported to ONNX opset {opset}: {err}") from err
    return caught


def _check(model: nn.Module, path: Path, example_shape: tuple[int, ...], branches: list[str]) -> float:
    """Largest difference between onnxruntime and PyTorch over the probes, relative to the logits' scale."""
    from sct.deploy.onnx_model import session

    runner = session(path)
    worst = 0.0
    for probe in _probes(example_shape):
        with torch.inference_mode():
            expected = model(probe).numpy()
        got = runner.run([OUTPUT_NAME], {INPUT_NAME: probe.numpy()})[0]
        diff = float(np.abs(got - expected).max()) / max(1.0, float(np.abs(expected).max()))
        worst = max(worst, diff)
        if got.shape != expected.shape or not diff <= CHECK_TOLERANCE:
            where = (f"; the tracer fixed a branch on tensor values at {', '.join(branches)}" if branches else "")
            raise ExportError(
                f"{type(model).__name__}: the traced ONNX graph does not reproduce PyTorch on an input of batch "
                f"{probe.shape[0]} (relative difference {diff:.2e}, output {got.shape} vs {expected.shape}): its "
                f"forward depends on the input's values or batch size in Python code, which a graph cannot "
                f"follow{where}. Make that computation a tensor operation (e.g. torch.where) to export it")
    return worst


def export_onnx(model: nn.Module, output: str | Path, *, metadata: dict[str, str], opset: int = DEFAULT_OPSET,
                batch: int = 1) -> Path:
    """Trace ``model`` (eval mode, float32) at the frames and size of ``metadata['sct.preprocessing']``,
    check it with onnxruntime, add ``metadata`` and write ``output`` atomically; returns its path.

    Raises :class:`ExportError` (and writes nothing) when the model cannot be traced or the graph differs
    from PyTorch on the check inputs.
    """
    try:
        import onnx
    except ImportError:
        raise ExportError("onnx is not installed; `pip install sct[deploy]`") from None

    if opset < MIN_OPSET:
        raise ExportError(f"--opset must be >= {MIN_OPSET}, got {opset}")
    output = Path(output)
    if output.is_dir():
        raise ExportError(f"--output {output} is a directory; name the .onnx file to write")
    output.parent.mkdir(parents=True, exist_ok=True)
    pre = json.loads(metadata["sct.preprocessing"])
    shape = (batch, 3, pre["num_frames"], pre["crop_size"], pre["crop_size"])
    model = model.float().eval()
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model(example)  # eager once first: fixed evaluation state (e.g. LSH rotations) becomes constants
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad():
            branches = _tracer_branches(_trace(model, example, tmp, opset))
        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "sct"
        onnx.save(proto, str(tmp))
        _check(model, tmp, shape, branches)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def opset_of(path: str | Path) -> int:
    """The default-domain opset an ONNX file was written with."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
