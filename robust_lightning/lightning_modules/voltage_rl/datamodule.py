"""VoltVarDataModule: the Volt-Var environment as a LightningDataModule.

Off-policy RL has no fixed training set: each training step of
:class:`~robust_lightning.lightning_modules.voltage_rl.VoltVarTD3` steps its own vectorised
training environment (built by :meth:`VoltVarDataModule.make_env`) into a replay buffer and
updates on a sample of it, so the training loader only paces the epoch (``steps_per_epoch``
update indices). Validation and test loaders yield batches of day indices; the module runs
those days as whole episodes, clean and under the observation attack.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from robust_lightning._validation import check_int_at_least
from robust_lightning.envs.volt_var import (
    DEFAULT_PV_BUSES,
    POWER_FLOWS,
    PowerFlow,
    Split,
    VoltVarGrid,
    VoltVarVectorEnv,
)

__all__ = ["VoltVarDataModule"]


class _UpdateIndices(IterableDataset):
    """``0..n-1``: one item per gradient update of an epoch (the data come from interaction)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (torch.tensor(i) for i in range(self.n))

    def __len__(self) -> int:
        return self.n


class VoltVarDataModule(pl.LightningDataModule):
    """IEEE 33-bus Volt-Var control days for training (batched AC power flow) and evaluation.

    Args:
        pv_buses: buses with a PV inverter (pandapower numbering, slack = 0).
        pv_capacity_mw: PV peak power per inverter (MW).
        inverter_oversize: inverter rating as a multiple of the PV capacity.
        load_scale: multiplier of the nominal loads.
        steps_per_day: control steps per day (episode length).
        profile_seed: seed of the daily load/PV profiles.
        voltage_weight: weight of the voltage barrier in the reward.
        q_weight: weight of the reactive-power use in the reward (MAPDN's α).
        num_envs: training days run side by side (the vectorised training environment).
        num_train_days: size of the training day pool.
        num_val_days: validation days (``0..num_val_days-1`` of the val split).
        num_test_days: test days.
        eval_days_per_batch: days per validation/test batch (run side by side).
        steps_per_epoch: gradient updates per training epoch.
        eval_power_flow: ``"pandapower"`` (``pp.runpp``, default) or ``"zbus"`` (the batched
            solver of the same AC equations) for validation and test.
        env_seed: seed of the training environment's day draws (named apart from the module's
            ``seed`` so Lightning's hparam merge never sees two different ``seed`` values).
    """

    def __init__(
        self,
        pv_buses: Sequence[int] = DEFAULT_PV_BUSES,
        pv_capacity_mw: float = 1.0,
        inverter_oversize: float = 1.2,
        load_scale: float = 1.0,
        steps_per_day: int = 24,
        profile_seed: int = 0,
        voltage_weight: float = 100.0,
        q_weight: float = 0.1,
        num_envs: int = 8,
        num_train_days: int = 365,
        num_val_days: int = 8,
        num_test_days: int = 16,
        eval_days_per_batch: int = 4,
        steps_per_epoch: int = 500,
        eval_power_flow: PowerFlow = "pandapower",
        env_seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("num_envs", num_envs), ("num_train_days", num_train_days), ("num_val_days", num_val_days),
                            ("num_test_days", num_test_days), ("eval_days_per_batch", eval_days_per_batch),
                            ("steps_per_epoch", steps_per_epoch)):
            check_int_at_least(name, value, 1)
        if eval_power_flow not in POWER_FLOWS:
            raise ValueError(f"eval_power_flow must be one of {POWER_FLOWS}, got {eval_power_flow!r}")
        check_int_at_least("env_seed", env_seed, 0)
        self.save_hyperparameters()
        self.grid_kwargs = {"pv_buses": tuple(int(b) for b in pv_buses), "pv_capacity_mw": pv_capacity_mw,
                            "inverter_oversize": inverter_oversize, "load_scale": load_scale,
                            "steps_per_day": steps_per_day, "profile_seed": profile_seed}
        self.reward_kwargs = {"voltage_weight": voltage_weight, "q_weight": q_weight}
        self.num_envs = num_envs
        self.num_days = {"train": num_train_days, "val": num_val_days, "test": num_test_days}
        self.eval_days_per_batch = eval_days_per_batch
        self.steps_per_epoch = steps_per_epoch
        self.eval_power_flow = eval_power_flow
        self.env_seed = env_seed
        # Built now (bad grid arguments fail at config time) and shared by every environment.
        self.grid = VoltVarGrid(**self.grid_kwargs)
        layout = self.make_env("train", num_envs=1)
        self.obs_dim = layout.obs_dim
        self.act_dim = layout.action_dim
        # Leading observation features that are measurements (loads, PV output, voltages).
        self.measurement_dim = layout.measurement_dim

    def make_env(self, split: Split = "train", num_envs: int | None = None,
                 power_flow: PowerFlow | None = None) -> VoltVarVectorEnv:
        """A vectorised environment over ``split``'s days; training uses ``zbus`` and
        ``num_envs`` sub-environments by default, evaluation ``eval_power_flow``.
        """
        if power_flow is None:
            power_flow = "zbus" if split == "train" else self.eval_power_flow
        return VoltVarVectorEnv(num_envs=self.num_envs if num_envs is None else num_envs, split=split,
                                num_days=self.num_days[split], power_flow=power_flow, grid=self.grid,
                                **self.reward_kwargs)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_UpdateIndices(self.steps_per_epoch), batch_size=None)

    def _days_loader(self, split: str) -> DataLoader:
        days = torch.arange(self.num_days[split])
        return DataLoader(days, batch_size=self.eval_days_per_batch, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._days_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._days_loader("test")
