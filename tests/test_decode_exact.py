"""The frame returned for time t is the one ffmpeg shows at t, for files made by ffmpeg with B-frames,
open and long GOPs, variable frame rates, edit lists, start times != 0 and several codecs/containers."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import frame_index
from sct.data.decode import VideoReader
from sct.data.reference_videos import FFMPEG, FFPROBE, RECIPES, ffmpeg_timeline, make_video, query_times
from sct.data.sampling import ClipSampler

needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None or FFPROBE is None,
    reason="the ffmpeg and ffprobe command-line tools are not installed (.ci/run installs them): they make "
           "the fixtures and give the independent ground truth for decoding exactness",
)

pytestmark = needs_ffmpeg


@pytest.fixture(scope="session")
def ffmpeg_files(tmp_path_factory):
    """name -> (path, ffmpeg's timeline) for every recipe, made once per test session."""
    folder = tmp_path_factory.mktemp("ffmpeg_videos")
    copies = [r for r in RECIPES if r.copy_of]
    with ThreadPoolExecutor(4) as pool:
        paths = dict(zip([r.name for r in RECIPES if not r.copy_of],
                         pool.map(lambda r: make_video(r, folder), [r for r in RECIPES if not r.copy_of])))
        paths.update({r.name: make_video(r, folder) for r in copies})
        timelines = dict(zip(paths, pool.map(ffmpeg_timeline, paths.values())))
    return {name: (paths[name], timelines[name]) for name in paths}


def _wrong(reader, timeline, times) -> list[str]:
    frames = reader.read(times)
    return [f"t={t:.3f}: got frame {frame_index(f)}, ffmpeg shows {timeline.shown_at(t)}"
            for t, f in zip(times, frames) if frame_index(f) != timeline.shown_at(t)]


@pytest.mark.parametrize("name", [r.name for r in RECIPES])
def test_single_time_reads_match_ffmpeg(ffmpeg_files, name):
    path, timeline = ffmpeg_files[name]
    with VideoReader(path) as reader:
        times = query_times(timeline, reader.info.duration)
        wrong = [w for t in times for w in _wrong(reader, timeline, [t])]
    assert not wrong, f"{path.name}: {len(wrong)} of {len(times)} reads wrong:\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("name", [r.name for r in RECIPES])
def test_clips_match_ffmpeg_to_their_last_frame(ffmpeg_files, name):
    path, timeline = ffmpeg_files[name]
    wrong = []
    with VideoReader(path) as reader:
        info = reader.info
        for sampler in (ClipSampler(8, 2), ClipSampler(8, 5, short_video="repeat"), ClipSampler(16, 1)):
            for view in range(5):
                wrong += _wrong(reader, timeline, sampler.view_times(info.duration, info.fps, view, 5))
        wrong += _wrong(reader, timeline, query_times(timeline, info.duration))  # everything in one pass
    assert not wrong, f"{path.name}: " + "\n".join(wrong[:20])


def test_seek_that_lands_after_the_target_is_retried_further_back(ffmpeg_files):
    # MPEG-TS and AVI index by decode time, so a seek to t lands on a keyframe shown after t
    path, timeline = ffmpeg_files["h264_bframes_ts"]
    with VideoReader(path) as reader:
        frame = reader.read([2.05])[0]
    assert frame_index(frame) == timeline.shown_at(2.05) == 20
    assert reader.seeks >= 2


def test_reads_stop_one_frame_past_the_clip(ffmpeg_files):
    path, _ = ffmpeg_files["h264_long_gop_mp4"]  # one keyframe: every read decodes from the start
    with VideoReader(path) as reader:
        reader.read(np.arange(8) * 0.2)
    # frames 0..14 then the one frame whose time shows 14 is over (plus the encoder's reorder delay)
    assert reader.decoded <= 16 + 3
