"""Environments for robust reinforcement learning (gymnasium API).

Importing the package registers ``gymnasium.make("robust_lightning/VoltVar-v0")`` (one day per
episode) and its vector form ``gymnasium.make_vec("robust_lightning/VoltVar-v0", num_envs=8,
vectorization_mode="vector_entry_point")`` (the batched power flow).
"""

from robust_lightning._extras import require
from robust_lightning.envs.volt_var import (
    POWER_FLOWS,
    SPLITS,
    EpisodeStats,
    VoltVarEnv,
    VoltVarGrid,
    VoltVarVectorEnv,
    run_episodes,
    voltage_barrier,
)

gym = require("gymnasium", "rl")

VOLT_VAR_ID = "robust_lightning/VoltVar-v0"
if VOLT_VAR_ID not in gym.registry:
    gym.register(id=VOLT_VAR_ID, entry_point="robust_lightning.envs.volt_var:VoltVarEnv",
                 vector_entry_point="robust_lightning.envs.volt_var:VoltVarVectorEnv")

__all__ = [
    "POWER_FLOWS",
    "SPLITS",
    "VOLT_VAR_ID",
    "EpisodeStats",
    "VoltVarEnv",
    "VoltVarGrid",
    "VoltVarVectorEnv",
    "run_episodes",
    "voltage_barrier",
]
