"""Annotation readers: each dataset's own split files -> ``(samples, class_names)``.

A sample is ``(path, label_id)`` with ``path`` absolute or relative to the dataset root. Label ids are
stable: they come from the dataset's own class index when it has one (UCF101 ``classInd.txt``, SSv2
``labels.json``, MiT ``moments_categories.txt``, a ``classes.txt``), otherwise from the sorted class
names. A malformed line raises :class:`AnnotationError` naming the file and line number.

Formats (``format`` value: what the annotation file is):

- ``csv``: a csv with a header holding ``path`` and ``label`` columns (the synthetic set's format).
- ``list``: lines ``path label`` (label an integer id or a class name).
- ``kinetics``: the official csv ``label,youtube_id,time_start,time_end,split``; videos at
  ``<label>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`` (or with ``_`` for spaces in the label
  folder, or flat in root, whichever exists).
- ``ucf101``: the split directory (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``).
- ``hmdb51``: the split directory (``<class>_test_splitN.txt``: ``video 1`` train, ``2`` test, ``0`` unused).
- ``ssv2``: ``something-something-v2-{train,validation}.json``; the class is the ``template`` with its
  ``[ ]`` brackets removed, ids from ``something-something-v2-labels.json``; videos ``<id>.webm``.
- ``diving48``: ``Diving48_{train,test}.json`` (``vid_name``, ``label``); videos ``<vid_name>.mp4``.
- ``mit``: Moments in Time ``trainingSet.csv``/``validationSet.csv`` (``path,label,...``, no header).
- ``folder``: a directory ``<class>/<video>`` (the annotation is that directory).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sct.errors import AnnotationError, ConfigError

FORMATS = ("csv", "list", "kinetics", "ucf101", "hmdb51", "ssv2", "diving48", "mit", "folder")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")


@dataclass
class Annotations:
    """Samples of one split: ``paths[i]`` (absolute) has label ``labels[i]`` in ``class_names``."""

    paths: list[str]
    labels: list[int]
    class_names: list[str]


# ---------------------------------------------------------------- helpers


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    """Non-blank stripped lines with 1-based line numbers."""
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line.strip()


def _fail(path: Path, line: int, message: str) -> AnnotationError:
    return AnnotationError(f"{path}:{line}: {message}")


def _load_json(path: Path):
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise _fail(path, err.lineno, f"invalid JSON ({err.msg})") from err


def read_class_list(path: Path) -> list[str]:
    """Class names, one a line, or ``id name`` / ``name,id`` lines (ids must be 0..N-1 or 1..N)."""
    names: dict[int, str] = {}
    plain: list[str] = []
    for number, line in _lines(path):
        parts = re.split(r"[,\s]+", line, maxsplit=1) if re.match(r"^\d+[,\s]", line) else line.rsplit(",", 1)
        if len(parts) == 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1].strip()
        elif len(parts) == 2 and parts[1].strip().isdigit():
            names[int(parts[1])] = parts[0].strip()
        else:
            plain.append(line)
        if names and plain:
            raise _fail(path, number, "mixes numbered and plain class lines")
    if plain:
        return plain
    base = min(names, default=0)
    if sorted(names) != list(range(base, base + len(names))) or base not in (0, 1):
        raise AnnotationError(f"{path}: class ids must be consecutive from 0 or 1")
    return [names[i] for i in sorted(names)]


def _label_ids(names: list[str], class_names: list[str] | None, where: list[tuple[Path, int]]) -> tuple:
    """Map label names to ids (sorted names if no class list); unknown names name their line."""
    classes = class_names if class_names is not None else sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    ids = []
    for name, (path, line) in zip(names, where):
        if name not in index:
            raise _fail(path, line, f"label {name!r} is not in the class list ({len(classes)} classes)")
        ids.append(index[name])
    return ids, classes


def _labels(raw: list[str], class_names: list[str] | None, where: list[tuple[Path, int]]):
    """Labels given as integer ids or as names -> (ids, class_names)."""
    if raw and all(re.fullmatch(r"-?\d+", r) for r in raw):
        ids = [int(r) for r in raw]
        classes = class_names or [str(i) for i in range(max(ids) + 1)]
        for i, (path, line) in zip(ids, where):
            if not 0 <= i < len(classes):
                raise _fail(path, line, f"label id {i} outside 0..{len(classes) - 1}")
        return ids, classes
    return _label_ids(raw, class_names, where)


def _resolve(root: Path, rel: str) -> str:
    path = Path(rel)
    return str(path if path.is_absolute() else root / path)


# ---------------------------------------------------------------- readers


def read_csv(ann: Path, root: Path, classes: list[str] | None) -> Annotations:
    """Header ``path,label`` (other columns ignored)."""
    with open(_exists(ann), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise _fail(ann, 1, f"header must contain 'path' and 'label', got {reader.fieldnames}")
        paths, raw, where = [], [], []
        for row in reader:
            if not row.get("path") or row.get("label") in (None, ""):
                raise _fail(ann, reader.line_num, "missing path or label")
            paths.append(_resolve(root, row["path"]))
            raw.append(row["label"].strip())
            where.append((ann, reader.line_num))
    ids, names = _labels(raw, classes, where)
    return Annotations(paths, ids, names)


def read_list(ann: Path, root: Path, classes: list[str] | None) -> Annotations:
    """``path label`` lines; the label is the last field so paths may contain spaces."""
    paths, raw, where = [], [], []
    for number, line in _lines(ann):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise _fail(ann, number, f"expected 'path label', got {line!r}")
        paths.append(_resolve(root, parts[0]))
        raw.append(parts[1])
        where.append((ann, number))
    ids, names = _labels(raw, classes, where)
    return Annotations(paths, ids, names)


def _exists(path: Path) -> Path:
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    return path


def _kinetics_path(root: Path, label: str, name: str) -> str:
    """``root/<label>/name``, or the layouts other download scripts use when that file does not exist:
    ``root/<label with underscores>/name`` and the flat ``root/name`` (the CVDF tarballs)."""
    candidates = [root / label / name, root / label.replace(" ", "_") / name, root / name]
    return str(next((c for c in candidates if c.is_file()), candidates[0]))


def read_kinetics(ann: Path, root: Path, classes: list[str] | None) -> Annotations:
    """Official Kinetics csv; ``<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` under root."""
    with open(_exists(ann), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"label", "youtube_id", "time_start", "time_end"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise _fail(ann, 1, f"Kinetics csv header must contain {sorted(need)}, got {reader.fieldnames}")
        paths, raw, where = [], [], []
        for row in reader:
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise _fail(ann, reader.line_num, f"bad time_start/time_end {row['time_start']!r}, "
                                                  f"{row['time_end']!r}") from None
            if not row["youtube_id"] or not row["label"]:
                raise _fail(ann, reader.line_num, "missing youtube_id or label")
            paths.append(_kinetics_path(root, row["label"], f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"))
            raw.append(row["label"])
            where.append((ann, reader.line_num))
    ids, names = _label_ids(raw, classes, where)
    return Annotations(paths, ids, names)


def read_ucf101(split_dir: Path, root: Path, split_name: str, split: int,
                classes: list[str] | None) -> Annotations:
    """UCF101 ``trainlist0N.txt`` (``path id``, 1-based) / ``testlist0N.txt`` (``path``; class = folder)."""
    names = classes or read_class_list(split_dir / "classInd.txt")
    kind = "train" if split_name == "train" else "test"
    ann = split_dir / f"{kind}list{split:02d}.txt"
    paths, raw, where = [], [], []
    for number, line in _lines(ann):
        parts = line.split()
        if len(parts) not in (1, 2) or "/" not in parts[0]:
            raise _fail(ann, number, f"expected '<Class>/<video> [id]', got {line!r}")
        if len(parts) == 2 and not parts[1].isdigit():
            raise _fail(ann, number, f"class id {parts[1]!r} is not an integer")
        paths.append(_resolve(root, parts[0]))
        raw.append(parts[0].split("/")[0])
        where.append((ann, number))
    ids, names = _label_ids(raw, names, where)
    return Annotations(paths, ids, names)


def read_hmdb51(split_dir: Path, root: Path, split_name: str, split: int,
                classes: list[str] | None) -> Annotations:
    """HMDB51 ``<class>_test_split<N>.txt`` files: ``video 1`` train, ``video 2`` test, ``0`` unused."""
    files = sorted(split_dir.glob(f"*_test_split{split}.txt"))
    if not files:
        raise AnnotationError(f"{split_dir}: no *_test_split{split}.txt files")
    wanted = "1" if split_name == "train" else "2"
    names = classes or sorted(f.name[: -len(f"_test_split{split}.txt")] for f in files)
    paths, raw, where = [], [], []
    for ann in files:
        label = ann.name[: -len(f"_test_split{split}.txt")]
        for number, line in _lines(ann):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise _fail(ann, number, f"expected '<video> 0|1|2', got {line!r}")
            if parts[1] == wanted:
                paths.append(str(root / label / parts[0]))
                raw.append(label)
                where.append((ann, number))
    ids, names = _label_ids(raw, names, where)
    return Annotations(paths, ids, names)


def ssv2_class(template: str) -> str:
    """SSv2 class name: the template with its ``[`` ``]`` removed (``Putting [something] on ...``)."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(ann: Path, root: Path, classes: list[str] | None, ext: str) -> Annotations:
    """SSv2 json list of ``{"id", "template", ...}``; videos ``<id><ext>`` under root."""
    items = _load_json(ann)
    if not isinstance(items, list):
        raise AnnotationError(f"{ann}: expected a JSON list of videos")
    paths, raw, where = [], [], []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "id" not in item or "template" not in item:
            raise _fail(ann, number, "entry needs 'id' and 'template' (entry number in the list)")
        paths.append(str(root / f"{item['id']}{ext}"))
        raw.append(ssv2_class(item["template"]))
        where.append((ann, number))
    ids, names = _label_ids(raw, classes, where)
    return Annotations(paths, ids, names)


def read_ssv2_labels(path: Path) -> list[str]:
    """``something-something-v2-labels.json``: ``{"class name": "id", ...}`` -> names by id."""
    table = _load_json(path)
    if not isinstance(table, dict):
        raise AnnotationError(f"{path}: expected a JSON object {{name: id}}")
    try:
        by_id = {int(v): k for k, v in table.items()}
    except ValueError as err:
        raise AnnotationError(f"{path}: class ids must be integers ({err})") from err
    if sorted(by_id) != list(range(len(by_id))):
        raise AnnotationError(f"{path}: class ids must be 0..{len(by_id) - 1}")
    return [by_id[i] for i in range(len(by_id))]


def read_diving48(ann: Path, root: Path, classes: list[str] | None, ext: str) -> Annotations:
    """Diving48 json list of ``{"vid_name", "label", ...}``; videos ``<vid_name><ext>`` under root."""
    items = _load_json(ann)
    if not isinstance(items, list):
        raise AnnotationError(f"{ann}: expected a JSON list of videos")
    paths, raw, where = [], [], []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "vid_name" not in item or not isinstance(item.get("label"), int):
            raise _fail(ann, number, "entry needs 'vid_name' and an integer 'label' (entry number in the list)")
        paths.append(str(root / f"{item['vid_name']}{ext}"))
        raw.append(str(item["label"]))
        where.append((ann, number))
    ids, names = _labels(raw, classes or [str(i) for i in range(48)], where)
    return Annotations(paths, ids, names)


def read_diving48_vocab(path: Path) -> list[str]:
    """``Diving48_vocab.json``: a list of 4-word dives -> ``"Back 15som 05Twis FREE"`` names."""
    vocab = _load_json(path)
    if not isinstance(vocab, list):
        raise AnnotationError(f"{path}: expected a JSON list")
    return [" ".join(v) if isinstance(v, list) else str(v) for v in vocab]


def read_mit(ann: Path, root: Path, classes: list[str] | None) -> Annotations:
    """Moments in Time csv without header: ``path,label[,agreement,disagreement]``."""
    paths, raw, where = [], [], []
    with open(_exists(ann), newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise _fail(ann, number, f"expected 'path,label,...', got {','.join(row)!r}")
            paths.append(_resolve(root, row[0]))
            raw.append(row[1])
            where.append((ann, number))
    ids, names = _label_ids(raw, classes, where)
    return Annotations(paths, ids, names)


def read_folder(folder: Path, classes: list[str] | None) -> Annotations:
    """``folder/<class>/<video file or frame folder>``; classes are the sorted sub-folder names."""
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: dataset folder not found")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = classes or [p.name for p in class_dirs]
    index = {name: i for i, name in enumerate(names)}
    paths, labels = [], []
    for class_dir in class_dirs:
        if class_dir.name not in index:
            raise AnnotationError(f"{class_dir}: folder is not in the class list")
        for item in sorted(class_dir.iterdir()):
            if item.name.startswith("."):
                continue
            if item.is_dir() or item.suffix.lower() in VIDEO_SUFFIXES:
                paths.append(str(item))
                labels.append(index[class_dir.name])
    return Annotations(paths, labels, names)


# ---------------------------------------------------------------- dispatch


def detect_format(ann: Path) -> str:
    """Guess the format from the annotation path and its first bytes."""
    if ann.is_dir():
        if (ann / "classInd.txt").is_file():
            return "ucf101"
        if any(ann.glob("*_test_split*.txt")):
            return "hmdb51"
        return "folder"
    if not ann.is_file():
        raise AnnotationError(f"{ann}: annotation file not found")
    head = ann.read_text(encoding="utf-8", errors="replace")[:4096]
    if ann.suffix == ".json":
        if '"template"' in head:
            return "ssv2"
        if '"vid_name"' in head:
            return "diving48"
        raise AnnotationError(f"{ann}: cannot tell the JSON format (give format: ssv2 or diving48)")
    first = head.splitlines()[0] if head.strip() else ""
    fields = [f.strip() for f in first.split(",")]
    if "youtube_id" in fields:
        return "kinetics"
    if "path" in fields and "label" in fields:
        return "csv"
    if ann.suffix == ".csv":
        return "mit"
    return "list"


def read_annotations(fmt: str, ann: Path, root: Path, *, classes: list[str] | None = None,
                     split_name: str = "train", split: int = 1, video_ext: str | None = None) -> Annotations:
    """Read one split; ``fmt`` may be ``auto``. ``classes`` (if given) fixes the label ids."""
    if fmt == "auto":
        fmt = detect_format(ann)
    readers: dict[str, Callable[[], Annotations]] = {
        "csv": lambda: read_csv(ann, root, classes),
        "list": lambda: read_list(ann, root, classes),
        "kinetics": lambda: read_kinetics(ann, root, classes),
        "ucf101": lambda: read_ucf101(ann, root, split_name, split, classes),
        "hmdb51": lambda: read_hmdb51(ann, root, split_name, split, classes),
        "ssv2": lambda: read_ssv2(ann, root, classes, video_ext or ".webm"),
        "diving48": lambda: read_diving48(ann, root, classes, video_ext or ".mp4"),
        "mit": lambda: read_mit(ann, root, classes),
        "folder": lambda: read_folder(ann, classes),
    }
    if fmt not in readers:
        raise ConfigError(f"data.format: unknown format {fmt!r} (choose auto or one of {', '.join(FORMATS)})")
    return readers[fmt]()


def read_classes_file(path: Path) -> list[str]:
    """A class index file in the dataset's own format (json for SSv2/Diving48, text otherwise)."""
    if path.suffix == ".json":
        data = _load_json(path)
        return read_ssv2_labels(path) if isinstance(data, dict) else read_diving48_vocab(path)
    return read_class_list(path)
