"""Robust Volt-Var control: plain, noise-augmented and adversarially trained TD3 under observation attacks.

Every run trains one agent with the settings of its config (``configs/voltage_rl/``; the
training environment steps the batched AC power flow), then runs the test days on pandapower's
AC power flow (``--power-flow pandapower``, the default) with the deterministic policy, clean and
under white-box L-inf PGD observation attacks on each agent's own actor/critic (the
measurements: loads, PV output, voltages; budgets in units of each feature's range). The
"no control" row (q = 0) is the feeder without Volt-Var control, "droop" a local integral
Volt-Var droop (no learning; clean only). ``noise`` is adversarial TD3's control: the same
training mix and budget with random ``±eps`` noise instead of the attack. A seed sets the agent
(initialisation, exploration, replay, attacks), the training days' order (``env_seed``) and the
load/PV profiles of every day (``profile_seed``), so the baselines run once per seed too.

Usage::

    python benchmarks/voltage_rl.py                                  # 4 methods x seeds 0 1 2
    python benchmarks/voltage_rl.py --methods td3 --seeds 0 --power-flow zbus   # a quick check

Writes ``benchmarks/results/voltage_rl.json`` (settings and one record per run; runs of the
same method/seed are replaced, others kept, so seeds can run in separate calls) and prints a
Markdown table of mean +- sample std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust_lightning.envs import run_episodes
from robust_lightning.lightning_modules.voltage_rl import VoltVarDataModule, VoltVarTD3

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {
    "td3": ROOT / "configs" / "voltage_rl" / "case33bw_td3.yaml",
    "noise": ROOT / "configs" / "voltage_rl" / "case33bw_td3_noise.yaml",
    "adversarial": ROOT / "configs" / "voltage_rl" / "case33bw_td3_adversarial.yaml",
    "adaptive": ROOT / "configs" / "voltage_rl" / "case33bw_td3_adversarial_adaptive.yaml",
}
METRICS = ("return", "violation_rate", "bus_violation_rate", "q_use")


def load_config(method: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    config = yaml.safe_load(CONFIGS[method].read_text())
    return (dict(config["model"]["init_args"]), dict(config["data"]["init_args"]),
            int(config["trainer"]["max_epochs"]))


def conditions(eps_list: list[float], objectives: list[str], steps: int) -> list[tuple[str, float, str | None]]:
    found: list[tuple[str, float, str | None]] = [("clean", 0.0, None)]
    for objective in objectives:
        for eps in eps_list:
            found.append((f"pgd{steps}_{objective}_eps{eps:g}", eps, objective))
    return found


def evaluate(act_for: Any, data: VoltVarDataModule, days: list[int], power_flow: str, days_per_batch: int,
             conds: list[tuple[str, float, str | None]]) -> dict[str, dict[str, float]]:
    env = data.make_env("test", num_envs=days_per_batch, power_flow=power_flow)
    results = {}
    for name, eps, objective in conds:
        stats = run_episodes(env, act_for(eps, objective), days)
        results[name] = stats.summary()
    return results


def run(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    model_args, data_args, epochs = load_config(method)
    model_args["seed"] = seed
    data_args.update(env_seed=seed, profile_seed=seed, num_test_days=args.test_days)
    if args.updates is not None:
        epochs = max(1, args.updates // int(data_args["steps_per_epoch"]))
    pl.seed_everything(seed, verbose=False)
    data = VoltVarDataModule(**data_args)
    model = VoltVarTD3(**model_args)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    start = time.time()
    trainer.fit(model, data)
    train_s = time.time() - start
    model.eval()
    generator = torch.Generator().manual_seed(10_000 + seed)

    def act_for(eps: float, objective: str | None) -> Any:
        return model.policy_fn(eps, generator, objective=objective or "action", steps=args.attack_steps)

    start = time.time()
    results = evaluate(act_for, data, list(range(args.test_days)), args.power_flow, args.days_per_batch,
                       conditions(args.eps, args.objectives, args.attack_steps))
    return {"method": method, "seed": seed, "updates": int(model.updates), "train_s": round(train_s, 1),
            "eval_s": round(time.time() - start, 1), "results": results}


def baselines(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """No control (q = 0) and an integral Volt-Var droop on each inverter's measured voltage,
    ``a_t = clip(a_{t-1} - 8 (v_k - 1), -1, 1)`` (gain 8: the best of 1/2/4/8 on validation days),
    on the test days of ``seed``'s load/PV profiles."""
    _, data_args, _ = load_config("td3")
    data_args.update(num_test_days=args.test_days, profile_seed=seed)
    data = VoltVarDataModule(**data_args)
    env = data.make_env("test", num_envs=1)
    slices, grid = env.obs_slices, data.grid
    pv_cols = np.searchsorted(grid.non_slack, grid.pv_buses)

    def droop(obs: np.ndarray) -> np.ndarray:
        vm = obs[:, slices["vm_pu"]] * 0.4 + 0.8
        previous = obs[:, slices["prev_action"]] * 2 - 1
        return np.clip(previous - 8.0 * (vm[:, pv_cols] - 1.0), -1, 1)

    controllers = {"no_control": lambda obs: np.zeros((obs.shape[0], data.act_dim)), "droop": droop}
    return [{"method": name, "seed": seed,
             "results": evaluate(lambda eps, objective, c=controller: c, data, list(range(args.test_days)),
                                 args.power_flow, args.days_per_batch, [("clean", 0.0, None)])}
            for name, controller in controllers.items()]


