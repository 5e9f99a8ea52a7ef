"""Effect test: adversarially trained TD3 keeps fewer voltage violations under observation attack
than TD3 trained on random noise of the same budget.

Control (what would pass if the mechanism were removed): ``VoltVarTD3(method="noise")``, the
same actor mix (half the batch perturbed, L-inf eps ramped linearly to 0.05 on the
measurements) with random ``±eps`` noise in place of the PGD-5 critic attack. The mechanism is
the *worst-case* search; noise augmentation of the same budget and fraction is what remains
without it. Plain TD3 runs beside them (the weaker control: no perturbation at all).

What we measured (benchmarks/results/voltage_rl_effect.json, seeds 0-4, attacked violation rate):
at the training budget (eps 0.05) noise augmentation does as well as adversarial training (mean
0.011 vs 0.014; neither is reliably better); at twice that budget (eps 0.1) adversarial training
leaves fewer violations (mean 0.117 vs 0.347) on 4 of 5 seeds but not on seed 4 (0.224 vs 0.188),
while it beats plain TD3 (mean 0.521) by at least 0.33 on every seed. So the test asserts what
held: per seed, adversarial beats plain TD3 at eps 0.1 by 0.25; against the noise control only
the mean over the seeds, by 0.1 (seeds 0-2: 0.108 vs 0.340), and that at eps 0.05 both
perturbation-trained agents stay under 0.1.

Each seed changes the data as well as the agent: ``profile_seed`` (the load/PV profiles of
every day) and ``env_seed`` (the order of the training days), plus initialisation, exploration
and replay sampling. Setting: ``benchmarks/experiments/voltage_rl.py`` (1,000 updates, PGD-10
action-deviation attack on 8 validation days); the measured numbers are in
``benchmarks/results/voltage_rl_effect.json`` (``python benchmarks/voltage_rl_effect.py``).
"""

from __future__ import annotations

import pytest

from benchmarks.experiments.voltage_rl import train_and_attack

SEEDS = (0, 1, 2)
METHODS = ("td3", "noise", "adversarial")


@pytest.mark.slow
def test_adversarial_td3_keeps_fewer_violations_under_attack_than_noise_augmentation(single_thread: None) -> None:
    """Adversarial TD3 vs its noise-augmentation control (same budget, fraction, schedule)."""
    runs = {(method, seed): train_and_attack(method, seed) for seed in SEEDS for method in METHODS}
    report = "; ".join(
        f"{m} s{s} clean {r['clean']['violation_rate']:.3f} "
        + " ".join(f"eps{eps:g} {a['violation_rate']:.3f}" for eps, a in r["attacked"].items())
        for (m, s), r in sorted(runs.items()))
    print(report)
    def attacked(method: str, seed: int, eps: float) -> float:
        return runs[method, seed]["attacked"][eps]["violation_rate"]

    for seed in SEEDS:
        # Every agent learns the task (no control: ~27 % of hours violate).
        assert all(runs[m, seed]["clean"]["violation_rate"] < 0.05 for m in METHODS), report
        # Measured gap on seeds 0-4: 0.34-0.52 (a removed mechanism leaves td3's ~0.5 here).
        assert attacked("adversarial", seed, 0.1) < attacked("td3", seed, 0.1) - 0.25, report
        # At the training budget noise does as well (measured <= 0.057 for both).
        assert attacked("adversarial", seed, 0.05) < 0.1 and attacked("noise", seed, 0.05) < 0.1, report
    mean_adversarial = sum(attacked("adversarial", s, 0.1) for s in SEEDS) / len(SEEDS)
    mean_noise = sum(attacked("noise", s, 0.1) for s in SEEDS) / len(SEEDS)
    # Per seed the worst-case search wins on 4 of 5 measured seeds; over seeds 0-2 by 0.23 on average.
    assert mean_adversarial < mean_noise - 0.1, report
