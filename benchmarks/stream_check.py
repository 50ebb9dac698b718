"""The user's check of ``sct stream``: a ``move_right`` clip then a ``move_left`` clip, joined into one video,
streamed with a checkpoint trained on the synthetic motion set; does the timeline switch label near the cut?

    .venv/bin/python benchmarks/stream_check.py --checkpoint RUN/model.safetensors --data RUN_DATA_ROOT

Takes the first ``--pairs`` test videos of each class (from ``<data>/test.csv``), writes
``<out>/right_then_left_<i>.mp4`` (the two clips back to back, H.264), streams each with stride 1 and
prints, per video, the cut time, the top-1 label of every window and the window from which the label stays
``move_left``; ``<out>/stream_check.json`` keeps it all.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import av

from sct.deploy.stream import stream

ROOT = Path(__file__).resolve().parents[1]


def join(clips: list[Path], out: Path) -> tuple[Path, float]:
    """Concatenate same-size videos frame by frame; returns the file and the time of the first cut."""
    frames, fps = [], None
    for clip in clips:
        with av.open(str(clip)) as container:
            fps = fps or container.streams.video[0].average_rate
            frames.append([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(out), "w") as container:
        stream_ = container.add_stream("libx264", rate=fps)
        stream_.height, stream_.width = frames[0][0].shape[:2]
        stream_.pix_fmt = "yuv420p"
        stream_.options = {"crf": "10"}
        for image in (f for part in frames for f in part):
            container.mux(stream_.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream_.encode())
    return out, len(frames[0]) / float(fps)


def settled_on(windows: list[dict], label: str) -> dict | None:
    """The first window from which every later window's top-1 is ``label`` (None if the last one is not)."""
    first = None
    for window in windows:
        first = (first or window) if window["top"][0]["label"] == label else None
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="the synthetic set's root (test.csv, videos/)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "runs" / "stream_check"))
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader((data / "test.csv").open()))
    pick = {c: [data / r["path"] for r in rows if r["label"] == c][: args.pairs] for c in ("move_right", "move_left")}
    results = []
    for i, (right, left) in enumerate(zip(pick["move_right"], pick["move_left"])):
        video, cut = join([right, left], out / f"right_then_left_{i}.mp4")
        summary = stream(str(video), args.checkpoint, stride=1, out=out / f"stream_{i}", topk=2, live=False)
        windows = [json.loads(line) for line in (out / f"stream_{i}" / "timeline.jsonl").read_text().splitlines()]
        labels = [(w["end_time"], w["top"][0]["label"]) for w in windows]
        switches = [t for (t, a), (_, b) in zip(labels, labels[1:]) if a != b]
        settled = settled_on(windows, "move_left")
        results.append({"video": str(video), "clips": [str(right), str(left)], "cut_time": cut,
                        "windows": [f"{t:.1f}s {label}" for t, label in labels], "switch_times": switches,
                        "first_label": labels[0][1] if labels else None, "move_left_from": settled,
                        "end": summary["end"]})
        print(f"{video.name}: cut at {cut:.1f} s; top-1 per window end: "
              + ", ".join(f"{t:.1f}:{label}" for t, label in labels), flush=True)
        if settled:
            print(f"  move_left from the window ending at {settled['end_time']:.1f} s (model frame "
                  f"{settled['last_frame']}), {settled['end_time'] - cut:.1f} s after the cut", flush=True)
    (out / "stream_check.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
