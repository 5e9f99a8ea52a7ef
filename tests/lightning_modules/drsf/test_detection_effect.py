"""DRSF detection vs its control (plain source-only training) on the held-out style, 3 seeds.

The control is the same FCOS, data, epochs and optimizer with every DRSF component removed
(``method="plain"``): it is what would remain if the mechanism did nothing. The seed varies the
scenes, the pseudo-domain styles, the initialisation and the data order. At our scale DRSF does
**not** beat the control (README table, ``benchmarks/results/drsf_detection.json``: held-out
mAP50 plain 0.216 / 0.244 / 0.167 vs DRSF 0.149 / 0.229 / 0.223 for seeds 0 / 1 / 2), so this
test asserts the measured relation: no consistent gain, differences within the seed spread,
both detectors learned the source, and the teacher labelled only a few pseudo-target images
(the pseudo-label loop is nearly inert with FCOS's scores). Same settings as the benchmark
(``EXPERIMENT_DEFAULTS``); ~20 minutes on a loaded 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mmdet", reason="DRSF detection needs the mmdet stack (make install builds it)")

from benchmarks.experiments.drsf_detection import run_drsf_detection

SEEDS = (0, 1, 2)


@pytest.mark.slow
def test_drsf_detection_matches_the_measured_relation_to_plain_training(tmp_path: Path) -> None:
    plain = {s: run_drsf_detection(tmp_path, "plain", seed=s) for s in SEEDS}
    drsf = {s: run_drsf_detection(tmp_path, "drsf", seed=s) for s in SEEDS}
    gaps = [drsf[s]["map50_held_out"] - plain[s]["map50_held_out"] for s in SEEDS]
    for s in SEEDS:
        assert plain[s]["map50_source"] > 0.3 and drsf[s]["map50_source"] > 0.3, (s, plain[s], drsf[s])
        # Measured |gap| <= 0.067 on every seed.
        assert abs(gaps[SEEDS.index(s)]) < 0.12, (s, plain[s], drsf[s])
        # Measured 0.7-1.7 % of the pseudo-target images got a teacher box (threshold 0.5).
        assert drsf[s]["pseudo_labelled_fraction"] < 0.1, drsf[s]
    # No consistent gain: DRSF is not better than the control on every seed (measured: worse on
    # seeds 0 and 1, better on seed 2), and the mean gap is within the seed spread.
    assert not all(g > 0 for g in gaps), gaps
    assert abs(sum(gaps) / len(gaps)) < 0.06, gaps
