"""Fast adversarial training, measured end to end (README, "Fast adversarial training").

Two measurements, each inside one process so every ratio compares runs on the same machine
under the same load:

(a) **PGD-10 adversarial-training epoch**: ``Trainer.fit`` epochs of the same model, data and
    batch, with the attack written two ways:

    * ``torchattacks_by_hand``: a LightningModule whose ``training_step`` calls
      ``torchattacks.PGD`` (what users write without this library);
    * ``ours_*``: a plain LightningModule with our ``AdversarialTraining(PGD(...))`` callback,
      with no option (``ours_plain``), each engine option alone (``ours_compile``,
      ``ours_channels_last``, ``ours_bf16``) and all three (``ours_fast``).

    Variants alternate epoch by epoch (a fresh ``Trainer`` per epoch; the module keeps its
    optimizer), so load from other processes hits them alike. The first epoch carries the
    compile; the steady-state figure is the median of the later epochs. After training every
    variant is evaluated on the test split under PGD-10 and APGD-CE at the training eps
    (per-sample worst case), so equal robustness can be checked, over ``--seeds-a`` seeds.

(b) **Robust accuracy against training wall-clock on digits**, for the recipes standard,
    PGD-AT, FGSM-RS, N-FGSM, GradAlign, Free-AT and FAT of ``RobustClassifier`` with the
    settings of ``configs/classifier/digits_*.yaml`` (Free-AT: epochs / m), ``--seeds-b``
    seeds that also vary the data split. Training time is the sum of the training epochs
    (validation off); robust accuracy is the per-sample worst case of PGD-10 and APGD-CE at
    the training eps. A PNG plots the means and spreads.

Usage::

    python benchmarks/adversarial_training.py              # CPU, both parts
    python benchmarks/adversarial_training.py --device cuda --parts a --out gpu_results/at.json

On CUDA the compiled variants use ``torch.compile(mode="reduce-overhead")`` (CUDA graphs)
unless ``--compile-mode`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from benchmarks._machine import cpu_model
from robust_lightning import APGD, PGD, AdversarialTraining, RobustClassifier, SmallCNN
from robust_lightning.attacks.core import attack_mode
from robust_lightning.datamodules import DigitsDataModule
from robust_lightning.nn import Normalize

RESULTS = Path(__file__).resolve().parent / "results"
EPS = 0.1  # digits' training budget, as in configs/classifier/digits_*.yaml
VARIANTS_A: dict[str, dict[str, Any]] = {
    "torchattacks_by_hand": {},
    "ours_plain": {},
    "ours_compile": {"compile": True},
    "ours_channels_last": {"channels_last": True},
    "ours_bf16": {"attack_precision": "bf16"},
    "ours_fast": {"compile": True, "channels_last": True, "attack_precision": "bf16"},
}
MARKERS = {"standard": "x", "pgd_at": "s", "fgsm_rs": "^", "n_fgsm": "v", "grad_align": "D",
           "free_at": "P", "fat": "o"}
RECIPES_B = ("standard", "pgd_at", "fgsm_rs", "n_fgsm", "grad_align", "free_at", "fat")
# configs/classifier/digits_*.yaml: the recipe-specific arguments.
RECIPE_ARGS: dict[str, dict[str, Any]] = {
    "pgd_at": {"steps": 10},
    "grad_align": {"grad_align_lambda": 2.0},
    "free_at": {"free_replays": 4},
    "fat": {"steps": 10, "fat_tau": "dynamic"},
}


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(pl.Callback):
    """Wall-clock of each training epoch (data loading, attack, update; no validation)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(self.device)
        self.times.append(time.perf_counter() - self._start)


def _backbone(seed: int, width: int, hidden: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(Normalize([0.5], [0.5]), SmallCNN(num_classes=10, in_channels=1, width=width,
                                                           hidden=hidden))


class _PersistentOptimizer(pl.LightningModule):
    """Keeps one optimizer across the per-epoch Trainers, so interleaving changes no training."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__()
        self.model = model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-4)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer


class PlainModule(_PersistentOptimizer):
    """A user's module with no attack code: our callback replaces the inputs."""

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)


class TorchattacksModule(_PersistentOptimizer):
    """What a user writes by hand: torchattacks.PGD inside training_step."""

    def __init__(self, model: nn.Module, lr: float, eps: float, alpha: float, steps: int) -> None:
        super().__init__(model, lr)
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self._attack: Any = None

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        import torchattacks

        x, y = batch
        if self._attack is None:  # torchattacks reads the device from the model's parameters
            self._attack = torchattacks.PGD(self.model, eps=self.eps, alpha=self.alpha,
                                            steps=self.steps, random_start=True)
        x_adv = self._attack(x, y)  # eval mode during the attack, train mode restored after
        return F.cross_entropy(self(x_adv), y)


