"""NUP on sklearn digits: does the input–gradient probe track PGD vulnerability, and what does ConjMask buy?

Per seed (the seed sets the data split and training), on :class:`DigitsDataModule` (16x16 grey,
``SmallCNN(width=16)``, Adam 3e-3, batch 64, 6 epochs, trained with the library's
LightningModules):

A. **Probe vs vulnerability.** A standard model is tested with
   :class:`~robust_lightning.callbacks.conjugate_probe.ConjugateProbe` (``keep_per_sample``),
   giving every test sample's statistics (true-label loss; on correctly classified samples, the
   ones this part uses, the same as the predicted-label probe). Vulnerability per sample: the
   smallest L-inf ``eps`` on a geometric grid (0.002-0.3, 24 radii) at which PGD-20 (CE, alpha
   eps/4, random start) flips the prediction, and the adversarial margin loss
   ``max_{j≠y} z_j - z_y`` after PGD-20 at ``eps=0.05``. Reported: Spearman rank correlations of each
   statistic with both, over the correctly classified test samples, and the partial Spearman
   correlation with ``eps_min`` given the clean loss (is the probe more than a confidence proxy?).

B. **ConjMask.** Clean and robust test accuracy at each L-inf ``eps`` of ``--eps`` (0.05 and 0.1,
   the repository's digits budget) of: the standard model; the standard model with ConjMask at
   evaluation only (fractions 0.02 and ``--fraction``); ConjMask at training and evaluation
   (``score`` abs and positive); PGD-AT (reference; skip with ``--no-pgd-at``). Attacks: PGD-20
   (alpha eps/4, random start) through the model as deployed (for ConjMask: the detached mask,
   i.e. gradient masking); APGD-CE (``--apgd-steps``); a transfer attack (PGD-20 on an
   independently trained standard surrogate, seed + 1000); for masked models also PGD-20 with
   the straight-through (BPDA) gradient, APGD-CE with the BPDA gradient (instead of through the
   mask) and PGD-20 on the same network without the mask (evaluated through the mask).
   ``worst`` counts a sample robust only if it survives every attack.

Usage::

    python benchmarks/nup_digits.py --seeds 0        # writes benchmarks/results/nup_digits_seed0.json
    python benchmarks/nup_digits.py --table          # Markdown tables over the seed files present
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata, spearmanr
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust_lightning.attacks.autopgd import APGD
from robust_lightning.attacks.core import attack_mode, pgd
from robust_lightning.callbacks.conjugate_probe import ConjugateProbe
from robust_lightning.datamodules import DigitsDataModule
from robust_lightning.lightning_modules.classifier import RobustClassifier
from robust_lightning.lightning_modules.nup import PROBE_STATISTICS, ConjMaskClassifier
from robust_lightning.nn import SmallCNN

RESULTS = Path(__file__).resolve().parent / "results"
EPS_GRID = [float(e) for e in np.geomspace(0.002, 0.3, 24)]
MARGIN_EPS = 0.05


def _data(seed: int) -> DigitsDataModule:
    return DigitsDataModule(image_size=16, batch_size=64, eval_batch_size=512, seed=seed)


def _test_tensors(data: DigitsDataModule) -> tuple[Tensor, Tensor]:
    data.setup("test")
    images = data.test_dataset.images
    images = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return images, data.test_dataset.labels


def _trainer(epochs: int, callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, limit_val_batches=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=callbacks)


def train(kind: str, seed: int, epochs: int, **mask: Any) -> tuple[RobustClassifier, float]:
    """Train one model (``kind``: standard, pgd_at or conjmask) and return it in eval mode."""
    pl.seed_everything(seed, verbose=False)
    common: dict[str, Any] = {"mean": [0.5], "std": [0.5], "optimizer": lambda p: torch.optim.Adam(p, lr=3e-3)}
    backbone = SmallCNN(num_classes=10, in_channels=1, width=16)
    if kind == "conjmask":
        model: RobustClassifier = ConjMaskClassifier(backbone, **mask, **common)
    elif kind == "pgd_at":
        model = RobustClassifier(backbone, recipe="pgd_at", eps=0.1, steps=10, **common)
    else:
        model = RobustClassifier(backbone, **common)
    start = time.perf_counter()
    _trainer(epochs).fit(model, datamodule=_data(seed))
    return model.eval(), time.perf_counter() - start


def _ce(module: torch.nn.Module, y: Tensor):
    return lambda z: F.cross_entropy(module(z), y, reduction="none")


def _margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).max(1).values
    return other - true


def _pgd(module: torch.nn.Module, x: Tensor, y: Tensor, eps: float, seed: int, steps: int = 20,
         loss: str = "ce") -> Tensor:
    loss_fn = _ce(module, y) if loss == "ce" else (lambda z: _margin_loss(module(z), y))
    with attack_mode(module, "eval"):
        return pgd(loss_fn, x, eps=eps, alpha=eps / 4, steps=steps, random_start=True,
                   generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _correct(module: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return module(x).argmax(1) == y


# -- part A -----------------------------------------------------------------------------------
def min_flip_eps(model: torch.nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor:
    """Smallest grid radius at which PGD-20 flips each sample (inf if none does)."""
    eps_min = torch.full((len(y),), math.inf)
    for eps in EPS_GRID:
        flipped = ~_correct(model, _pgd(model, x, y, eps, seed), y)
        eps_min = torch.where(flipped & torch.isinf(eps_min), torch.tensor(eps), eps_min)
    return eps_min


def partial_spearman(a: np.ndarray, b: np.ndarray, control: np.ndarray) -> float:
    """Spearman correlation of ``a`` and ``b`` with the ranks of ``control`` regressed out."""
    ranks = [rankdata(v) for v in (a, b, control)]
    design = np.stack([np.ones_like(ranks[2]), ranks[2]], axis=1)
    residuals = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in ranks[:2]]
    return float(np.corrcoef(*residuals)[0, 1])


def probe_vs_vulnerability(model: RobustClassifier, data: DigitsDataModule, seed: int) -> dict[str, Any]:
    x, y = _test_tensors(data)
    probe = ConjugateProbe(stages=["test"], keep_per_sample=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[probe])
    trainer.test(model, datamodule=data, verbose=False)
    stats = probe.per_sample("test")
    with torch.no_grad():
        logits = model(x)
    stats["clean_margin"] = -_margin_loss(logits, y)  # logit gap of the true class (>0: correct)
    correct = (logits.argmax(1) == y).numpy()
    eps_min = min_flip_eps(model, x, y, seed).numpy()
    adv_margin_loss = _margin_loss(model(_pgd(model, x, y, MARGIN_EPS, seed, loss="margin")).detach(), y).numpy()
    # Samples no grid radius flips get the largest rank (they are the most robust).
    eps_min = np.where(np.isinf(eps_min), 2 * EPS_GRID[-1], eps_min)[correct]
    adv_margin_loss = adv_margin_loss[correct]
    loss = stats["loss"].numpy()[correct]
    out: dict[str, Any] = {"n": int(correct.sum()), "eps_min_median": float(np.median(eps_min)), "statistics": {}}
    for name in (*PROBE_STATISTICS, "loss", "clean_margin"):
        value = stats[name].numpy()[correct]
        out["statistics"][name] = {
            "spearman_eps_min": float(spearmanr(value, eps_min).statistic),
            "spearman_adv_margin_loss": float(spearmanr(value, adv_margin_loss).statistic),
            # The loss is the control itself: its partial correlation is 0 up to rounding noise.
            "partial_spearman_eps_min_given_loss": None if name == "loss" else partial_spearman(value, eps_min, loss),
        }
    return out


# -- part B -----------------------------------------------------------------------------------
def _apgd(module: torch.nn.Module, x: Tensor, y: Tensor, eps: float, seed: int, steps: int) -> Tensor:
    with attack_mode(module, "eval"):
        return APGD(eps=eps, steps=steps, loss="ce")(_ce(module, y), x, generator=torch.Generator().manual_seed(seed))


def robustness(model: RobustClassifier, surrogate: RobustClassifier, x: Tensor, y: Tensor, eps: float,
               seed: int, apgd_steps: int) -> dict[str, float]:
    """Accuracy under each attack and under the per-sample worst case over all of them."""
    masked = isinstance(model, ConjMaskClassifier) and model.mask_eval and model.mask_fraction > 0
    survived = {"pgd": _correct(model, _pgd(model, x, y, eps, seed), y)}
    if masked:
        model.straight_through = True  # BPDA: attacks see the identity gradient through the mask
        try:
            x_bpda = _pgd(model, x, y, eps, seed)
            x_apgd = _apgd(model, x, y, eps, seed, apgd_steps)
        finally:
            model.straight_through = False
        survived["bpda"] = _correct(model, x_bpda, y)
        survived["apgd"] = _correct(model, x_apgd, y)
        # White-box PGD on the same weights without the mask, evaluated through the mask.
        survived["no_mask"] = _correct(model, _pgd(model.model, x, y, eps, seed), y)
    else:
        survived["apgd"] = _correct(model, _apgd(model, x, y, eps, seed, apgd_steps), y)
    survived["transfer"] = _correct(model, _pgd(surrogate, x, y, eps, seed), y)
    worst = torch.stack(list(survived.values())).all(0)
    return {**{k: float(v.float().mean()) for k, v in survived.items()}, "worst": float(worst.float().mean())}


def run_seed(seed: int, epochs: int, eps_list: list[float], fraction: float, pgd_at: bool,
             apgd_steps: int) -> dict[str, Any]:
    data = _data(seed)
    x, y = _test_tensors(data)
    standard, seconds = train("standard", seed, epochs)
    surrogate, _ = train("standard", seed + 1000, epochs)
    start = time.perf_counter()
    part_a = probe_vs_vulnerability(standard, data, seed)
    print(f"seed {seed}: part A in {time.perf_counter() - start:.0f}s", flush=True)

    models: dict[str, tuple[RobustClassifier, float]] = {"standard": (standard, seconds)}
    for eval_fraction in sorted({0.02, fraction}):
        eval_only = ConjMaskClassifier(SmallCNN(num_classes=10, in_channels=1, width=16), mean=[0.5], std=[0.5],
                                       mask_fraction=eval_fraction, mask_train=False)
        eval_only.load_state_dict(standard.state_dict())
        models[f"standard + ConjMask at eval only (abs, {eval_fraction})"] = (eval_only.eval(), seconds)
    for score in ("abs", "positive"):
        models[f"ConjMask train+eval ({score}, {fraction})"] = train(
            "conjmask", seed, epochs, mask_fraction=fraction, mask_score=score)
    if pgd_at:
        models["PGD-AT eps 0.1 (reference)"] = train("pgd_at", seed, epochs)
    part_b = {}
    for name, (model, train_seconds) in models.items():
        row: dict[str, Any] = {"clean": float(_correct(model, x, y).float().mean()), "train_seconds": round(train_seconds, 1)}
        for eps in eps_list:
            row[f"eps{eps:g}"] = robustness(model, surrogate, x, y, eps, seed, apgd_steps)
        part_b[name] = row
        print(seed, name, row, flush=True)
    return {"seed": seed, "probe": part_a, "conjmask": part_b}


# -- tables -----------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def tables(runs: list[dict[str, Any]]) -> str:
    lines = [(f"Seeds: {[r['seed'] for r in runs]}; correctly classified test samples per seed: "
              f"{[r['probe']['n'] for r in runs]}; median eps_min: "
              f"{[round(r['probe']['eps_min_median'], 4) for r in runs]}"),
             "", ("| statistic | Spearman with eps_min | Spearman with PGD margin loss (eps 0.05) | "
                  "partial Spearman with eps_min given clean loss |"), "|---|---|---|---|"]
    for name in runs[0]["probe"]["statistics"]:
        cells = ["— (the control)" if name == "loss" and key.startswith("partial")
                 else _mean_std([r["probe"]["statistics"][name][key] for r in runs])
                 for key in ("spearman_eps_min", "spearman_adv_margin_loss", "partial_spearman_eps_min_given_loss")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    eps_keys = [k for k in runs[0]["conjmask"]["standard"] if k.startswith("eps")]
    for eps_key in eps_keys:
        lines += ["", f"ConjMask, L-inf {eps_key}:", "",
                  ("| model | clean acc | PGD-20 (through mask) | PGD-20 BPDA | APGD-CE (BPDA) | "
                   "PGD-20 on the unmasked net | transfer | worst case |"), "|---|---|---|---|---|---|---|---|"]
        for name in runs[0]["conjmask"]:
            rows = [r["conjmask"][name] for r in runs]
            cells = [_mean_std([row["clean"] for row in rows])]
            for attack in ("pgd", "bpda", "apgd", "no_mask", "transfer", "worst"):
                values = [row[eps_key][attack] for row in rows if attack in row[eps_key]]
                cells.append(_mean_std(values) if values else "n/a (no mask)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--eps", nargs="+", type=float, default=[0.05, 0.1])
    parser.add_argument("--apgd-steps", type=int, default=50)
    parser.add_argument("--fraction", type=float, default=0.1, help="ConjMask mask fraction")
    parser.add_argument("--no-pgd-at", dest="pgd_at", action="store_false")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="only print the tables of the stored seed files")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    if not args.table:
        for seed in args.seeds:
            result = run_seed(seed, args.epochs, args.eps, args.fraction, args.pgd_at, args.apgd_steps)
            result["settings"] = {k: v for k, v in vars(args).items() if k != "table"}
            path = RESULTS / f"nup_digits_seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2))
            print(f"wrote {path}")
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("nup_digits_seed*.json"))]
    if runs:
        print(tables(runs))


if __name__ == "__main__":
    main()
