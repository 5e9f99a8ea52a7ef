"""Synthetic-to-real digits: ERM vs MixStyle vs DRSF, trained on rendered digits only.

Every run trains a ``DigitCNN`` on font-rendered digits (:class:`SyntheticDigitsDataModule`)
and tests on scikit-learn's handwritten digits (:class:`DigitsDataModule`, never seen in
training), through :class:`DomainGeneralizationDataModule`. The seed sets both the rendering
and the training randomness. No checkpoint selection: the last epoch is tested, so the target
domain never influences training.

Usage::

    python benchmarks/drsf_digits.py --source-style printed  # 3 methods x 3 seeds -> CSV + table
    python benchmarks/drsf_digits.py                         # the randomized-look source
    python benchmarks/drsf_digits.py --methods drsf --seeds 0 --set fusion_weight=0.0 --label no_fusion

Writes ``benchmarks/results/drsf_digits_<source-style>.csv`` (one row per run), a ``.json``
beside it (settings and per-method lists) and prints a Markdown table of mean +- sample std
(``ddof=1``) over seeds.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust_lightning.datamodules import (
    DigitsDataModule,
    DomainGeneralizationDataModule,
    SyntheticDigitsDataModule,
)
from robust_lightning.lightning_modules.drsf import DigitCNN, DRSFClassifier

RESULTS = Path(__file__).resolve().parent / "results"


# Appearance of the rendered source. "randomized": the SyntheticDigitsDataModule defaults (random
# background, ink intensity and noise per image: domain randomisation in the renderer).
# "plain": one fixed render look (mid-grey background, low-contrast ink, no noise), the kind of
# narrow synthetic style single-domain generalisation is about. "printed": dark ink on light paper,
# the natural look of rendered text, opposite to the scanned real digits' light-on-dark polarity.
SOURCE_STYLES: dict[str, dict[str, Any]] = {
    "randomized": {},
    "plain": {"background_range": (0.3, 0.35), "foreground_range": (0.6, 0.65), "noise_range": (0.0, 0.0)},
    "printed": {"background_range": (0.75, 1.0), "foreground_range": (0.0, 0.3)},
}


def make_data(seed: int, image_size: int, num_train: int, batch_size: int,
              source_style: str = "randomized") -> DomainGeneralizationDataModule:
    """Rendered digits (source) and sklearn's real digits (target), same size and channels."""
    source = SyntheticDigitsDataModule(num_train=num_train, num_val=500, num_test=1000, image_size=image_size,
                                       seed=seed, batch_size=batch_size, eval_batch_size=500,
                                       **SOURCE_STYLES[source_style])
    # The real digits are a target only: their "train" split is never used; test on 70% of them.
    target = DigitsDataModule(image_size=image_size, val_fraction=0.25, test_fraction=0.7, seed=seed,
                              batch_size=batch_size, eval_batch_size=500)
    return DomainGeneralizationDataModule(source, {"real": target}, source_name="synthetic")


def run(method: str, seed: int, *, image_size: int, num_train: int, epochs: int, width: int,
        batch_size: int, lr: float, overrides: dict[str, Any] | None = None,
        source_style: str = "randomized") -> dict[str, Any]:
    """Trains one method with one seed and returns its test accuracies per domain."""
    pl.seed_everything(seed, verbose=False)
    data = make_data(seed, image_size, num_train, batch_size, source_style)
    model = DRSFClassifier(
        DigitCNN(num_classes=10, in_channels=1, width=width), mean=[0.5], std=[0.5], method=method,
        optimizer=lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=1e-4),
        **(overrides or {}) if method == "drsf" else {},
    )
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    train_seconds = time.perf_counter() - start
    # One result dict per test dataloader (domain); their keys are distinct.
    results = {k: v for per_domain in trainer.test(model, datamodule=data, verbose=False) for k, v in per_domain.items()}
    return {
        "method": method,
        "seed": seed,
        "synthetic_acc": float(results["test/acc/synthetic"]),
        "real_acc": float(results["test/acc/real"]),
        "train_seconds": round(train_seconds, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> str:
    """Markdown table: mean +- sample std (``ddof=1``) per method over seeds."""
    lines = ["| method | seeds | synthetic test acc | real test acc | train s/run |", "|---|---|---|---|---|"]
    for method in dict.fromkeys(row["method"] for row in rows):
        runs = [row for row in rows if row["method"] == method]

        def stat(key: str, runs: list[dict[str, Any]] = runs) -> str:
            values = [row[key] for row in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} ± {std:.3f}"

        seconds = statistics.mean(row["train_seconds"] for row in runs)
        lines.append(f"| {method} | {len(runs)} | {stat('synthetic_acc')} | {stat('real_acc')} | {seconds:.0f} |")
    return "\n".join(lines)


def _parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["erm", "mixstyle", "drsf"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--num-train", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source-style", choices=sorted(SOURCE_STYLES), default="randomized")
    parser.add_argument("--set", dest="overrides", action="append", type=_parse_override, default=[],
                        metavar="KEY=VALUE", help="DRSFClassifier argument for the drsf runs")
    parser.add_argument("--label", default=None, help="method label in the CSV (default: the method)")
    parser.add_argument("--out", type=Path, default=None, help="CSV path (default: results/drsf_digits_<style>.csv)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = RESULTS / f"drsf_digits_{args.source_style}.csv"
    os.environ.setdefault("WANDB_MODE", "offline")

    rows = []
    for method in args.methods:
        for seed in args.seeds:
            row = run(method, seed, image_size=args.image_size, num_train=args.num_train, epochs=args.epochs,
                      width=args.width, batch_size=args.batch_size, lr=args.lr, overrides=dict(args.overrides),
                      source_style=args.source_style)
            if args.label:
                row["method"] = args.label
            rows.append(row)
            print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        method: {key: [row[key] for row in rows if row["method"] == method]
                 for key in ("seed", "synthetic_acc", "real_acc", "train_seconds")}
        for method in dict.fromkeys(row["method"] for row in rows)
    }
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps({"settings": settings, "runs": summary}, indent=2, default=str))
    print(summarise(rows))
    print(f"wrote {args.out} and {json_path}")
    return rows


if __name__ == "__main__":
    main()
