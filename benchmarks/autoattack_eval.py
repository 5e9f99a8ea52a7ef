"""Cost of AutoAttack-standard through ``RobustnessEvaluation`` vs torchattacks' AutoAttack.

Same model, same 1000 digits test samples, same settings (the reference's: APGD-CE 100 steps,
APGD-T 100 steps x 9 targets, FAB-T 100 steps x 9 targets, Square 5000 queries; torchattacks'
``AutoAttack`` leaves its members at 10 steps, so we set ``steps = 100`` on them), batches of
250, one process, measured in the same run and interleaved (ours, theirs, ours, theirs, ...) so
load from other processes on the machine hits both sides alike.

* **ours**: ``trainer.test`` with ``RobustnessEvaluation(attacks=[AutoAttack(eps)])`` (sanity
  checks on, report off) on a :class:`~robust_lightning.RobustClassifier`;
* **torchattacks**: ``torchattacks.AutoAttack(model, ...)(x, y)`` per batch on the same network,
  outside Lightning.

Also measured (issue 22, deliverable 3): the evaluation early exit, i.e.
``RobustnessEvaluation([PGD-20, APGD-DLR, APGD-T], early_exit=True)`` with APGD's per-sample
early stop vs the same with both switched off, and that the logged accuracies are identical.

The model: a standard ``SmallCNN(width=16)`` trained on the other digits (Adam 3e-3, 6 epochs),
evaluated at L-inf ``--eps`` (0.1, the repository's digits budget; almost every sample falls to
APGD-CE, so the cost is mostly APGD-CE's; ``--eps 0.05`` leaves about half the samples for
APGD-T, FAB-T and Square, which on the shared 2-core CPU took longer than we could wait).
The early-exit comparison uses ``--early-exit-steps`` (30) APGD steps to stay in minutes.

Usage::

    python benchmarks/autoattack_eval.py        # writes benchmarks/results/autoattack_eval.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust_lightning.attacks import APGD, PGD, AutoAttack
from robust_lightning.callbacks import RobustnessEvaluation
from robust_lightning.datamodules import DigitsDataModule
from robust_lightning.lightning_modules.classifier import RobustClassifier
from robust_lightning.nn import SmallCNN

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 250


def _tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = dataset.images
    images = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return images, dataset.labels


def data_and_model(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, RobustClassifier]:
    """``samples`` test digits and a standard model trained on the remaining ones."""
    data = DigitsDataModule(image_size=16, val_fraction=0.05, test_fraction=0.6, seed=seed)
    data.setup("fit")
    data.setup("test")
    x_train, y_train = _tensors(data.train_dataset)
    x_test, y_test = _tensors(data.test_dataset)
    if len(y_test) < samples:
        raise SystemExit(f"only {len(y_test)} test digits, asked for {samples}")
    torch.manual_seed(seed)
    module = RobustClassifier(SmallCNN(num_classes=10, in_channels=1, width=16), mean=[0.5], std=[0.5])
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(6):
        for index in torch.randperm(len(y_train), generator=generator).split(64):
            optimizer.zero_grad()
            F.cross_entropy(module(x_train[index]), y_train[index]).backward()
            optimizer.step()
    return x_test[:samples], y_test[:samples], module.eval()


def _trainer(callback: RobustnessEvaluation) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, callbacks=[callback])


def run_callback(module, x, y, attacks, **options) -> tuple[float, dict[str, float]]:
    callback = RobustnessEvaluation(attacks, report=False, **options)
    trainer = _trainer(callback)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.test(module, DataLoader(TensorDataset(x, y), batch_size=BATCH), verbose=False)
    seconds = time.perf_counter() - start
    return seconds, {k.split("/", 2)[-1]: float(v) for k, v in trainer.callback_metrics.items()
                     if "/robust_acc/" in k}


def run_torchattacks(module, x, y, eps: float, steps: int, n_queries: int) -> tuple[float, float]:
    import torchattacks

    attack = torchattacks.AutoAttack(module, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    for member in attack._autoattack.attacks:
        if hasattr(member, "steps"):
            member.steps = steps  # the reference's 100; torchattacks' default is 10
        if hasattr(member, "n_queries"):
            member.n_queries = n_queries
    correct = 0
    start = time.perf_counter()
    for begin in range(0, len(y), BATCH):
        xb, yb = x[begin:begin + BATCH], y[begin:begin + BATCH]
        adv = attack(xb, yb)
        with torch.no_grad():
            correct += int((module(adv).argmax(1) == yb).sum())
    return time.perf_counter() - start, correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--early-exit-steps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100, help="APGD/FAB steps on both sides (reference: 100)")
    parser.add_argument("--n-queries", type=int, default=5000, help="Square queries on both sides (reference: 5000)")
    parser.add_argument("--out", type=Path, default=RESULTS / "autoattack_eval.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y, module = data_and_model(args.samples, args.seed)
    with torch.no_grad():
        clean = float((module(x).argmax(1) == y).float().mean())
    print(f"{len(y)} samples, clean accuracy {clean:.3f}", flush=True)

    ours_s: list[float] = []
    theirs_s: list[float] = []
    ours_acc: list[float] = []
    theirs_acc: list[float] = []
    early: dict[str, Any] = {}

    def write() -> dict[str, Any]:
        """The JSON so far (written after every measurement, so a cut-off run keeps its pairs)."""
        ratios = [o / t for o, t in zip(ours_s, theirs_s, strict=False)]
        payload = {
            "command": "python benchmarks/autoattack_eval.py " + " ".join(sys.argv[1:]),
            "settings": {"samples": len(y), "eps": args.eps, "norm": "linf", "batch_size": BATCH,
                         "repeats": args.repeats, "threads": args.threads, "seed": args.seed,
                         "model": "standard SmallCNN(width=16), 16x16 digits", "clean_accuracy": clean,
                         "autoattack": f"standard: APGD-CE {args.steps}, APGD-T {args.steps}x9, "
                                       f"FAB-T {args.steps}x9, Square {args.n_queries}"},
            "machine": {"platform": platform.platform(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "note": "shared 2-core CPU, loaded by other jobs"},
            "ours_callback_seconds": ours_s,
            "torchattacks_seconds": theirs_s,
            "ours_robust_accuracy": ours_acc,
            "torchattacks_robust_accuracy": theirs_acc,
            "ratio_ours_over_torchattacks_per_pair": ratios,
            "ratio_median": statistics.median(ratios) if ratios else None,
            "goal": "ratio <= 1.1",
            "early_exit": early,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
        return payload

    for repeat in range(args.repeats):
        ours = AutoAttack(eps=args.eps, steps=args.steps, n_queries=args.n_queries)
        seconds, logged = run_callback(module, x, y, [ours], seed=args.seed)
        ours_s.append(seconds)
        ours_acc.append(logged[ours.name])
        seconds, accuracy = run_torchattacks(module, x, y, args.eps, args.steps, args.n_queries)
        theirs_s.append(seconds)
        theirs_acc.append(accuracy)
        print(f"repeat {repeat}: ours {ours_s[-1]:.1f}s acc {ours_acc[-1]:.4f} | torchattacks "
              f"{theirs_s[-1]:.1f}s acc {theirs_acc[-1]:.4f}", flush=True)
        write()

    steps = args.early_exit_steps
    for label, on in (("early_exit", True), ("no_early_exit", False)):
        attacks = [PGD(eps=args.eps, alpha=args.eps / 4, steps=20),
                   APGD(eps=args.eps, steps=steps, loss="dlr", early_stop=on),
                   APGD(eps=args.eps, steps=steps, loss="dlr_targeted", n_target_classes=9, early_stop=on)]
        seconds, logged = run_callback(module, x, y, attacks, seed=args.seed, early_exit=on, worst_case=True)
        early[label] = {"seconds": seconds, "accuracy": logged}
        print(f"{label}: {seconds:.1f}s {logged}", flush=True)
    early["time_saved_fraction"] = 1 - early["early_exit"]["seconds"] / early["no_early_exit"]["seconds"]
    early["same_accuracy"] = early["early_exit"]["accuracy"] == early["no_early_exit"]["accuracy"]
    payload = write()
    print(json.dumps({k: payload[k] for k in ("ratio_median", "ours_robust_accuracy", "torchattacks_robust_accuracy")},
                     indent=2))


if __name__ == "__main__":
    main()
