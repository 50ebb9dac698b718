"""Options across verbs: numbers checked as they are parsed, fp16 on a CPU refused before the run folder,
one spelling of the output folder (--out, alias --output), --json wherever a table is printed, and the
demo recipe accepted by `sct train`."""

import json

import pytest

from engine_support import CLASSES, ROOT, SMALL_MODEL, synthetic_set, tiny_config
from sct.cli import main as cli_main
from sct.config import load_config
from sct.engine.evaluate import evaluate
from sct.engine.train import train
from sct.errors import ConfigError

DEMO = ROOT / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_set(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    run_dir = train(tiny_config(data, tmp_path_factory.mktemp("run"), "train.max_steps=1",
                                "train.eval_every_epochs=0"))
    return run_dir / "model.safetensors"


@pytest.mark.parametrize("argv, message", [
    (["eval", "--checkpoint", "x", "--batch-size", "-3"], "argument --batch-size: must be >= 1, got -3"),
    (["eval", "--checkpoint", "x", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["eval", "--checkpoint", "x", "--num-workers", "-1"], "argument --num-workers: must be >= 0, got -1"),
    (["predict", "v.mp4", "--checkpoint", "x", "--topk", "0"], "argument --topk: must be >= 1"),
    (["predict", "v.mp4", "--checkpoint", "x", "--batch-size", "2.5"], "argument --batch-size: expects an integer"),
    (["bench", "sct_tiny", "--batch", "0"], "argument --batch: must be >= 1"),
    (["bench", "sct_tiny", "--timeout", "0"], "argument --timeout: must be > 0"),
    (["profile", "sct_tiny", "--depth", "0"], "argument --depth: must be >= 1"),
    (["profile", "sct_tiny", "--frames", "-8"], "argument --frames: must be >= 1"),
    (["visualize", "v.mp4", "--model", "sct_tiny", "--classes", "0"], "argument --classes: must be >= 1"),
    (["synth", "out", "--videos-per-class", "0"], "argument --videos-per-class: must be >= 1"),
    (["synth", "out", "--noise", "-0.1"], "argument --noise: must be >= 0"),
    (["data", "check", "a.csv", "--samples", "0"], "argument --samples: must be >= 1"),
])
def test_bad_numbers_are_refused_as_they_are_parsed_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["train", "demo"])
def test_config_values_are_checked_before_any_work(verb, tmp_path, capsys):
    assert cli_main([verb, "--out", str(tmp_path / "out"), "train.batch_size=0"]) == 1
    assert "train.batch_size must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fp16_on_a_cpu_is_refused_before_the_run_folder_is_written(data, tmp_path):
    with pytest.raises(ConfigError, match="train.precision=fp16 needs a CUDA device, this run is on cpu"):
        train(tiny_config(data, tmp_path / "run", "train.precision=fp16", "train.device=cpu"))
    assert not (tmp_path / "run").exists()


def test_eval_takes_out_or_output_and_prints_json(checkpoint, tmp_path, capsys):
    for option, folder in (("--out", "a"), ("--output", "b")):
        assert cli_main(["eval", "--checkpoint", str(checkpoint), option, str(tmp_path / folder), "--json",
                         "--views", "1x1"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["output_dir"] == str(tmp_path / folder) and printed["num_videos"] == 3
        assert json.loads((tmp_path / folder / "eval.json").read_text())["top1"] == printed["top1"]
    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        evaluate(checkpoint, batch_size=0, output_dir=tmp_path / "c")


def test_bench_prints_json_and_writes_to_out(tmp_path, capsys):
    argv = ["bench", "sct_tiny", "--frames", "2", "--size", "32", "--repeats", "1", "--warmup", "0", "--batch", "1",
            "--json", "--output", str(tmp_path / "bench")]
    assert cli_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in printed["results"]] == ["sct_tiny"]
    assert json.loads((tmp_path / "bench" / "bench.json").read_text())["settings"] == printed["settings"]


def test_data_check_prints_json(data, capsys):
    assert cli_main(["data", "check", str(data / "train.csv"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["videos"] == printed["ok"] == 12 and printed["bad"] == [] and printed["classes"] == len(CLASSES)


def test_train_runs_the_demo_recipe_generating_its_data(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["train", "--config", str(DEMO), "--out", str(out), f"data.root={out / 'data'}",
            "synthetic.videos_per_class=6", "synthetic.classes=[move_right, move_left]", "train.epochs=1",
            "train.batch_size=4", "train.num_threads=1", "train.eval_every_epochs=0",
            *[item for item in SMALL_MODEL if not item.startswith("model.name")]]
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert (out / "data" / "synth.json").is_file() and (out / "model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["global_step"] == 2, "8 training clips / batch 4"


def test_a_run_config_reader_names_the_verbs_that_read_a_synthetic_section():
    with pytest.raises(ConfigError, match=r"'synthetic'.*read by `sct train --config` and `sct demo --config`"):
        load_config(DEMO)


def test_eval_overrides_on_the_command_line_are_used(checkpoint, tmp_path, capsys):
    assert cli_main(["eval", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e"), "--json",
                     "eval.views=1x3"]) == 0
    assert json.loads(capsys.readouterr().out)["num_clips"] == 3 * 3
