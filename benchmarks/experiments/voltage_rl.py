"""The Volt-Var effect test's setting: one short TD3 run (plain, noise-augmented or adversarial) and its attack.

1,000 updates on 8 training days side by side (batched AC power flow), half of each actor batch
perturbed for ``noise``/``adversarial`` (L-inf eps ramped linearly to 0.05 over 500 updates;
``adversarial``: PGD-5 on the critic objective, ``noise``: random ``±eps``), then the
deterministic policy on 8 validation days (Z-bus solver) clean and under white-box PGD-10 on
the action deviation at each budget of ``eval_eps``. The seed sets the load/PV profiles of every
day (``profile_seed``), the training days' order (``env_seed``), initialisation, exploration,
replay sampling and attack randomness. Used by ``benchmarks/voltage_rl_effect.py`` and
``tests/lightning_modules/voltage_rl/test_effect.py``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from robust_lightning.envs import run_episodes
from robust_lightning.lightning_modules.voltage_rl import VoltVarDataModule, VoltVarTD3

__all__ = ["EFFECT_DAYS", "EFFECT_EPS", "EFFECT_UPDATES", "EVAL_EPS", "train_and_attack"]

EFFECT_UPDATES = 1000
EFFECT_DAYS = 8
EFFECT_EPS = 0.05
EVAL_EPS = (0.05, 0.1)


def train_and_attack(method: Literal["td3", "adversarial", "noise"], seed: int, updates: int = EFFECT_UPDATES,
                     eval_eps: tuple[float, ...] = EVAL_EPS) -> dict[str, Any]:
    """Trains one agent of the effect setting and evaluates it.

    Returns:
        ``{"clean": summary, "attacked": {eps: summary}, "seconds": s}`` with the
        :func:`~robust_lightning.envs.run_episodes` summaries (``violation_rate``, ``return``...).
    """
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    data = VoltVarDataModule(num_envs=8, num_val_days=EFFECT_DAYS, steps_per_epoch=updates, env_seed=seed,
                             profile_seed=seed, eval_power_flow="zbus")
    model = VoltVarTD3(method=method, hidden=(128, 128), batch_size=128, warmup_transitions=2000, seed=seed,
                       adv_eps=EFFECT_EPS, adv_steps=5, adv_objective="critic", adv_fraction=0.5,
                       eps_schedule="linear", eps_ramp_updates=updates // 2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, data)
    env = data.make_env("val", num_envs=EFFECT_DAYS, power_flow="zbus")
    days = list(range(EFFECT_DAYS))
    clean = run_episodes(env, model.policy_fn(), days).summary()
    attacked = {}
    for eps in eval_eps:
        generator = torch.Generator().manual_seed(seed + 100)
        attacked[eps] = run_episodes(env, model.policy_fn(eps, generator, objective="action", steps=10), days).summary()
    return {"clean": clean, "attacked": attacked, "seconds": round(time.perf_counter() - start, 1)}
