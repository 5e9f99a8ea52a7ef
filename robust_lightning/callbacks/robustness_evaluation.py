"""RobustnessEvaluation: clean and attacked accuracy during validation and test.

Beyond per-attack accuracy it offers what a reviewer asks for (Croce & Hein 2020, Sec. 5;
Carlini et al. 2019, "On Evaluating Adversarial Robustness"):

* eps sweeps (``eps=[0, 2/255, 4/255, 8/255]``) with a CSV table and an accuracy-vs-eps plot
  saved in the run dir (and logged to W&B as a Table and an Image);
* the worst case over all attacks (``worst_case=True``): a sample is robust only if it
  survived every attack's own run of this evaluation *and* an AutoAttack-style ensemble run on
  the samples still robust after them, so ``worst_case`` is never above any single attack;
* early exit (``early_exit=True``): as in AutoAttack, attacks only run on the samples the model
  classifies correctly (the others are not robust whatever the attack does), and APGD stops
  computing a sample once it is fooled;
* a report per attack and radius: robust accuracy, attack success rate on the initially correct
  samples, mean/median L-inf and L2 norms of the successful perturbations, per-class robust
  accuracy, and, for minimal-norm attacks (FAB), robust accuracy as a function of the radius
  (the CDF of the minimal adversarial norms);
* sanity checks for broken evaluations and gradient masking, warned about and logged as
  ``<stage>/sanity/<check>`` metrics (1 = the sign was seen) and W&B summary booleans
  ``<stage>/sanity_flags/<check>``.

Attacks from torchattacks or ART join the same report through
:class:`~robust_lightning.attacks.ExternalAttack` (bare torchattacks/ART objects are wrapped).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from torch import Tensor
from torchmetrics.aggregation import CatMetric, MeanMetric, SumMetric
from typing_extensions import override

from robust_lightning._validation import check_int_at_least
from robust_lightning.attacks.autoattack import perturbation_within_budget
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import attack_mode, eps_tag, parse_budget
from robust_lightning.attacks.engine import AttackEngine, AttackPrecision
from robust_lightning.attacks.ensemble import worst_case_robustness
from robust_lightning.attacks.external import (
    ExternalAttack,
    is_art_attack,
    is_torchattacks_attack,
)
from robust_lightning.attacks.generators import RankGenerator
from robust_lightning.callbacks._common import (
    _logits,
    grad_enabled_batch,
    precision_context,
    report_dir,
    run_attack,
)
from robust_lightning.protocol import (
    check_class_targets,
    index_batch,
    logits_of,
    protocol_method,
    split_batch,
)

__all__ = ["SANITY_CHECKS", "RobustnessEvaluation"]

CLEAN = "clean"
# Accuracy differences below this are noise, not a sign of a broken evaluation.
_ACC_TOLERANCE = 1e-3
# Square (score-based) beating every gradient attack at the same budget by more than this is
# the classic sign of gradient masking (Croce & Hein 2020, Sec. 5; Carlini et al. 2019).
SQUARE_MARGIN = 0.01
# Inside one AutoAttack run, fra31/auto-attack ``checks.check_square_sr`` warns once Square
# lowers the running robust accuracy by more than 0.2 points after the gradient attacks.
AUTOATTACK_SQUARE_MARGIN = 0.002
SANITY_CHECKS: dict[str, str] = {
    "acc_rises_with_eps": "robust accuracy rises with eps for the same attack: the attack is "
                          "failing to find perturbations it found at a smaller budget",
    "attacked_above_clean": "accuracy under attack is higher than clean accuracy",
    "loss_not_increasing": "the attack ended at a lower loss than the clean input on average "
                           "(the attack is not ascending the loss)",
    "randomized_outputs": "the model gives different outputs for the same input twice in eval "
                          "mode (randomised defence: use EOT attacks, e.g. AutoAttack(version='rand'))",
    "square_below_gradient": "the score-based Square attack lowers robust accuracy below every "
                             "gradient attack at the same budget (by more than "
                             f"{SQUARE_MARGIN:.0%}, or more than {AUTOATTACK_SQUARE_MARGIN:.1%} "
                             "after AutoAttack's gradient attacks): the gradients are masked",
    "worst_case_above_member": "the worst case over attacks is above one of its attacks (a bug: "
                               "it must never happen)",
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
        attacks: attacks to evaluate, each logged under its ``name``: ours (``PGD``, ``APGD``,
            ``Square``, ``FAB``, ``AutoAttack``, ...) or other libraries' wrapped in
            :class:`~robust_lightning.attacks.ExternalAttack` (a bare torchattacks attack or
            ART evasion attack is wrapped for you).
        eps: optional sweep: every attack is evaluated at each radius (``attack.with_eps``);
            values may be fractions like ``"8/255"``. ``None`` uses each attack's own eps.
        worst_case: also log ``robust_acc/worst_case_<norm>_eps<k>``, the accuracy against all
            attacks at each radius: a sample counts only if it survived each attack's own run
            and an ensemble run (each attack on the samples still robust; ensembles such as
            AutoAttack are not run twice), so it is never above any single attack.
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
        early_exit: attack only the samples classified correctly on the clean input (the others
            count as not robust either way), as AutoAttack does. The reported accuracies are
            those of attacking every sample, except that an attack can no longer "repair" a
            misclassified sample, which also makes ``attacked_above_clean`` unobservable.
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
        early_exit: bool = True,
    ) -> None:
        single = isinstance(attacks, Attack) or is_torchattacks_attack(attacks) or is_art_attack(attacks)
        attacks = [cast(Attack, attacks)] if single else list(attacks)
        if not attacks:
            raise ValueError("attacks must name at least one attack, e.g. [PGD(eps='8/255')]")
        attacks = [a if isinstance(a, Attack) or not (is_torchattacks_attack(a) or is_art_attack(a))
                   else ExternalAttack(a) for a in attacks]
        for attack in attacks:
            if not isinstance(attack, Attack):
                raise TypeError(f"attacks must be Attack instances (or torchattacks/ART attacks), got "
                                f"{type(attack).__name__}")
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
        self.early_exit = bool(early_exit)
        self._rng = RankGenerator(seed)
        self.engine = AttackEngine(compile=compile, channels_last=channels_last,
                                   attack_precision=attack_precision)
        self._metrics: dict[str, MeanMetric] = {}
        self._counters: dict[str, SumMetric] = {}
        self._records: dict[str, CatMetric] = {}
        self._active = False
        self._checked_randomness = False
        self.last_results: dict[str, dict[str, float]] = {}
        # stage -> attack name -> the report's per-attack details (see report_rows).
        self.last_details: dict[str, dict[str, dict[str, Any]]] = {}

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
        for attack in self.attacks:
            if getattr(attack, "is_ensemble", False):
                counters += [f"ensemble/{attack.name}/{member}" for member in self._ensemble_members(attack)]
        # Per-sample records for the report: clean correctness and labels, and per attack the
        # correctness and the perturbation norms (medians need every sample, across ranks too).
        records = ["clean_correct", "target"]
        records += [f"{field}/{a.name}" for a in self.attacks for field in ("correct", "linf", "l2")]
        records += [f"minimal/{a.name}" for a in self.attacks if _is_minimal_norm(a)]
        # States made under Lightning's inference_mode could not be updated by the attack
        # code, which runs outside it; build them as ordinary tensors.
        with torch.inference_mode(False):
            self._metrics = {n: MeanMetric(sync_on_compute=True).to(pl_module.device) for n in names}
            self._counters = {n: SumMetric(sync_on_compute=True).to(pl_module.device) for n in counters}
            self._records = {n: CatMetric(sync_on_compute=True).to(pl_module.device) for n in records}
        self._checked_randomness = False
        self._rng.reset(pl_module.device, trainer.global_rank)

    # -- per batch ---------------------------------------------------------------------------
    @staticmethod
    def _ensemble_members(attack: Attack) -> list[str]:
        return ["clean", *(name for name, _ in cast(Any, attack).members())]

    @staticmethod
    def _class_targets(batch: Any, batch_size: int) -> Tensor | None:
        """The batch's integer class labels, if it has them (for per-class accuracy)."""
        try:
            target = split_batch(batch)[1]
        except TypeError:
            return None
        if isinstance(target, Tensor) and target.shape == (batch_size,) and not target.is_floating_point():
            return target
        return None

    def _attack_batch(self, attack: Attack, pl_module: pl.LightningModule, batch: Any, inputs: Tensor,
                      clean_correct: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Adversarial inputs for the batch and, for minimal-norm attacks, each sample's norm.

        With ``early_exit`` only the samples correct on the clean input are attacked (the others
        keep their clean input and a minimal norm of 0).
        """
        everyone = self._minimal_norm_run if hasattr(attack, "minimize") else self._plain_run
        if not self.early_exit or bool(clean_correct.all()):
            inputs_adv, norms = everyone(attack, pl_module, batch, inputs, generator)
        else:
            inputs_adv = inputs.detach().clone()
            norms = torch.zeros(inputs.shape[0], device=inputs.device) if hasattr(attack, "minimize") else None
            index = clean_correct.nonzero().squeeze(1)
            if index.numel():
                sub_batch = index_batch(batch, index, inputs.shape[0])
                sub_adv, sub_norms = everyone(attack, pl_module, sub_batch, inputs[index], generator)
                inputs_adv[index] = sub_adv.to(inputs_adv.dtype)
                if norms is not None and sub_norms is not None:
                    norms[index] = sub_norms.to(norms.dtype)
        if _is_minimal_norm(attack):
            # A minimal-norm attack may return its point beyond eps: it does not count at eps.
            outside = ~perturbation_within_budget(inputs_adv, inputs, attack.eps, attack.norm)
            if bool(outside.any()):
                inputs_adv = inputs_adv.clone()
                inputs_adv[outside] = inputs[outside].to(inputs_adv.dtype)
        return inputs_adv, norms

    def _plain_run(self, attack: Attack, pl_module: pl.LightningModule, batch: Any, inputs: Tensor,
                   generator: torch.Generator) -> tuple[Tensor, None]:
        return run_attack(attack, pl_module, batch, inputs, generator, self.engine), None

    def _minimal_norm_run(self, attack: Attack, pl_module: pl.LightningModule, batch: Any, inputs: Tensor,
                          generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """FAB-style attacks: one full minimisation gives both the point at eps and the norm."""
        target = split_batch(batch)[1]
        check_class_targets(inputs, target)
        if self.engine.active:
            self.engine.prepare_module(pl_module)
            inputs = self.engine.prepare_inputs(inputs)
            logits = self.engine.wrap(("logits", id(pl_module)), _logits, pl_module)
        else:
            def logits(x: Tensor) -> Tensor:
                return logits_of(pl_module, x, None)
        result = cast(Any, attack).minimize(logits, inputs, target, generator=generator)
        within = (result.norms <= attack.eps).view(-1, *([1] * (inputs.dim() - 1)))
        return torch.where(within, result.x_adv, inputs.detach()), result.norms

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
            target = self._class_targets(batch, batch_size)
            with attack_mode(pl_module, self.model_mode), precision_context(trainer):
                clean_correct = correct_fn(inputs, batch)
                self._metrics[CLEAN].update(clean_correct.float())
                self._records["clean_correct"].update(clean_correct.float())
                self._records["target"].update(
                    (target if target is not None else torch.full_like(clean_correct, -1, dtype=torch.long)).float())
                if self.sanity_checks and not self._checked_randomness:
                    self._check_randomness_and_gradients(pl_module, loss_fn, inputs, batch, clean_correct)
                survived: dict[str, Tensor] = {}
                for attack in self.attacks:
                    previous = getattr(attack, "last_result", None)
                    inputs_adv, norms = self._attack_batch(attack, pl_module, batch, inputs, clean_correct,
                                                           generator)
                    correct = correct_fn(inputs_adv, batch)
                    survived[attack.name] = correct
                    self._metrics[attack.name].update(correct.float())
                    delta = (inputs_adv.detach() - inputs.detach()).flatten(1).float()
                    self._records[f"correct/{attack.name}"].update(correct.float())
                    self._records[f"linf/{attack.name}"].update(delta.abs().amax(dim=1))
                    self._records[f"l2/{attack.name}"].update(delta.norm(dim=1))
                    if f"minimal/{attack.name}" in self._records:
                        if norms is None:  # a minimal-norm attack without minimize(): its output
                            norms = delta.abs().amax(dim=1) if attack.norm == "linf" else delta.norm(dim=1)
                            norms = torch.where(correct, torch.full_like(norms, math.inf), norms)
                        # 0 where the clean input is already wrong, as FAB reports it.
                        norms = torch.where(clean_correct, norms.float(), torch.zeros_like(norms.float()))
                        self._records[f"minimal/{attack.name}"].update(norms)
                    # Only a run on this batch (early exit skips a batch with nothing correct).
                    result = getattr(attack, "last_result", None)
                    if getattr(attack, "is_ensemble", False) and result is not None and result is not previous:
                        for member, count in result.robust_after.items():
                            self._counters[f"ensemble/{attack.name}/{member}"].update(float(count))
                    if self.sanity_checks and getattr(attack, "white_box", True):
                        with torch.no_grad():
                            self._counters[f"loss_clean/{attack.name}"].update(loss_fn(inputs, batch).float().sum())
                            self._counters[f"loss_adv/{attack.name}"].update(loss_fn(inputs_adv, batch).float().sum())
                if self.worst_case:
                    for group, attacks in self._worst_case_groups().items():
                        def attack_subset(attack: Attack, index: Tensor) -> Tensor:
                            sub_batch = index_batch(batch, index, batch_size)
                            return run_attack(attack, pl_module, sub_batch, inputs[index], generator, self.engine)

                        def correct_subset(x: Tensor, index: Tensor) -> Tensor:
                            return correct_fn(x, index_batch(batch, index, batch_size))

                        # Robust only if it survived every attack's own run above...
                        robust = clean_correct.clone()
                        for attack in attacks:
                            robust &= survived[attack.name]
                        # ...and the ensemble run on the samples still robust (new random starts).
                        rerun = [a for a in attacks if not getattr(a, "is_ensemble", False)]
                        if rerun:
                            robust, _ = worst_case_robustness(rerun, inputs, attack_subset, correct_subset,
                                                              robust=robust)
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
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        results: dict[str, float] = {}
        for name, metric in self._metrics.items():
            # Every rank calls compute() (a collective); the reduced mean covers all samples.
            if metric.update_count == 0 and not distributed:
                continue
            value = metric.compute()
            results[name] = float(value)
            pl_module.log(f"{stage}/robust_acc/{name}", value, sync_dist=True)
        counters = {n: float(c.compute()) for n, c in self._counters.items()
                    if c.update_count > 0 or distributed}
        records = {n: r.compute().detach().cpu() for n, r in self._records.items()
                   if r.update_count > 0 or distributed}
        self.last_details[stage] = self._details(records, counters)
        if self.sanity_checks:
            flags = self._sanity_flags(results, counters, self.last_details[stage])
            for flag, raised in flags.items():
                pl_module.log(f"{stage}/sanity/{flag}", float(raised), sync_dist=True)
            self._report_flags(trainer, stage, flags)
        self.last_results[stage] = results

    def _details(self, records: dict[str, Tensor], counters: dict[str, float]) -> dict[str, dict[str, Any]]:
        """Per attack: success rate, norms of successful perturbations, per-class accuracy, curve."""
        clean = records.get("clean_correct")
        if clean is None or clean.numel() == 0:
            return {}
        clean = clean.reshape(-1) > 0.5
        target = records["target"].reshape(-1).long()
        classes = sorted(int(c) for c in target.unique() if c >= 0)
        details: dict[str, dict[str, Any]] = {
            CLEAN: {"per_class": {c: _class_accuracy(clean, target, c) for c in classes}}}
        for attack in self.attacks:
            correct = records.get(f"correct/{attack.name}")
            if correct is None or correct.numel() != clean.numel():
                continue
            correct = correct.reshape(-1) > 0.5
            success = clean & ~correct
            linf, l2 = records[f"linf/{attack.name}"].reshape(-1), records[f"l2/{attack.name}"].reshape(-1)
            entry: dict[str, Any] = {
                "success_rate": float(success.sum()) / max(int(clean.sum()), 1) if clean.any() else math.nan,
                "per_class": {c: _class_accuracy(correct, target, c) for c in classes},
            }
            for label, sizes in (("linf", linf), ("l2", l2)):
                chosen = sizes[success]
                entry[f"{label}_mean"] = float(chosen.mean()) if chosen.numel() else math.nan
                entry[f"{label}_median"] = float(chosen.median()) if chosen.numel() else math.nan
            minimal = records.get(f"minimal/{attack.name}")
            if minimal is not None and minimal.numel() == clean.numel():
                # Robust at radius r: no adversarial point of norm <= r was found (1 - CDF of the
                # minimal norms; misclassified samples have norm 0), over the evaluated radii.
                top = max([float(attack.eps)] + [float(a.eps) for a in self.attacks if a.norm == attack.norm])
                grid = torch.linspace(0.0, top, 41)
                norms = minimal.reshape(-1).double()
                entry["radius_curve"] = [(float(r), float((norms > float(r) * (1 + 1e-4) + 1e-6).double().mean()))
                                         for r in grid]
            if getattr(attack, "is_ensemble", False):
                total = float(clean.numel())
                members = self._ensemble_members(attack)
                entry["running_accuracy"] = {m: counters.get(f"ensemble/{attack.name}/{m}", math.nan) / total
                                             for m in members}
            details[attack.name] = entry
        return details

    def _sanity_flags(self, results: dict[str, float], counters: dict[str, float],
                      details: dict[str, dict[str, Any]] | None = None) -> dict[str, bool]:
        clean = results.get(CLEAN, math.nan)
        flags = {check: False for check in SANITY_CHECKS}
        flags["attacked_above_clean"] = any(
            results.get(a.name, -1.0) > clean + _ACC_TOLERANCE for a in self.attacks
        )
        if self.eps is not None:
            for base in self.base_attacks:
                found = [results.get(base.with_eps(r).name) for r in sorted(self.eps)]
                accuracies = [a for a in found if a is not None]
                if any(later > earlier + _ACC_TOLERANCE for earlier, later in zip(accuracies, accuracies[1:], strict=False)):
                    flags["acc_rises_with_eps"] = True
        for attack in self.attacks:
            clean_loss = counters.get(f"loss_clean/{attack.name}")
            adv_loss = counters.get(f"loss_adv/{attack.name}")
            if clean_loss is not None and adv_loss is not None and attack.eps > 0 and adv_loss < clean_loss - 1e-6:
                flags["loss_not_increasing"] = True
        flags["randomized_outputs"] = counters.get("randomized_outputs", 0.0) > 0
        flags["zero_gradients"] = counters.get("zero_gradients", 0.0) > 0
        for group, attacks in self._worst_case_groups().items():
            members = [results[a.name] for a in attacks if a.name in results]
            if group in results and members and results[group] > min(members) + 1e-6:
                flags["worst_case_above_member"] = True
            squares = [results[a.name] for a in attacks if a.kind == "square" and a.name in results]
            gradient = [results[a.name] for a in attacks if _is_gradient_attack(a) and a.name in results]
            if squares and gradient and min(squares) < min(gradient) - SQUARE_MARGIN:
                flags["square_below_gradient"] = True
        for entry in (details or {}).values():
            running = entry.get("running_accuracy")
            if running and "square" in running:
                names = list(running)
                before = running[names[names.index("square") - 1]]
                if running["square"] < before - AUTOATTACK_SQUARE_MARGIN:
                    flags["square_below_gradient"] = True
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

    # -- report: CSV tables and accuracy-vs-eps plot ------------------------------------------
    def report_rows(self, stage: str) -> list[dict[str, Any]]:
        """Rows of the last evaluation of ``stage``, one per attack and radius.

        Columns: ``attack, norm, eps, accuracy``, then ``success_rate`` (fooled among the
        samples correct on the clean input) and the mean/median L-inf and L2 norms of the
        perturbations that succeeded (``None``, an empty CSV cell, where nothing succeeded).
        """
        results = self.last_results.get(stage, {})
        details = self.last_details.get(stage, {})
        empty = {field: None for field in REPORT_FIELDS[4:]}
        rows = ([{"attack": CLEAN, "norm": "", "eps": 0.0, "accuracy": results[CLEAN], **empty}]
                if CLEAN in results else [])
        for attack in self.attacks:
            if attack.name in results:
                entry = details.get(attack.name, {})
                extra = {field: _cell(entry.get(field)) for field in REPORT_FIELDS[4:]}
                rows.append({"attack": attack.kind, "norm": attack.norm, "eps": attack.eps,
                             "accuracy": results[attack.name], **extra})
        if self.worst_case:
            for group, attacks in self._worst_case_groups().items():
                if group in results:
                    rows.append({"attack": "worst_case", "norm": attacks[0].norm, "eps": attacks[0].eps,
                                 "accuracy": results[group], **empty})
        return rows

    def per_class_rows(self, stage: str) -> list[dict[str, Any]]:
        """Rows ``attack, norm, eps, class, samples, accuracy`` (clean first)."""
        details = self.last_details.get(stage, {})
        rows = []
        named = [(CLEAN, CLEAN, "", 0.0)] + [(a.name, a.kind, a.norm, a.eps) for a in self.attacks]
        for name, kind, norm, eps in named:
            for label, (samples, accuracy) in details.get(name, {}).get("per_class", {}).items():
                rows.append({"attack": kind, "norm": norm, "eps": eps, "class": label, "samples": samples,
                             "accuracy": accuracy})
        return rows

    def radius_rows(self, stage: str) -> list[dict[str, Any]]:
        """Rows ``attack, norm, eps, radius, accuracy``: robust accuracy vs radius from minimal-norm attacks."""
        details = self.last_details.get(stage, {})
        rows = []
        for attack in self.attacks:
            for radius, accuracy in details.get(attack.name, {}).get("radius_curve", []):
                rows.append({"attack": attack.kind, "norm": attack.norm, "eps": attack.eps, "radius": radius,
                             "accuracy": accuracy})
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
        tables = {"robustness_table": (table_path, rows),
                  "robustness_per_class": (run_dir / f"robustness_{stage}_per_class.csv", self.per_class_rows(stage)),
                  "robustness_radius": (run_dir / f"robustness_{stage}_radius.csv", self.radius_rows(stage))}
        for path, table in tables.values():
            if table:
                with path.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=list(table[0]))
                    writer.writeheader()
                    writer.writerows(table)
        radius = tables["robustness_radius"][1]
        plot_path = (self._plot(rows, run_dir / f"robustness_{stage}.png", stage, radius)
                     if self.eps is not None or radius else None)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                for key, (_, table) in tables.items():
                    if table:
                        logger.experiment.log({f"{stage}/{key}": wandb.Table(
                            columns=list(table[0]), data=[list(r.values()) for r in table])})
                if plot_path is not None:
                    logger.experiment.log({f"{stage}/robustness_plot": wandb.Image(str(plot_path))})
        rank_zero_info(f"Robustness report written to {table_path}")
        return table_path

    @staticmethod
    def _plot(rows: list[dict[str, Any]], path: Path, stage: str,
              radius_rows: Sequence[dict[str, Any]] = ()) -> Path:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        radii = [r["eps"] for r in rows] + [r["radius"] for r in radius_rows]
        in_255 = all(abs(r * 255 - round(r * 255)) < 1e-6 for r in radii)
        scale, unit = (255.0, "eps (x/255)") if in_255 else (1.0, "eps")
        figure, axis = plt.subplots(figsize=(5.5, 3.8), dpi=110)
        curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
        clean = None
        for row in rows:
            if row["attack"] == CLEAN:
                clean = row["accuracy"]
            else:
                curves[f"{row['attack']} ({row['norm']})"].append((row["eps"] * scale, row["accuracy"]))
        # Curves often coincide (worst_case on top of its strongest member): every line gets its
        # own marker, dash pattern and width, drawn widest first, so the ones below stay visible.
        count = len(curves)
        for position, (label, points) in enumerate(curves.items()):
            points.sort()
            axis.plot([p[0] for p in points], [p[1] for p in points], label=label,
                      marker=_MARKERS[position % len(_MARKERS)], linestyle=_DASHES[position % len(_DASHES)],
                      linewidth=1.0 + 1.6 * (count - 1 - position) / max(count - 1, 1),
                      markersize=4 + 5 * (count - 1 - position) / max(count - 1, 1),
                      markerfacecolor="none" if position % 2 else None, alpha=0.9, zorder=2 + position)
        minimal: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for row in radius_rows:
            minimal[f"{row['attack']} ({row['norm']}) radius CDF, eps={row['eps'] * scale:g}"].append(
                (row["radius"] * scale, row["accuracy"]))
        for label, points in minimal.items():
            axis.step([p[0] for p in points], [p[1] for p in points], where="post", label=label,
                      linestyle=(0, (1, 1)), linewidth=1.4, color="black", alpha=0.7, zorder=1)
        if clean is not None:
            axis.axhline(clean, color="grey", linestyle="--", label="clean")
        axis.set(xlabel=unit, ylabel="accuracy", ylim=(0, 1.02), title=f"Robust accuracy vs eps ({stage})")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(path)
        plt.close(figure)
        return path

    # -- Lightning hooks -------------------------------------------------------------------
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    @override
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._evaluate_batch(trainer, pl_module, batch, batch_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    @override
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._evaluate_batch(trainer, pl_module, batch, batch_idx)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")
        if self.report:
            self.write_report(trainer, "test")

    @override
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

    @property
    @override
    def state_key(self) -> str:
        # Two evaluations in one Trainer (e.g. L-inf and L2 suites) keep separate states.
        return self._generate_state_key(attacks=[attack.name for attack in self.attacks])

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The attack streams restart from the seed every evaluation epoch, so the seed is the
        # whole state: a resumed run evaluates with the random starts of the run it continues.
        seed = state_dict.get("seed", self.seed)
        if seed != self.seed:
            self.seed = seed
            self._rng = RankGenerator(seed)


REPORT_FIELDS = ("attack", "norm", "eps", "accuracy", "success_rate", "linf_mean", "linf_median",
                 "l2_mean", "l2_median")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DASHES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def _cell(value: Any) -> Any:
    """A table cell: NaN (nothing succeeded) becomes ``None`` (an empty CSV cell, a W&B null)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _class_accuracy(correct: Tensor, target: Tensor, label: int) -> tuple[int, float]:
    members = target == label
    samples = int(members.sum())
    return samples, float(correct[members].float().mean()) if samples else math.nan


def _is_minimal_norm(attack: Attack) -> bool:
    """Attacks that find each sample's smallest adversarial perturbation (FAB's ``minimize``)."""
    return hasattr(attack, "minimize") or bool(getattr(attack, "minimal_norm", False))


def _is_gradient_attack(attack: Attack) -> bool:
    """White-box attacks of our own (not Square, not an ensemble, not an external attack)."""
    return (getattr(attack, "white_box", True) and not getattr(attack, "is_ensemble", False)
            and attack.kind != "square" and not isinstance(attack, ExternalAttack))
