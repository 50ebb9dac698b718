"""The synthetic motion dataset: real H.264 ``.mp4`` clips whose classes can only be told apart over time.

Classes come in pairs that are exact time-reversals of each other (``move_right``/``move_left``,
``grow``/``shrink``, ...). A clip's parameters (shape, colour, size, path, background texture, a
distractor object, per-frame noise) are drawn once; the pair's *forward* motion is rendered, and the
*backward* class plays the same frames in reverse order. Both classes therefore draw their frames from
one distribution: a model that looks at single frames, or averages them, is at chance within a pair.
Frames are encoded intra-only at a constant quantiser, so each frame's bytes depend only on its pixels
and the time-reversal survives encoding exactly.

With ``motion_frames`` shorter than the clip, the motion takes only that many frames, at a random moment;
the object stands still before and after it. Such a video shows its class only to a sampler that looks
across its whole length (segment sampling), not to a short fixed-rate clip that lands on a still stretch.

Every clip's randomness comes from ``(seed, class name, index)``, so a dataset is the same whatever the
number of worker processes, and a class keeps its clips when others are added or removed.

Layout written by :func:`generate` (see CONTRACTS.md)::

    out_dir/videos/<class>/<class>_<index>.mp4
    out_dir/classes.txt                 one class name per line, line order = label id
    out_dir/{train,val,test}.csv        header ``path,label``: path relative to out_dir, class name
    out_dir/synth.json                  the settings that produced the set (lets a rerun reuse it)
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from sct.errors import ConfigError, SCTError
from sct.options import non_negative_float, non_negative_int, positive_int
from sct.outputs import check_writable_dir

# Bump when the same settings would draw different clips, so that stale sets on disk are not reused.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class MotionPair:
    """Two classes where ``backward`` is ``forward`` played in reverse; ``motion`` says what changes."""

    forward: str
    backward: str
    motion: str  # "translate" | "scale" | "rotate" | "fade"
    direction: tuple[float, float] = (0.0, 0.0)  # screen (x right, y down), for "translate"


PAIRS: tuple[MotionPair, ...] = (
    MotionPair("move_right", "move_left", "translate", (1.0, 0.0)),
    MotionPair("move_down", "move_up", "translate", (0.0, 1.0)),
    MotionPair("grow", "shrink", "scale"),
    MotionPair("rotate_clockwise", "rotate_anticlockwise", "rotate"),
    MotionPair("fade_in", "fade_out", "fade"),
    MotionPair("move_down_right", "move_up_left", "translate", (1.0, 1.0)),
)
ALL_CLASSES: tuple[str, ...] = tuple(name for pair in PAIRS for name in (pair.forward, pair.backward))
DEFAULT_CLASSES: tuple[str, ...] = ALL_CLASSES[:10]
_PAIR_OF: dict[str, MotionPair] = {name: pair for pair in PAIRS for name in (pair.forward, pair.backward)}


def _box(x: np.ndarray, y: np.ndarray, hx: float, hy: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    return np.maximum(np.abs(x - cx) - hx, np.abs(y - cy) - hy)


def _triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Equilateral, apex up, inradius 0.6: the largest distance past its three edges."""
    return np.maximum.reduce([y, -0.866 * x - 0.5 * y, 0.866 * x - 0.5 * y]) - 0.6


# Signed distance (negative inside) in the sprite's own coordinates, where its half-size is 1.
SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "square": lambda x, y: _box(x, y, 0.85, 0.85),
    "disc": lambda x, y: np.hypot(x, y) - 1.0,
    "triangle": _triangle,
    "cross": lambda x, y: np.minimum(_box(x, y, 1.0, 0.33), _box(x, y, 0.33, 1.0)),
    "bar": lambda x, y: _box(x, y, 1.1, 0.4),
    "ell": lambda x, y: np.minimum(_box(x, y, 0.3, 0.9, cx=-0.5), _box(x, y, 0.8, 0.3, cy=0.6)),
}
# No 90-degree symmetry: a turn of up to 60 degrees between sampled frames still reads one way only
# (a disc's turn is invisible, a square's or a cross's repeats every 90 degrees).
ROTATING_SHAPES: tuple[str, ...] = ("triangle", "bar", "ell")
BACKGROUNDS: tuple[str, ...] = ("noise", "gradient", "stripes")


