"""Image classification data: ``imagefolder`` / ``image_csv`` / ``image_list`` files and tar shards, decoded
with Pillow, as items of the same shape as video items (``video`` holds the image ``(3, H, W)``).

- Decoding: Pillow, lazily: the header gives the size, the crop box is chosen on it, and a JPEG is then
  decoded in draft mode at the smallest power-of-two reduction (1/2, 1/4, 1/8) that still leaves the box
  at least the output size (the DCT scaling of libjpeg: a 500x375 ImageNet image cropped to 224 is decoded
  at 1/2 when the box spans >= 448 px). Greyscale, palette, CMYK, alpha and 16-bit images become 8-bit
  RGB; corrupt, truncated, empty and over-large (``PIL.Image.MAX_IMAGE_PIXELS`` x 2) images raise
  :class:`~sct.errors.ImageDecodeError`, which the bad-file policy treats as it treats a bad video.
- Train items: random resized crop (or the video scale jitter, ``data.train_crop``), flip, RandAugment
  (``data.randaugment``), normalisation, random erasing (``data.random_erasing``), with randomness a
  function of ``(seed, epoch, item)`` as for videos; a bad image is replaced by another, listed in ``bad``.
- Test items: ``data.num_spatial_crops`` views per image after resizing the short side to
  ``data.test_short_side``: 1 (centre), 3 (along the long side) or 10 (four corners and centre, each also
  mirrored, as AlexNet's and ResNet's 10-crop testing).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sct.data import transforms as T
from sct.data.annotations import AnnotationError, Annotations, read_annotations
from sct.data.augment import RandAugment, random_erasing
from sct.errors import ImageDecodeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_FORMATS = ("imagefolder", "image_csv", "image_list", "shards")
TEN_CROP = 10
# A source is a file path or the bytes of a shard member.
Source = str | bytes


def open_image(source: Source, name: str) -> Image.Image:
    """The lazily opened image (header read, pixels not yet decoded); errors name ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise ImageDecodeError(f"{name}: image file not found") from None
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"{name}: image too large ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageDecodeError(f"{name}: not a readable image ({err})") from None


def draft_factor(boxes: list[T.Box], size: int) -> int:
    """The largest reduction in (1, 2, 4, 8) that leaves every box's short side >= ``size`` pixels."""
    short = min(min(h, w) for _, _, h, w in boxes)
    factor = 1
    while factor < 8 and short >= 2 * factor * size:
        factor *= 2
    return factor


