"""Baseline vs GRL on the generated spurious-cue corpus, several seeds (the README table).

For each seed, the no-GRL baseline and the GRL model are trained from the same seed on the
same corpus (:mod:`robust_lightning.lightning_modules.audio_grl.experiment`), then measured on
the test split, where the source corpus (and its hum) is independent of quality: production-
quality SRCC, accuracy of the model's own corpus head, and a post-hoc linear probe of the
encoder output (chance 1/3).

Usage::

    python benchmarks/audio_grl_evidence.py --seeds 0 1 2 3   # -> benchmarks/results/audio_grl_evidence.json
    python benchmarks/audio_grl_evidence.py --seeds 0 --set head=gaussian --set epochs=60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _settings import parse_settings

from robust_lightning.lightning_modules.audio_grl.experiment import (
    EXPERIMENT_DEFAULTS,
    run_spurious_cue_experiment,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--root", default="data/audio_grl_evidence_corpus")
    parser.add_argument("--set", action="append", default=[], help="experiment setting KEY=VALUE")
    parser.add_argument("--out", default="benchmarks/results/audio_grl_evidence.json")
    args = parser.parse_args()
    overrides = parse_settings(args.set, EXPERIMENT_DEFAULTS)
    settings = {**EXPERIMENT_DEFAULTS, **overrides}
    rows = []
    for seed in args.seeds:
        for adversarial in (False, True):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*espeak-ng.*")
                result = run_spurious_cue_experiment(args.root, seed, adversarial, data_seed=args.data_seed,
                                                     **overrides)
            rows.append({"seed": seed, "model": "grl" if adversarial else "baseline", **result,
                         "seconds": time.perf_counter() - start})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for model in ("baseline", "grl"):
        chosen = [r for r in rows if r["model"] == model]
        summary[model] = {k: statistics.mean(r[k] for r in chosen) for k in ("srcc", "domain_acc", "probe_acc")}
    print("\n| seed | baseline SRCC | GRL SRCC | baseline head acc | GRL head acc | baseline probe | GRL probe |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        b, g = (next(r for r in rows if r["seed"] == seed and r["model"] == m) for m in ("baseline", "grl"))
        print(f"| {seed} | {b['srcc']:.3f} | {g['srcc']:.3f} | {b['domain_acc']:.3f} | {g['domain_acc']:.3f} "
              f"| {b['probe_acc']:.3f} | {g['probe_acc']:.3f} |")
    b, g = summary["baseline"], summary["grl"]
    print(f"| mean | {b['srcc']:.3f} | {g['srcc']:.3f} | {b['domain_acc']:.3f} | {g['domain_acc']:.3f} "
          f"| {b['probe_acc']:.3f} | {g['probe_acc']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": settings, "data_seed": args.data_seed, "rows": rows, "mean": summary,
                               "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}},
                              indent=2))


if __name__ == "__main__":
    main()
