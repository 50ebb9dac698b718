"""Whole videos decoded once and kept in memory, for datasets small enough to fit (``data.cache_mb``).

A training epoch of a small set (the synthetic demo: 2,240 training clips of 16 x 32 x 32) spends more
time opening and decoding files than in the model; with the cache every video is decoded once per
process and later clips index its frames. Frame ``i`` is taken to be on screen during
``[i / fps, (i + 1) / fps)``, as for frame folders (:func:`sct.data.frames.frame_indices`): exact for
constant-frame-rate files (the reader's own answer, checked by a test), an approximation for
variable-rate ones, which is why the cache is off by default.

The cache lives in the process that reads: with ``num_workers > 0`` each epoch's workers start empty,
so it pays off with ``num_workers: 0`` (the demo's setting).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np

from sct.data.frames import frame_indices


class DecodedVideoCache:
    """``read(key, open_reader, times_of)`` -> uint8 ``(T, H, W, 3)`` frames, decoding each video once.

    ``open_reader()`` returns a reader (``info``, ``read(times)``, a context manager); ``times_of(info)``
    gives the wanted times in seconds. Videos that would take the cache past ``max_bytes`` are read
    directly every time, as without a cache.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._videos: dict[str, tuple[float, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._videos)

    def read(self, key: str, open_reader: Callable[[], AbstractContextManager],
             times_of: Callable[[object], np.ndarray]) -> np.ndarray:
        cached = self._videos.get(key)
        if cached is None:
            with open_reader() as reader:
                info = reader.info
                count = max(1, round(info.duration * info.fps))
                if self.used_bytes + count * info.height * info.width * 3 > self.max_bytes:
                    return reader.read(times_of(info))
                frames = reader.read(np.arange(count) / info.fps)
            cached = self._videos[key] = (info, frames)
            self.used_bytes += frames.nbytes
        info, frames = cached
        return frames[frame_indices(times_of(info), info.fps, len(frames))]
