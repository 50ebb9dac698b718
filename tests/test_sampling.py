"""Clip timing (PySlowFast num_frames x sampling_rate at target_fps, train/test starts, short videos) and
segment timing (TSN: one frame per equal segment of the whole video)."""

import numpy as np
import pytest

from sct.data.sampling import ClipSampler, SegmentSampler, build_sampler
from sct.errors import ConfigError


def test_step_and_span_native_and_target_fps():
    native = ClipSampler(num_frames=8, sampling_rate=4)
    assert native.step(25.0) == pytest.approx(4 / 25)
    assert native.span(25.0) == pytest.approx(32 / 25)
    resampled = ClipSampler(num_frames=8, sampling_rate=4, target_fps=30.0)
    assert resampled.step(25.0) == pytest.approx(4 / 30)  # counted at target_fps, whatever the video's rate


def test_paper_table2_mapping_spans():
    # K400 "frame rate 5": 24 frames at 5 fps (sampling_rate 1) cover 4.8 s of a 10 s clip
    assert ClipSampler(24, 1, target_fps=5).span(30.0) == pytest.approx(4.8)
    # MiT "frame rate 8": 24 frames cover exactly its 3 s videos
    assert ClipSampler(24, 1, target_fps=8).span(30.0) == pytest.approx(3.0)


def test_train_times_random_start_within_video():
    sampler = ClipSampler(num_frames=4, sampling_rate=2)
    starts = []
    for seed in range(50):
        times = sampler.train_times(10.0, 10.0, np.random.default_rng(seed))
        np.testing.assert_allclose(np.diff(times), 0.2)
        assert times[0] >= 0 and times[-1] + 0.2 <= 10.0 + 1e-9
        starts.append(times[0])
    assert max(starts) - min(starts) > 5.0  # starts spread over [0, 10 - 0.8]
    again = sampler.train_times(10.0, 10.0, np.random.default_rng(3))
    np.testing.assert_array_equal(again, sampler.train_times(10.0, 10.0, np.random.default_rng(3)))


def test_views_evenly_spaced_from_start_to_end():
    sampler = ClipSampler(num_frames=4, sampling_rate=5)  # span 2 s at 10 fps
    starts = [sampler.view_times(10.0, 10.0, v, 5)[0] for v in range(5)]
    np.testing.assert_allclose(starts, [0.0, 2.0, 4.0, 6.0, 8.0])
    assert sampler.view_times(10.0, 10.0, 0, 1)[0] == pytest.approx(4.0)  # one view: the centre clip
    with pytest.raises(ValueError):
        sampler.view_times(10.0, 10.0, 5, 5)


def test_short_video_loops():
    sampler = ClipSampler(num_frames=6, sampling_rate=1, short_video="loop")
    times = sampler.view_times(0.4, 10.0, 0, 1)  # 4 frames of video, 6 wanted
    np.testing.assert_allclose(times, [0.0, 0.1, 0.2, 0.3, 0.0, 0.1], atol=1e-9)


def test_short_video_repeats_last_frame():
    sampler = ClipSampler(num_frames=6, sampling_rate=1, short_video="repeat")
    times = sampler.view_times(0.4, 10.0, 0, 1)
    assert np.all(times < 0.4)
    np.testing.assert_allclose(times[:4], [0.0, 0.1, 0.2, 0.3])
    assert np.floor(times[4:] * 10).tolist() == [3.0, 3.0]  # frame 3, the last one, stays on screen


@pytest.mark.parametrize("kwargs", [dict(num_frames=0), dict(sampling_rate=0), dict(target_fps=0.0),
                                    dict(short_video="bounce")])
def test_invalid_values_raise(kwargs):
    with pytest.raises(ConfigError):
        ClipSampler(**kwargs)


def test_segment_train_times_one_random_instant_per_segment():
    sampler = SegmentSampler(num_frames=4)
    draws = np.stack([sampler.train_times(8.0, 25.0, np.random.default_rng(seed)) for seed in range(200)])
    segment = np.floor(draws / 2.0)  # 4 segments of 2 s
    assert (segment == np.arange(4)).all()
    assert (draws.min(0) < np.arange(4) * 2 + 0.1).all() and (draws.max(0) > np.arange(4) * 2 + 1.9).all()
    assert len({tuple(d) for d in draws}) == 200  # offsets drawn independently per segment and per draw
    again = sampler.train_times(8.0, 25.0, np.random.default_rng(7))
    np.testing.assert_array_equal(again, draws[7])


@pytest.mark.parametrize("duration", [2.0, 6.0, 60.0])
def test_segment_clips_cover_the_whole_video_whatever_its_length(duration):
    times = SegmentSampler(8).view_times(duration, 12.0, 0, 1)
    np.testing.assert_allclose(times, (np.arange(8) + 0.5) * duration / 8)  # the middle of each segment


def test_segment_test_views_are_evenly_spaced_inside_segments():
    sampler = SegmentSampler(num_frames=2)
    views = np.stack([sampler.view_times(4.0, 10.0, v, 4) for v in range(4)])
    np.testing.assert_allclose(views[:, 0], [0.25, 0.75, 1.25, 1.75])  # (v + 1/2) / 4 of the first 2 s segment
    np.testing.assert_allclose(views[:, 1], views[:, 0] + 2.0)
    with pytest.raises(ValueError):
        sampler.view_times(4.0, 10.0, 4, 4)


def test_segment_middle_frames_match_tsn_test_indices():
    # TSN/TSM test sampling of an N-frame video: int(tick / 2 + tick * k), tick = N / T
    for n_frames, segments in [(30, 8), (121, 16), (48, 8), (5, 8)]:
        times = SegmentSampler(segments).view_times(n_frames / 30.0, 30.0, 0, 1)
        tick = n_frames / segments
        expected = [int(tick / 2 + tick * k) for k in range(segments)]
        assert np.floor(times * 30.0 + 1e-4).astype(int).tolist() == expected


def test_segment_times_stay_inside_a_short_video_in_order():
    times = SegmentSampler(16).train_times(0.3, 10.0, np.random.default_rng(0))  # 3 frames, 16 wanted
    assert np.all(np.diff(times) >= 0) and times[0] >= 0 and times[-1] < 0.3


def test_build_sampler_by_name():
    assert build_sampler("segment", 8, sampling_rate=4) == SegmentSampler(8)
    assert build_sampler("clip", 8, 2, 5.0, "repeat") == ClipSampler(8, 2, 5.0, "repeat")
    with pytest.raises(ConfigError, match="sampling"):
        build_sampler("dense", 8)
    with pytest.raises(ConfigError):
        SegmentSampler(0)
