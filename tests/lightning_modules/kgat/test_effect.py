"""KGAT raises attacked mAP50 over clean training on three seeds of synthetic thermal scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mmdet", reason="KGAT needs the mmdet stack (make install builds it)")

from benchmarks.experiments.kgat import run_synthetic_experiment

PGD = "robust_map50/combined_pgd5_eps4"
MTD = "robust_map50/mtd_fgsm_eps4"


@pytest.mark.slow
def test_kgat_raises_attacked_map50_over_clean_training_on_every_seed(tmp_path: Path) -> None:
    """KGAT against plain training, the control with the adversarial examples removed.

    The README setting (``benchmarks/kgat_synthetic.py``, ``EXPERIMENT_DEFAULTS``): each seed sets
    the initialisation, data order, attacks and the generated scenes (``data_seed = seed``), and
    both recipes of a seed see the same data, epochs and optimizer. Measured
    (benchmarks/results/kgat_synthetic.json, seeds 0/1/2), KGAT minus plain mAP50: under 5-step
    PGD at 4/255 +0.139/+0.050/+0.068, positive on every seed, so it is asserted per seed
    (>= 0.03); under one-step MTD +0.087/-0.010/+0.044: seed 1 reverses, so MTD is asserted on
    the mean; clean -0.029 at worst.

    KGAT's own mechanism beyond adversarial training, the knowledge weights, does not beat its
    constant-weight control (the ``adversarial`` recipe) at this scale: PGD-5 KGAT minus
    adversarial +0.021/-0.105/+0.045 in the same JSON, which the README reports. That arm is not
    rerun here (it would add about three minutes); that the weights act at all, and are not
    constants, is asserted exactly by ``test_knowledge_weights.py``.
    """
    pgd_gaps, mtd_gaps = [], []
    for seed in (0, 1, 2):
        scenes = tmp_path / f"scenes_{seed}"
        plain = run_synthetic_experiment(scenes, "plain", seed=seed, data_seed=seed)
        kgat = run_synthetic_experiment(scenes, "kgat", seed=seed, data_seed=seed)
        print(f"seed {seed}: plain {plain}; kgat {kgat}")
        assert plain["map50"] > 0.7, f"the detector did not learn the scenes of seed {seed}: {plain}"
        assert kgat[PGD] > plain[PGD] + 0.03, (seed, plain, kgat)
        assert kgat["map50"] > plain["map50"] - 0.05, (seed, plain, kgat)
        pgd_gaps.append(kgat[PGD] - plain[PGD])
        mtd_gaps.append(kgat[MTD] - plain[MTD])
    assert sum(mtd_gaps) / len(mtd_gaps) > 0.02, (pgd_gaps, mtd_gaps)
