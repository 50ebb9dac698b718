"""PyAV decoding: frames picked by timestamp, one seek, rotation, frame folders."""

import av
import numpy as np
import pytest
from PIL import Image

from conftest import frame_index, index_frame
from sct.data.decode import VideoReader, decode_frames, probe
from sct.data.frames import FrameFolderReader, open_video
from sct.data.sampling import ClipSampler
from sct.errors import VideoDecodeError


def test_probe_reads_header(video_factory):
    info = probe(video_factory(num_frames=25, width=64, height=48, fps=10))
    assert (info.width, info.height, info.fps) == (64, 48, 10.0)
    assert info.duration == pytest.approx(2.5)
    assert info.num_frames == 25


def test_frames_by_time_constant_rate(video_factory):
    path = video_factory(num_frames=60, fps=10)
    times = np.arange(6) * 0.8 + 0.5  # stride 8 at 10 fps from frame 5
    frames = decode_frames(path, times)
    assert frames.dtype == np.uint8 and frames.shape == (6, 48, 64, 3)
    assert [frame_index(f) for f in frames] == [5, 13, 21, 29, 37, 45]


def test_frames_in_given_order_with_repeats(video_factory):
    frames = decode_frames(video_factory(num_frames=20, fps=10), [1.5, 0.0, 1.5, 0.3])
    assert [frame_index(f) for f in frames] == [15, 0, 15, 3]


def test_variable_frame_rate_picks_frame_on_screen(video_factory):
    stamps = [0.0, 0.1, 0.5, 0.55, 1.0, 2.0]
    path = video_factory(num_frames=6, times=stamps)
    frames = decode_frames(path, [0.05, 0.3, 0.52, 0.56, 1.9, 2.05])
    # the frame on screen at t is the last one whose timestamp is <= t, not "index t * average fps"
    assert [frame_index(f) for f in frames] == [0, 1, 2, 3, 4, 5]


def test_one_seek_and_only_needed_frames_decoded(video_factory):
    path = video_factory(num_frames=120, fps=10, gop=12)
    with VideoReader(path) as reader:
        frames = reader.read(np.arange(100, 110) / 10)
    assert [frame_index(f) for f in frames] == list(range(100, 110))
    assert reader.seeks == 1
    # from the keyframe at or before frame 100 (frame 96) up to frame 109; decoding from the start costs 110
    assert reader.decoded <= 12 + 10


def test_clip_at_start_needs_no_seek(video_factory):
    with VideoReader(video_factory(num_frames=50, fps=10)) as reader:
        reader.read([0.0, 0.1, 0.2])
    assert reader.seeks == 0 and reader.decoded <= 4


def test_display_rotation_applied(video_factory):
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, 32:] = 255  # right half white
    path = video_factory(num_frames=2, width=64, height=32, frames=[image, image], rotation=90)
    frame = decode_frames(path, [0.0])[0]
    assert frame.shape == (64, 32, 3)  # portrait after rotating 90 degrees counter-clockwise
    assert frame[:24].mean() > 200 and frame[40:].mean() < 50  # the right half is now on top


def test_legacy_rotate_tag_applied(tmp_path):
    # Matroska keeps the old clockwise `rotate` tag as a plain stream tag, with no display matrix.
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, 32:] = 255
    path = tmp_path / "legacy.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.metadata["rotate"] = "90"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")), *stream.encode()]:
            container.mux(packet)
    frame = decode_frames(path, [0.0])[0]
    assert frame.shape == (64, 32, 3)
    assert frame[40:].mean() > 200 and frame[:24].mean() < 50  # rotated clockwise: the right half is at the bottom


def test_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError, match=str(missing)):
        probe(missing)


def test_frame_folder_reader(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(index_frame(i, 32, 24)).save(folder / f"img_{i + 1:05d}.png")
    (folder / "notes.txt").write_text("not a frame")
    reader = open_video(folder, frames_fps=6.0)
    assert isinstance(reader, FrameFolderReader)
    assert reader.info.duration == pytest.approx(2.0) and reader.info.num_frames == 12
    frames = reader.read([0.0, 0.5, 1.99, 0.5])
    assert frames.shape == (4, 24, 32, 3)
    assert [frame_index(f) for f in frames] == [0, 3, 11, 3]


def test_frame_folder_errors(tmp_path):
    with pytest.raises(VideoDecodeError, match="not found"):
        FrameFolderReader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDecodeError, match="no .* frames"):
        FrameFolderReader(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "img_00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError, match="img_00001.jpg"):
        FrameFolderReader(bad)


@pytest.mark.parametrize("mode,expected", [("loop", [0, 1, 2, 3, 4, 0, 1, 2]), ("repeat", [0, 1, 2, 3, 4, 4, 4, 4])])
def test_short_video_through_sampler_and_decoder(video_factory, mode, expected):
    path = video_factory(num_frames=5, fps=10)
    with VideoReader(path) as reader:
        times = ClipSampler(8, 1, short_video=mode).view_times(reader.info.duration, reader.info.fps, 0, 1)
        frames = reader.read(times)
    assert [frame_index(f) for f in frames] == expected


def test_longer_audio_in_container_duration_is_not_truncation(tmp_path):
    # mkv has no per-stream duration, so the header length is the container's, here set by 3 s of audio
    path = tmp_path / "av.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for i in range(10):
            for packet in video.encode(av.VideoFrame.from_ndarray(index_frame(i, 64, 48), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        for start in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    with VideoReader(path) as reader:
        assert reader.info.duration > 2.5
        frames = reader.read([0.5, 2.5])
    assert [frame_index(f) for f in frames] == [5, 9]
