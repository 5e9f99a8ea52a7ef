"""Volt-Var effect test's setting over seeds: plain TD3, its noise-augmentation control, adversarial TD3.

See ``benchmarks/experiments/voltage_rl.py`` for the setting (1,000 updates, 8 validation days,
PGD-10 action-deviation attack at L-inf 0.05 and 0.1; each seed also sets the load/PV profiles).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/voltage_rl_effect.py             # seeds 0-4 -> benchmarks/results/voltage_rl_effect.json
    python benchmarks/voltage_rl_effect.py --seeds 5 --out /tmp/vrl.json

Runs of the same method/seed are replaced, others kept. Prints a Markdown table of the
violation rates per seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.experiments.voltage_rl import EVAL_EPS, train_and_attack

METHODS = ("td3", "noise", "adversarial")


def table(runs: list[dict[str, Any]]) -> str:
    """Violation rate (fraction of hours with a bus outside [0.95, 1.05]) per method and seed."""
    seeds = sorted({r["seed"] for r in runs})
    lines = ["| method | condition | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    by_key = {(r["method"], r["seed"]): r for r in runs}
    for method in METHODS:
        for condition in ["clean", *(f"{eps:g}" for eps in EVAL_EPS)]:
            cells = []
            for seed in seeds:
                run = by_key.get((method, seed))
                if run is None:
                    cells.append("-")
                    continue
                summary = run["clean"] if condition == "clean" else run["attacked"][condition]
                cells.append(f"{summary['violation_rate']:.3f}")
            name = condition if condition == "clean" else f"PGD-10 action, eps {condition}"
            lines.append(f"| {method} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "voltage_rl_effect.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs: list[dict[str, Any]] = previous.get("runs", [])
    for seed in args.seeds:
        for method in args.methods:
            result = train_and_attack(method, seed)
            # JSON keys are strings: the budgets become "0.05", "0.1".
            row = {"method": method, "seed": seed, "clean": result["clean"], "seconds": result["seconds"],
                   "attacked": {f"{eps:g}": summary for eps, summary in result["attacked"].items()}}
            runs = [r for r in runs if (r["method"], r["seed"]) != (method, seed)] + [row]
            print(json.dumps(row), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"command": "python benchmarks/voltage_rl_effect.py [--seeds ...]",
                                            "eval_eps": list(EVAL_EPS), "runs": runs,
                                            "machine": platform.platform(), "torch": torch.__version__},
                                           indent=1) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
