"""Does ``square_below_gradient`` catch gradient masking? ConjMask vs PGD-AT on sklearn digits.

Our NUP README calls ConjMask's robustness gradient masking: its mask is detached, so gradient
attacks through the deployed model see broken gradients. A score-based attack (Square) does not
use gradients, so on a masked model it should find what PGD misses; on an adversarially trained
model (no masking) it should not beat the gradient attacks.

Per seed (the seed sets the data split and training; models trained as in
``benchmarks/nup_digits.py``: 16x16 digits, ``SmallCNN(width=16)``, Adam 3e-3, 6 epochs):

* ``conjmask``: :class:`~robust_lightning.lightning_modules.nup.ConjMaskClassifier` (mask 10%,
  abs score, at training and evaluation);
* ``pgd_at``: :class:`~robust_lightning.RobustClassifier` with PGD-AT (L-inf 0.1, 10 steps).

Each is tested through :class:`~robust_lightning.RobustnessEvaluation` at L-inf ``eps`` (0.1,
the repository's digits budget) with PGD-20 (alpha eps/4), APGD-CE and Square, plus the worst
case; recorded: robust accuracies, the sanity flags, time.

Usage::

    python benchmarks/autoattack_digits.py --seeds 0 1 2   # writes benchmarks/results/autoattack_digits.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.nup_digits import _data, _test_tensors, train
from robust_lightning.attacks import APGD, PGD, Square
from robust_lightning.callbacks import RobustnessEvaluation
from robust_lightning.callbacks.robustness_evaluation import SQUARE_MARGIN

RESULTS = Path(__file__).resolve().parent / "results"


def evaluate(model: pl.LightningModule, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
             apgd_steps: int, n_queries: int) -> dict[str, Any]:
    attacks = [PGD(eps=eps, alpha=eps / 4, steps=20), APGD(eps=eps, steps=apgd_steps), Square(eps=eps, n_queries=n_queries)]
    callback = RobustnessEvaluation(attacks, worst_case=True, seed=seed, report=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=[callback])
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.test(model, DataLoader(TensorDataset(x, y), batch_size=512), verbose=False)
    seconds = time.perf_counter() - start
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    accuracy = {k.split("/")[-1]: v for k, v in logged.items() if "/robust_acc/" in k}
    flags = {k.split("/")[-1]: bool(v) for k, v in logged.items() if "/sanity/" in k}
    return {"accuracy": accuracy, "flags": flags, "seconds": seconds,
            "warnings": sorted({str(w.message) for w in caught if "RobustnessEvaluation" in str(w.message)})}


def run_seed(seed: int, eps: float, epochs: int, apgd_steps: int, n_queries: int) -> dict[str, Any]:
    x, y = _test_tensors(_data(seed))
    out: dict[str, Any] = {}
    for kind in ("conjmask", "pgd_at"):
        model, train_seconds = train(kind, seed, epochs)
        result = evaluate(model, x, y, eps, seed, apgd_steps, n_queries)
        result["train_seconds"] = train_seconds
        out[kind] = result
        acc = result["accuracy"]
        print(f"seed {seed} {kind}: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(acc.items()))
              + f" square_below_gradient={result['flags'].get('square_below_gradient')}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--apgd-steps", type=int, default=100)
    parser.add_argument("--n-queries", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "autoattack_digits.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = {str(s): run_seed(s, args.eps, args.epochs, args.apgd_steps, args.n_queries) for s in args.seeds}
    summary = {}
    for kind in ("conjmask", "pgd_at"):
        fired = [seeds[s][kind]["flags"].get("square_below_gradient", False) for s in seeds]
        gaps = [min(seeds[s][kind]["accuracy"][f"{a}_linf_eps{args.eps:g}"] for a in ("pgd20", "apgd-ce"))
                - seeds[s][kind]["accuracy"][f"square_linf_eps{args.eps:g}"] for s in seeds]
        summary[kind] = {"square_below_gradient_fired": fired, "gradient_minus_square": gaps}
    payload = {
        "command": "python benchmarks/autoattack_digits.py " + " ".join(sys.argv[1:]),
        "settings": {"eps": args.eps, "epochs": args.epochs, "apgd_steps": args.apgd_steps,
                     "n_queries": args.n_queries, "square_margin": SQUARE_MARGIN, "threads": args.threads},
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "seeds": seeds,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
