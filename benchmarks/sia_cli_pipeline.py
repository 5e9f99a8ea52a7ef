"""SIA's full pipeline through the ``robust-lightning`` CLI, per seed (the method README's CLI table).

For each seed ``S`` the script runs, as subprocesses, the exact commands the README lists:

1. ``fit --config configs/sia/synthesize.yaml``: synthesize the data (``data_seed=S``) and inject
   (30 epochs), exporting the up-scaled model to ``runs/sia/inject$S``;
2. ``fit --config configs/sia/align.yaml`` from that export, adversarial (``adv_weight=0.5``)
   and plain SFT (``adv_weight=0.0``);
3. the same adversarial align run from a config-built 4-layer Llama of the up-scaled model's
   size ("no injection").

Each seed works in its own folder under a temporary directory (never under the repository), so
the relative ``runs/...`` paths of the configs and commands land there. The metrics are read back
from each run's CSV logger file (``runs/<logger name>/version_N/metrics.csv``, the configs' first
logger): the row of the last validation, plus the last logged ``train/adv_loss``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sia_cli_pipeline.py            # seeds 0 1 2 -> benchmarks/results/sia_cli_pipeline.json
    python benchmarks/sia_cli_pipeline.py --seeds 3 --out /tmp/sia_cli.json

Runs of the same (seed, run) already in ``--out`` are replaced, others kept, so seeds can run in
separate calls.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import cpu_model
from benchmarks._seed_sweep import RESULTS, write_results

REPO = Path(__file__).resolve().parents[1]

#: The "no injection" model: a config-built Llama the size of the up-scaled one (4 layers).
NO_INJECTION_MODEL = ('{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, '
                      '"num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64}')

#: run name -> (config, the logger name that config's CSV logger writes under), in running order.
RUNS: dict[str, tuple[str, str]] = {
    "inject": ("configs/sia/synthesize.yaml", "sia_synthesize"),
    "inject -> align, plain SFT": ("configs/sia/align.yaml", "sia_align"),
    "inject -> align, adversarial": ("configs/sia/align.yaml", "sia_align"),
    "no injection -> align, adversarial": ("configs/sia/align.yaml", "sia_align"),
}


def run_arguments(run: str, seed: int) -> list[str]:
    """The CLI arguments (after ``robust-lightning``) of ``run`` for ``seed``, as in the README."""
    s = str(seed)
    common = [f"--seed_everything={s}"]
    if run == "inject":
        return ["fit", "--config", RUNS[run][0], *common, f"--data.init_args.data_seed={s}",
                f"--data.init_args.data_dir=runs/sia/data{s}", f"--model.init_args.export_dir=runs/sia/inject{s}",
                f"--model.init_args.seed={s}"]
    align = ["fit", "--config", RUNS[run][0], *common, f"--data.init_args.data_dir=runs/sia/data{s}"]
    if run == "no injection -> align, adversarial":
        return [*align, "--data.init_args.tokenizer_path=null", "--model.init_args.model_path=null",
                "--model.init_args.export_dir=null", f"--model.init_args.model_config={NO_INJECTION_MODEL}",
                f"--model.init_args.seed={s}"]
    adv_weight = "0.0" if run == "inject -> align, plain SFT" else "0.5"
    return [*align, f"--data.init_args.tokenizer_path=runs/sia/inject{s}",
            f"--model.init_args.model_path=runs/sia/inject{s}", f"--model.init_args.adv_weight={adv_weight}",
            "--model.init_args.export_dir=null", f"--model.init_args.seed={s}"]


def _versions(logger_dir: Path) -> set[Path]:
    return set(logger_dir.glob("version_*")) if logger_dir.is_dir() else set()


def read_last_validation(metrics_csv: Path) -> dict[str, Any]:
    """The last validation's ``val/*`` metrics (with its epoch and step) and the last ``train/adv_loss``.

    Raises:
        RuntimeError: the file has no validation row.
    """
    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    validations = [r for r in rows if any(k.startswith("val/") and r[k] != "" for k in r)]
    if not validations:
        raise RuntimeError(f"{metrics_csv} has no validation row")
    last = validations[-1]
    out: dict[str, Any] = {k.removeprefix("val/"): float(v) for k, v in last.items() if k.startswith("val/") and v}
    out["epoch"], out["step"] = int(last["epoch"]), int(last["step"])
    adv_losses = [float(r["train/adv_loss"]) for r in rows if r.get("train/adv_loss")]
    if adv_losses:
        out["last_train_adv_loss"] = adv_losses[-1]
    return out


def run_one(executable: list[str], run: str, seed: int, workdir: Path) -> dict[str, Any]:
    """Run ``run`` for ``seed`` in ``workdir`` and return its last validation's metrics."""
    config, logger_name = RUNS[run]
    arguments = run_arguments(run, seed)
    # The repository's own config file, so the run uses exactly what is committed.
    cli_arguments = [str(REPO / a) if a == config else a for a in arguments]
    logger_dir = workdir / "runs" / logger_name
    before = _versions(logger_dir)
    start = time.perf_counter()
    # PYTHONPATH: the console script then imports this checkout's package, not another installed copy.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([*executable, *cli_arguments], cwd=workdir, env=env, capture_output=True, text=True,
                            check=False)
    seconds = round(time.perf_counter() - start, 1)
    if result.returncode != 0:
        raise RuntimeError(f"seed {seed}, {run}: exit {result.returncode}\n{result.stderr[-4000:]}")
    new = sorted(_versions(logger_dir) - before)
    if len(new) != 1:
        raise RuntimeError(f"seed {seed}, {run}: expected one new run folder in {logger_dir}, found {new}")
    return {"seed": seed, "run": run, "command": "robust-lightning " + shlex.join(arguments),
            **read_last_validation(new[0] / "metrics.csv"), "seconds": seconds}