def _trainer(device: torch.device, callbacks: list[pl.Callback], max_epochs: int, root: Path,
             limit_batches: int | None = None) -> pl.Trainer:
    return pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                      max_epochs=max_epochs, limit_val_batches=0, num_sanity_val_steps=0,
                      limit_train_batches=limit_batches,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=root, callbacks=callbacks)


def _test_tensors(data: DigitsDataModule) -> tuple[Tensor, Tensor]:
    data.setup("test")
    xs, ys = zip(*(batch for batch in data.test_dataloader()), strict=False)
    return torch.cat(xs), torch.cat(ys)


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, device: torch.device,
                    seed: int = 0, batch: int = 512) -> dict[str, float]:
    """Clean, PGD-10, APGD-CE and per-sample worst-case accuracy (fp32, eval mode, no compile)."""
    model = model.to(device).to(memory_format=torch.contiguous_format)
    pgd10 = PGD(eps=eps, alpha=eps / 4, steps=10)
    apgd = APGD(eps=eps, steps=20)
    correct = {"clean": 0, "pgd10": 0, "apgd_ce": 0, "worst": 0}
    with attack_mode(model, "eval"):
        for start in range(0, len(y), batch):
            xb, yb = x[start:start + batch].to(device), y[start:start + batch].to(device)
            generator = torch.Generator(device=device).manual_seed(seed + start)

            def loss(z: Tensor, yb: Tensor = yb) -> Tensor:
                return F.cross_entropy(model(z).float(), yb, reduction="none")

            with torch.no_grad():
                ok_clean = model(xb).argmax(1) == yb
            x_pgd = pgd10(loss, xb, generator=generator)
            x_apgd = apgd(loss, xb, generator=generator)
            with torch.no_grad():
                ok_pgd = model(x_pgd).argmax(1) == yb
                ok_apgd = model(x_apgd).argmax(1) == yb
            correct["clean"] += int(ok_clean.sum())
            correct["pgd10"] += int(ok_pgd.sum())
            correct["apgd_ce"] += int(ok_apgd.sum())
            correct["worst"] += int((ok_clean & ok_pgd & ok_apgd).sum())
    return {k: v / len(y) for k, v in correct.items()}