@dataclass(frozen=True)
class Sprite:
    """One object and its straight-line change from the first frame to the last.

    Each field pair is (first frame, last frame) and is interpolated linearly in between. Centres are
    pixels ``(x, y)``; ``radius`` is the half-size in pixels; ``angle`` is radians, clockwise on screen.
    """

    shape: str
    colour: tuple[float, float, float]
    centre: tuple[tuple[float, float], tuple[float, float]]
    radius: tuple[float, float]
    angle: tuple[float, float]
    opacity: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True, eq=False)
class ClipParams:
    """Everything needed to render one clip's forward motion; ``background`` is float ``(H, W, 3)`` in [0, 1]."""

    num_frames: int
    size: int
    background: np.ndarray
    sprite: Sprite
    distractor: Sprite | None
    noise: float
    noise_seed: int


def clip_rng(seed: int, class_name: str, index: int) -> np.random.Generator:
    """The generator for clip ``index`` of ``class_name``: independent of worker count and of other classes."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(class_name.encode()), index)))


def luminance(colour: np.ndarray) -> float:
    return float(colour @ np.array([0.299, 0.587, 0.114]))


def contrasting_colour(rng: np.random.Generator, against: float, min_contrast: float) -> tuple[float, float, float]:
    """A random RGB colour whose luminance differs from ``against`` by at least ``min_contrast``."""
    while True:
        colour = rng.uniform(0.0, 1.0, 3)
        if abs(luminance(colour) - against) >= min_contrast:
            return tuple(float(c) for c in colour)


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blobs: a coarse random grid upsampled bilinearly to ``(size, size)``, scaled to [-1, 1]."""
    cells = int(rng.integers(3, 9))
    grid = rng.standard_normal((cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, size)
    lo = np.minimum(pos.astype(int), cells - 1)
    frac = pos - lo
    rows = grid[lo] * (1 - frac)[:, None] + grid[lo + 1] * frac[:, None]
    out = rows[:, lo] * (1 - frac) + rows[:, lo + 1] * frac
    return out / np.abs(out).max()


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-contrast textured background ``(size, size, 3)``: coloured noise blobs, a gradient or stripes."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if kind == "noise":
        pattern = _smooth_noise(rng, size)
    else:
        phi = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[:size, :size] / size - 0.5
        along = xx * np.cos(phi) + yy * np.sin(phi)
        if kind == "gradient":
            pattern = along / np.abs(along).max()
        else:
            pattern = np.sin(2 * np.pi * rng.uniform(2.0, 6.0) * along + rng.uniform(0, 2 * np.pi))
    base = rng.uniform(0.25, 0.75, 3)
    amplitude = rng.uniform(0.03, 0.12, 3)
    return (base + pattern[..., None] * amplitude).astype(np.float32)


def _position(rng: np.random.Generator, margin: float, size: int, travel: float = 0.0) -> float:
    """A start coordinate from which moving by ``travel`` px keeps the centre ``margin`` px inside the frame."""
    lo, hi = margin - min(travel, 0.0), size - 1 - margin - max(travel, 0.0)
    return float(rng.uniform(lo, max(lo, hi)))


def _main_sprite(rng: np.random.Generator, pair: MotionPair, size: int, background_lum: float) -> Sprite:
    """The object whose change over time is the class: drawn, then given the pair's forward motion."""
    shapes = ROTATING_SHAPES if pair.motion == "rotate" else tuple(SHAPES)
    shape = shapes[rng.integers(len(shapes))]
    colour = contrasting_colour(rng, background_lum, 0.3)
    angle = float(rng.uniform(0, 2 * np.pi))
    radius = float(rng.uniform(0.13, 0.2) * size)
    angles, radii, opacity = (angle, angle), (radius, radius), (1.0, 1.0)
    dx = dy = 0.0
    if pair.motion == "translate":
        distance = rng.uniform(0.35, 0.55) * size
        norm = math.hypot(*pair.direction)
        dx, dy = (float(distance * d / norm) for d in pair.direction)
    elif pair.motion == "scale":
        small = rng.uniform(0.08, 0.11) * size
        radii = (float(small), float(min(small * rng.uniform(2.2, 2.8), 0.3 * size)))
    elif pair.motion == "rotate":
        # Larger than the others: the turn is seen at the object's edge, which moves radius x angle per frame.
        radius = float(rng.uniform(0.17, 0.22) * size)
        radii = (radius, radius)
        angles = (angle, angle + float(np.deg2rad(rng.uniform(180.0, 270.0))))
    elif pair.motion == "fade":
        opacity = (float(rng.uniform(0.0, 0.1)), float(rng.uniform(0.9, 1.0)))
    margin = max(radii)
    x0, y0 = _position(rng, margin, size, dx), _position(rng, margin, size, dy)
    return Sprite(shape, colour, ((x0, y0), (x0 + dx, y0 + dy)), radii, angles, opacity)


def _distractor(rng: np.random.Generator, size: int, background_lum: float) -> Sprite:
    """A smaller object drifting a short way in a uniformly random direction.

    A uniform direction and a start uniform over the positions that keep the path inside the frame make
    the drift's distribution the same forwards and backwards, so it tells nothing about the class.
    """
    shape = list(SHAPES)[rng.integers(len(SHAPES))]
    radius = float(rng.uniform(0.05, 0.08) * size)
    heading, travel = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.2) * size
    dx, dy = float(travel * np.cos(heading)), float(travel * np.sin(heading))
    x0, y0 = _position(rng, radius, size, dx), _position(rng, radius, size, dy)
    angle = float(rng.uniform(0, 2 * np.pi))
    return Sprite(shape, contrasting_colour(rng, background_lum, 0.2), ((x0, y0), (x0 + dx, y0 + dy)),
                  (radius, radius), (angle, angle))


