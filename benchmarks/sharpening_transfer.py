"""Preemptive sharpening vs its control (a contrast change) against transfer PGD on digits.

The numbers behind README.md's "Preemptive sharpening against transfer attacks" table, measured
with the helpers of the effect test (``tests/test_evidence.py``: target SmallCNN width 32 seed s,
surrogate width 16 seed s + 10, both trained on the digits split of seed s; transfer PGD-10 at
L-inf eps 0.1 on the 359 test images), so the table and the test measure the same setting.

Usage::

    python benchmarks/sharpening_transfer.py --seeds 0 1 2

Writes ``benchmarks/results/sharpening_transfer.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._seed_sweep import parse_seed_sweep_args, write_results
from robust_lightning import RobustClassifier
from tests.data.trained import trained_digits_model
from tests.test_evidence import CONTRAST_FACTOR, TRANSFER_EPS, _transfer_accuracy


def main() -> None:
    args = parse_seed_sweep_args(__doc__.split("\n\n")[0], "sharpening_transfer.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            target = RobustClassifier(trained_digits_model(seed=seed, width=32, data_seed=seed)[1],
                                      mean=[0.5], std=[0.5]).eval()
            surrogate = trained_digits_model(seed=seed + 10, width=16, data_seed=seed)
            row = {"seed": seed,
                   "none": _transfer_accuracy(target, surrogate, 0.0, Path(tmp), seed),
                   "sharpening_1.0": _transfer_accuracy(target, surrogate, 1.0, Path(tmp), seed),
                   f"contrast_x{CONTRAST_FACTOR:g}": _transfer_accuracy(target, surrogate, 1.0, Path(tmp), seed,
                                                                       contrast=CONTRAST_FACTOR)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| seed | clean, none | transfer, none | clean, sharpening 1.0 | transfer, sharpening 1.0 "
          f"| clean, contrast x{CONTRAST_FACTOR:g} | transfer, contrast x{CONTRAST_FACTOR:g} |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row[k][m]:.3f}" for k in list(row)[1:] for m in ("clean", "transfer")]
        print(f"| {row['seed']} | " + " | ".join(cells) + " |")
    write_results(args.out, {"transfer_eps": TRANSFER_EPS, "contrast_factor": CONTRAST_FACTOR, "rows": rows})


if __name__ == "__main__":
    main()
