"""FAB / FAB-T against ``torchattacks.FAB`` (AutoAttack's algorithm) on a digits SmallCNN.

For each norm (L-inf eps 0.05, L2 eps 0.5: radii where the model's robust accuracy is about
one half) and each variant (untargeted FAB, FAB-T with AutoAttack's 9 target classes), with
AutoAttack's settings (``n_iter=100``, ``n_restarts=1``, ``alpha_max=0.1``, ``eta=1.05``,
``beta=0.9``), in one process on the same model and samples:

* **at eps** (what AutoAttack runs): our ``FAB.perturb_logits`` against ``torchattacks.FAB``
  at the same eps: robust accuracy of both and the time ratio. Ours drops a sample as soon as
  it has an adversarial within eps; the reference runs every sample to the end of the run.
* **minimisation** (the accuracy-vs-radius curve): our ``FAB.minimize`` against
  ``torchattacks.FAB`` at an eps no perturbation reaches (so it keeps every point it finds):
  the same work on both sides for untargeted FAB (deterministic, no restarts), with the largest
  per-sample difference of the minimal norms. For FAB-T there is no like-for-like reference run
  (the reference stops a sample after its first successful target, ours minimises over all 9),
  so only our time is reported. Our curve at a few radii for every row.

Timing alternates ours and the reference in each round (load from other processes hits both
alike); each figure is the median over the rounds. Usage::

    python benchmarks/fab_digits.py                       # -> benchmarks/results/fab_digits.json
    python benchmarks/fab_digits.py --samples 64 --rounds 1 --threads 1 --out /tmp/fab.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust_lightning.attacks.fab import FAB, robust_accuracy_at_radii
from robust_lightning.datamodules import DigitsDataModule
from robust_lightning.nn import Normalize, SmallCNN

RADII = {"linf": 0.05, "l2": 0.5}
NO_LIMIT = 1e3


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = DigitsDataModule(image_size=16, batch_size=64, seed=0, augment=False)
    data.setup("fit" if split == "train" else "test")
    dataset = data.train_dataset if split == "train" else data.test_dataset
    images = dataset.images
    images = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return images, dataset.labels


def _train(seed: int = 0, epochs: int = 6) -> nn.Module:
    """A standard (non-robust) SmallCNN, the recipe of the attack tests' trained model."""
    torch.manual_seed(seed)
    images, labels = _digits("train")
    model = nn.Sequential(Normalize([0.5], [0.5]), SmallCNN(num_classes=10, in_channels=1, width=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(labels), generator=generator).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(images[index]), labels[index]).backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


def _size(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n-iter", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fab_digits.json")
    args = parser.parse_args()
    import torchattacks

    torch.set_num_threads(args.threads)
    model = _train()
    x, y = _digits("test")
    x, y = x[: args.samples], y[: args.samples]
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()

    def accuracy(points: torch.Tensor) -> float:
        with torch.no_grad():
            return (model(points).argmax(1) == y).float().mean().item()

    rows = []
    for norm, eps in RADII.items():
        for targeted in (False, True):
            ours = FAB(eps=eps, norm=norm, n_iter=args.n_iter, targeted=targeted, n_target_classes=9)
            reference = {radius: torchattacks.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=radius,
                                                  steps=args.n_iter, n_restarts=1, multi_targeted=targeted,
                                                  n_classes=10, seed=0) for radius in (eps, NO_LIMIT)}

            times: dict[str, list[float]] = {"ours_at_eps": [], "reference_at_eps": [], "ours_minimize": []}
            if not targeted:
                times["reference_minimize"] = []
            for _ in range(args.rounds):
                x_ours, t = _timed(ours.perturb_logits, model, x, y)
                times["ours_at_eps"].append(t)
                x_ref, t = _timed(reference[eps], x, y)
                times["reference_at_eps"].append(t)
                result, t = _timed(ours.minimize, model, x, y)
                times["ours_minimize"].append(t)
                if not targeted:
                    x_ref_min, t = _timed(reference[NO_LIMIT], x, y)
                    times["reference_minimize"].append(t)
            median = {k: statistics.median(v) for k, v in times.items()}
            row = {
                "norm": norm, "eps": eps, "attack": ours.kind, "n_iter": args.n_iter,
                "robust_acc_ours": accuracy(x_ours), "robust_acc_reference": accuracy(x_ref),
                "robust_acc_ours_from_minimal_norms": float(result.robust(eps).float().mean()),
                "seconds": median,
                "time_ratio_at_eps": median["ours_at_eps"] / median["reference_at_eps"],
                "curve_radii": [eps * f for f in (0.25, 0.5, 1.0, 1.5, 2.0)],
                "curve_ours": robust_accuracy_at_radii(result.norms, [eps * f for f in (0.25, 0.5, 1.0, 1.5, 2.0)]
                                                       ).tolist(),
            }
            if not targeted:
                row["time_ratio_minimize"] = median["ours_minimize"] / median["reference_minimize"]
                with torch.no_grad():
                    fooled = model(x_ref_min).argmax(1) != y
                ref_norms = torch.where(fooled, _size(x_ref_min - x, norm), torch.tensor(float("inf")))
                ref_norms[model(x).argmax(1) != y] = 0.0
                both = torch.isfinite(ref_norms) & torch.isfinite(result.norms)
                row["max_abs_norm_difference_per_sample"] = float((ref_norms - result.norms)[both].abs().max())
                row["found_ours"] = int(torch.isfinite(result.norms).sum())
                row["found_reference"] = int(torch.isfinite(ref_norms).sum())
            rows.append(row)
            print(f"{ours.kind:6s} {norm:4s} eps={eps}: robust acc ours {row['robust_acc_ours']:.4f} "
                  f"reference {row['robust_acc_reference']:.4f} | time ours/reference at eps "
                  f"{row['time_ratio_at_eps']:.2f}, minimisation {row.get('time_ratio_minimize', 'n/a')}")

    payload = {
        "command": "python benchmarks/fab_digits.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__, "torchattacks": torchattacks.__version__,
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "samples": args.samples, "rounds": args.rounds, "clean_accuracy": clean, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
