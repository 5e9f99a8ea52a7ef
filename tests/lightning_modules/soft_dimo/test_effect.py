"""Effect test: one-step students against the teacher sampled in one step, on every seed.

The README setting (benchmarks/soft_dimo_digits.py, DEFAULTS) minus the ablation rows: per seed
(which also sets the data split) an independent evaluation classifier, a MaskGIT teacher and two
students from it, Di[M]O (sampled tokens) and Soft-Di[M]O (soft embeddings + GAN); metrics against
the held-out test digits. The mechanism does NOT win here, and this asserts what was measured
(benchmarks/results/soft_dimo_digits.json, seeds 0/1/2): the Soft-Di[M]O student's classifier-FD is
3.0-3.9x the one-step teacher's (132/79/197 vs 34/26/52) because its samples collapse to few modes
(recall 0.01-0.15 vs the teacher's 0.66-0.75), while it samples 18-23x faster than the 8-step teacher.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.soft_dimo_digits import DEFAULTS, run_seed

# The benchmark's own settings (its rows for these seeds are these runs), without TTEO.
SHORT = {**DEFAULTS, "tteo_steps": 0}


@pytest.mark.slow
def test_one_step_students_against_the_one_step_teacher_on_every_seed(single_thread: None, tmp_path: Path) -> None:
    measured = {}
    for seed in (0, 1, 2):
        rows = run_seed(seed, SHORT, ["dimo", "soft_dimo"], tmp_path)
        measured[seed] = {name: {key: rows[name][key] for key in ("classifier_fd", "class_accuracy", "recall")}
                          for name in ("teacher_T1", "student_init", "dimo", "soft_dimo")}
    print(measured)
    for seed, rows in measured.items():
        # Both students are measured and reported, whichever way they come out.
        assert all(math.isfinite(rows[name]["classifier_fd"]) for name in ("dimo", "soft_dimo")), (seed, rows)
        # Measured: the one-step student loses to the one-step teacher on classifier-FD (>= 3.0x
        # on every seed; asserted with slack at 1.5x) ...
        assert rows["soft_dimo"]["classifier_fd"] > 1.5 * rows["teacher_T1"]["classifier_fd"], (seed, measured)
        # ... because it drops modes: recall at most a quarter of the teacher's (measured <= 0.23x).
        assert rows["soft_dimo"]["recall"] < 0.5 * rows["teacher_T1"]["recall"], (seed, measured)