def sample_clip(class_name: str, rng: np.random.Generator, *, num_frames: int = 16, size: int = 64,
                noise: float = 0.04, distractor: bool = True) -> ClipParams:
    """Draw one clip's parameters for the motion pair of ``class_name`` (both classes of a pair draw alike)."""
    pair = _PAIR_OF[class_name]
    background = random_background(rng, size)
    background_lum = luminance(background.reshape(-1, 3).mean(0))
    sprite = _main_sprite(rng, pair, size, background_lum)
    other = _distractor(rng, size, background_lum) if distractor else None
    return ClipParams(num_frames, size, background, sprite, other, noise, int(rng.integers(2**63)))


def sprite_alpha(sprite: Sprite, num_frames: int, size: int) -> np.ndarray:
    """Anti-aliased coverage ``(T, H, W)`` in [0, 1] of ``sprite`` at each frame, times its opacity."""
    u = np.linspace(0.0, 1.0, num_frames, dtype=np.float32)[:, None, None]

    def lerp(ends: tuple[float, float]) -> np.ndarray:
        return np.float32(ends[0]) + np.float32(ends[1] - ends[0]) * u

    (x0, y0), (x1, y1) = sprite.centre
    cx, cy, radius, angle = lerp((x0, x1)), lerp((y0, y1)), lerp(sprite.radius), lerp(sprite.angle)
    pixels = np.arange(size, dtype=np.float32)
    dx, dy = pixels[None, None, :] - cx, pixels[None, :, None] - cy
    cos, sin = np.cos(angle), np.sin(angle)
    # Screen offsets rotated by -angle into the sprite's own frame, in units of its half-size.
    local_x, local_y = (cos * dx + sin * dy) / radius, (cos * dy - sin * dx) / radius
    distance_px = SHAPES[sprite.shape](local_x, local_y) * radius
    return np.clip(0.5 - distance_px, 0.0, 1.0) * lerp(sprite.opacity)


