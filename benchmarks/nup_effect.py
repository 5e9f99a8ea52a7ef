"""The NUP effect tests' measurements, per seed: probe vs its loss controls, and ConjMask's masking.

The numbers behind the CI-test paragraph of the NUP README, measured with the helpers of
``tests/lightning_modules/nup/test_effect.py`` so the paragraph and the tests measure the same
setting (shorter than ``benchmarks/nup_digits.py``: a 12-radius eps grid and PGD-10 for the probe,
one ConjMask model of 200 test digits and PGD-20 for the masking check):

A. ``probe``: Spearman of each probe statistic, the clean loss and the clean logit margin with the
   smallest flipping eps, and the partial Spearman given the clean loss (seed = weights + split).
B. ``conjmask``: ConjMask (signed score, train + eval) under PGD-20 at eps 0.1 through the mask and
   on the unmasked network, clean accuracy, and the standard model's (seed = training seed).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/nup_effect.py --seeds 0 1 2

Writes ``benchmarks/results/nup_effect.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._seed_sweep import parse_seed_sweep_args, write_results
from tests.lightning_modules.nup.test_effect import EPS_GRID, conjmask_masking, probe_vulnerability_spearman


def main() -> None:
    args = parse_seed_sweep_args(__doc__.split("\n\n")[0], "nup_effect.json")
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        probe = {name: round(value, 4) for name, value in probe_vulnerability_spearman(seed).items()}
        conjmask = {name: round(value, 4) for name, value in conjmask_masking(seed).items()}
        row = {"seed": seed, "probe": probe, "conjmask": conjmask, "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_results(args.out, {"settings": {"eps_grid": [round(e, 5) for e in EPS_GRID], "probe_pgd_steps": 10,
                                          "conjmask_eps": 0.1, "conjmask_pgd_steps": 20, "conjmask_samples": 200},
                             "runs": rows})


if __name__ == "__main__":
    main()
