"""``sct data check ANNOTATION [--root DIR] [--format F]``: decode every video of a split, list the bad ones.

Each video is opened and decoded from start to end (the frames at ``--samples`` evenly spaced times, so
a stream that ends before its header says is caught). Prints one line per bad file with the reason and
exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sct.data.annotations import FORMATS, read_annotations
from sct.data.datasets import DataConfig, load_class_names
from sct.data.frames import open_video
from sct.errors import SCTError, VideoDecodeError
from sct.options import add_json, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="decode every video of an annotation file and list the bad ones",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("annotation", help="annotation file (or split/class directory for ucf101/hmdb51/folder)")
    check.add_argument("--root", default=None, help="dataset root that video paths are relative to "
                                                   "(default: the annotation's folder)")
    check.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="annotation format")
    check.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="UCF101/HMDB51 split number (1-3)")
    check.add_argument("--subset", default="train", choices=("train", "test"),
                       help="UCF101/HMDB51: which list of the split to check")
    check.add_argument("--classes", default=None,
                       help="class index file fixing the label ids (a path from here, or relative to --root) "
                            "(default: classes.txt in --root when it exists, as sct train reads it)")
    check.add_argument("--samples", type=positive_int, default=8,
                       help="frames decoded per video, evenly spaced to the end")
    check.add_argument("--workers", type=positive_int, default=2, help="parallel decoding threads")
    add_json(check, "one line per bad file")


def check_video(path: str, samples: int = 8) -> str | None:
    """None if ``path`` decodes to its end, else the reason it is bad."""
    try:
        with open_video(path, threads="NONE") as reader:
            info = reader.info
            reader.read(np.linspace(0.0, np.nextafter(info.duration, 0.0), max(samples, 1)))
    except VideoDecodeError as err:
        text = str(err)
        return text[len(path) + 2:] if text.startswith(f"{path}: ") else text
    return None


def run(args: argparse.Namespace) -> int:
    ann = Path(args.annotation)
    root = Path(args.root) if args.root else (ann if ann.is_dir() else ann.parent)
    # The same class list as `sct train` reads, so a label train rejects is rejected here too.
    given = args.classes and (str(Path(args.classes).resolve()) if Path(args.classes).exists() else args.classes)
    classes = load_class_names(DataConfig(root=str(root), classes=given or None))
    annotations = read_annotations(args.format, ann, root, classes=classes, split_name=args.subset,
                                   split=args.split)
    paths = annotations.paths
    if not paths:
        raise SCTError(f"{ann}: no videos listed")
    with ThreadPoolExecutor(max(args.workers, 1)) as pool:
        results = list(tqdm(pool.map(lambda p: check_video(p, args.samples), paths), total=len(paths),
                            desc="checking videos", unit="video"))
    bad = [(path, reason) for path, reason in zip(paths, results) if reason is not None]
    if args.json:
        print(json.dumps({"videos": len(paths), "ok": len(paths) - len(bad), "classes": len(annotations.class_names),
                          "bad": [{"path": path, "reason": reason} for path, reason in bad]}, indent=2))
        return 1 if bad else 0
    for path, reason in bad:
        print(f"BAD {path}: {reason}")
    print(f"{len(paths) - len(bad)} of {len(paths)} videos ok, {len(bad)} bad "
          f"({len(annotations.class_names)} classes)")
    return 1 if bad else 0