# -- (a) --------------------------------------------------------------------------------------
def bench_epoch(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    alpha, steps = EPS / 4, 10
    compile_mode = args.compile_mode if args.compile_mode != "default" else None
    per_seed = []
    for seed in range(args.seeds_a):
        data = DigitsDataModule(image_size=args.image_size_a, batch_size=args.batch_a, seed=seed)
        data.setup("fit")
        modules: dict[str, pl.LightningModule] = {}
        callbacks: dict[str, list[pl.Callback]] = {}
        timers: dict[str, EpochTimer] = {}
        for name, options in ((n, VARIANTS_A[n]) for n in args.variants):
            model = _backbone(seed, args.width_a, args.hidden_a).to(device)
            timers[name] = EpochTimer(device)
            if name == "torchattacks_by_hand":
                modules[name] = TorchattacksModule(model, args.lr, EPS, alpha, steps)
                callbacks[name] = [timers[name]]
            else:
                modules[name] = PlainModule(model, args.lr)
                callback = AdversarialTraining(PGD(eps=EPS, alpha=alpha, steps=steps), seed=seed, **options)
                if options.get("compile"):
                    callback.engine.compile_mode = compile_mode
                    callback.engine.compile_backend = args.compile_backend
                callbacks[name] = [callback, timers[name]]
        names = list(args.variants)
        for epoch in range(args.epochs_a):
            order = names[epoch % len(names):] + names[:epoch % len(names)]
            for name in order:
                pl.seed_everything(seed * 1000 + epoch, verbose=False)
                # Same batches in the same order for every variant; a new order each epoch. Full
                # batches only, so the compiled variants see one input shape.
                loader = DataLoader(data.train_dataset, batch_size=args.batch_a, shuffle=True, drop_last=True,
                                    generator=torch.Generator().manual_seed(seed * 1000 + epoch))
                trainer = _trainer(device, callbacks[name], 1, args.tmp, args.limit_batches)
                trainer.fit(modules[name], train_dataloaders=loader)
            print(f"(a) seed {seed} epoch {epoch}: " + ", ".join(
                f"{n} {timers[n].times[-1]:.2f}s" for n in names), flush=True)
        x_test, y_test = _test_tensors(data)
        seed_result: dict[str, Any] = {"seed": seed, "variants": {}}
        for name in names:
            times = timers[name].times
            engine = next((c.engine for c in callbacks[name] if isinstance(c, AdversarialTraining)), None)
            seed_result["variants"][name] = {
                "epoch_s": times,
                "first_epoch_s": times[0],
                "steady_epoch_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
                "compile_count": engine.compile_count if engine is not None else None,
                "compile_failed": bool(engine._compile_failed) if engine is not None else None,
                "accuracy": robust_accuracy(modules[name].model, x_test, y_test, EPS, device, seed),
            }
        per_seed.append(seed_result)

    summary: dict[str, Any] = {}
    for name in args.variants:
        steady = [s["variants"][name]["steady_epoch_s"] for s in per_seed]
        total = [sum(s["variants"][name]["epoch_s"]) for s in per_seed]
        worst = [s["variants"][name]["accuracy"]["worst"] for s in per_seed]
        clean = [s["variants"][name]["accuracy"]["clean"] for s in per_seed]
        summary[name] = {"steady_epoch_s_median": statistics.median(steady),
                         "total_s_median": statistics.median(total),
                         "robust_acc_worst_mean": statistics.mean(worst),
                         "robust_acc_worst_per_seed": worst,
                         "clean_acc_mean": statistics.mean(clean)}
    baseline = summary["torchattacks_by_hand"]
    for row in summary.values():
        row["speedup_steady_vs_torchattacks"] = baseline["steady_epoch_s_median"] / row["steady_epoch_s_median"]
        row["speedup_total_vs_torchattacks"] = baseline["total_s_median"] / row["total_s_median"]
        if "ours_plain" in summary:
            row["speedup_steady_vs_ours_plain"] = (summary["ours_plain"]["steady_epoch_s_median"]
                                                   / row["steady_epoch_s_median"])
    return {
        "setup": {"data": f"sklearn digits {args.image_size_a}x{args.image_size_a}, train split",
                  "model": f"Normalize + SmallCNN(width={args.width_a}, hidden={args.hidden_a}) (BatchNorm)",
                  "batch": args.batch_a, "attack": f"PGD-10, eps {EPS}, alpha {alpha}, random start",
                  "optimizer": f"AdamW lr {args.lr}", "epochs": args.epochs_a, "seeds": args.seeds_a,
                  "compile_mode": compile_mode, "compile_backend": args.compile_backend,
                  "last_partial_batch": "dropped",
                  "evaluation": "test split; per-sample worst case of PGD-10 (alpha eps/4) and APGD-CE (20 steps)"},
        "per_seed": per_seed,
        "summary": summary,
    }


# -- (b) --------------------------------------------------------------------------------------
def bench_recipes(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    runs = []
    for seed in range(args.seeds_b):
        data = DigitsDataModule(image_size=16, batch_size=64, seed=seed)
        x_test, y_test = _test_tensors(DigitsDataModule(image_size=16, batch_size=64, seed=seed))
        for recipe in RECIPES_B:
            pl.seed_everything(seed, verbose=False)
            extra = dict(RECIPE_ARGS.get(recipe, {}))
            epochs = args.epochs_b
            if recipe == "free_at":  # the paper's budget rule: epochs / m
                epochs = max(1, round(args.epochs_b / extra["free_replays"]))
            model = RobustClassifier(SmallCNN(num_classes=10, in_channels=1, width=args.width_b,
                                              hidden=args.hidden_b), mean=[0.5], std=[0.5],
                                     recipe=recipe, eps=EPS,
                                     optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=1e-4),
                                     **extra)
            timer = EpochTimer(device)
            trainer = _trainer(device, [timer], epochs, args.tmp, args.limit_batches)
            trainer.fit(model, datamodule=data)
            accuracy = robust_accuracy(model.model, x_test, y_test, EPS, device, seed)
            runs.append({"recipe": recipe, "seed": seed, "epochs": epochs, "train_s": sum(timer.times),
                         "accuracy": accuracy})
            print(f"(b) seed {seed} {recipe:10s} {sum(timer.times):6.1f}s  clean {accuracy['clean']:.3f}"
                  f"  worst-case robust {accuracy['worst']:.3f}", flush=True)
    summary = {}
    for recipe in RECIPES_B:
        rows = [r for r in runs if r["recipe"] == recipe]
        summary[recipe] = {
            "train_s_mean": statistics.mean(r["train_s"] for r in rows),
            "train_s_std": statistics.pstdev([r["train_s"] for r in rows]),
            "clean_mean": statistics.mean(r["accuracy"]["clean"] for r in rows),
            "pgd10_mean": statistics.mean(r["accuracy"]["pgd10"] for r in rows),
            "apgd_ce_mean": statistics.mean(r["accuracy"]["apgd_ce"] for r in rows),
            "robust_worst_mean": statistics.mean(r["accuracy"]["worst"] for r in rows),
            "robust_worst_std": statistics.pstdev([r["accuracy"]["worst"] for r in rows]),
            "robust_worst_min": min(r["accuracy"]["worst"] for r in rows),
        }
    return {
        "setup": {"data": "sklearn digits 16x16, split seed = run seed", "model": f"SmallCNN(width={args.width_b}, hidden={args.hidden_b})",
                  "batch": 64, "eps": EPS, "epochs": args.epochs_b, "free_at_epochs": "epochs / m",
                  "recipe_args": RECIPE_ARGS, "seeds": args.seeds_b,
                  "evaluation": "test split; per-sample worst case of PGD-10 (alpha eps/4) and APGD-CE (20 steps)"},
        "runs": runs,
        "summary": summary,
    }


def plot_recipes(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for recipe, row in result["summary"].items():
        ax.errorbar(row["train_s_mean"], row["robust_worst_mean"], xerr=row["train_s_std"],
                    yerr=row["robust_worst_std"], fmt=MARKERS.get(recipe, "o"), capsize=3, label=recipe)
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel(f"robust accuracy, worst of PGD-10 / APGD-CE, eps {EPS}")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--parts", default="a,b", help="comma-separated: a (epoch), b (recipes)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode of the compiled variants; default: reduce-overhead "
                             "on CUDA (CUDA graphs), the default mode on CPU ('default' forces it)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend of the compiled variants (aot_eager: smoke tests)")
    parser.add_argument("--variants", default=",".join(VARIANTS_A),
                        help=f"comma-separated variants of (a), from {','.join(VARIANTS_A)}")
    parser.add_argument("--limit-batches", type=int, default=None, help="batches per epoch (smoke runs)")
    parser.add_argument("--seeds-a", type=int, default=2)
    parser.add_argument("--epochs-a", type=int, default=4)
    parser.add_argument("--batch-a", type=int, default=128)
    parser.add_argument("--image-size-a", type=int, default=32)
    parser.add_argument("--width-a", type=int, default=32)
    parser.add_argument("--hidden-a", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds-b", type=int, default=3)
    parser.add_argument("--epochs-b", type=int, default=8)
    parser.add_argument("--width-b", type=int, default=32)
    parser.add_argument("--hidden-b", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS / "adversarial_training.json")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG of part (b); default: next to --out, adversarial_training_digits.png")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the PNG of part (b) from the JSON at --out, run nothing")
    args = parser.parse_args(argv)
    if args.plot_only:
        recipes = json.loads(args.out.read_text())["recipes_digits"]
        setup, run = recipes["setup"], recipes["run"]
        plot_recipes(recipes, args.plot or args.out.with_name(recipes["plot"]),
                     f"digits, {setup['model']}, eps {EPS}, {setup['seeds']} seeds ({run['device']})")
        return recipes
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    if args.compile_mode is None:
        args.compile_mode = "reduce-overhead" if device.type == "cuda" else "default"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS_A]
    if unknown or "torchattacks_by_hand" not in args.variants:
        raise SystemExit(f"--variants: unknown {unknown} or no torchattacks_by_hand baseline; known: {list(VARIANTS_A)}")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"a", "b"}:
        raise SystemExit(f"--parts: expected a subset of a,b, got {args.parts!r}")
    args.tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"rl_bench_at_{os.getpid()}"
    warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec|logging interval|"
                            "val_dataloader|num_training_batches).*")
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "lightning": pl.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": _load(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if "a" in parts:
        report["epoch_pgd10"] = {**bench_epoch(args, device), "run": {**report, "load_average_end": _load()}}
        _update_json(args.out, {"epoch_pgd10": report["epoch_pgd10"]})
        for name, row in report["epoch_pgd10"]["summary"].items():
            print(f"(a) {name:22s} steady epoch {row['steady_epoch_s_median']:.2f}s "
                  f"x{row['speedup_steady_vs_torchattacks']:.2f} vs torchattacks "
                  f"(incl. compile x{row['speedup_total_vs_torchattacks']:.2f}); "
                  f"robust {row['robust_acc_worst_per_seed']}", flush=True)
    if "b" in parts:
        report["recipes_digits"] = {**bench_recipes(args, device), "run": {**report, "load_average_end": _load()}}
        plot = args.plot or args.out.with_name("adversarial_training_digits.png")
        plot_recipes(report["recipes_digits"], plot,
                     f"digits, SmallCNN(width {args.width_b}), eps {EPS}, {args.seeds_b} seeds ({report['device']})")
        report["recipes_digits"]["plot"] = plot.name
        _update_json(args.out, {"recipes_digits": report["recipes_digits"]})
    print(f"wrote {args.out}")
    return report


def _update_json(path: Path, parts: dict[str, Any]) -> None:
    """Replace ``parts`` in the JSON at ``path``, keeping the other part (each part records its
    own command and load), so parts (a) and (b) may run as separate processes."""
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(parts)
        path.write_text(json.dumps(current, indent=2) + "\n")


if __name__ == "__main__":
    main()
