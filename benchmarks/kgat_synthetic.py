"""Plain vs adversarial (MTD) vs KGAT training of a small FCOS on synthetic thermal scenes (README table).

Same data, same epochs, same optimizer for the three recipes of a seed; test split, mAP50 clean,
under one-step MTD at 4/255 (the released evaluation) and under 5-step PGD on the combined loss.
``adversarial`` is KGAT's own control: the same MTD adversarial training with the knowledge
weights held at 1 (a constant weight), so ``kgat - adversarial`` is what the weights add.

Each seed sets the model initialisation, data order and attacks *and* the generated scenes
(``data_seed = seed``, its own folder), unless ``--data-seed`` fixes the scenes for all seeds.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/kgat_synthetic.py --seeds 0 1 2   # -> benchmarks/results/kgat_synthetic.json
    python benchmarks/kgat_synthetic.py --seeds 0 --recipes plain adversarial --set epochs=6 --out /tmp/k.json

Runs of the same (seed, recipe) are replaced and others kept while the settings are the same,
so seeds can run in separate calls; the Markdown table of every run in the file is printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _settings import parse_settings

from benchmarks.experiments.kgat import (
    EXPERIMENT_DEFAULTS,
    run_synthetic_experiment,
)

RECIPES = ("plain", "adversarial", "kgat")
COLUMNS = (("map50", "clean mAP50"), ("map50_95", "clean mAP50:95"), ("robust_map50/mtd_fgsm_eps4", "MTD-FGSM 4/255 mAP50"),
           ("robust_map50/combined_pgd5_eps4", "PGD-5 4/255 mAP50"),
           ("robust_map50_95/combined_pgd5_eps4", "PGD-5 mAP50:95"), ("seconds", "train+test s"))


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one line per (seed, recipe), then mean ± sample std per recipe."""
    lines = ["| seed (scenes) | recipe | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]

    def fmt(key: str, value: float) -> str:
        return f"{value:.0f}" if key == "seconds" else f"{value:.3f}"

    for row in sorted(rows, key=lambda r: (r["seed"], RECIPES.index(r["recipe"]))):
        cells = " | ".join(fmt(k, row[k]) for k, _ in COLUMNS)
        lines.append(f"| {row['seed']} ({row['data_seed']}) | {row['recipe']} | {cells} |")
    for recipe in RECIPES:
        runs = [r for r in rows if r["recipe"] == recipe]
        if len(runs) < 2:
            continue
        cells = " | ".join(
            f"{fmt(k, statistics.mean(r[k] for r in runs))} ± {fmt(k, statistics.stdev(r[k] for r in runs))}"
            for k, _ in COLUMNS)
        lines.append(f"| mean ± std ({len(runs)}) | {recipe} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--data-seed", type=int, default=None,
                        help="seed of the generated scenes for every run (default: each run's seed)")
    parser.add_argument("--set", nargs="*", default=[], help="experiment settings, key=value")
    parser.add_argument("--data-root", default=None, help="where the scenes are generated (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kgat_synthetic.json")
    args = parser.parse_args()
    settings = {**EXPERIMENT_DEFAULTS, **parse_settings(args.set, EXPERIMENT_DEFAULTS)}
    warnings.filterwarnings("ignore")
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    same = previous.get("settings") == settings
    rows: list[dict[str, Any]] = previous.get("rows", []) if same else []
    command = "python benchmarks/kgat_synthetic.py " + " ".join(sys.argv[1:])
    commands = [c for c in (previous.get("commands", []) if same else []) if c != command] + [command]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_root) if args.data_root else Path(tmp)
        for seed in args.seeds:
            data_seed = seed if args.data_seed is None else args.data_seed
            for recipe in args.recipes:
                result = run_synthetic_experiment(root / f"scenes{data_seed}", recipe, seed=seed, data_seed=data_seed,
                                                  **settings)
                row = {"seed": seed, "data_seed": data_seed, "recipe": recipe, **result}
                rows = [r for r in rows if (r["seed"], r["recipe"]) != (seed, recipe)] + [row]
                print(json.dumps(row), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({
                    "commands": commands, "settings": settings, "rows": rows,
                    "machine": platform.platform(), "python": sys.version.split()[0]}, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
