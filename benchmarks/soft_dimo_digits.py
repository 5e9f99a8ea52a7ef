"""Soft-Di[M]O on scikit-learn's 8x8 digits: one-step students vs the T-step MaskGIT teacher.

Per seed (the seed also sets the train/val/test split): an independent evaluation classifier
(``DigitFeatureClassifier``, its own seed, trained on the train split; never used in training)
defines classifier-FD, class accuracy and precision/recall against the held-out test images; a
teacher is trained MaskGIT-style; then each distillation variant starts from that teacher:

* ``dimo``: Di[M]O (sampled tokens, no soft embeddings, no GAN);
* ``soft_no_gan``: soft embeddings, no GAN, no reward;
* ``soft_dimo``: soft embeddings + GAN (the method);
* ``soft_dimo_reward``: soft embeddings + GAN + reward of the teacher run's classifier;

and ``soft_dimo`` is also evaluated after test-time embedding optimisation (``soft_dimo_tteo``).
Teacher rows: T=8 (the reference point), T=1 (one step at the final guidance scale ``1 + w``
of the ramp) and T=1 without guidance. ``real_train`` is the distance of real training images to
the test images (the floor). Sampling speed: images per second of one batch of
``num_samples`` (best of 3, one CPU thread), and the speed-up over the teacher at T=8 measured
in the same process.

Usage::

    python benchmarks/soft_dimo_digits.py                 # 3 seeds -> benchmarks/results/soft_dimo_digits.json
    python benchmarks/soft_dimo_digits.py --seeds 0 --set distill_steps=200 --out /tmp/quick.json
    # seeds as parallel single-thread processes, then one JSON (same numbers as one process):
    for s in 0 1 2; do python benchmarks/soft_dimo_digits.py --seeds $s --out /tmp/sd_$s.json & done; wait
    python benchmarks/soft_dimo_digits.py --merge /tmp/sd_0.json /tmp/sd_1.json /tmp/sd_2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._settings import parse_settings
from robust_lightning.datamodules import DigitsDataModule
from robust_lightning.lightning_modules.soft_dimo import (
    DigitFeatureClassifier,
    DiMODistillation,
    MaskedTokenTeacher,
    SoftDiMODistillation,
    sample_quality,
)
from robust_lightning.lightning_modules.soft_dimo.lightning_module import (
    balanced_labels,
)

RESULTS = Path(__file__).resolve().parent / "results" / "soft_dimo_digits.json"

DEFAULTS: dict[str, Any] = {
    "num_levels": 8, "dim": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "batch_size": 32,
    "teacher_steps": 600, "teacher_lr": 1e-3, "teacher_guidance": 0.5, "gumbel_temperature": 4.5,
    "teacher_steps_eval": 8, "corruption_prob": 0.5,
    "distill_steps": 150, "distill_lr": 1e-3, "teacher_cfg_scale": 1.5, "auxiliary_rounds": 1,
    "embedding_noise": 0.1, "ema_decay": 0.999, "gan_weight": 0.5, "reward_weight": 0.05,
    "tteo_steps": 10, "tteo_lr": 0.05,
    "judge_epochs": 10, "num_samples": 300,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "dimo": {"cls": "dimo", "output": "sample"},
    "soft_no_gan": {"cls": "soft", "gan_weight": 0.0, "reward_weight": 0.0},
    "soft_dimo": {"cls": "soft"},
    "soft_dimo_reward": {"cls": "soft", "reward": True},
}


def _trainer(max_steps: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, limit_val_batches=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def train_judge(data: DigitsDataModule, seed: int, epochs: int) -> DigitFeatureClassifier:
    """The evaluation classifier: trained on the train split only, with a seed of its own."""
    torch.manual_seed(seed)
    judge = DigitFeatureClassifier(width=32)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    images, labels = data.train_dataset.images, data.train_dataset.labels
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(labels), generator=generator).split(64):
            loss = F.cross_entropy(judge(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return judge.eval()


def _data(seed: int, batch_size: int) -> DigitsDataModule:
    data = DigitsDataModule(image_size=8, val_fraction=0.2, test_fraction=0.2, seed=seed, batch_size=batch_size)
    data.setup("fit")
    return data


def _timed(fn: Any, repeats: int = 3) -> tuple[torch.Tensor, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def _evaluate(judge: DigitFeatureClassifier, real: torch.Tensor, labels: torch.Tensor, sample: Any) -> dict[str, float]:
    images, seconds = _timed(sample)
    quality = sample_quality(judge, real, images, labels)
    return {**quality, "samples_per_second": labels.shape[0] / seconds}


def run_seed(seed: int, settings: dict[str, Any], variants: list[str], workdir: Path) -> dict[str, dict[str, float]]:
    """All rows for one seed: {row name: metrics}."""
    data = _data(seed, settings["batch_size"])
    real = data.test_dataset.images
    judge = train_judge(data, seed + 1000, settings["judge_epochs"])
    labels = balanced_labels(settings["num_samples"], 10)
    rows: dict[str, dict[str, float]] = {}
    train_real = data.train_dataset.images[: settings["num_samples"]]
    rows["real_train"] = sample_quality(judge, real, train_real, data.train_dataset.labels[: settings["num_samples"]])

    pl.seed_everything(seed, verbose=False)
    teacher = MaskedTokenTeacher(
        num_levels=settings["num_levels"], dim=settings["dim"], depth=settings["depth"], heads=settings["heads"],
        mlp_dim=settings["mlp_dim"], guidance=settings["teacher_guidance"], corruption_prob=settings["corruption_prob"],
        gumbel_temperature=settings["gumbel_temperature"], sampling_steps=settings["teacher_steps_eval"],
        optimizer=lambda p: torch.optim.AdamW(p, lr=settings["teacher_lr"], weight_decay=0.0))
    trainer = _trainer(settings["teacher_steps"])
    started = time.perf_counter()
    trainer.fit(teacher, datamodule=data)
    print(f"  seed {seed}: teacher trained in {time.perf_counter() - started:.0f}s", flush=True)
    checkpoint = workdir / f"teacher_seed{seed}.ckpt"
    trainer.save_checkpoint(checkpoint, weights_only=True)
    teacher.eval()

    def teacher_sampler(steps: int, guidance: float | None = None) -> Any:
        return lambda: teacher.sample(labels, steps=steps, guidance=guidance,
                                      generator=torch.Generator().manual_seed(seed))

    t_eval = settings["teacher_steps_eval"]
    rows[f"teacher_T{t_eval}"] = _evaluate(judge, real, labels, teacher_sampler(t_eval))
    rows[f"teacher_T{t_eval}_no_guidance"] = _evaluate(judge, real, labels, teacher_sampler(t_eval, guidance=0.0))
    rows["teacher_T1"] = _evaluate(judge, real, labels, teacher_sampler(1))
    rows["teacher_T1_no_guidance"] = _evaluate(judge, real, labels, teacher_sampler(1, guidance=0.0))

    # The generator before distillation (the teacher copy on Di[M]O's 60%-[MASK] / random-token input).
    untrained = DiMODistillation(teacher_checkpoint=str(checkpoint), embedding_noise=settings["embedding_noise"])
    rows["student_init"] = _evaluate(judge, real, labels,
                                     lambda: untrained.sample(labels, generator=torch.Generator().manual_seed(seed)))
    for name in variants:
        variant = dict(VARIANTS[name])
        pl.seed_everything(seed, verbose=False)
        common = {
            "teacher_checkpoint": str(checkpoint), "teacher_cfg_scale": settings["teacher_cfg_scale"],
            "auxiliary_rounds": settings["auxiliary_rounds"], "embedding_noise": settings["embedding_noise"],
            "ema_decay": settings["ema_decay"], "tteo_steps": settings["tteo_steps"], "tteo_lr": settings["tteo_lr"],
            "optimizer": lambda p: torch.optim.AdamW(p, lr=settings["distill_lr"], weight_decay=0.0),
        }
        if variant["cls"] == "dimo":
            model: DiMODistillation = DiMODistillation(output=variant["output"], **common)
        else:
            gan = variant.get("gan_weight", settings["gan_weight"])
            reward = settings["reward_weight"] if variant.get("reward") else variant.get("reward_weight", 0.0)
            model = SoftDiMODistillation(gan_weight=gan, reward_weight=reward, **common)
        started = time.perf_counter()
        _trainer(settings["distill_steps"]).fit(model, datamodule=data)
        train_seconds = time.perf_counter() - started
        model.eval()
        rows[name] = _evaluate(judge, real, labels,
                               lambda model=model: model.sample(labels, generator=torch.Generator().manual_seed(seed)))
        rows[name]["train_seconds"] = train_seconds
        print(f"  seed {seed}: {name} trained in {train_seconds:.0f}s, classifier-FD {rows[name]['classifier_fd']:.2f}",
              flush=True)
        if name == "soft_dimo" and settings["tteo_steps"] > 0:
            rows["soft_dimo_tteo"] = _evaluate(
                judge, real, labels,
                lambda model=model: model.sample_with_tteo(labels, generator=torch.Generator().manual_seed(seed)))
    reference_speed = rows[f"teacher_T{t_eval}"]["samples_per_second"]
    for row in rows.values():
        if "samples_per_second" in row:
            row["speedup_vs_teacher"] = row["samples_per_second"] / reference_speed
    return rows


def summarise(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    names = next(iter(per_seed.values())).keys()
    for name in names:
        metrics = next(iter(per_seed.values()))[name].keys()
        summary[name] = {}
        for metric in metrics:
            values = [per_seed[seed][name][metric] for seed in per_seed]
            summary[name][metric] = {"mean": statistics.fmean(values),
                                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                     "values": values}
    return summary


def markdown_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    columns = [("classifier_fd", "classifier-FD (lower is better)"), ("class_accuracy", "class acc."),
               ("precision", "precision"), ("recall", "recall"), ("speedup_vs_teacher", "speed vs teacher T=8")]
    lines = ["| row | " + " | ".join(title for _, title in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name, metrics in summary.items():
        cells = []
        for key, _ in columns:
            if key in metrics:
                fmt = "{:.1f}x" if key == "speedup_vs_teacher" else "{:.3f}"
                cells.append(f"{fmt.format(metrics[key]['mean'])} +- {metrics[key]['std']:.3f}".replace("x +-", "x +-"))
            else:
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge(paths: list[Path], out: Path) -> dict[str, Any]:
    """One result from per-seed runs with identical settings (e.g. seeds run as parallel processes)."""
    parts = [json.loads(path.read_text()) for path in paths]
    if any(part["settings"] != parts[0]["settings"] for part in parts):
        raise SystemExit("--merge: the runs were made with different settings")
    per_seed = {int(seed): rows for part in parts for seed, rows in part["per_seed"].items()}
    result = {
        "command": " && ".join(part["command"] for part in parts),
        "settings": parts[0]["settings"], "seeds": sorted(per_seed), "threads": parts[0]["threads"],
        "elapsed_seconds": max(part["elapsed_seconds"] for part in parts),
        "per_seed": {str(seed): per_seed[seed] for seed in sorted(per_seed)},
        "summary": summarise({seed: per_seed[seed] for seed in sorted(per_seed)}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result["summary"]))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["dimo", "soft_no_gan", "soft_dimo"], choices=list(VARIANTS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", type=Path, nargs="+", help="combine per-seed JSONs of this script into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    settings = {**DEFAULTS, **parse_settings(args.overrides, DEFAULTS)}
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            per_seed[seed] = run_seed(seed, settings, args.variants, Path(workdir))
            print(f"seed {seed} done after {time.perf_counter() - started:.0f}s", flush=True)
    summary = summarise(per_seed)
    result = {
        "command": "python benchmarks/soft_dimo_digits.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": settings, "seeds": args.seeds, "threads": args.threads,
        "elapsed_seconds": time.perf_counter() - started,
        "per_seed": {str(seed): rows for seed, rows in per_seed.items()}, "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(summary))
    return result


if __name__ == "__main__":
    main()
