"""Run configuration: a YAML file plus dotted ``key=value`` overrides -> typed dataclasses.

``load_config("configs/k400.yaml", ["optim.lr=0.1", "train.epochs=5"])`` reads the file, applies the
overrides, and builds a :class:`RunConfig`. Every key is checked against the dataclass fields before any
work starts; an unknown or ill-typed key raises :class:`ConfigError` naming it (``train.epoch``, with a
suggestion), and keys under ``model`` are checked against the chosen model's own config dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sct.data.annotations import FORMATS
from sct.data.images import IMAGE_FORMATS, TEN_CROP
from sct.data.sampling import SAMPLINGS, SHORT_VIDEO_MODES, ClipSampler, SegmentSampler, build_sampler
from sct.errors import ConfigError
from sct.models.registry import default_config

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")
_VIEWS = re.compile(r"^(\d+)x(\d+)$")
# Model fields the engine derives from the data (classes file, num_frames, crop_size); they may be set
# under `model` only to assert agreement with the dataset.
DERIVED_MODEL_FIELDS = ("num_classes", "num_frames", "img_size")
# A recipe's section of sct.data.synthetic.generate arguments (configs/demo.yaml), beside the run config.
SYNTHETIC = "synthetic"


def parse_views(views: str, key: str = "views") -> tuple[int, int]:
    """``"4x3"`` -> ``(4, 3)``: temporal views x spatial crops."""
    match = _VIEWS.match(str(views))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ConfigError(f"{key} must look like TxS with T, S >= 1 (e.g. 4x3), got {views!r}")
    return int(match[1]), int(match[2])


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how clips are made. Every field has a default.

    Annotation paths (``train``/``val``/``test``/``classes``/``frames_dir``) are relative to ``root`` unless
    absolute; video paths inside annotations are relative to ``root``. For ``ucf101``/``hmdb51`` the split
    fields name the split-file directory and ``split`` picks split 1, 2 or 3.
    """

    root: str = "."
    format: str = "auto"
    train: str = "train.csv"
    val: str = "val.csv"
    test: str = "test.csv"
    split: int = 1
    classes: str | None = None
    video_ext: str | None = None
    frames_dir: str | None = None
    frames_fps: float = 30.0
    # "clip": num_frames at sampling_rate / target_fps from one start; "segment": one frame from each of
    # num_frames equal parts of the whole video (sampling_rate, target_fps and short_video then unused).
    sampling: str = "clip"
    num_frames: int = 16
    sampling_rate: int = 4
    target_fps: float | None = None
    short_video: str = "loop"
    crop_size: int = 224
    train_crop: str = "jitter"
    train_short_side: tuple[int, int] | None = None
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    test_short_side: int | None = None
    flip: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_temporal_views: int = 1
    num_spatial_crops: int = 1
    max_bad_fraction: float = 0.05
    max_replacements: int = 10
    seed: int = 0
    decode_threads: str = "AUTO"
    cache_mb: int = 0
    # Image data (data.format imagefolder / image_csv / image_list / shards; see sct.data.images).
    randaugment: tuple[int, float] | None = None
    random_erasing: float = 0.0
    jpeg_draft: bool = True
    shuffle_buffer: int = 2000

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"data.{field}: {why} (got {getattr(self, field)!r})")

        if self.format != "auto" and self.format not in FORMATS + IMAGE_FORMATS:
            raise bad("format", f"must be auto or one of {', '.join(FORMATS + IMAGE_FORMATS)}")
        for field in ("num_frames", "sampling_rate", "crop_size", "num_temporal_views", "split", "max_replacements",
                      "cache_mb"):
            value = getattr(self, field)
            least = 0 if field in ("max_replacements", "cache_mb") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise bad(field, "must be a positive integer" if least else "must be an integer >= 0")
        if self.target_fps is not None and not self.target_fps > 0:
            raise bad("target_fps", "must be > 0 or null")
        if not self.frames_fps > 0:
            raise bad("frames_fps", "must be > 0")
        if self.sampling not in SAMPLINGS:
            raise bad("sampling", f"must be one of {SAMPLINGS}")
        if self.short_video not in SHORT_VIDEO_MODES:
            raise bad("short_video", f"must be one of {SHORT_VIDEO_MODES}")
        if self.train_crop not in ("jitter", "resized"):
            raise bad("train_crop", "must be 'jitter' (scale jitter + random crop) or 'resized' (random resized crop)")
        if self.num_spatial_crops not in (1, 3) and not (self.is_image and self.num_spatial_crops == TEN_CROP):
            raise bad("num_spatial_crops", "must be 1 (centre) or 3 (covering the long side)"
                      + (", or 10 for images (corners and centre, mirrored)" if self.is_image else ""))
        if self.randaugment is not None:
            n, m = _pair(self, "randaugment")
            if not (isinstance(n, int) and n >= 1 and 0 <= m <= 10):
                raise bad("randaugment", "must be [n, m]: n >= 1 operations at magnitude 0 <= m <= 10, or null")
            self.randaugment = (n, float(m))
        if not 0.0 <= self.random_erasing <= 1.0:
            raise bad("random_erasing", "must be a probability in [0, 1]")
        if not isinstance(self.shuffle_buffer, int) or self.shuffle_buffer < 1:
            raise bad("shuffle_buffer", "must be a positive integer")
        if self.train_short_side is not None:
            lo, hi = _pair(self, "train_short_side")
            if not 0 < lo <= hi:
                raise bad("train_short_side", "must be [min, max] with 0 < min <= max")
            self.train_short_side = (int(lo), int(hi))
        if self.test_short_side is not None and self.test_short_side < 1:
            raise bad("test_short_side", "must be a positive integer or null")
        for field in ("rrc_scale", "rrc_ratio"):
            lo, hi = _pair(self, field)
            if not 0 < lo <= hi:
                raise bad(field, "must be [min, max] with 0 < min <= max")
            setattr(self, field, (float(lo), float(hi)))
        for field in ("mean", "std"):
            value = getattr(self, field)
            if len(value) != 3 or (field == "std" and min(value) <= 0):
                raise bad(field, "must be 3 numbers (RGB)" + (", all > 0" if field == "std" else ""))
            setattr(self, field, tuple(float(v) for v in value))
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise bad("max_bad_fraction", "must be in [0, 1]")
        if self.decode_threads not in ("AUTO", "FRAME", "SLICE", "NONE"):
            raise bad("decode_threads", "must be AUTO, FRAME, SLICE or NONE")

    @property
    def is_image(self) -> bool:
        """Images (one frame per item, ``(3, H, W)``) rather than clips."""
        return self.format in IMAGE_FORMATS

    @property
    def views(self) -> int:
        """Test items per video: temporal views x spatial crops."""
        return self.num_temporal_views * self.num_spatial_crops

    def short_side_range(self) -> tuple[int, int]:
        """Train scale-jitter range; default ``crop * (8/7, 10/7)`` = (256, 320) for a 224 crop."""
        if self.train_short_side is not None:
            return self.train_short_side
        return round(self.crop_size * 8 / 7), round(self.crop_size * 10 / 7)

    def test_side(self) -> int:
        """Test short side; default the crop size (the crop then spans the short side)."""
        return self.test_short_side or self.crop_size

    def sampler(self) -> ClipSampler | SegmentSampler:
        return build_sampler(self.sampling, self.num_frames, self.sampling_rate, self.target_fps, self.short_video)


