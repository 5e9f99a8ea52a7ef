"""RCT-AF sweep: clean accuracy, PGD-10 accuracy and Hessian-diagonal norm vs max|σ''|.

Every grid point is one ``robust-lightning fit`` run of ``configs/rct_af/digits_pgd_at.yaml``
(the real CLI entry point, called in-process to spare the interpreter start-up per run) with
``--model.init_args.max_curvature=<κ>`` (``relu`` = ``null``: the backbone's own ReLUs), the
seed set for both training and the data split, and a CSV-only logger. After ``fit`` the
**last-epoch** weights (no checkpoint selection, so the test split never steers training) are
tested by the config's ``RobustnessEvaluation`` callback (PGD-10 and FGSM at the training
budget) on the test split, and the normalised Hessian-diagonal norm of the cross-entropy is
measured on the first ``--hessian-samples`` test images, at the training attack's adversarial
inputs (the loss adversarial training minimises) and at the clean inputs, with
``--hessian-probes`` Rademacher probes from a fixed generator.

Usage::

    python benchmarks/rct_af_sweep.py                                  # full grid x 3 seeds
    python benchmarks/rct_af_sweep.py --grid relu 4 --seeds 0 --epochs 1 --out /tmp/sweep
    python benchmarks/rct_af_sweep.py --set trainer.max_steps=5        # any extra CLI override
    python benchmarks/rct_af_sweep.py --replot --out DIR               # redraw DIR/sweep.png only

Writes to ``--out``: ``runs.csv`` (one row per run), ``summary.csv`` and ``summary.json``
(mean and population std over seeds per grid point), ``sweep.png`` (three panels vs κ, log
axis, the ReLU baseline as a horizontal band) and the CSV logs under ``runs/``. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robust_lightning.cli import main as cli_main  # noqa: E402
from robust_lightning.lightning_modules.rct_af import ACTIVATION_BASES, RCTAFClassifier  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "rct_af" / "digits_pgd_at.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "rct_af_sweep"
# The grid: the paper's claimed optimum 4-10 sits in the middle, decades either side.
DEFAULT_GRID = ("relu", "0.25", "0.5", "1", "2", "4", "6", "8", "10", "16", "32")
RELU = "relu"
METRICS = ("clean_acc", "pgd10_acc", "fgsm_acc", "hessian_adv", "hessian_clean")
FIELDS = ("kappa", "seed", *METRICS, "train_loss", "seconds")


def parse_grid(values: Sequence[str]) -> list[float | None]:
    """``"relu"`` -> ``None`` (ReLU baseline), anything else a finite κ > 0."""
    grid: list[float | None] = []
    for value in values:
        if str(value).lower() in (RELU, "none", "null"):
            grid.append(None)
            continue
        try:
            kappa = float(value)
        except ValueError:
            raise ValueError(f"--grid values must be numbers > 0 or 'relu', got {value!r}") from None
        if not math.isfinite(kappa) or kappa <= 0:
            raise ValueError(f"--grid values must be finite and > 0 (or 'relu'), got {value!r}")
        grid.append(kappa)
    if not grid:
        raise ValueError("--grid needs at least one value")
    return grid


def kappa_label(kappa: float | None) -> str:
    return RELU if kappa is None else f"{kappa:g}"


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def cli_args(config: Path, kappa: float | None, seed: int, epochs: int, base: str,
             run_root: Path, extra: Sequence[str]) -> list[str]:
    """The ``robust-lightning fit`` arguments of one grid point."""
    name = f"kappa_{kappa_label(kappa)}_seed_{seed}"
    return [
        "fit", "--config", str(config),
        f"--model.init_args.max_curvature={'null' if kappa is None else kappa}",
        f"--model.init_args.activation_base={base}",
        f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.accelerator=cpu", "--trainer.devices=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={run_root}",
        # One CSV logger per run (no W&B: 30+ offline W&B runs would only cost start-up time).
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={run_root}", f"--trainer.logger.name={name}",
        *extra,
    ]


def run_one(config: Path, kappa: float | None, seed: int, *, epochs: int, base: str, out: Path,
            hessian_samples: int, hessian_probes: int, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Trains one grid point through the CLI and measures it on the test split."""
    run_root = out / "runs"
    run_root.mkdir(parents=True, exist_ok=True)
    args = cli_args(config, kappa, seed, epochs, base, run_root, extra)
    start = time.perf_counter()
    with _cwd(out):
        cli = cli_main(args)
    seconds = time.perf_counter() - start
    model, trainer, data = cli.model, cli.trainer, cli.datamodule
    if not isinstance(model, RCTAFClassifier):
        raise TypeError(f"{config} must configure an RCTAFClassifier, got {type(model).__name__}")
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    # The model object holds the last-epoch weights (no checkpoint is reloaded).
    (results,) = trainer.test(model, datamodule=data, verbose=False)
    eps_names = {key.split("/")[-1] for key in results if key.startswith("test/robust_acc/")}
    pgd_key = next((k for k in eps_names if k.startswith("pgd10_")), None)
    fgsm_key = next((k for k in eps_names if k.startswith("fgsm_")), None)
    if pgd_key is None:
        raise KeyError(f"the config's RobustnessEvaluation must include a PGD-10 attack; got {sorted(eps_names)}")

    images, labels = [], []
    for x, y in data.test_dataloader():
        images.append(x)
        labels.append(y)
    x = torch.cat(images)[:hessian_samples]
    y = torch.cat(labels)[:hessian_samples]
    hessian = {}
    for key, adversarial in (("hessian_adv", True), ("hessian_clean", False)):
        generator = torch.Generator().manual_seed(seed)
        hessian[key] = model.hessian_diag_norm((x, y), adversarial=adversarial,
                                               num_probes=hessian_probes, generator=generator)
    return {
        "kappa": kappa_label(kappa), "seed": seed,
        "clean_acc": float(results["test/acc"]),
        "pgd10_acc": float(results[f"test/robust_acc/{pgd_key}"]),
        "fgsm_acc": float(results[f"test/robust_acc/{fgsm_key}"]) if fgsm_key else float("nan"),
        **hessian, "train_loss": train_loss, "seconds": round(seconds, 1),
    }


