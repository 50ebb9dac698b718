"""benchmarks/ablations.py: every experiment is a valid run config, and the tables report what ran."""

import importlib.util
import sys
from pathlib import Path

import pytest

import sct

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ablations.py"
_spec = importlib.util.spec_from_file_location("ablations", _PATH)
ablations = importlib.util.module_from_spec(_spec)
sys.modules["ablations"] = ablations  # dataclasses resolve their module through sys.modules
_spec.loader.exec_module(ablations)


def test_every_table_row_names_an_experiment():
    for _, rows, _ in ablations.TABLES.values():
        for key, _ in rows:
            assert key in ablations.EXPERIMENTS
    assert set(ablations.CORE) <= set(ablations.EXPERIMENTS)


@pytest.mark.parametrize("key", sorted(ablations.EXPERIMENTS))
def test_experiment_configs_build_their_models(key, tmp_path):
    settings = ablations.Settings()
    cfg = ablations.run_config(ablations.EXPERIMENTS[key], 1, settings, tmp_path / "data", tmp_path / "out")
    assert cfg.seed == 1 and cfg.data.num_frames == settings.clip_frames and cfg.data.flip is False
    model = sct.create_model(cfg.model.name, num_classes=settings.classes, num_frames=settings.clip_frames,
                             img_size=settings.size, **cfg.model.overrides)
    for field, value in ablations.EXPERIMENTS[key].overrides.items():
        assert getattr(model.config, field) == value


def test_doc_reports_mean_std_single_seed_and_missing_runs():
    settings = ablations.Settings()
    results = [
        {"experiment": "sct", "seed": 0, "top1": {"1x1": 50.0, "2x1": 60.0}, "seconds": 60},
        {"experiment": "sct", "seed": 1, "top1": {"1x1": 70.0, "2x1": 60.0}, "seconds": 60},
        {"experiment": "sct_space", "seed": 0, "top1": {"1x1": 40.0}, "seconds": 60},
    ]
    text = ablations.format_doc(results, settings, [0, 1], 120, 4)
    assert "60.0 +- 14.1" in text  # mean and sample std of 50, 70
    assert "40.0 (1 seed)" in text
    assert "not run" in text
    assert "78.41" in text  # the paper's number sits beside ours


def test_settings_fingerprint_changes_with_the_protocol():
    base = ablations.Settings()
    assert base.fingerprint() == ablations.Settings().fingerprint()
    assert base.fingerprint() != ablations.Settings(epochs=base.epochs + 1).fingerprint()
    # how finished runs are tested is not part of it: a new view grid re-tests them, it does not retrain
    assert base.fingerprint() == ablations.Settings(view_grid=("1x1",), grid_short_side=40).fingerprint()


def test_view_table_reads_the_view_grid():
    settings = ablations.Settings(view_grid=("1x1", "2x3"))
    results = [{"experiment": "sct", "seed": s, "top1": {"1x1": 10.0}, "view_grid": {"1x1": 20.0, "2x3": v},
                "seconds": 1} for s, v in enumerate((30.0, 50.0))]
    text = ablations.format_doc(results, settings, [0, 1], 2, 8).split("## Test views")[1]
    assert "| 1x1 | 2x3 |" in text and "short side of 37 px" in text
    assert "| 20.0 +- 0.0 | 40.0 +- 14.1 |" in text


def test_a_revision_gives_new_cache_ids_to_the_experiments_it_moves_only():
    settings = ablations.Settings()
    revised = [e for e in ablations.EXPERIMENTS.values() if e.revision]
    assert {e.key for e in revised} == {"tsm_avg", "tsm_ta", "xvit_avg", "xvit_ta", "bag_of_frames"}
    for exp in revised:
        assert exp.revision in ablations.REVISIONS
        assert ablations.cache_id(exp, 0, settings).endswith(f"/rev{exp.revision}")
        assert ablations.cache_id(exp, 0, settings, 0) == f"{exp.key}/seed0/{settings.fingerprint()}"
    assert ablations.cache_id(ablations.EXPERIMENTS["sct"], 0, settings) == f"sct/seed0/{settings.fingerprint()}"


def test_doc_marks_rows_that_predate_a_revision_until_it_has_every_seed():
    settings = ablations.Settings()
    older = [{"experiment": "xvit_ta", "seed": s, "top1": {"1x1": v}, "seconds": 1} for s, v in ((0, 50.0), (1, 70.0))]
    partial = [{"experiment": "xvit_ta", "seed": 0, "top1": {"1x1": 40.0}, "seconds": 1}]
    text = ablations.format_doc(partial, settings, [0, 1], 2, 8, older)
    assert "40.0 (1 seed) at revision 1; 60.0 +- 14.1 before it" in text and "Revision 1: " in text
    complete = partial + [{"experiment": "xvit_ta", "seed": 1, "top1": {"1x1": 60.0}, "seconds": 1}]
    text = ablations.format_doc(complete, settings, [0, 1], 2, 8, older)
    assert "| 50.0 +- 14.1 |" in text and "before it |" not in text
