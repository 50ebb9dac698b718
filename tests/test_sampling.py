"""Clip timing: PySlowFast num_frames x sampling_rate at target_fps, train/test starts, short videos."""

import numpy as np
import pytest

from sct.data.sampling import ClipSampler
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
