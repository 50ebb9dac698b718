"""``sct stream``: what the streamed output equals (cyclic and causal shift), outputs, and sources that end, stall
or break."""

import json
import os
import threading

import av
import pytest
import torch
from PIL import Image

from conftest import write_video
from engine_support import CLASSES, synthetic_set, tiny_config
from sct import create_model
from sct.cli import main as cli_main
from sct.deploy.reuse import CausalReuse, CyclicReuse, Recompute, receptive_field, window_classifier
from sct.deploy.source import Resampler, StreamEnd, read_frames
from sct.deploy.stream import FramePipeline, stream
from sct.engine.checkpoint import model_from_checkpoint
from sct.engine.evaluate import checkpoint_run_config
from sct.engine.train import train
from sct.errors import ConfigError, OutputError, VideoDecodeError

WINDOW, LENGTH = 5, 11


def _model(shift_mode, **overrides):
    torch.manual_seed(0)
    return create_model("sct_tiny", num_frames=WINDOW, img_size=32, chunk_size=8, num_classes=5,
                        shift_mode=shift_mode, **overrides).eval()


def _streamed(classifier, frames, stride=1):
    """``{last frame: logits}`` of every window, pushing ``frames`` ``(3, N, S, S)`` one at a time."""
    out = {}
    for e in range(frames.shape[1]):
        classifier.push(frames[:, e])
        if classifier.ready() and (e - WINDOW + 1) % stride == 0:
            out[e] = classifier.classify()
    return out


SHIFTS = pytest.mark.parametrize("overrides", [{}, {"shift_frames": 2, "temporal_depth": 2}], ids=["s1", "s2x2"])


def _auto(shift_mode, overrides, expected):
    """The model, random frames ``(3, LENGTH, 32, 32)`` and the strategy ``--reuse auto`` picks (checked)."""
    model = _model(shift_mode, **overrides)
    classifier = window_classifier(model, WINDOW)
    assert type(classifier) is expected
    return model, torch.randn(3, LENGTH, 32, 32), classifier


@SHIFTS
def test_cyclic_reuse_equals_the_model_on_each_window(overrides):
    model, frames, classifier = _auto("cyclic", overrides, CyclicReuse)
    streamed = _streamed(classifier, frames, stride=2)
    assert sorted(streamed) == list(range(WINDOW - 1, LENGTH, 2))
    with torch.inference_mode():
        for e, logits in streamed.items():
            torch.testing.assert_close(logits, model(frames[None, :, e - WINDOW + 1:e + 1])[0], rtol=0, atol=1e-5)


@SHIFTS
def test_causal_reuse_equals_the_clip_encoder_on_the_offline_features_of_the_stream(overrides):
    model, frames, classifier = _auto("causal", overrides, CausalReuse)
    history = receptive_field(model.config)
    assert history == model.config.shift_frames * model.config.temporal_depth * model.config.num_blocks
    with torch.inference_mode():
        for e, logits in _streamed(classifier, frames).items():
            everything = model.forward_features(frames[None, :, :e + 1])[:, -WINDOW:]
            torch.testing.assert_close(logits, model.forward_head(everything)[0], rtol=0, atol=1e-5)
            recent = model.forward_features(frames[None, :, max(0, e + 1 - WINDOW - history):e + 1])[:, -WINDOW:]
            torch.testing.assert_close(logits, model.forward_head(recent)[0], rtol=0, atol=1e-5)


def test_causal_stream_differs_from_the_clip_alone_and_cyclic_models_refuse_causal_reuse():
    model = _model("causal")
    frames = torch.randn(3, LENGTH, 32, 32)
    streamed = _streamed(window_classifier(model, WINDOW), frames)
    with torch.inference_mode():
        clip_alone = model(frames[None, :, LENGTH - WINDOW:])[0]
    # The window's first frame took its keys from the frame before the window, not from itself.
    assert (streamed[LENGTH - 1] - clip_alone).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="shift_mode=causal"):
        CausalReuse(_model("cyclic"), WINDOW)
    with pytest.raises(ConfigError, match="needs an SCT"):
        window_classifier(create_model("xvit_b16", num_frames=4, img_size=32, dim=32, depth=1, heads=2), 4, "cyclic")
    assert type(window_classifier(model, WINDOW, "none")) is Recompute


