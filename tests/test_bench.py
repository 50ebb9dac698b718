"""`sct bench`: protocol validation, honest peak memory, per-model worker processes, reports."""

import json

import pytest
import torch

from sct.analysis.bench import (
    BenchSettings,
    PeakMemory,
    bench_in_process,
    format_report,
    median_seconds,
    memory_now,
    run_bench,
    training_step,
    write_report,
)
from sct.cli import main as cli_main
from sct.errors import ConfigError

_TINY_VIT = {"dim": 32, "depth": 1, "heads": 2, "patch_size": 8}
_TINY_SETTINGS = {"frames": 2, "size": 16, "batch": 2, "repeats": 2, "warmup": 1, "classes": 3}


def test_settings_name_the_bad_option():
    with pytest.raises(ConfigError, match="--dtype"):
        BenchSettings(dtype="fp8")
    with pytest.raises(ConfigError, match="--batch"):
        BenchSettings(batch=0)


def test_peak_memory_sees_a_transient_allocation():
    with PeakMemory("cpu", memory_now("cpu")) as memory:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched, then freed
        del x
    assert memory.peak is not None
    assert memory.peak >= 60 * 2**20


def test_run_bench_measures_every_model_in_its_own_process(tmp_path):
    pytest.importorskip("transformers")
    hf_fields = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                 "tubelet_size": [2, 8, 8]}
    report = run_bench(["vit_b16_frames", "hf:vivit"], BenchSettings(**_TINY_SETTINGS),
                       overrides={"vit_b16_frames": _TINY_VIT, "hf:vivit": hf_fields}, timeout=600, matmul_n=256)
    assert report["matmul_gflops"] > 0
    for r in report["results"]:
        assert "error" not in r, r.get("error")
        assert r["macs"] > 0 and r["params"] > 0
        assert len(r["latency"]["times_s"]) == 2 and r["latency"]["p10_s"] <= r["latency"]["p90_s"]
        assert r["clips_per_s"] == pytest.approx(2 / r["throughput"]["median_s"])
        assert r["fraction_of_matmul"] == pytest.approx(r["achieved_gflops"] / report["matmul_gflops"])
        assert r["latency"]["peak_bytes"] is not None and r["latency"]["peak_bytes"] > 0
    text = write_report(report, tmp_path)
    assert "| vit_b16_frames | " in text and "| hf:vivit | " in text and "GFLOP/s" in text
    assert json.loads((tmp_path / "bench.json").read_text())["settings"]["frames"] == 2
    assert (tmp_path / "bench.md").read_text().strip() == text.strip()


def test_failed_model_is_a_row_not_a_crash():
    report = {"machine": "m", "matmul_gflops": 1.0, "settings": dict(BenchSettings().__dict__),
              "results": [{"model": "x", "error": "RuntimeError: boom"}]}
    assert "| x | failed: RuntimeError: boom |" in format_report(report)


def test_cli_bench_unknown_model_is_a_user_error(capsys):
    assert cli_main(["bench", "no_such_model", "--frames", "2", "--size", "16"]) == 1
    assert "no_such_model" in capsys.readouterr().err


def test_batch_one_reuses_the_latency_timings():
    settings = BenchSettings(**{**_TINY_SETTINGS, "batch": 1})
    result = bench_in_process("vit_b16_frames", settings, _TINY_VIT)
    assert result["throughput"] == result["latency"]
    assert result["clips_per_s"] == pytest.approx(1 / result["latency"]["median_s"])


def test_train_step_updates_the_weights_and_counts_three_passes(monkeypatch):
    from sct.analysis import peers

    settings = BenchSettings(**{**_TINY_SETTINGS, "train": True})
    built = []
    real_build = peers.build_model
    monkeypatch.setattr(peers, "build_model", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    result = bench_in_process("vit_b16_frames", settings, _TINY_VIT)
    torch.manual_seed(settings.seed)
    fresh = real_build("vit_b16_frames", num_classes=3, num_frames=2, img_size=16, **_TINY_VIT)
    trained = dict(built[0].named_parameters())
    assert any(not torch.equal(p, trained[n]) for n, p in fresh.named_parameters()), "AdamW must have stepped"
    assert result["achieved_gflops"] == pytest.approx(6 * result["macs"] * 2 / result["throughput"]["median_s"] / 1e9)
    assert result["throughput"]["peak_bytes"] > 0


def test_train_with_checkpointing_in_the_report(tmp_path):
    settings = BenchSettings(**{**_TINY_SETTINGS, "train": True, "grad_checkpointing": True})
    report = run_bench(["vit_b16_frames"], settings, overrides={"vit_b16_frames": _TINY_VIT}, timeout=600,
                       matmul_n=256)
    assert "error" not in report["results"][0], report["results"][0].get("error")
    assert "training step (forward, backward, AdamW), gradient checkpointing" in write_report(report, tmp_path)


def test_checkpointing_without_train_is_refused():
    with pytest.raises(ConfigError, match="--grad-checkpointing only changes training"):
        BenchSettings(grad_checkpointing=True)


def test_training_step_updates_the_model_and_median_seconds_skips_the_warmup():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = model.weight.detach().clone()
    step = training_step(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(5, 4), torch.arange(5) % 3)
    calls = []
    seconds = median_seconds(lambda: calls.append(step()), repeats=3, warmup=2)
    assert len(calls) == 5 and seconds >= 0.0
    assert not torch.equal(model.weight, before) and model.weight.grad is None
