"""The whole `sct demo` (slow: minutes). It must reach the issue's target accuracy on the test split."""

import json

import pytest

from sct.cli import main as cli_main


@pytest.mark.slow
def test_demo_learns_the_synthetic_motions(tmp_path, capsys):
    assert cli_main(["demo", "--output", str(tmp_path / "demo")]) == 0
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert summary["top1"] >= 90.0, summary
    assert summary["num_failed"] == 0
    for path in ("curves.png", "model.safetensors", f"eval_test_{summary['views']}/confusion.png"):
        assert (tmp_path / "demo" / path).is_file(), path
    assert "sct demo finished" in capsys.readouterr().out
