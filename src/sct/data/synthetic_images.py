"""The synthetic image set: one object per image, classes = shape x fill texture, from the video renderer.

Each image is a frame of :mod:`sct.data.synthetic`'s world (its textured backgrounds, shapes, contrasting
colours, anti-aliased edges and pixel noise) holding one object at a random place, size and angle. The
class is the object's shape (6) crossed with its fill (``solid``, ``striped``, ``checked``): 18 classes
that need both the outline and the texture inside it, which is what a frame encoder pretrained on it can
bring to the motion set. Every image's randomness comes from ``(seed, class name, index)``.

Layout written by :func:`generate_images` (``sct synth --images OUT``)::

    OUT/{train,val,test}/<class>/<class>_<index>.png|.jpg   even indices PNG, odd JPEG (quality 90)
    OUT/classes.txt                                         line order = label id
    OUT/{train,val,test}.csv                                header ``path,label`` (for data.format image_csv)
    OUT/shards/<split>-NNNNNN.tar                           WebDataset layout: ``KEY.png|jpg`` + ``KEY.cls``
    OUT/synth.json                                          the settings
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sct.data.synthetic import SHAPES, Sprite, clip_rng, contrasting_colour, luminance, random_background, sprite_alpha
from sct.errors import ConfigError

TEXTURES = ("solid", "striped", "checked")
IMAGE_CLASSES: tuple[str, ...] = tuple(f"{shape}_{texture}" for shape in SHAPES for texture in TEXTURES)
SPLITS = (("train", 0.7), ("val", 0.15), ("test", 0.15))
IMAGES_FORMAT_VERSION = 1


def _fill(texture: str, rng: np.random.Generator, size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """``(size, size)`` factor in {0.3, 1} that modulates the object's colour: its texture."""
    if texture == "solid":
        return np.ones((size, size), np.float32)
    period = radius * rng.uniform(0.45, 0.7)
    phi = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    u = (xx - centre[0]) * np.cos(phi) + (yy - centre[1]) * np.sin(phi)
    v = -(xx - centre[0]) * np.sin(phi) + (yy - centre[1]) * np.cos(phi)
    on = np.floor(u / period) % 2 == 0
    if texture == "checked":
        on = on ^ (np.floor(v / period) % 2 == 0)
    return np.where(on, 1.0, 0.3).astype(np.float32)


def render_image(class_name: str, rng: np.random.Generator, size: int = 32, noise: float = 0.04) -> np.ndarray:
    """uint8 ``(size, size, 3)``: one object of ``class_name`` (``<shape>_<texture>``) on a textured background."""
    shape, texture = class_name.rsplit("_", 1)
    background = random_background(rng, size)
    colour = np.asarray(contrasting_colour(rng, luminance(background.reshape(-1, 3).mean(0)), 0.3), np.float32)
    radius = float(rng.uniform(0.25, 0.4) * size)
    lo, hi = radius * 0.8, size - radius * 0.8
    centre = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    angle = float(rng.uniform(0, 2 * np.pi))
    sprite = Sprite(shape, tuple(colour), (centre, centre), (radius, radius), (angle, angle))
    alpha = sprite_alpha(sprite, 1, size)[0][..., None]
    paint = colour * _fill(texture, rng, size, centre, radius)[..., None]
    image = background * (1 - alpha) + paint * alpha
    image += np.float32(noise) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.floor(np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _encode(pixels: np.ndarray, suffix: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG" if suffix == ".png" else "JPEG", quality=90)
    return buffer.getvalue()


def _add_to_tar(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def generate_images(out_dir: str | Path, *, images_per_class: int = 100, size: int = 32, seed: int = 0,
                    classes: Sequence[str] = IMAGE_CLASSES, shard_size: int = 1000, noise: float = 0.04) -> Path:
    """Write the set (see the module docstring); an existing ``OUT`` with the same settings is reused."""
    unknown = [c for c in classes if c not in IMAGE_CLASSES]
    if unknown:
        raise ConfigError(f"unknown image class(es) {', '.join(unknown)}; choose from {', '.join(IMAGE_CLASSES)}")
    if images_per_class < 3 or size < 8 or shard_size < 1:
        raise ConfigError("--images-per-class must be >= 3, --size >= 8 and --shard-size >= 1")
    out = Path(out_dir)
    manifest = {"version": IMAGES_FORMAT_VERSION, "images_per_class": images_per_class, "size": size, "seed": seed,
                "classes": list(classes), "shard_size": shard_size, "noise": noise}
    stamp = out / "synth.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == manifest:
        return out
    for split, _ in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
    shutil.rmtree(out / "shards", ignore_errors=True)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(c + "\n" for c in classes))
    bounds = np.cumsum([0] + [round(images_per_class * f) for _, f in SPLITS[:-1]] + [images_per_class])
    bounds[-1] = images_per_class
    for (split, _), lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
        _write_split(out, split, classes, range(int(lo), int(hi)), size, seed, shard_size, noise)
    stamp.write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _write_split(out: Path, split: str, classes: Sequence[str], indices: range, size: int, seed: int,
                 shard_size: int, noise: float) -> None:
    rows, samples = [], []
    for label, name in enumerate(classes):
        folder = out / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in indices:
            suffix = ".png" if index % 2 == 0 else ".jpg"
            data = _encode(render_image(name, clip_rng(seed, name, index), size, noise), suffix)
            path = folder / f"{name}_{index}{suffix}"
            path.write_bytes(data)
            rows.append((str(path.relative_to(out)), name))
            samples.append((suffix, data, label))
    with open(out / f"{split}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    # Shards hold the split in a seeded random order, as shard writers do, so consecutive samples mix classes.
    order = np.random.default_rng(seed).permutation(len(samples))
    for first in range(0, len(samples), shard_size):
        with tarfile.open(out / "shards" / f"{split}-{first // shard_size:06d}.tar", "w") as tar:
            for key in order[first:first + shard_size]:
                suffix, data, label = samples[key]
                _add_to_tar(tar, f"{int(key):06d}{suffix}", data)
                _add_to_tar(tar, f"{int(key):06d}.cls", f"{label}\n".encode())


def describe(out: Path) -> str:
    manifest = json.loads((out / "synth.json").read_text())
    n = manifest["images_per_class"]
    shards = sorted(p.name for p in (out / "shards").glob("train-*.tar"))
    return (f"{out}: {len(manifest['classes'])} classes x {n} images of {manifest['size']}x{manifest['size']} "
            f"(train/val/test folders, csv files, and shards/train-{{000000..{len(shards) - 1:06d}}}.tar), "
            f"seed {manifest['seed']}")