def _row_order(row: dict[str, Any]) -> tuple[int, int]:
    """Rows by seed, then in running order."""
    return row["seed"], list(RUNS).index(row["run"])


def _rate(value: float) -> str:
    # The CSV holds float32 rates (0.525 reads back as 0.52499...): round the exact fraction half up.
    return str(Decimal(str(round(value, 6))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def table(rows: list[dict[str, Any]]) -> str:
    """The README's markdown table of ``rows``."""
    columns = ("qa_em", "refusal", "robust_refusal", "robust_refusal_suffix", "over_refusal")
    lines = ["| seed | run | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for r in sorted(rows, key=_row_order):
        lines.append(f"| {r['seed']} | {r['run']} | "
                     + " | ".join(_rate(r[c]) if c in r else "-" for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "sia_cli_pipeline.json")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the run folders in this (new) directory instead of a deleted temporary one")
    args = parser.parse_args()
    found = shutil.which("robust-lightning", path=str(Path(sys.executable).parent))
    executable = [found] if found else [sys.executable, "-m", "robust_lightning.cli"]
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    rows: list[dict[str, Any]] = previous.get("rows", [])
    root = Path(tempfile.mkdtemp(prefix="sia_cli_")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    try:
        for seed in args.seeds:
            workdir = root / f"seed{seed}"
            workdir.mkdir()
            for run in RUNS:
                row = run_one(executable, run, seed, workdir)
                print(json.dumps(row), flush=True)
                rows = [r for r in rows if (r["seed"], r["run"]) != (seed, run)] + [row]
                write_results(args.out, {
                    "command": "OMP_NUM_THREADS=1 python benchmarks/sia_cli_pipeline.py [--seeds ...]",
                    "settings": {"configs": sorted({c for c, _ in RUNS.values()}),
                                 "metrics": "the last validation of each run (CSV logger's metrics.csv)",
                                 "cwd": "one temporary folder per seed; runs/... paths are relative to it",
                                 "cpu": cpu_model()},
                    "rows": sorted(rows, key=_row_order)})
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(table(rows))


if __name__ == "__main__":
    main()
