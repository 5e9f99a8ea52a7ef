"""Volt-Var configs: validate on one day (pandapower's power flow stays on, the real eval path)."""

from __future__ import annotations

from pathlib import Path


def _one_day(tmp_path: Path) -> list[str]:
    return ["--data.init_args.num_val_days=1", "--data.init_args.eval_days_per_batch=1"]


OVERRIDES = {"VoltVarDataModule": _one_day}
