"""``sct data check ANNOTATION [--root DIR] [--format F]``: decode every video of a split, list the bad ones.

Each video is opened and decoded from start to end (the frames at ``--samples`` evenly spaced times, so
a stream that ends before its header says is caught). Image datasets (``--format imagefolder``,
``image_csv``, ``image_list``, ``shards``; a folder of image class folders or a ``.tar`` pattern is
recognised) have every image decoded in full; shards are indexed first, which checks their labels.
Prints one line per bad file with the reason and exits 1 if there are any.
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
from sct.data.images import IMAGE_FORMATS, IMAGE_SUFFIXES, open_image, read_image_split, to_rgb
from sct.errors import SCTError, VideoDecodeError
from sct.options import add_json, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="decode every video of an annotation file and list the bad ones",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("annotation", help="annotation file (or split/class directory for ucf101/hmdb51/folder)")
    check.add_argument("--root", default=None, help="dataset root that video paths are relative to "
                                                   "(default: the annotation's folder)")
    check.add_argument("--format", default="auto", choices=("auto", *FORMATS, *IMAGE_FORMATS),
                       help="annotation format")
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


def check_image(source, name: str) -> str | None:
    """None if the image (a path, or a shard member's bytes) decodes in full, else the reason it is bad."""
    try:
        with open_image(source, name) as image:
            to_rgb(image, name)
    except VideoDecodeError as err:
        return str(err).removeprefix(f"{name}: ")
    return None


def image_format(ann: Path, fmt: str) -> str | None:
    """The image format to check ``ann`` as, or None for a video dataset."""
    if fmt != "auto":
        return fmt if fmt in IMAGE_FORMATS else None
    if ann.name.endswith(".tar") or "{" in ann.name:
        return "shards"
    if ann.is_dir():
        first = next((p for d in sorted(ann.iterdir()) if d.is_dir() for p in sorted(d.iterdir())), None)
        return "imagefolder" if first is not None and first.suffix.lower() in IMAGE_SUFFIXES else None
    return None


def _image_jobs(ann: Path, root: Path, fmt: str, classes: list[str] | None, subset: str):
    """``(names, sources, number of classes)`` of an image split; shards are indexed (labels checked)."""
    if fmt == "shards":
        from sct.data.shards import index_shards

        if classes is None:
            raise SCTError(f"checking shards needs a class list: --classes or {root / 'classes.txt'}")
        members = [m for shard in index_shards(str(ann), root, len(classes)) for m in shard]

        def read(member):
            with open(member.shard, "rb") as handle:
                return member.read(handle)

        return [m.name for m in members], (lambda i: read(members[i])), len(classes)
    annotations = read_image_split(fmt, ann, root, classes, subset)
    return annotations.paths, (lambda i: annotations.paths[i]), len(annotations.class_names)


def run(args: argparse.Namespace) -> int:
    ann = Path(args.annotation)
    root = Path(args.root) if args.root else (ann if ann.is_dir() else ann.parent)
    if image_format(ann, args.format) == "shards" and not args.root:
        root = Path(".")
    # The same class list as `sct train` reads, so a label train rejects is rejected here too.
    given = args.classes and (str(Path(args.classes).resolve()) if Path(args.classes).exists() else args.classes)
    classes = load_class_names(DataConfig(root=str(root), classes=given or None))
    fmt = image_format(ann, args.format)
    if fmt is not None:
        names, source, num_classes = _image_jobs(ann, root, fmt, classes, args.subset)
        check, kind = (lambda i: check_image(source(i), names[i])), "image"
    else:
        annotations = read_annotations(args.format, ann, root, classes=classes, split_name=args.subset,
                                       split=args.split)
        names, num_classes = annotations.paths, len(annotations.class_names)
        check, kind = (lambda i: check_video(names[i], args.samples)), "video"
    if not names:
        raise SCTError(f"{ann}: no {kind}s listed")
    with ThreadPoolExecutor(max(args.workers, 1)) as pool:
        results = list(tqdm(pool.map(check, range(len(names))), total=len(names),
                            desc=f"checking {kind}s", unit=kind))
    bad = [(name, reason) for name, reason in zip(names, results) if reason is not None]
    if args.json:
        print(json.dumps({f"{kind}s": len(names), "ok": len(names) - len(bad), "classes": num_classes,
                          "bad": [{"path": name, "reason": reason} for name, reason in bad]}, indent=2))
        return 1 if bad else 0
    for name, reason in bad:
        print(f"BAD {name}: {reason}")
    print(f"{len(names) - len(bad)} of {len(names)} {kind}s ok, {len(bad)} bad ({num_classes} classes)")
    return 1 if bad else 0