def summarise(rows: Sequence[dict[str, Any]], grid: Sequence[float | None]) -> list[dict[str, Any]]:
    """Mean and population std (ddof=0) over seeds of every metric, per grid point, grid order."""
    summary = []
    for kappa in grid:
        label = kappa_label(kappa)
        group = [r for r in rows if r["kappa"] == label]
        if not group:
            continue
        entry: dict[str, Any] = {"kappa": label, "seeds": len(group)}
        for metric in METRICS:
            values = [float(r[metric]) for r in group]
            entry[f"{metric}_mean"] = statistics.fmean(values)
            entry[f"{metric}_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def markdown_table(summary: Sequence[dict[str, Any]]) -> str:
    lines = ["| max\\|σ''\\| | seeds | clean acc | PGD-10 acc | FGSM acc | Hessian-diag norm (adv) | (clean) |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        cells = [f"{s[f'{m}_mean']:.3f} ± {s[f'{m}_std']:.3f}" for m in METRICS[:3]]
        cells += [f"{s[f'{m}_mean']:.2e} ± {s[f'{m}_std']:.1e}" for m in METRICS[3:]]
        lines.append(f"| {'ReLU (∞)' if s['kappa'] == RELU else s['kappa']} | {s['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Three panels vs κ on a log axis; the ReLU baseline (κ = ∞) as a dashed line and band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = [s for s in summary if s["kappa"] != RELU]
    relu = next((s for s in summary if s["kappa"] == RELU), None)
    kappas = [float(s["kappa"]) for s in curve]
    panels = (("clean_acc", "clean accuracy"), ("pgd10_acc", "PGD-10 accuracy"),
              ("hessian_adv", "normalised Hessian-diag norm, adversarial CE\n(ReLU: autograd misses its kinks)"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (metric, label) in zip(axes, panels, strict=False):
        if curve:
            ax.errorbar(kappas, [s[f"{metric}_mean"] for s in curve], yerr=[s[f"{metric}_std"] for s in curve],
                        marker="o", capsize=3, label="curvature-set SiLU family")
        if relu is not None:
            mean, std = relu[f"{metric}_mean"], relu[f"{metric}_std"]
            ax.axhline(mean, color="tab:red", linestyle="--", label="ReLU (max|σ''| = ∞)")
            ax.axhspan(mean - std, mean + std, color="tab:red", alpha=0.12)
        ax.axvspan(4, 10, color="tab:green", alpha=0.08, label="paper's optimum 4-10")
        ax.set_xscale("log", base=2)
        if kappas:
            ax.set_xticks(kappas, [f"{k:g}" for k in kappas], fontsize=7)
            ax.minorticks_off()
        ax.set_xlabel("max|σ''|")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(epochs: int, base: str, seeds: Sequence[int]) -> str:
    return (f"RCT-AF sweep on sklearn digits: SmallCNN, PGD-AT, {epochs} epochs, {base} base, "
            f"seeds {','.join(map(str, seeds))} (mean ± std)")


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def sweep(grid: Sequence[float | None], seeds: Sequence[int], *, config: Path = DEFAULT_CONFIG, epochs: int = 8,
          base: str = "silu", out: Path = DEFAULT_OUT, hessian_samples: int = 256, hessian_probes: int = 16,
          extra: Sequence[str] = (), make_plot: bool = True, log: Any = print) -> list[dict[str, Any]]:
    """Runs the grid x seeds, writes runs.csv/summary.csv/summary.json/sweep.png, returns the summary."""
    if base not in ACTIVATION_BASES:
        raise ValueError(f"base must be one of {ACTIVATION_BASES}, got {base!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not seeds:
        raise ValueError("seeds must not be empty")
    config = Path(config).resolve()
    if not config.is_file():
        raise ValueError(f"config {config} does not exist")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for kappa in grid:
            row = run_one(config, kappa, seed, epochs=epochs, base=base, out=out,
                          hessian_samples=hessian_samples, hessian_probes=hessian_probes, extra=extra)
            rows.append(row)
            log(f"kappa={row['kappa']:>5} seed={seed}: clean {row['clean_acc']:.3f} PGD-10 {row['pgd10_acc']:.3f} "
                f"FGSM {row['fgsm_acc']:.3f} H_adv {row['hessian_adv']:.3e} H_clean {row['hessian_clean']:.3e} "
                f"({row['seconds']:.0f} s)")
            write_csv(out / "runs.csv", rows, FIELDS)  # after every run: a stopped sweep keeps its rows
    summary = summarise(rows, grid)
    write_csv(out / "summary.csv", summary, list(summary[0]))
    meta = {"config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
            "epochs": epochs, "base": base, "seeds": list(seeds), "hessian_samples": hessian_samples,
            "hessian_probes": hessian_probes, "extra_cli_args": list(extra),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2))
    if make_plot:
        plot(summary, out / "sweep.png", _title(epochs, base, seeds))
    log(markdown_table(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID),
                        help="max|σ''| values; 'relu' keeps the backbone's ReLUs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--base", default="silu", choices=ACTIVATION_BASES)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--hessian-samples", type=int, default=256)
    parser.add_argument("--hessian-probes", type=int, default=16)
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra CLI override passed to every run, e.g. trainer.max_steps=5")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw sweep.png and reprint the table from --out/summary.json")
    args = parser.parse_args(argv)
    if args.replot:
        payload = json.loads((args.out / "summary.json").read_text())
        meta = payload["meta"]
        plot(payload["summary"], args.out / "sweep.png", _title(meta["epochs"], meta["base"], meta["seeds"]))
        print(markdown_table(payload["summary"]))
        return payload["summary"]
    extra = [item if item.startswith("--") else f"--{item}" for item in args.extra]
    return sweep(parse_grid(args.grid), args.seeds, config=args.config, epochs=args.epochs, base=args.base,
                 out=args.out, hessian_samples=args.hessian_samples, hessian_probes=args.hessian_probes,
                 extra=extra, make_plot=not args.no_plot)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
