"""SIA effect recipes with their controls over seeds (the method README's tables).

Injection (claim 1) against the same injection on a corpus without the held-out products' texts;
alignment (claim 2) plain SFT / random-noise augmentation / embedding PGD (see
``benchmarks/experiments/sia.py``). Each seed also sets the synthetic data.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sia_effect.py                 # seeds 0 1 2 -> benchmarks/results/sia_effect.json
    python benchmarks/sia_effect.py --seeds 3 --parts align --out /tmp/sia.json

Runs of the same (part, seed, arm) are replaced, others kept, so seeds can run in separate calls.
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

from benchmarks.experiments.sia import ALIGN_ARMS, run_alignment, run_injection

ALIGN_COLUMNS = ("refusal", "robust_refusal", "robust_refusal_suffix", "over_refusal", "qa_em")


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown tables of the injection and alignment runs."""
    inject = sorted((r for r in runs if r["part"] == "inject"), key=lambda r: (r["seed"], r["arm"] != "facts"))
    lines = ["| seed | corpus | texts | updates | base qa_em | qa_em (held-out) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['arm']} | {r['corpus']} | {r['steps']} | {r['base_qa_em']:.2f} | {r['qa_em']:.2f} |"
              for r in inject]
    align = sorted((r for r in runs if r["part"] == "align"), key=lambda r: (r["seed"], list(ALIGN_ARMS).index(r["arm"])))
    lines += ["", "| seed | arm | " + " | ".join(ALIGN_COLUMNS) + " |", "|---|---|" + "---|" * len(ALIGN_COLUMNS)]
    lines += [f"| {r['seed']} | {r['arm']} | " + " | ".join(f"{r[c]:.2f}" for c in ALIGN_COLUMNS) + " |" for r in align]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parts", nargs="+", default=["inject", "align"], choices=["inject", "align"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sia_effect.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs: list[dict[str, Any]] = previous.get("runs", [])

    def record(row: dict[str, Any]) -> None:
        nonlocal runs
        runs = [r for r in runs if (r["part"], r["seed"], r["arm"]) != (row["part"], row["seed"], row["arm"])] + [row]
        print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python benchmarks/sia_effect.py [--seeds ...] [--parts ...]",
                                        "runs": runs, "machine": platform.platform(), "torch": torch.__version__},
                                       indent=1) + "\n")

    for seed in args.seeds:
        if "inject" in args.parts:
            injected = run_injection(seed, facts=True)
            record({"part": "inject", "seed": seed, "arm": "facts", **injected})
            record({"part": "inject", "seed": seed, "arm": "no held-out facts",
                    **run_injection(seed, facts=False, max_steps=injected["steps"])})
        if "align" in args.parts:
            for arm in ALIGN_ARMS:
                record({"part": "align", "seed": seed, "arm": arm, **run_alignment(seed, arm)})
    print(table(runs))


if __name__ == "__main__":
    main()