def table(records: list[dict[str, Any]]) -> str:
    by_method: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    names = sorted({name for r in records for name in r["results"]}, key=lambda n: (n != "clean", n))
    lines = ["| method | seeds | condition | return | violation rate | bus violation rate | q use (MVAr) |",
             "|---|---|---|---|---|---|---|"]

    def cell(values: list[float], digits: int) -> str:
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    for method in ("no_control", "droop", "td3", "noise", "adversarial", "adaptive"):
        runs = by_method.get(method, [])
        for name in names:
            rows = [r["results"][name] for r in runs if name in r["results"]]
            if not rows:
                continue
            seeds = ",".join(str(r["seed"]) for r in runs if name in r["results"] and r["seed"] is not None) or "-"
            lines.append(f"| {method} | {seeds} | {name} | {cell([x['return'] for x in rows], 2)} | "
                         f"{cell([x['violation_rate'] for x in rows], 3)} | {cell([x['bus_violation_rate'] for x in rows], 4)} | "
                         f"{cell([x['q_use'] for x in rows], 3)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["td3", "noise", "adversarial", "adaptive"], choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=None, help="gradient updates (default: the config's epochs)")
    parser.add_argument("--test-days", type=int, default=16)
    parser.add_argument("--days-per-batch", type=int, default=16)
    parser.add_argument("--power-flow", choices=["pandapower", "zbus"], default="pandapower")
    parser.add_argument("--eps", nargs="+", type=float, default=[0.05, 0.1])
    parser.add_argument("--objectives", nargs="+", default=["action", "critic"], choices=["action", "critic"])
    parser.add_argument("--attack-steps", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true", help="skip the no-control and droop rows")
    parser.add_argument("--out", type=Path, default=RESULTS / "voltage_rl.json")
    args = parser.parse_args()
    if args.test_days % args.days_per_batch:
        parser.error("--test-days must be a multiple of --days-per-batch")
    torch.set_num_threads(1)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("methods", "seeds", "out")}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    records = previous.get("runs", []) if previous.get("settings") == settings else []
    for method in args.methods:
        for seed in args.seeds:
            record = run(method, seed, args)
            print(json.dumps(record), flush=True)
            records = [r for r in records if (r["method"], r["seed"]) != (method, seed)] + [record]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"settings": settings, "runs": records}, indent=1))
    if not args.no_baseline:
        for seed in args.seeds:
            if not any((r["method"], r["seed"]) == ("no_control", seed) for r in records):
                records.extend(baselines(args, seed))
        args.out.write_text(json.dumps({"settings": settings, "runs": records}, indent=1))
    print(table(records))


if __name__ == "__main__":
    main()
