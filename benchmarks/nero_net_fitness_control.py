"""NERO-Net's robust fitness against its control, the clean-only fitness (issue 23).

The mechanism under test is the FGSM term of the fitness (``robust_weight = 1``: above the
clean-accuracy threshold, FGSM accuracy is what selection maximises). Its control is the same
search with ``robust_weight = 0`` (selection by clean accuracy only): if the FGSM term did
nothing, the two searches would end with equally robust parents. Each seed sets the search seed
*and* the digits split, so seeds also vary the data. Both final genotypes are retrained with
fresh seeds and scored on the untouched test split.

Usage::

    python benchmarks/nero_net_fitness_control.py --seeds 0 1 2 3 4
    python benchmarks/nero_net_fitness_control.py --seeds 0 --set generations=4

Writes ``benchmarks/results/nero_net_fitness_control.json`` (the README table cites it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robust_lightning.cli import evolve_parser  # noqa: E402
from robust_lightning.lightning_modules.nero_net import NeroNetSearch  # noqa: E402

CONFIG = ROOT / "configs" / "nero_net" / "evolve" / "digits.yaml"
RETRAIN_SEEDS = (0, 1)


def run_search(seed: int, robust_weight: float, run_dir: Path, generations: int | None = None) -> dict[str, Any]:
    """One search of the shipped digits config with the given fitness weight, retrained on test."""
    args = ["--config", str(CONFIG), "--wandb=false", "--plot=false", "--device=cpu", f"--run_dir={run_dir}",
            f"--seed={seed}", f"--data.init_args.seed={seed}", f"--fitness.robust_weight={robust_weight}"]
    if generations is not None:
        args.append(f"--generations={generations}")
    parser = evolve_parser()
    init = parser.instantiate(parser.parse_args(args))
    search = NeroNetSearch(**{k: v for k, v in vars(init).items() if k != "config"})
    start = time.perf_counter()
    state = search.run()
    parent = state["parent"]
    retrained = search.retrain(parent["genotype"], parent["budget_units"], RETRAIN_SEEDS)
    mean = lambda key: statistics.mean(float(r[key]) for r in retrained)  # noqa: E731
    return {"seed": seed, "robust_weight": robust_weight, "val_clean_acc": parent["clean_acc"],
            "val_fgsm_acc": parent["fgsm_acc"], "test_clean_acc": mean("clean_acc"),
            "test_fgsm_acc": mean("fgsm_acc"), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--generations", type=int, default=None, help="override the config's generations")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nero_net_fitness_control.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for weight in (1.0, 0.0):
                rows.append(run_search(seed, weight, Path(tmp) / f"s{seed}_w{weight}", args.generations))
                print(json.dumps(rows[-1]), flush=True)
    pick = {(r["seed"], r["robust_weight"]): r for r in rows}
    gaps = [pick[s, 1.0]["test_fgsm_acc"] - pick[s, 0.0]["test_fgsm_acc"] for s in args.seeds]
    print("| seed | FGSM acc, robust fitness | FGSM acc, clean-only fitness | clean acc robust / clean-only |")
    print("|---|---|---|---|")
    for s in args.seeds:
        r, c = pick[s, 1.0], pick[s, 0.0]
        print(f"| {s} | {r['test_fgsm_acc']:.3f} | {c['test_fgsm_acc']:.3f} | "
              f"{r['test_clean_acc']:.3f} / {c['test_clean_acc']:.3f} |")
    summary = {"fgsm_gap_mean": statistics.mean(gaps), "fgsm_gap_min": min(gaps),
               "reversed": sum(g < 0 for g in gaps)}
    print(summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": str(CONFIG.relative_to(ROOT)), "generations": args.generations,
                               "retrain_seeds": list(RETRAIN_SEEDS), "rows": rows, "summary": summary,
                               "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                           "cpus": os.cpu_count()}}, indent=2))


if __name__ == "__main__":
    main()