def render_forward(params: ClipParams) -> np.ndarray:
    """The pair's forward motion as uint8 frames ``(T, H, W, 3)``: background, distractor, object, noise."""
    t, size = params.num_frames, params.size
    frames = np.broadcast_to(params.background, (t, size, size, 3)).astype(np.float32)
    for sprite in (params.distractor, params.sprite):
        if sprite is not None:
            alpha = sprite_alpha(sprite, t, size)[..., None]
            frames = frames * (1 - alpha) + np.asarray(sprite.colour, dtype=np.float32) * alpha
    noise_rng = np.random.default_rng(params.noise_seed)
    frames += np.float32(params.noise) * noise_rng.standard_normal(frames.shape, dtype=np.float32)
    return np.floor(np.clip(frames, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def render_clip(class_name: str, params: ClipParams) -> np.ndarray:
    """uint8 frames ``(T, H, W, 3)`` of ``class_name``: the forward rendering, reversed for the backward class."""
    return play_as(class_name, render_forward(params))


def play_as(class_name: str, forward: np.ndarray) -> np.ndarray:
    """``forward`` frames ``(T, ...)`` as shown for ``class_name``: as they are, or reversed for the backward class."""
    return forward if _PAIR_OF[class_name].forward == class_name else np.ascontiguousarray(forward[::-1])


def stretch_motion(motion: np.ndarray, num_frames: int, start: int) -> np.ndarray:
    """``(num_frames, H, W, 3)``: the first frame of ``motion`` held until ``start``, ``motion``, then its
    last frame held to the end."""
    if not 0 <= start <= num_frames - len(motion):
        raise ValueError(f"a motion of {len(motion)} frames cannot start at {start} of {num_frames}")
    after = num_frames - start - len(motion)
    return np.concatenate([np.repeat(motion[:1], start, axis=0), motion, np.repeat(motion[-1:], after, axis=0)])


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: int = 10, qp: int = 20) -> None:
    """Encode uint8 ``(T, H, W, 3)`` RGB frames as H.264 yuv420p in an mp4 at ``path``.

    Intra-only at a constant quantiser (every frame a keyframe): a frame's bytes depend on its pixels
    alone, so reversing the frames reverses the decoded video exactly, and output is deterministic.
    The file appears atomically (written beside and renamed), so an interrupted run leaves no torn file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": str(qp), "preset": "veryfast", "x264-params": "keyint=1"}
        stream.codec_context.thread_count = 1
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp, path)


@dataclass(frozen=True)
class SynthSettings:
    """What a dataset depends on besides its class list and size (also saved in ``synth.json``)."""

    seed: int = 0
    num_frames: int = 16
    size: int = 64
    noise: float = 0.04
    distractor: bool = True
    fps: int = 10
    qp: int = 20
    motion_frames: int | None = None


def video_name(class_name: str, index: int) -> str:
    """Path of clip ``index`` of ``class_name``, relative to the dataset root."""
    return f"videos/{class_name}/{class_name}_{index:05d}.mp4"


def _make_video(job: tuple[Path, str, int, SynthSettings]) -> None:
    out_dir, class_name, index, s = job
    rng = clip_rng(s.seed, class_name, index)
    moving = s.motion_frames or s.num_frames
    params = sample_clip(class_name, rng, num_frames=moving, size=s.size, noise=s.noise, distractor=s.distractor)
    frames = render_forward(params)
    if moving < s.num_frames:
        frames = stretch_motion(frames, s.num_frames, int(rng.integers(s.num_frames - moving + 1)))
    # The backward class plays the whole stretched video in reverse, still stretches included.
    write_video(out_dir / video_name(class_name, index), play_as(class_name, frames), fps=s.fps, qp=s.qp)


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """(train, val, test) counts for ``n`` clips of a class; from n >= 3 a non-zero fraction gets at least one."""
    val, test = (max(round(n * f), int(n >= 3 and f > 0)) for f in fractions[1:])
    return n - val - test, val, test


def _check_options(videos_per_class: int, settings: SynthSettings, classes: Sequence[str], workers: int,
                   splits: Sequence[float]) -> None:
    unknown = [c for c in classes if c not in _PAIR_OF]
    if unknown:
        raise ConfigError(f"classes: unknown {unknown}; choose from {list(ALL_CLASSES)}")
    if not classes or len(set(classes)) != len(classes):
        raise ConfigError(f"classes: need a non-empty list without repeats, got {list(classes)}")
    checks = [
        ("videos_per_class", videos_per_class, videos_per_class >= 1, "must be >= 1"),
        ("num_frames", settings.num_frames, settings.num_frames >= 2, "must be >= 2"),
        ("motion_frames", settings.motion_frames,
         settings.motion_frames is None or 2 <= settings.motion_frames <= settings.num_frames,
         "must be null or in 2..num_frames"),
        ("size", settings.size, settings.size >= 16 and settings.size % 2 == 0, "must be even and >= 16 (yuv420p)"),
        ("noise", settings.noise, settings.noise >= 0, "must be >= 0"),
        ("fps", settings.fps, settings.fps >= 1, "must be >= 1"),
        ("qp", settings.qp, 0 <= settings.qp <= 51, "must be in 0..51"),
        ("workers", workers, workers >= 1, "must be >= 1"),
        ("splits", list(splits), len(splits) == 3 and min(splits) >= 0 and abs(sum(splits) - 1) < 1e-6,
         "must be three fractions (train, val, test) summing to 1"),
    ]
    for name, value, ok, why in checks:
        if not ok:
            raise ConfigError(f"{name}: {why}, got {value}")


def _is_complete(out_dir: Path, manifest: dict) -> bool:
    """True when ``out_dir`` already holds every file of the dataset ``manifest`` describes."""
    try:
        if json.loads((out_dir / "synth.json").read_text()) != manifest:
            return False
    except (OSError, ValueError):
        return False
    names = [video_name(c, i) for c in manifest["classes"] for i in range(manifest["videos_per_class"])]
    files = ["classes.txt", "train.csv", "val.csv", "test.csv", *names]
    return all((out_dir / name).is_file() for name in files)


def _prepare(out_dir: Path, overwrite: bool) -> None:
    """Clear our files from ``out_dir``: a previous synthetic set is replaced, any other non-empty folder is
    refused unless ``overwrite`` (then only the files this generator writes are removed)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SCTError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (overwrite or (out_dir / "synth.json").is_file()):
            raise SCTError(f"{out_dir}: not empty and holds no synthetic set (no synth.json); "
                           "pass overwrite=True (--overwrite) to write one there")
        (out_dir / "synth.json").unlink(missing_ok=True)
        shutil.rmtree(out_dir / "videos", ignore_errors=True)
        for name in ("classes.txt", "train.csv", "val.csv", "test.csv"):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _run_jobs(jobs: list, workers: int, progress: bool) -> None:
    with tqdm(total=len(jobs), desc="sct synth", unit="video", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                _make_video(job)
                bar.update()
            return
        # fork: workers inherit the imported modules instead of re-importing torch with `import sct`.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(_make_video, jobs, chunksize=max(1, len(jobs) // (workers * 16))):
                bar.update()


def _write_index(out_dir: Path, classes: Sequence[str], videos_per_class: int, splits: Sequence[float]) -> None:
    (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    sizes = split_sizes(videos_per_class, splits)
    bounds = np.cumsum((0, *sizes))
    for split, lo, hi in zip(("train", "val", "test"), bounds[:-1], bounds[1:]):
        with open(out_dir / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["path", "label"])
            writer.writerows([video_name(c, i), c] for c in classes for i in range(lo, hi))


def generate(out_dir: str | os.PathLike, *, videos_per_class: int = 100, seed: int = 0, num_frames: int = 16,
             size: int = 64, classes: Sequence[str] | None = None, workers: int | None = None,
             noise: float = 0.04, distractor: bool = True, fps: int = 10, qp: int = 20,
             splits: Sequence[float] = (0.7, 0.15, 0.15), overwrite: bool = False,
             progress: bool | None = None, motion_frames: int | None = None) -> Path:
    """Write the synthetic motion dataset to ``out_dir`` and return it as a ``Path``.

    ``videos_per_class`` clips of ``num_frames`` frames, ``size`` x ``size`` pixels, for each of
    ``classes`` (default :data:`DEFAULT_CLASSES`; any of :data:`ALL_CLASSES`). Clip ``i`` of a class
    goes to train, val or test by ``i`` according to ``splits``. ``noise`` is the per-pixel Gaussian
    std (frames in [0, 1]); ``distractor`` adds a second, smaller moving object; ``qp`` is the H.264
    quantiser. ``motion_frames`` (< ``num_frames``) confines the motion to that many frames at a random
    moment, with still stretches around it (see the module docstring). ``workers`` processes (default:
    all CPUs) give identical files to one process.
    If ``out_dir`` already holds this exact set it is reused, a different synthetic set there is
    replaced, and any other non-empty folder is refused unless ``overwrite``. ``progress`` (default:
    stderr is a terminal) shows a tqdm bar.
    """
    out_dir = Path(out_dir)
    classes = list(DEFAULT_CLASSES if classes is None else classes)
    workers = (os.cpu_count() or 1) if workers is None else workers
    settings = SynthSettings(seed, num_frames, size, float(noise), bool(distractor), fps, qp, motion_frames)
    _check_options(videos_per_class, settings, classes, workers, splits)
    # motion_frames is recorded only when set, so sets written before the option existed stay reusable.
    fields = {k: v for k, v in asdict(settings).items() if k != "motion_frames" or v is not None}
    manifest = {"format_version": FORMAT_VERSION, **fields, "classes": classes,
                "videos_per_class": videos_per_class, "splits": [float(f) for f in splits]}
    if _is_complete(out_dir, manifest):
        return out_dir
    _prepare(out_dir, overwrite)
    for name in classes:
        (out_dir / "videos" / name).mkdir(parents=True, exist_ok=True)
    jobs = [(out_dir, name, i, settings) for name in classes for i in range(videos_per_class)]
    _run_jobs(jobs, workers, sys.stderr.isatty() if progress is None else progress)
    _write_index(out_dir, classes, videos_per_class, splits)
    # Written last: its presence marks a finished set that a rerun may reuse.
    (out_dir / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def generate_from_recipe(out_dir: str | os.PathLike, section: dict, source: str) -> Path:
    """:func:`generate` with a recipe's ``synthetic`` section; a key it does not take is a ``ConfigError``."""
    allowed = set(inspect.signature(generate).parameters) - {"out_dir"}
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (the data goes to data.root); "
                          f"valid keys: {', '.join(sorted(allowed))}")
    return generate(out_dir, **section)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = "output folder (created; reused if it holds this exact set, replaced if another one)"
    parser.add_argument("out", metavar="OUT", nargs="?", help=where + "; or give it as --out")
    parser.add_argument("--out", "--output", dest="out_option", metavar="DIR", help=where)
    parser.add_argument("--videos-per-class", type=positive_int, default=100, metavar="N", help="clips per class (100)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="random seed (0)")
    parser.add_argument("--frames", type=positive_int, default=16, metavar="T", help="frames per clip (16)")
    parser.add_argument("--size", type=positive_int, default=64, metavar="S",
                        help="frame height = width in pixels (64)")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="W", help="processes (default: all CPUs)")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES), metavar="A,B,...",
                        help=f"comma-separated subset of: {', '.join(ALL_CLASSES)} (default: the first 10)")
    parser.add_argument("--noise", type=non_negative_float, default=0.04,
                        help="per-pixel noise std, frames in [0, 1] (0.04)")
    parser.add_argument("--no-distractor", action="store_true", help="leave out the second moving object")
    parser.add_argument("--fps", type=positive_int, default=10, help="frame rate written in the files (10)")
    parser.add_argument("--motion-frames", type=positive_int, default=None, metavar="M",
                        help="the motion takes M frames at a random moment, still before and after (default: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty OUT that holds no synthetic set")
    images = parser.add_argument_group("image set (sct synth --images OUT)")
    images.add_argument("--images", action="store_true",
                        help="write the synthetic image set instead (shape x texture classes, PNG/JPEG + tar shards)")
    images.add_argument("--images-per-class", type=int, default=100, metavar="N", help="images per class (100)")
    images.add_argument("--shard-size", type=int, default=1000, metavar="N", help="samples per tar shard (1000)")


def run(args: argparse.Namespace) -> int:
    if (args.out is None) == (args.out_option is None):
        raise ConfigError("give the output folder once: `sct synth OUT` or `sct synth --out OUT`")
    target = check_writable_dir(args.out or args.out_option, "--out")
    if args.images:
        from sct.data.synthetic_images import describe, generate_images

        out = generate_images(target, images_per_class=args.images_per_class, size=args.size, seed=args.seed,
                              shard_size=args.shard_size, noise=args.noise)
        print(describe(out))
        return 0
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    start = time.perf_counter()
    out = generate(target, videos_per_class=args.videos_per_class, seed=args.seed, num_frames=args.frames,
                   size=args.size, classes=classes, workers=args.workers, noise=args.noise,
                   distractor=not args.no_distractor, fps=args.fps, overwrite=args.overwrite,
                   motion_frames=args.motion_frames)
    seconds = time.perf_counter() - start
    train, val, test = split_sizes(args.videos_per_class, (0.7, 0.15, 0.15))
    total = len(classes) * args.videos_per_class
    print(f"{out}: {total} videos ({len(classes)} classes x {args.videos_per_class}; per class train {train}, "
          f"val {val}, test {test}), {args.frames} frames of {args.size}x{args.size}, seed {args.seed}, "
          f"in {seconds:.1f} s")
    print(f"classes: {', '.join(classes)}")
    return 0
