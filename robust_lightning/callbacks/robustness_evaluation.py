"""RobustnessEvaluation: clean and attacked accuracy during validation and test.

Beyond per-attack accuracy it offers what a reviewer asks for (Croce & Hein 2020, Sec. 5;
Carlini et al. 2019, "On Evaluating Adversarial Robustness"):

* eps sweeps (``eps=[0, 2/255, 4/255, 8/255]``) with a CSV table and an accuracy-vs-eps plot
  saved in the run dir (and logged to W&B as a Table and an Image);
* the worst case over all attacks (``worst_case=True``), AutoAttack-style: a sample is robust
  only if it survives every attack, and each attack runs only on still-robust samples;
* sanity checks for broken evaluations and gradient masking, warned about and logged as
  ``<stage>/sanity/<check>`` metrics (1 = the sign was seen) and W&B summary booleans
  ``<stage>/sanity_flags/<check>``.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from torch import Tensor
from torchmetrics.aggregation import MeanMetric, SumMetric

from robust_lightning._validation import check_int_at_least
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import attack_mode, eps_tag, parse_budget
from robust_lightning.attacks.engine import AttackEngine, AttackPrecision
from robust_lightning.attacks.ensemble import worst_case_robustness
from robust_lightning.attacks.generators import RankGenerator
from robust_lightning.callbacks._common import (
    grad_enabled_batch,
    precision_context,
    report_dir,
    run_attack,
)
from robust_lightning.protocol import index_batch, protocol_method

__all__ = ["SANITY_CHECKS", "RobustnessEvaluation"]

CLEAN = "clean"
# Accuracy differences below this are noise, not a sign of a broken evaluation.
_ACC_TOLERANCE = 1e-3
SANITY_CHECKS: dict[str, str] = {
    "acc_rises_with_eps": "robust accuracy rises with eps for the same attack: the attack is "
                          "failing to find perturbations it found at a smaller budget",
    "attacked_above_clean": "accuracy under attack is higher than clean accuracy",
    "loss_not_increasing": "the attack ended at a lower loss than the clean input on average "
                           "(the attack is not ascending the loss)",
    "randomized_outputs": "the model gives different outputs for the same input twice in eval "
                          "mode (randomised defence: use EOT attacks)",
    "zero_gradients": "the loss has an exactly zero input gradient for some correctly classified "
                      "samples (gradient masking or a non-differentiable model)",
}


class RobustnessEvaluation(Callback):
    """Accuracy under each attack, logged as ``val/robust_acc/<attack>`` and ``test/...``.

    Works under Lightning's default ``inference_mode=True``: the callback leaves inference mode
    for the attack and clones the batch. Attacks run on the unwrapped module; each rank attacks
    its own shard and accuracies are reduced across ranks (sums of correct and seen samples),
    so the logged value is the global accuracy. ``<stage>/robust_acc/clean`` is the clean
    accuracy on exactly the samples attacked.

    Args:
        attacks: attacks to evaluate, each logged under its ``name``.
        eps: optional sweep: every attack is evaluated at each radius (``attack.with_eps``);
            values may be fractions like ``"8/255"``. ``None`` uses each attack's own eps.
        worst_case: also log ``robust_acc/worst_case_<norm>_eps<k>``, the accuracy against the
            whole ensemble at each radius, computed on still-robust samples only.
        every_n_epochs: during ``fit``, run in every n-th validation epoch (epoch indices
            n-1, 2n-1, ...); ``trainer.validate`` and ``trainer.test`` always run.
        limit_batches: evaluate only the first n batches of each epoch (``None``: all).
        model_mode: mode the model is attacked in (``"eval"`` matches deployment).
        seed: random starts restart from this seed at every evaluation, so numbers are
            comparable across epochs and reproducible after resuming.
        sanity_checks: run the checks in :data:`SANITY_CHECKS`.
        report: write ``robustness_<stage>.csv`` and, for sweeps, ``robustness_<stage>.png``
            into the run dir at the end of testing and of fitting.
        compile: compile the attacks' input-gradient computation (:class:`AttackEngine`).
        channels_last: attack in channels-last memory format.
        attack_precision: ``"bf16"``, ``"fp32"`` or ``None`` (follow the trainer), as in
            :class:`~robust_lightning.callbacks.AdversarialTraining`.
    """

    def __init__(
        self,
        attacks: Sequence[Attack],
        eps: Sequence[float | str] | None = None,
        worst_case: bool = False,
        every_n_epochs: int = 1,
        limit_batches: int | None = None,
        model_mode: Literal["eval", "train"] = "eval",
        seed: int = 0,
        sanity_checks: bool = True,
        report: bool = True,
        compile: bool = False,
        channels_last: bool = False,
        attack_precision: AttackPrecision = None,
    ) -> None:
        attacks = [attacks] if isinstance(attacks, Attack) else list(attacks)
        if not attacks:
            raise ValueError("attacks must name at least one attack, e.g. [PGD(eps='8/255')]")
        for attack in attacks:
            if not isinstance(attack, Attack):
                raise TypeError(f"attacks must be Attack instances, got {type(attack).__name__}")
        radii = None if eps is None else [parse_budget(e, "eps") for e in eps]
        if radii is not None and (not radii or any(r < 0 for r in radii)):
            raise ValueError(f"eps must be a non-empty list of radii >= 0, got {eps!r}")
        self.base_attacks = attacks
        self.eps = radii
        self.attacks = [a.with_eps(r) for a in attacks for r in radii] if radii is not None else attacks
        names = [a.name for a in self.attacks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates or CLEAN in names:
            raise ValueError(f"attack names must be unique and not {CLEAN!r}; repeated: {duplicates}; "
                             "pass name=... to tell them apart")
        check_int_at_least("every_n_epochs", every_n_epochs, 1)
        if limit_batches is not None:
            check_int_at_least("limit_batches", limit_batches, 1, reason="or None for all batches")
        if model_mode not in ("eval", "train"):
            raise ValueError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        self.worst_case = bool(worst_case)
        self.every_n_epochs = every_n_epochs
        self.limit_batches = limit_batches
        self.model_mode = model_mode
        self.seed = seed
        self.sanity_checks = bool(sanity_checks)
        self.report = bool(report)
        self._rng = RankGenerator(seed)
        self.engine = AttackEngine(compile=compile, channels_last=channels_last,
                                   attack_precision=attack_precision)
        self._metrics: dict[str, MeanMetric] = {}
        self._counters: dict[str, SumMetric] = {}
        self._active = False
        self._checked_randomness = False
        self.last_results: dict[str, dict[str, float]] = {}

    # -- groups of attacks sharing a budget (worst case is per norm and radius) --------------
    def _worst_case_groups(self) -> dict[str, list[Attack]]:
        groups: dict[str, list[Attack]] = defaultdict(list)
        for attack in self.attacks:
            groups[f"worst_case_{attack.norm}_{eps_tag(attack.eps)}"].append(attack)
        return dict(groups)

    def _should_run(self, trainer: pl.Trainer, stage: str) -> bool:
        if trainer.sanity_checking:
            return False
        if stage == "val" and trainer.state.fn == TrainerFn.FITTING:
            # every_n_epochs thins validation during fit; an explicit trainer.validate always runs.
            return (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return True

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._active = self._should_run(trainer, stage)
        if not self._active:
            return
        names = [CLEAN, *(a.name for a in self.attacks)]
        if self.worst_case:
            names += list(self._worst_case_groups())
        counters = [f"loss_clean/{a.name}" for a in self.attacks] + [f"loss_adv/{a.name}" for a in self.attacks]
        counters += ["randomized_outputs", "zero_gradients"]
        # States made under Lightning's inference_mode could not be updated by the attack
        # code, which runs outside it; build them as ordinary tensors.
        with torch.inference_mode(False):
            self._metrics = {n: MeanMetric(sync_on_compute=True).to(pl_module.device) for n in names}
            self._counters = {n: SumMetric(sync_on_compute=True).to(pl_module.device) for n in counters}
        self._checked_randomness = False
        self._rng.reset(pl_module.device, trainer.global_rank)

    # -- per batch ---------------------------------------------------------------------------
    def _evaluate_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._active or (self.limit_batches is not None and batch_idx >= self.limit_batches):
            return
        correct_fn = protocol_method(pl_module, "prediction_correct")
        loss_fn = protocol_method(pl_module, "attack_loss")
        with grad_enabled_batch(batch) as batch:
            inputs = protocol_method(pl_module, "attack_inputs")(batch)
            batch_size = inputs.shape[0]
            generator = self._rng.get(inputs.device, trainer.global_rank)
            with attack_mode(pl_module, self.model_mode), precision_context(trainer):
                clean_correct = correct_fn(inputs, batch)
                self._metrics[CLEAN].update(clean_correct.float())
                if self.sanity_checks and not self._checked_randomness:
                    self._check_randomness_and_gradients(pl_module, loss_fn, inputs, batch, clean_correct)
                for attack in self.attacks:
                    inputs_adv = run_attack(attack, pl_module, batch, inputs, generator, self.engine)
                    self._metrics[attack.name].update(correct_fn(inputs_adv, batch).float())
                    if self.sanity_checks and getattr(attack, "white_box", True):
                        with torch.no_grad():
                            self._counters[f"loss_clean/{attack.name}"].update(loss_fn(inputs, batch).float().sum())
                            self._counters[f"loss_adv/{attack.name}"].update(loss_fn(inputs_adv, batch).float().sum())
                if self.worst_case:
                    for group, attacks in self._worst_case_groups().items():
                        def attack_subset(attack: Attack, index: Tensor) -> Tensor:
                            sub_batch = index_batch(batch, index, batch_size)
                            return run_attack(attack, pl_module, sub_batch, inputs[index], generator)

                        def correct_subset(x: Tensor, index: Tensor) -> Tensor:
                            return correct_fn(x, index_batch(batch, index, batch_size))

                        robust, _ = worst_case_robustness(attacks, inputs, attack_subset, correct_subset)
                        self._metrics[group].update(robust.float())

    def _check_randomness_and_gradients(self, pl_module, loss_fn, inputs, batch, clean_correct) -> None:
        self._checked_randomness = True
        with torch.no_grad():
            first, second = loss_fn(inputs, batch), loss_fn(inputs, batch)
        self._counters["randomized_outputs"].update(float(not torch.equal(first, second)))
        probe = inputs.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(probe, batch).sum(), probe, allow_unused=True)
        if grad is None:
            zero = torch.ones_like(clean_correct)
        else:
            zero = grad.flatten(1).abs().amax(dim=1) == 0
        # Confident correct predictions can underflow to an exactly zero gradient in fp32; only
        # count it when it happens to a sizeable share of the batch, as AutoAttack does.
        self._counters["zero_gradients"].update(float((zero & clean_correct).float().mean() > 0.1))

    # -- end of epoch --------------------------------------------------------------------------
    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._active:
            return
        self._active = False
        results: dict[str, float] = {}
        for name, metric in self._metrics.items():
            # Every rank calls compute() (a collective); the reduced mean covers all samples.
            if metric.update_count == 0 and not torch.distributed.is_initialized():
                continue
            value = metric.compute()
            results[name] = float(value)
            pl_module.log(f"{stage}/robust_acc/{name}", value, sync_dist=True)
        if self.sanity_checks:
            counters = {n: float(c.compute()) for n, c in self._counters.items()
                        if c.update_count > 0 or torch.distributed.is_initialized()}
            flags = self._sanity_flags(results, counters)
            for flag, raised in flags.items():
                pl_module.log(f"{stage}/sanity/{flag}", float(raised), sync_dist=True)
            self._report_flags(trainer, stage, flags)
        self.last_results[stage] = results

    def _sanity_flags(self, results: dict[str, float], counters: dict[str, float]) -> dict[str, bool]:
        clean = results.get(CLEAN, math.nan)
        flags = {check: False for check in SANITY_CHECKS}
        flags["attacked_above_clean"] = any(
            results.get(a.name, -1.0) > clean + _ACC_TOLERANCE for a in self.attacks
        )
        if self.eps is not None:
            for base in self.base_attacks:
                accuracies = [results.get(base.with_eps(r).name) for r in sorted(self.eps)]
                accuracies = [a for a in accuracies if a is not None]
                if any(later > earlier + _ACC_TOLERANCE for earlier, later in zip(accuracies, accuracies[1:])):
                    flags["acc_rises_with_eps"] = True
        for attack in self.attacks:
            clean_loss = counters.get(f"loss_clean/{attack.name}")
            adv_loss = counters.get(f"loss_adv/{attack.name}")
            if clean_loss is not None and adv_loss is not None and attack.eps > 0 and adv_loss < clean_loss - 1e-6:
                flags["loss_not_increasing"] = True
        flags["randomized_outputs"] = counters.get("randomized_outputs", 0.0) > 0
        flags["zero_gradients"] = counters.get("zero_gradients", 0.0) > 0
        return flags

    @rank_zero_only
    def _report_flags(self, trainer: pl.Trainer, stage: str, flags: dict[str, bool]) -> None:
        for flag, raised in flags.items():
            if raised:
                rank_zero_warn(f"RobustnessEvaluation ({stage}): {SANITY_CHECKS[flag]} [{stage}/sanity/{flag}]")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                # A key of its own: the logged metric of the same name would overwrite the
                # summary entry with its last float value when the epoch's metrics are flushed.
                for flag, raised in flags.items():
                    logger.experiment.summary[f"{stage}/sanity_flags/{flag}"] = raised

    # -- report: CSV table and accuracy-vs-eps plot -------------------------------------------
    def report_rows(self, stage: str) -> list[dict[str, Any]]:
        """Rows ``attack, norm, eps, accuracy`` of the last evaluation of ``stage``."""
        results = self.last_results.get(stage, {})
        rows = [{"attack": CLEAN, "norm": "", "eps": 0.0, "accuracy": results[CLEAN]}] if CLEAN in results else []
        for attack in self.attacks:
            if attack.name in results:
                rows.append({"attack": attack.kind, "norm": attack.norm, "eps": attack.eps,
                             "accuracy": results[attack.name]})
        if self.worst_case:
            for group, attacks in self._worst_case_groups().items():
                if group in results:
                    rows.append({"attack": "worst_case", "norm": attacks[0].norm, "eps": attacks[0].eps,
                                 "accuracy": results[group]})
        return rows

    def write_report(self, trainer: pl.Trainer, stage: str) -> Path | None:
        """Write the CSV (and the plot for sweeps) into the run dir; log them to W&B.

        Called on every rank: ``trainer.log_dir`` is a collective under DDP, so it is resolved
        everywhere and only rank 0 writes.
        """
        return self._write_report(trainer, stage, report_dir(trainer))

    @rank_zero_only
    def _write_report(self, trainer: pl.Trainer, stage: str, run_dir: Path) -> Path | None:
        rows = self.report_rows(stage)
        if not rows:
            return None
        run_dir.mkdir(parents=True, exist_ok=True)
        table_path = run_dir / f"robustness_{stage}.csv"
        with table_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["attack", "norm", "eps", "accuracy"])
            writer.writeheader()
            writer.writerows(rows)
        plot_path = self._plot(rows, run_dir / f"robustness_{stage}.png", stage) if self.eps is not None else None
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log({f"{stage}/robustness_table": wandb.Table(
                    columns=list(rows[0]), data=[list(r.values()) for r in rows])})
                if plot_path is not None:
                    logger.experiment.log({f"{stage}/robustness_plot": wandb.Image(str(plot_path))})
        rank_zero_info(f"Robustness report written to {table_path}")
        return table_path

    @staticmethod
    def _plot(rows: list[dict[str, Any]], path: Path, stage: str) -> Path:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        in_255 = all(abs(r["eps"] * 255 - round(r["eps"] * 255)) < 1e-6 for r in rows)
        scale, unit = (255.0, "eps (x/255)") if in_255 else (1.0, "eps")
        figure, axis = plt.subplots(figsize=(5.5, 3.8), dpi=110)
        curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
        clean = None
        for row in rows:
            if row["attack"] == CLEAN:
                clean = row["accuracy"]
            else:
                curves[f"{row['attack']} ({row['norm']})"].append((row["eps"] * scale, row["accuracy"]))
        for label, points in curves.items():
            points.sort()
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        if clean is not None:
            axis.axhline(clean, color="grey", linestyle="--", label="clean")
        axis.set(xlabel=unit, ylabel="accuracy", ylim=(0, 1.02), title=f"Robust accuracy vs eps ({stage})")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path)
        plt.close(figure)
        return path

    # -- Lightning hooks -------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._evaluate_batch(trainer, pl_module, batch, batch_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._evaluate_batch(trainer, pl_module, batch, batch_idx)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")
        if self.report:
            self.write_report(trainer, "test")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Print the last validation accuracies so a run ends with its headline numbers."""
        if self.report and not trainer.sanity_checking:
            self.write_report(trainer, "val")
        rows = {k: float(v) for k, v in trainer.callback_metrics.items()
                if k == "val/acc" or k.startswith("val/robust_acc/")}
        if rows:
            width = max(len(k) for k in rows)
            lines = [f"  {k:<{width}}  {v:.4f}" for k, v in sorted(rows.items())]
            rank_zero_info("Final validation accuracy (clean and under attack):\n" + "\n".join(lines))

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}
