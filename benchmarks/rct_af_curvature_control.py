"""RCT-AF's effect test setting: Hessian-diagonal norm for max|σ''| 0.5 vs 32, and its control.

The numbers behind the RCT-AF README's "CI effect test" table, measured with the helpers of
the effect test (``tests/lightning_modules/rct_af/test_lightning_module.py``: SmallCNN on 16x16
digits, PGD-AT at L-inf eps 0.1 with 5 steps, AdamW 3e-3, 3 epochs; normalised
Hessian-diagonal norm of the cross-entropy at PGD inputs on 256 test images, 8 probes), so the
table and the test measure the same setting. Arms: ``CurvatureTunableActivation`` with
(κ, base) = (0.5, silu), (32, silu) and the control (0.5, softplus), which swaps the
activation's shape while holding max|σ''|; beside them (not in the test) a second swap of that
kind, (0.5, gelu), a shape closer to silu. The seed sets the weights and the digits split.

Usage::

    python benchmarks/rct_af_curvature_control.py --seeds 0 1 2

Writes ``benchmarks/results/rct_af_curvature_control.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._seed_sweep import parse_seed_sweep_args, write_results
from tests.lightning_modules.rct_af.test_lightning_module import CURVATURE_ARMS, LOW_CURVATURE, curvature_arm

EXTRA_ARM = (0.5, "gelu")


def main() -> None:
    args = parse_seed_sweep_args(__doc__.split("\n\n")[0], "rct_af_curvature_control.json")
    arms = (*CURVATURE_ARMS, EXTRA_ARM)
    names = [f"kappa{kappa:g}_{base}" for kappa, base in arms]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            row: dict[str, object] = {"seed": seed}
            for name, (kappa, base) in zip(names, arms, strict=True):
                start = time.perf_counter()
                result = curvature_arm(kappa, base, seed, Path(tmp))
                row[name] = {"hessian_adv": result["hessian_adv"], "clean_acc": round(result["clean_acc"], 4),
                             "seconds": round(time.perf_counter() - start, 1)}
            low = row[names[arms.index(LOW_CURVATURE)]]["hessian_adv"]
            row["ratio_to_" + names[0]] = {n: round(row[n]["hessian_adv"] / low, 3) for n in names[1:]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    settings = {"epochs": 3, "eps": 0.1, "train_steps": 5, "hessian_images": 256, "hessian_probes": 8}
    write_results(args.out, {"settings": settings, "runs": rows})
    print("| seed | " + " | ".join(f"Hessian norm, {n} | clean, {n}" for n in names) + " | ratios |")
    print("|---|" + "---|---|" * len(names) + "---|")
    for row in rows:
        cells = [f"{row[n]['hessian_adv']:.3e} | {row[n]['clean_acc']:.3f}" for n in names]
        print(f"| {row['seed']} | " + " | ".join(cells) + f" | {row['ratio_to_' + names[0]]} |")


if __name__ == "__main__":
    main()
