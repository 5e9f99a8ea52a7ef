"""A short PGD-AT fit on GPUs for tools/gpu_check.sh: DDP over N devices, a given precision.

Trains ``RobustClassifier(recipe="pgd_at")`` on digits for one epoch with robustness
evaluation, checks the metrics are finite and robust accuracy does not exceed clean accuracy,
and writes them as JSON. Lightning's ``ddp`` strategy relaunches this file once per device,
which is why this is a script and not an inline ``python -c``.

Usage::

    python tools/gpu_fit_check.py --devices 2 --precision bf16-mixed --out gpu_results/ddp.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl
import torch

from robust_lightning import PGD, RobustClassifier, RobustnessEvaluation, SmallCNN
from robust_lightning.datamodules import DigitsDataModule


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible", file=sys.stderr)
        return 2
    pl.seed_everything(0, verbose=False)
    attack = PGD(eps=0.1, alpha=0.025, steps=10)
    model = RobustClassifier(SmallCNN(num_classes=10, in_channels=1), mean=[0.5], std=[0.5], recipe="pgd_at",
                             eps=0.1, steps=10, optimizer=partial(torch.optim.AdamW, lr=3e-3))
    trainer = pl.Trainer(accelerator="gpu", devices=args.devices,
                         strategy="ddp" if args.devices > 1 else "auto", precision=args.precision,
                         max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=args.out.parent / "gpu_fit_runs",
                         callbacks=[RobustnessEvaluation([attack])])
    start = time.perf_counter()
    trainer.fit(model, datamodule=DigitsDataModule(image_size=16, batch_size=64, seed=0))
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.global_rank != 0:
        return 0
    clean, robust = metrics["val/robust_acc/clean"], metrics[f"val/robust_acc/{attack.name}"]
    ok = all(torch.isfinite(torch.tensor(v)) for v in metrics.values()) and robust <= clean + 1e-6
    result = {"devices": args.devices, "world_size": trainer.world_size, "precision": args.precision,
              "gpu": torch.cuda.get_device_name(0), "fit_s": seconds, "metrics": metrics, "ok": bool(ok)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
