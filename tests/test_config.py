"""YAML + dotted overrides -> RunConfig, validation that names the key, and the shipped recipes."""

from pathlib import Path

import pytest
import yaml

from sct.config import config_from_dict, dump_config, load_config, parse_views
from sct.engine.demo import load_demo_config
from sct.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_yaml_and_overrides_build_typed_sections(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 3\noptim: {lr: 1}\ntrain: {epochs: 5}\nmodel: {name: sct_tiny, drop_rate: 0.1}\n")
    cfg = load_config(path, ["train.epochs=7", "optim.weight_decay=1e-3", "data.train_short_side=[40, 48]",
                             "model.heads=[1, 2, 2, 2]", "resume=auto"])
    assert cfg.seed == 3 and cfg.train.epochs == 7 and cfg.resume == "auto"
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.optim.weight_decay == pytest.approx(1e-3)  # "1e-3" is a string to YAML 1.1
    assert cfg.data.train_short_side == (40, 48)
    assert cfg.model.overrides == {"drop_rate": 0.1, "heads": (1, 2, 2, 2)}
    assert cfg.data.seed == 3, "the run seed drives augmentation unless data.seed is set"


@pytest.mark.parametrize(
    "override, named",
    [
        ("train.epoch=3", "'train.epoch' (did you mean 'train.epochs'?)"),
        ("optimizer.lr=0.1", "'optimizer'"),
        ("data.num_frame=8", "data.num_frame"),
        ("model.not_a_field=1", "model.not_a_field"),
        ("train.epochs=many", "train.epochs"),
        ("train.precision=fp8", "train.precision"),
        ("optim.name=adam", "optim.name"),
        ("data.crop_size=0", "data.crop_size"),
        ("eval.views=4by3", "eval.views"),
        ("model.name=no_such_model", "no_such_model"),
        ("train=3", "'train'"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, named):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert named in str(err.value)


def test_override_must_be_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips():
    cfg = load_config(CONFIGS / "k400.yaml", ["optim.lr=0.1", "model.drop_path_rate=0.1"])
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_views_parse():
    assert parse_views("4x3") == (4, 3)
    with pytest.raises(ConfigError, match="--views"):
        parse_views("0x3", "--views")


# Table 2 of the paper (frame rate, warmup epochs, lr, label smoothing, dropout) and section 4.
TABLE2 = {
    "k400": (5, 2, 0.3, 0.1, 0.2),
    "k600": (5, 2, 0.3, 0.1, 0.2),
    "ucf101": (10, 3, 0.25, 0.0, 0.0),
    "hmdb51": (10, 4, 0.25, 0.0, 0.0),
    "mit": (8, 2, 0.3, 0.3, 0.2),
}


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_recipes_follow_table_2(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    fps, warmup, lr, smoothing, dropout = TABLE2[name]
    assert (cfg.data.target_fps, cfg.optim.warmup_epochs, cfg.optim.lr) == (fps, warmup, lr)
    assert (cfg.train.label_smoothing, cfg.model.overrides["drop_rate"]) == (smoothing, dropout)
    assert (cfg.optim.name, cfg.optim.momentum, cfg.train.epochs) == ("sgd", 0.9, 50)
    assert (cfg.model.name, cfg.train.batch_size, cfg.data.num_frames, cfg.eval.views) == ("sct_s", 32, 24, "4x3")


@pytest.mark.parametrize("name", ["ssv2", "diving48"])
def test_appendix_recipes_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.name == "sct_l" and cfg.train.batch_size == 8
    assert cfg.data.sampling == "segment" and cfg.data.num_frames == 24


def test_ssv2_does_not_flip_left_right():
    assert load_config(CONFIGS / "ssv2.yaml").data.flip is False


def test_demo_recipe_loads_with_its_synthetic_section(tmp_path):
    cfg, synthetic = load_demo_config(CONFIGS / "demo.yaml", tmp_path / "demo")
    assert cfg.model.name == "sct_tiny" and cfg.output_dir == str(tmp_path / "demo")
    assert cfg.data.root == str(tmp_path / "demo" / "data")
    assert synthetic["num_frames"] == cfg.data.num_frames * cfg.data.sampling_rate, "a clip spans the video"
    assert synthetic["size"] == cfg.data.crop_size and cfg.data.flip is False


@pytest.mark.parametrize("name", [f"in{kind}_sct_{size}" for kind in ("1k", "21k") for size in "sml"])
def test_image_recipes_load_and_name_their_model(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    size = name[-1]
    assert cfg.model.name == f"sct_{size}_image" and cfg.output_dir == f"runs/{name}"
    assert cfg.data.format == ("imagefolder" if name.startswith("in1k") else "shards")
    assert cfg.train.batch_size % (cfg.train.micro_batch_size or cfg.train.batch_size) == 0
    if name.startswith("in1k"):
        assert (cfg.train.mixup, cfg.train.cutmix, cfg.data.randaugment) == (0.8, 1.0, (2, 9))
