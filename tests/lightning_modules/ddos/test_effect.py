"""Effect test: constrained adversarial training keeps DDoS flows detected under the constrained attack.

A shorter run of the README table's setting (benchmarks/ddos_synthetic.py --setting ci, whose
:func:`ci_detection_under_attack` this test calls): an MLP on 1,500 synthetic
CIC-IDS2017-style flows (read through the CSV loader; the seed draws the corpus and the split),
6 epochs, then tested on the held-out split with every attack flow replaced by the constrained
attack's output (eps = 0.7).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.ddos_synthetic import CI_KEY, CONTROL, ci_detection_under_attack

KEY = CI_KEY


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_adversarial_training_raises_attacked_recall(seed: int, tmp_path: Path,
                                                                 single_thread: None) -> None:
    """Constrained AT beats random feasible flows of its budget, but by less than it beats standard.

    Control: ``random_feasible``, the standard recipe trained on attack flows moved to one
    uniform point of the same control box and budget (appended packets and delays, eps = 0.7;
    no search, no gradient). If the gain came from augmenting with any feasible perturbation,
    the control would match constrained AT. At this scale it nearly does: most of the attacked
    recall comes from the feasible augmentation, and the worst-case search adds a small gain
    that holds on every seed, together with a clean recall that does not drop as the control's
    does. The test asserts that measured relation (DDoS README, "CI effect test"). Standard
    training is the reference the control is measured against. Seeds vary the synthetic corpus,
    the split and the weights.

    Measured (benchmarks/results/ddos_effect_test.json, seeds 0/1/2/3/4), attacked recall:
    standard 0.344/0.028/0.098/0.439/0.061, control 0.957/0.804/0.765/0.756/0.689, constrained
    AT 0.973/0.911/0.869/0.817/0.789; clean recall: standard 0.995/0.983/0.967/0.972/0.972,
    control 0.973/0.916/0.820/0.806/0.806, constrained AT 0.984/0.955/0.940/0.917/0.933.
    """
    results = {arm: ci_detection_under_attack(arm, seed, tmp_path) for arm in ("standard", CONTROL, "constrained_at")}
    print(f"seed {seed}: " + "; ".join(f"{arm} recall {r['test/recall']:.3f} attacked {r[KEY]:.3f}"
                                       for arm, r in results.items()))
    robust, control, standard = results["constrained_at"], results[CONTROL], results["standard"]
    assert robust["test/recall"] > 0.85 and standard["test/recall"] > 0.85, results
    # The old margin over standard training (0.25) is met by the control alone (measured 0.61-0.78).
    assert control[KEY] >= standard[KEY] + 0.25, results
    # The search's own gain: measured 0.016-0.106 attacked recall and 0.011-0.128 clean recall.
    assert robust[KEY] > control[KEY], results
    assert robust["test/recall"] > control["test/recall"], results