def to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """Decode ``image`` to uint8 ``(H, W, 3)``; 16-bit and float images are scaled, not clipped."""
    try:
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            pixels = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
            grey = np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        if image.mode != "RGB":
            image = image.convert("RGBA" if "transparency" in image.info else image.mode).convert("RGB")
        pixels = np.array(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt pixel data
        raise ImageDecodeError(f"{name}: cannot decode ({err})") from None
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageDecodeError(f"{name}: empty image")
    return pixels


def decode_boxes(source: Source, name: str, boxes_of: Callable[[int, int], list[T.Box]], size: int,
                 draft: bool = True) -> list[torch.Tensor]:
    """Open, choose boxes on the full-size ``(H, W)``, decode (JPEG draft mode when it fits) and cut each box
    resized to float ``(3, size, size)`` in [0, 255]."""
    with open_image(source, name) as image:
        width, height = image.size
        if width * height == 0:
            raise ImageDecodeError(f"{name}: empty image")
        boxes = boxes_of(height, width)
        factor = draft_factor(boxes, size) if draft and image.format == "JPEG" else 1
        if factor > 1:
            image.draft(image.mode, (width // factor, height // factor))
        pixels = torch.from_numpy(to_rgb(image, name))
    sy, sx = pixels.shape[0] / height, pixels.shape[1] / width
    out = []
    for top, left, h, w in boxes:
        box = (int(top * sy), int(left * sx), max(1, round(h * sy)), max(1, round(w * sx)))
        out.append(T.crop_resize(pixels[None], box, size)[0])
    return out


def ten_crop_boxes(height: int, width: int, crop: int, short_side: int) -> list[T.Box]:
    """Centre and four corners of a ``crop`` square after resizing the short side to ``short_side``."""
    scale = short_side / min(height, width)
    side_h, side_w = min(height, max(1, round(crop / scale))), min(width, max(1, round(crop / scale)))
    centre = ((height - side_h) // 2, (width - side_w) // 2, side_h, side_w)
    corners = [(0, 0), (0, width - side_w), (height - side_h, 0), (height - side_h, width - side_w)]
    return [centre] + [(y, x, side_h, side_w) for y, x in corners]


def read_image_folder(folder: Path, classes: list[str] | None, split: str) -> Annotations:
    """``folder/<class>/<image>``; classes are the sorted sub-folder names unless ``classes`` fixes them.

    With a class list, a training folder that lacks one of its classes, or any folder with a class the
    list does not have, is an error naming it (ImageNet-style sets have every class in every split).
    """
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: image folder not found")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(classes) if classes else [p.name for p in class_dirs]
    index = {name: i for i, name in enumerate(names)}
    present = {p.name for p in class_dirs}
    absent = [n for n in names if n not in present]
    if classes and split == "train" and absent:
        raise AnnotationError(f"{folder}: no folder for class(es) {', '.join(absent[:5])}"
                              f"{' ...' if len(absent) > 5 else ''} of the class list ({len(names)} classes)")
    paths, labels = [], []
    for class_dir in class_dirs:
        if class_dir.name not in index:
            raise AnnotationError(f"{class_dir}: folder is not in the class list ({len(names)} classes)")
        for item in sorted(class_dir.iterdir()):
            if item.suffix.lower() in IMAGE_SUFFIXES and not item.name.startswith("."):
                paths.append(str(item))
                labels.append(index[class_dir.name])
    if not paths:
        raise AnnotationError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return Annotations(paths, labels, names)


def read_image_split(fmt: str, ann: Path, root: Path, classes: list[str] | None, split: str) -> Annotations:
    """Annotations of an ``imagefolder`` / ``image_csv`` / ``image_list`` split."""
    if fmt == "imagefolder":
        return read_image_folder(ann, classes, split)
    return read_annotations(fmt.removeprefix("image_"), ann, root, classes=classes, split_name=split)


def augment_image(image: torch.Tensor, cfg, gen: torch.Generator) -> torch.Tensor:
    """Train augmentation after the crop: float ``(3, S, S)`` in [0, 255] -> normalised ``(3, S, S)``."""
    if cfg.flip and bool(torch.rand((), generator=gen) < 0.5):
        image = T.hflip(image)
    if cfg.randaugment is not None:
        image = RandAugment(*cfg.randaugment)(image, gen)
    image = normalize_image(image, cfg)
    if cfg.random_erasing > 0:
        image = random_erasing(image, cfg.random_erasing, gen)
    return image


def normalize_image(image: torch.Tensor, cfg) -> torch.Tensor:
    """``(3, H, W)`` in [0, 255] -> ``(x / 255 - mean) / std``."""
    return T.normalize(image[None], cfg.mean, cfg.std)[:, 0]


def train_boxes(cfg, gen: torch.Generator) -> Callable[[int, int], list[T.Box]]:
    """The train crop of ``cfg`` as a function of the image size."""
    def boxes(height: int, width: int) -> list[T.Box]:
        if cfg.train_crop == "resized":
            return [T.random_resized_box(height, width, cfg.rrc_scale, cfg.rrc_ratio, gen)]
        return [T.scale_jitter_box(height, width, cfg.crop_size, cfg.short_side_range(), gen)]
    return boxes


def test_views(cfg, height: int, width: int) -> list[T.Box]:
    """The ``num_spatial_crops`` boxes of a test image (10: the five boxes, mirrored in ``ImageDataset``)."""
    if cfg.num_spatial_crops == TEN_CROP:
        return ten_crop_boxes(height, width, cfg.crop_size, cfg.test_side())
    return T.test_boxes(height, width, cfg.crop_size, cfg.test_side(), cfg.num_spatial_crops)