def _pair(cfg: DataConfig, field: str) -> tuple[float, float]:
    value = getattr(cfg, field)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"data.{field}: must be a pair [min, max] (got {value!r})")
    return value[0], value[1]


@dataclasses.dataclass
class ModelConfig:
    """Which registered model to build; every other key under ``model`` overrides a field of its config."""

    name: str = "sct_tiny"
    pretrained: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (linear warmup, then cosine annealing per optimiser step).

    ``lr`` is the peak learning rate for the global batch ``train.batch_size``.
    """

    name: str = "sgd"
    lr: float = 0.3
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    # Biases, norm weights, position embeddings and class tokens are conventionally not decayed.
    decay_norm_and_bias: bool = False
    warmup_epochs: float = 2.0
    warmup_start_factor: float = 0.01
    min_lr: float = 0.0
    clip_grad: float | None = 1.0
    # Layer-wise lr decay for fine-tuning (BEiT, DeiT III): layer l of L gets lr x layer_decay^(L + 1 - l).
    layer_decay: float | None = None

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"optim.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 < self.warmup_start_factor <= 1:
            raise ConfigError(f"optim.warmup_start_factor must be in (0, 1], got {self.warmup_start_factor}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"optim.layer_decay must be in (0, 1] or null, got {self.layer_decay}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError(f"optim.clip_grad must be > 0 or null, got {self.clip_grad}")


@dataclasses.dataclass
class TrainConfig:
    """The training loop.

    ``batch_size`` is the global batch per optimiser step (over all processes and accumulation steps);
    ``micro_batch_size`` is what one process puts through the model at once (default: the whole
    per-process share, no accumulation). Accumulation steps = batch_size / (micro_batch_size x processes).
    """

    epochs: int = 50
    max_steps: int | None = None
    batch_size: int = 32
    micro_batch_size: int | None = None
    num_workers: int = 4
    label_smoothing: float = 0.1
    # Mixup / CutMix Beta(alpha, alpha) (0: off); with both on, each batch picks CutMix with probability
    # mixup_switch_prob (DeiT: 0.8, 1.0, 0.5). Targets become soft (sct.engine.mixup).
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_switch_prob: float = 0.5
    precision: str = "fp32"
    ema_decay: float | None = None
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 2
    eval_every_epochs: int = 1
    val_views: str = "1x1"
    log_every_steps: int = 10
    # TensorBoard event files in <output_dir>/tensorboard/ (needs the `tensorboard` extra).
    tensorboard: bool = False
    device: str = "auto"
    # Intra-op CPU threads per process (null: PyTorch's default, one per core). With data-loading workers
    # on the same cores, fewer threads avoid oversubscription, which costs more than it gains on small CPUs.
    num_threads: int | None = None
    # Recompute each transformer layer's activations in the backward pass: less memory, more time.
    grad_checkpointing: bool = False
    # torch.compile the model; where compiling fails the run goes on eagerly, with a warning.
    compile: bool = False

    def __post_init__(self) -> None:
        for key in ("grad_checkpointing", "compile"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"train.{key} must be true or false, got {getattr(self, key)!r}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_steps", "micro_batch_size", "num_threads"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1 or null, got {getattr(self, key)}")
        for key in ("num_workers", "checkpoint_every_steps", "eval_every_epochs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.keep_checkpoints < 1 or self.log_every_steps < 1:
            raise ConfigError("train.keep_checkpoints and train.log_every_steps must be >= 1")
        for key in ("mixup", "cutmix"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be a Beta alpha >= 0 (0: off), got {getattr(self, key)}")
        if not 0 <= self.mixup_switch_prob <= 1:
            raise ConfigError(f"train.mixup_switch_prob must be in [0, 1], got {self.mixup_switch_prob}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        parse_views(self.val_views, "train.val_views")


@dataclasses.dataclass
class EvalConfig:
    """Multi-view testing: ``views`` = temporal views x spatial crops (SCT: 4x3)."""

    views: str = "4x3"
    split: str = "test"
    batch_size: int = 8
    num_workers: int = 4
    use_ema: bool = True

    def __post_init__(self) -> None:
        parse_views(self.views, "eval.views")
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"eval.split must be train, val or test, got {self.split!r}")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError("eval.batch_size must be >= 1 and eval.num_workers >= 0")


@dataclasses.dataclass
class RunConfig:
    """Everything one run needs; ``config.yaml`` in the run folder is this, resolved."""

    output_dir: str = "runs/default"
    seed: int = 0
    # null: start fresh (refused if the run folder already has checkpoints); "auto": the latest checkpoint
    # in the run folder if any; otherwise a checkpoint path.
    resume: str | None = None
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read ``path`` (YAML; ``None`` = all defaults), apply ``key=value`` overrides, validate, build."""
    return config_from_dict(_read_raw(path, overrides))


