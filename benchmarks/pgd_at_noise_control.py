"""PGD-AT vs its control, training on uniform noise of the same budget, under PGD-10 on digits.

The numbers behind README.md's "PGD-AT and its noise control" table, measured with the helpers
of the effect test (``tests/test_evidence.py``: SmallCNN on 16x16 digits, 5 epochs, AdamW 3e-3,
L-inf eps 0.1; PGD-AT with 10 steps of 0.025; the control trains on ``x + U(-eps, eps)``
through the same ``AdversarialTraining`` callback; every arm tested under PGD-10 on the
test split), so the table and the test measure the same setting. The seed sets the weights and
the digits split.

Usage::

    python benchmarks/pgd_at_noise_control.py --seeds 0 1 2

Writes ``benchmarks/results/pgd_at_noise_control.json``.
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
from tests.test_evidence import EPS, PGD_AT_ARMS, ROBUST_KEY, _train_and_test


def main() -> None:
    args = parse_seed_sweep_args(__doc__.split("\n\n")[0], "pgd_at_noise_control.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            row: dict[str, object] = {"seed": seed}
            for arm in PGD_AT_ARMS:
                start = time.perf_counter()
                results = _train_and_test(arm, seed, Path(tmp))
                row[arm] = {"clean": round(results["test/acc"], 4), "pgd10": round(results[ROBUST_KEY], 4),
                            "seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_results(args.out, {"settings": {"eps": EPS, "epochs": 5, "eval_attack": ROBUST_KEY}, "runs": rows})
    print("| seed | " + " | ".join(f"clean, {a} | PGD-10, {a}" for a in PGD_AT_ARMS) + " |")
    print("|---|" + "---|---|" * len(PGD_AT_ARMS))
    for row in rows:
        cells = [f"{row[a]['clean']:.3f} | {row[a]['pgd10']:.3f}" for a in PGD_AT_ARMS]
        print(f"| {row['seed']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
