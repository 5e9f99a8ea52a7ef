"""benchmarks/rct_af_sweep.py runs end to end (2-point grid, tiny budget) and writes its outputs."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "rct_af_sweep.py"


def _load_sweep():
    spec = importlib.util.spec_from_file_location("rct_af_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_parsing_names_bad_values() -> None:
    sweep = _load_sweep()
    assert sweep.parse_grid(["relu", "0.5", "8"]) == [None, 0.5, 8.0]
    for bad in (["0"], ["-1"], ["inf"], ["sharp"], []):
        with pytest.raises(ValueError, match="grid"):
            sweep.parse_grid(bad)


@pytest.mark.slow
def test_sweep_runs_end_to_end_on_two_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = _load_sweep()
    out = tmp_path / "sweep"
    summary = sweep.main(["--grid", "relu", "8", "--seeds", "0", "--epochs", "1", "--out", str(out),
                          "--hessian-samples", "16", "--hessian-probes", "1",
                          "--set", "trainer.limit_train_batches=2", "--set", "trainer.limit_val_batches=1",
                          "--set", "trainer.limit_test_batches=1"])
    assert [s["kappa"] for s in summary] == ["relu", "8"]
    with (out / "runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["kappa"] for r in rows] == ["relu", "8"]
    for row in rows:
        for metric in ("clean_acc", "pgd10_acc", "fgsm_acc"):
            assert 0.0 <= float(row[metric]) <= 1.0
        assert float(row["pgd10_acc"]) <= float(row["clean_acc"])
        assert float(row["hessian_adv"]) > 0 and float(row["hessian_clean"]) > 0
    payload = json.loads((out / "summary.json").read_text())
    assert payload["meta"]["epochs"] == 1 and len(payload["runs"]) == 2
    assert (out / "summary.csv").is_file()
    assert (out / "sweep.png").stat().st_size > 10_000
    (out / "sweep.png").unlink()
    assert [s["kappa"] for s in sweep.main(["--replot", "--out", str(out)])] == ["relu", "8"]
    assert (out / "sweep.png").is_file()
    # Each grid point is a real CLI run with its own versioned folder and saved config.
    configs = sorted(out.glob("runs/kappa_*_seed_0/version_0/config.yaml"))
    assert len(configs) == 2
    assert "max_curvature: 8.0" in configs[1].read_text() or "max_curvature: 8.0" in configs[0].read_text()