def load_recipe(path: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> tuple[RunConfig, dict[str, Any]]:
    """``(RunConfig, synthetic section)`` of a recipe: :func:`load_config` that also accepts a top-level
    ``synthetic`` mapping (how ``configs/demo.yaml`` generates its data; ``{}`` when absent)."""
    raw = _read_raw(path, overrides)
    synthetic = raw.pop(SYNTHETIC, None) or {}
    if not isinstance(synthetic, Mapping):
        raise ConfigError(f"config key '{SYNTHETIC}' must be a mapping of sct.data.synthetic.generate arguments")
    return config_from_dict(raw), dict(synthetic)


def _read_raw(path: str | Path | None, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    for item in overrides:
        apply_override(raw, item)
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``raw``; the value is parsed as YAML (``null``, ``[1, 2]``)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.1)")
    node = raw
    parts = key.strip().split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    node[parts[-1]] = _parse_value(text)


def _parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" as a string; users mean the number.
        try:
            return float(value)
        except ValueError:
            return value
    return value


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a nested mapping (e.g. a parsed ``config.yaml``)."""
    raw = dict(raw)
    if SYNTHETIC in raw:
        raise ConfigError(f"config key '{SYNTHETIC}' (how to generate a synthetic data set) is read by "
                          "`sct train --config` and `sct demo --config` (sct.config.load_recipe), not by a run config")
    model_raw = raw.pop("model", None) or {}
    if not isinstance(model_raw, Mapping):
        raise ConfigError("config key 'model' must be a mapping")
    cfg = build_dataclass(RunConfig, {**raw, "model": {}}, prefix="")
    cfg.model = _model_config(model_raw)
    if "seed" not in (raw.get("data") or {}):
        # One `seed` drives the whole run unless the augmentation seed is pinned on its own.
        cfg.data.seed = cfg.seed
    return cfg


def _model_config(raw: Mapping[str, Any]) -> ModelConfig:
    raw = dict(raw)
    overrides = dict(raw.pop("overrides", None) or {})
    name, pretrained = raw.pop("name", ModelConfig.name), raw.pop("pretrained", None)
    overrides.update(raw)
    if not isinstance(name, str):
        raise ConfigError(f"config key 'model.name' must be a string, got {name!r}")
    if pretrained is not None and not isinstance(pretrained, str):
        raise ConfigError(f"config key 'model.pretrained' must be a path or null, got {pretrained!r}")
    return ModelConfig(name=name, pretrained=pretrained, overrides=coerce_model_fields(name, overrides))


def coerce_model_fields(name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``fields`` against model ``name``'s config dataclass (lists become tuples where declared)."""
    model_defaults = default_config(name)
    if hasattr(model_defaults, "named_fields"):  # named spellings of tuple entries (SCT's per-component heads)
        fields = model_defaults.named_fields(fields)
    hints = typing.get_type_hints(type(model_defaults))
    known = [f.name for f in dataclasses.fields(model_defaults)]
    checked = {}
    for key, value in fields.items():
        if key not in known:
            raise ConfigError(_unknown_key_message(f"model.{key}", key, known + ["name", "pretrained"]))
        checked[key] = _coerce(value, hints[key], f"model.{key}")
    return checked


def build_dataclass(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, recursing into nested dataclass fields.

    Unknown keys and wrong types raise :class:`ConfigError` naming ``prefix + key``.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(_unknown_key_message(prefix + str(key), str(key), names))
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        section = prefix.rstrip(".")
        message = str(err)
        raise ConfigError(message if not section or message.startswith(section) else f"{section}: {message}") from None


def _unknown_key_message(full_key: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{full_key[: len(full_key) - len(key)]}{close[0]}'?)" if close else ""
    return f"unknown config key '{full_key}'{hint}; valid keys here: {', '.join(sorted(known))}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` (ints accepted for floats, lists for tuples)."""
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value if value is not None else {}, prefix=key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, hint, value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _type_error(key, hint, value)
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, hint, value)
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, hint, value)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, hint, value)
        return value
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise _type_error(key, hint, value)
        return value
    return value


def _type_error(key: str, hint: Any, value: Any) -> ConfigError:
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return ConfigError(f"config key '{key}' expects {name}, got {value!r}")


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as plain YAML-able data (tuples become lists, model overrides flattened)."""
    out = _plain(dataclasses.asdict(cfg))
    model = out["model"]
    out["model"] = {"name": model["name"], "pretrained": model["pretrained"], **model["overrides"]}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dump_config(cfg: RunConfig) -> str:
    """YAML text of the resolved config; ``load_config`` of it gives back an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
