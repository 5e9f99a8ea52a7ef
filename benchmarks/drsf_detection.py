"""DRSF detection vs plain training vs DRSF without each component (README table).

Source: synthetic thermal scenes; pseudo-target domains: fixed random styles of the same scenes
(our stand-in for the released code's diffusion-generated domains); test: the held-out style.
The seed sets the scenes, the styles, the initialisation and the data order.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/drsf_detection.py --seeds 0 1 2   # -> benchmarks/results/drsf_detection.json
    python benchmarks/drsf_detection.py --seeds 0 --variants plain drsf --set epochs=4
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _settings import parse_settings

from benchmarks.experiments.drsf_detection import (
    EXPERIMENT_DEFAULTS,
    VARIANTS,
    run_drsf_detection,
)

DEFAULT_VARIANTS = ["plain", "drsf", "no_image_grl", "no_instance_grl", "no_consistency", "no_pseudo_labels"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=sorted(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], help="experiment settings, key=value")
    parser.add_argument("--data-root", default=None, help="where the scenes are generated (default: a temp dir)")
    parser.add_argument("--merge", nargs="+", default=None,
                        help="JSON files of earlier runs (e.g. one per seed, run in parallel) to merge into --out")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "drsf_detection.json"))
    args = parser.parse_args()
    settings = parse_settings(args.set, EXPERIMENT_DEFAULTS)
    rows = []
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        settings = parts[0]["settings"]
        if any(p["settings"] != settings for p in parts):
            raise SystemExit("--merge: the runs have different settings")
        rows = [row for p in parts for row in p["rows"]]
        args.seeds = sorted({r["seed"] for r in rows})
        args.variants = list(dict.fromkeys(r["variant"] for r in rows))
        commands = [p["command"] for p in parts]
    else:
        commands = []
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(args.data_root) if args.data_root else Path(tmp)
            for seed in args.seeds:
                for variant in args.variants:
                    result = run_drsf_detection(root, variant, seed=seed, **settings)
                    rows.append({"seed": seed, "variant": variant, **result})
                    print(json.dumps(rows[-1]), flush=True)
    keys = ["map50_held_out", "map50_95_held_out", "map50_source", "seconds"]
    summary = {}
    for variant in args.variants:
        values = {k: [r[k] for r in rows if r["variant"] == variant] for k in keys}
        summary[variant] = {
            **{k: statistics.mean(v) for k, v in values.items()},
            "map50_held_out_std": statistics.stdev(values["map50_held_out"]) if len(args.seeds) > 1 else 0.0,
        }
    out = {"command": "python benchmarks/drsf_detection.py " + " ".join(sys.argv[1:]), "merged_commands": commands,
           "settings": {**EXPERIMENT_DEFAULTS, **settings}, "variants": {v: VARIANTS[v] for v in args.variants},
           "rows": rows, "mean": summary, "machine": platform.platform(), "python": sys.version.split()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
