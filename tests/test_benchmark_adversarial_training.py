"""Smoke run of ``benchmarks/adversarial_training.py`` (issue 22, deliverable 4): both parts, every
variant, tiny settings, through the script's own command line, so the README's commands keep
working. The ``cuda`` case is the same script with ``--device cuda`` (deliverable 4c); it runs
wherever a GPU is visible and is skipped elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--threads", "1", "--limit-batches", "2", "--seeds-a", "1", "--epochs-a", "2", "--image-size-a", "16",
        "--width-a", "4", "--hidden-a", "8", "--seeds-b", "1", "--epochs-b", "1", "--width-b", "4", "--hidden-b", "8",
        "--compile-backend", "aot_eager"]


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_benchmark_runs_both_parts_and_writes_every_variant(device: str, tmp_path: Path) -> None:
    out = tmp_path / "at.json"
    parts = "a,b" if device == "cpu" else "a"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "adversarial_training.py"), "--device", device,
                           "--parts", parts, *TINY, "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    summary = report["epoch_pgd10"]["summary"]
    assert set(summary) == {"torchattacks_by_hand", "ours_plain", "ours_compile", "ours_channels_last", "ours_bf16",
                            "ours_fast"}
    for name, row in summary.items():
        assert row["steady_epoch_s_median"] > 0, name
        assert all(0.0 <= acc <= 1.0 for acc in row["robust_acc_worst_per_seed"]), (name, row)
    assert summary["torchattacks_by_hand"]["speedup_steady_vs_torchattacks"] == pytest.approx(1.0)
    assert report["epoch_pgd10"]["run"]["device"]
    if device == "cpu":
        recipes = report["recipes_digits"]
        assert set(recipes["summary"]) == {"standard", "pgd_at", "fgsm_rs", "n_fgsm", "grad_align", "free_at", "fat"}
        assert (tmp_path / recipes["plot"]).is_file()
