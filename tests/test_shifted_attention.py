"""Shifted MSA (Eq. 6-7) and the appendix's temporal attention kinds."""

import pytest
import torch

from sct.models.attention.dense import MultiHeadAttention
from sct.models.attention.shifted import TEMPORAL_KINDS, ShiftedMSA, temporal_attention


def _changed_frames(module, x, frame):
    """Frames of the output that change when input frame ``frame`` is perturbed."""
    y = module(x)
    x2 = x.clone()
    x2[:, frame] += torch.randn_like(x2[:, frame])
    diff = (module(x2) - y).abs().amax(dim=(0, 2, 3))
    return {t for t in range(x.shape[1]) if diff[t] > 1e-6}


@pytest.mark.parametrize("shift", [1, 2])
def test_frame_t_depends_on_itself_and_frame_t_minus_s_only(shift):
    torch.manual_seed(0)
    frames = 5
    msa = ShiftedMSA(dim=16, heads=2, shift=shift).eval()
    x = torch.randn(2, frames, 6, 16)
    for source in range(frames):
        # Frame `source` is the key frame of frame `source + s` (cyclic) and its own query/value frame.
        assert _changed_frames(msa, x, source) == {source, (source + shift) % frames}


def test_first_frame_takes_keys_from_last_frame():
    torch.manual_seed(0)
    msa = ShiftedMSA(dim=8, heads=2, shift=1).eval()
    msa.store_attention = True
    x = torch.randn(1, 3, 4, 8)
    x[:, 2] = 0  # the last frame's keys are all equal, so frame 0 attends uniformly
    msa(x)
    torch.testing.assert_close(msa.last_attention[0, 0], torch.full((2, 4, 4), 0.25))


def test_single_frame_and_zero_shift_equal_ordinary_msa():
    torch.manual_seed(0)
    shifted = ShiftedMSA(dim=16, heads=4, shift=1)
    ordinary = MultiHeadAttention(dim=16, heads=4)
    ordinary.load_state_dict(shifted.state_dict())
    x = torch.randn(2, 1, 7, 16)
    torch.testing.assert_close(shifted(x), ordinary(x))
    shifted.shift = 0
    x = torch.randn(2, 4, 7, 16)
    torch.testing.assert_close(shifted(x), ordinary(x))


def test_temporal_kinds_dependence_patterns():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 8)
    space = temporal_attention("space", 8, 2).eval()
    assert _changed_frames(space, x, 1) == {1}
    time = temporal_attention("time", 8, 2).eval()
    assert _changed_frames(time, x, 1) == {0, 1, 2, 3}
    # Time attention mixes only the same token position across frames.
    y = time(x)
    x2 = x.clone()
    x2[:, 1, 0] += 1.0
    changed_tokens = (time(x2) - y).abs().amax(dim=(0, 1, 3)) > 1e-6
    assert changed_tokens.tolist() == [True, False, False]
    # A patch changes its own position in every frame, and the [CLS] of its frame: the frame summary
    # sees the image, as TimeSformer's [CLS] does.
    x3 = x.clone()
    x3[:, 1, 1] += 1.0
    changed = (time(x3) - y).abs().amax(dim=(0, 3)) > 1e-6
    assert changed[:, 1].all() and not changed[:, 2].any()
    assert changed[:, 0].tolist() == [False, True, False, False]


@pytest.mark.parametrize("kind", TEMPORAL_KINDS)
def test_every_kind_keeps_shape(kind):
    module = temporal_attention(kind, 8, 2)
    x = torch.randn(2, 3, 5, 8)
    assert module(x).shape == x.shape