def test_resampler_picks_the_frame_on_screen_at_each_tick():
    resampler = Resampler(rate=4.0)  # source at 10 frames/s -> ticks at 0, 0.25, 0.5, ...
    picked = []
    for i in range(10):
        picked += resampler.push(i / 10, i)
    picked += resampler.flush(0.1)
    assert [(k, round(t, 2), f) for k, t, f in picked] == [(0, 0.0, 0), (1, 0.25, 2), (2, 0.5, 5), (3, 0.75, 7)]


def _end_of(path):
    frames = read_frames(str(path))
    count = 0
    while True:
        try:
            next(frames)
            count += 1
        except StopIteration as stop:
            return count, stop.value


def test_whole_files_end_normally_whatever_their_timing(tmp_path):
    """The truncation check must not flag whole files: variable frame rate with a long gap, and Matroska."""
    vfr = write_video(tmp_path / "vfr.mp4", num_frames=5, times=[0.0, 0.1, 0.2, 0.3, 2.0])
    mkv = write_video(tmp_path / "whole.mkv", num_frames=40, fps=10, gop=5)
    assert _end_of(vfr) == (5, StreamEnd("ended", "the source has no more frames", 5, 0))
    assert _end_of(mkv)[1].reason == "ended"
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(mkv.read_bytes()[: mkv.stat().st_size * 6 // 10])
    count, end = _end_of(cut)
    assert end.reason == "broke" and 0 < count < 40


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = synthetic_set(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("trained")
    return train(tiny_config(data, out / "run", "train.max_steps=2", "train.eval_every_epochs=0")) / "model.safetensors"


def _decoded(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _assert_outputs_closed(out, annotated, reason):
    """``stream.json`` says ``reason``; every window is a whole JSON line, numbered in order; the annotated
    video decodes (PyAV) to every source frame read; the plot is drawn. Returns the summary."""
    summary = json.loads((out / "stream.json").read_text())
    assert summary["end"] == reason and summary["windows"] >= 1
    text = (out / "timeline.jsonl").read_text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert [w["window"] for w in lines] == list(range(summary["windows"]))
    assert all(w["last_frame"] - w["first_frame"] + 1 == summary["window"] and w["top"] for w in lines)
    assert len(_decoded(annotated)) == summary["source_frames"]
    assert Image.open(out / "timeline.png").size[0] > 100
    return summary


def test_stream_of_a_file_writes_the_offline_probabilities_and_every_output(checkpoint, tmp_path):
    video = write_video(tmp_path / "in.mp4", num_frames=14, width=48, height=40, fps=10)
    out = tmp_path / "out"
    summary = stream(str(video), checkpoint, stride=3, out=out, topk=len(CLASSES), annotate=tmp_path / "ann.mp4",
                     live=True)
    assert summary["end"] == "ended" and summary["source_frames"] == 14
    window = checkpoint_run_config(checkpoint).data.num_frames  # 8 frames, sampling rate 1: every frame
    lines = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert [w["last_frame"] for w in lines] == list(range(window - 1, 14, 3)) == [7, 10, 13]
    assert lines[0]["start_time"] == 0.0 and lines[-1]["end_time"] == pytest.approx(1.3)
    model, _ = model_from_checkpoint(checkpoint)
    pipeline = FramePipeline(checkpoint_run_config(checkpoint).data)
    frames = torch.stack([pipeline(image) for image in _decoded(video)], dim=1)
    with torch.inference_mode():
        for line in lines:
            probs = torch.softmax(model.eval()(frames[None, :, line["first_frame"]:line["last_frame"] + 1])[0], -1)
            for entry in line["top"]:
                assert entry["probability"] == pytest.approx(probs[CLASSES.index(entry["label"])].item(), abs=1e-5)
    assert _assert_outputs_closed(out, tmp_path / "ann.mp4", "ended")["windows"] == 3


def test_cli_stream_reports_a_source_that_stalls_and_closes_its_outputs(checkpoint, tmp_path, capsys):
    video = write_video(tmp_path / "in.ts", num_frames=40, width=32, height=32, fps=10, gop=5)
    fifo = tmp_path / "live.ts"
    os.mkfifo(fifo)
    data = video.read_bytes()

    done = threading.Event()

    def feed():  # a live source: send most of the stream, then go quiet without closing until the test ends
        with open(fifo, "wb") as pipe:
            pipe.write(data[: len(data) * 3 // 4])
            pipe.flush()
            done.wait(120)

    threading.Thread(target=feed, daemon=True).start()
    out = tmp_path / "out"
    code = cli_main(["stream", str(fifo), "--checkpoint", str(checkpoint), "--out", str(out), "--stride", "2",
                     "--stall-timeout", "1.5", "--fps", "10", "--annotate", str(tmp_path / "ann.mp4")])
    done.set()
    assert code == 1
    assert capsys.readouterr().out.startswith("stalled: no frame for")
    summary = _assert_outputs_closed(out, tmp_path / "ann.mp4", "stalled")
    assert 8 < summary["source_frames"] < 40


def _stream_cli(video, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["stream", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--stride", "2",
                     "--annotate", str(tmp_path / "ann.mp4")])
    return code, capsys.readouterr().out, out


def test_cli_stream_reports_a_file_that_breaks_mid_stream_and_closes_its_outputs(checkpoint, tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", num_frames=40, width=32, height=32, fps=10, gop=5)
    data = bytearray(video.read_bytes())
    middle = len(data) // 2  # inside the frame data (the index is at the end): the decoder fails there
    data[middle:middle + 500] = b"\xff" * 500
    video.write_bytes(bytes(data))
    code, printed, out = _stream_cli(video, checkpoint, tmp_path, capsys)
    assert code == 1
    assert printed.startswith("broke: InvalidDataError")
    summary = _assert_outputs_closed(out, tmp_path / "ann.mp4", "broke")
    assert 8 <= summary["source_frames"] < 40


def test_cli_stream_reports_a_truncated_file_and_closes_its_outputs(checkpoint, tmp_path, capsys):
    whole = write_video(tmp_path / "whole.mkv", num_frames=40, width=32, height=32, fps=10, gop=5)
    code, printed, out = _stream_cli(whole, checkpoint, tmp_path, capsys)
    assert code == 0 and printed.startswith("ended:")  # the whole file: no false alarm
    assert _assert_outputs_closed(out, tmp_path / "ann.mp4", "ended")["source_frames"] == 40
    video = tmp_path / "cut.mkv"
    video.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])  # FFmpeg reads it to the cut, no error
    code, printed, out = _stream_cli(video, checkpoint, tmp_path, capsys)
    assert code == 1
    assert printed.startswith("broke: the file stops at") and "of the 4.00 s its header declares" in printed
    summary = _assert_outputs_closed(out, tmp_path / "ann.mp4", "broke")
    assert 8 <= summary["source_frames"] < 40


def test_bad_options_and_sources_are_named(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="--stride"):
        stream("x.mp4", checkpoint, stride=0)
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        stream(str(tmp_path / "missing.mp4"), checkpoint, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_an_unwritable_out_is_refused_before_the_source_is_opened(checkpoint, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # The source does not exist either: the output check must come first, so the error names --out.
    with pytest.raises(OutputError, match="--out"):
        stream(str(tmp_path / "missing.mp4"), checkpoint, out=blocker / "stream")
    with pytest.raises(OutputError, match="--annotate"):
        stream(str(tmp_path / "missing.mp4"), checkpoint, out=tmp_path / "o", annotate=blocker / "x.mp4")
