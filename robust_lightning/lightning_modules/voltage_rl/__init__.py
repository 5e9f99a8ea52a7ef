"""Robust Volt-Var control: TD3, plain or adversarially trained against observation attacks."""

from robust_lightning.lightning_modules.voltage_rl.datamodule import VoltVarDataModule
from robust_lightning.lightning_modules.voltage_rl.lightning_module import (
    EPS_SCHEDULES,
    METHODS,
    VoltVarTD3,
)
from robust_lightning.lightning_modules.voltage_rl.model import (
    ATTACK_OBJECTIVES,
    Actor,
    ReplayBuffer,
    TwinCritic,
    attack_observations,
    mlp,
    random_observation_noise,
)

__all__ = [
    "ATTACK_OBJECTIVES",
    "EPS_SCHEDULES",
    "METHODS",
    "Actor",
    "ReplayBuffer",
    "TwinCritic",
    "VoltVarDataModule",
    "VoltVarTD3",
    "attack_observations",
    "mlp",
    "random_observation_noise",
]
