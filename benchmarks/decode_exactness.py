"""How many single-time reads return another frame than ffmpeg shows, per test file of docs/reliability.md.

Makes the ffmpeg fixtures of ``tests/test_decode_exact.py`` (B-frames, open/long GOP, variable rate,
edit list, MPEG-TS, AVI, MPEG-PS, WebM, MJPEG) and reads every frame's own time, 1 ms before it and
half-way to the next one, one read at a time. ``--reader-source`` measures another version's reader:

    .venv/bin/python benchmarks/decode_exactness.py
    git show OLD:src/sct/data/decode.py > /tmp/old_decode.py
    .venv/bin/python benchmarks/decode_exactness.py --reader-source /tmp/old_decode.py

Needs the ffmpeg and ffprobe command-line tools. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

from sct.analysis.report import markdown_table
from sct.data import decode
from sct.data.reference_videos import RECIPES, ffmpeg_timeline, frame_index, make_video, query_times
from sct.errors import SCTError


def load_reader(source: str | None):
    """``VideoReader`` of this checkout, or of the ``decode.py`` file at ``source``."""
    if source is None:
        return decode.VideoReader
    spec = importlib.util.spec_from_file_location("other_decode", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module.VideoReader


def count_wrong(reader_class, path: Path) -> tuple[int, int]:
    """(wrong reads, reads) over the query times of ``path``; a read that raises counts as wrong."""
    timeline = ffmpeg_timeline(path)
    with reader_class(path) as reader:
        times = query_times(timeline, reader.info.duration)
        wrong = 0
        for t in times:
            try:
                wrong += frame_index(reader.read([t])[0]) != timeline.shown_at(t)
            except SCTError:
                wrong += 1
    return wrong, len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reader-source", help="a decode.py file to measure instead of this checkout's")
    args = parser.parse_args()
    reader_class = load_reader(args.reader_source)
    rows, total = [], [0, 0]
    with tempfile.TemporaryDirectory() as folder:
        for recipe in RECIPES:
            wrong, reads = count_wrong(reader_class, make_video(recipe, Path(folder)))
            rows.append([recipe.name, reads, wrong])
            total = [total[0] + reads, total[1] + wrong]
    print(markdown_table(["file", "reads", "wrong"], [*rows, ["all", *total]]))


if __name__ == "__main__":
    main()
