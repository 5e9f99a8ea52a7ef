"""Worst case over several attacks, evaluated AutoAttack-style.

Croce & Hein 2020 count a point as robust only if it survives every attack of the ensemble,
and run each attack only on the points still robust after the previous ones (which is what
makes the ensemble affordable). The function here is batch-local: it never communicates
between ranks, so ranks with different numbers of still-robust samples cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from robust_lightning.attacks.base import Attack

__all__ = ["worst_case_robustness"]

# attack_fn(attack, index) -> adversarial inputs for the samples ``index`` of the batch;
# correct_fn(inputs, index) -> (len(index),) bool, whether the model is right on them.
AttackFn = Callable[[Attack, Tensor], Tensor]
CorrectFn = Callable[[Tensor, Tensor], Tensor]


def worst_case_robustness(
    attacks: Sequence[Attack],
    clean_inputs: Tensor,
    attack_fn: AttackFn,
    correct_fn: CorrectFn,
    robust: Tensor | None = None,
) -> tuple[Tensor, list[int]]:
    """Per-sample robustness against the whole ensemble.

    Args:
        attacks: run in order; put cheap strong attacks first (AutoAttack: APGD-CE, APGD-T,
            FAB-T, Square).
        clean_inputs: the batch ``(B, ...)``.
        attack_fn: crafts adversarial inputs for a subset of the batch.
        correct_fn: tells whether the model is correct on given inputs of a subset.
        robust: ``(B,)`` bool, the samples still robust before the ensemble (e.g. those that
            survived each attack's own run); ``None`` starts from the clean correctness.

    Returns:
        ``robust`` (B,) bool: correct on the clean input and on every attack's output; and the
        number of samples still robust after each attack (AutoAttack's running report).
    """
    if robust is None:
        everyone = torch.arange(clean_inputs.shape[0], device=clean_inputs.device)
        robust = correct_fn(clean_inputs, everyone).clone()
    else:
        robust = robust.clone()
    remaining_after: list[int] = []
    for attack in attacks:
        index = robust.nonzero().squeeze(1)
        if index.numel():
            survived = correct_fn(attack_fn(attack, index), index)
            robust[index[~survived]] = False
        remaining_after.append(int(robust.sum()))
    return robust, remaining_after
