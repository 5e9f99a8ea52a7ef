"""DDoSDetector: a tabular flow detector with standard or constrained adversarial training.

Recipes:
    * ``standard``: cross-entropy on clean flows.
    * ``constrained_at``: PGD-AT (Madry et al. 2018) with the constrained flow attack
      (:class:`~robust_lightning.attacks.constrained.ConstrainedPGD`): every training batch's
      *attack* flows are replaced by feasible adversarial versions (appended packets, delays,
      budget ``eps``); benign flows stay clean, since the attacker does not control benign
      traffic. The attack is attached as an
      :class:`~robust_lightning.callbacks.AdversarialTraining` callback, through the module
      protocol, like :class:`~robust_lightning.RobustClassifier`'s PGD-AT.

Evaluation logs detection metrics with "attack" as the positive class: ``<stage>/recall``
(detection rate), ``<stage>/precision``, ``<stage>/f1``, ``<stage>/acc`` on clean flows, and
``<stage>/recall_adv/<attack>``, ``<stage>/precision_adv/<attack>``, ``<stage>/f1_adv/<attack>``
when every attack flow of the split is replaced by the constrained attack's output (benign flows
untouched: evasion is what the attacker wants). With several evaluation dataloaders (a
:class:`~robust_lightning.datamodules.DomainGeneralizationDataModule`, for cross-dataset tests)
every key ends in ``/<domain>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import BinaryAccuracy, BinaryStatScores
from typing_extensions import override

from robust_lightning._validation import check_choice, check_instance
from robust_lightning.attacks.constrained import ConstrainedPGD
from robust_lightning.attacks.core import attack_mode, parse_budget
from robust_lightning.attacks.generators import RankGenerator
from robust_lightning.errors import InvalidArgumentError
from robust_lightning.flow_schema import check_features
from robust_lightning.lightning_modules.base import RobustMethod
from robust_lightning.lightning_modules.ddos.model import SignedLogStandardize
from robust_lightning.protocol import split_batch

__all__ = ["RECIPES", "DDoSDetector", "detection_scores", "margin_loss"]

Recipe = Literal["standard", "constrained_at"]
RECIPES: tuple[str, ...] = ("standard", "constrained_at")
ATTACK = 1  # the positive class


def margin_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Per-flow ``logit[other class] - logit[target]``: > 0 when the flow is misclassified.

    The attacks maximise this margin rather than the cross-entropy, whose gradient underflows
    to zero on flows the detector is very sure about (a masked gradient, not robustness).
    """
    logits = logits.float()
    own = logits.gather(1, target[:, None]).squeeze(1)
    other = logits.gather(1, (1 - target)[:, None]).squeeze(1)
    return other - own


def detection_scores(stats: Tensor) -> dict[str, Tensor]:
    """Recall, precision, F1 and accuracy of ``[tp, fp, tn, fn, support]`` (0 where undefined)."""
    tp, fp, tn, fn = (stats[i].double() for i in range(4))

    def ratio(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(b > 0, a / b.clamp_min(1), torch.zeros_like(a)).float()

    return {"recall": ratio(tp, tp + fn), "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "acc": ratio(tp + tn, tp + tn + fp + fn)}


class DDoSDetector(RobustMethod):
    """Binary flow detector (benign 0 / attack 1) on raw CICFlowMeter features.

    Args:
        model: network mapping normalised flows ``(B, F)`` to logits ``(B, 2)``
            (:class:`~robust_lightning.lightning_modules.ddos.TabularMLP` or ``TabularCNN``).
        features: canonical features in input order (``None``: the default set); must match
            the DataModule's.
        recipe: ``"standard"`` or ``"constrained_at"``.
        eps: training attack's log-growth budget (packets and time scale grow by ``<= e^eps``).
        alpha: training attack's control-space step (``None``: ``eps / 4``).
        steps: training attack's PGD steps.
        search: training attack's random control points tried before PGD (see
            :func:`~robust_lightning.attacks.constrained.constrained_pgd`).
        max_payload: largest payload of an appended packet (bytes).
        max_gap_us: largest gap between appended packets (µs).
        eval_eps: budgets of the evaluation attacks (``None``: ``[eps]``; ``[]``: clean only).
        eval_steps: PGD steps per run of the evaluation attacks.
        eval_restarts: PGD runs of the evaluation attacks (best feasible flow kept).
        eval_search: random control points the evaluation attacks try first.
        eval_seed: seed of the evaluation attacks' random starts (restarted every epoch).
        class_weights: optional cross-entropy weights ``[benign, attack]`` for imbalanced data.
        domain_names: names of the evaluation dataloaders (``None``: the DataModule's
            ``domain_names`` when it has them).
        optimizer: callable building the optimizer (``None``: AdamW, lr 1e-3, weight decay 1e-4).
        lr_scheduler: optional callable building a scheduler.
        scheduler_interval: ``"epoch"`` or ``"step"``.
    """

    def __init__(
        self,
        model: nn.Module,
        features: Sequence[str] | None = None,
        recipe: Recipe = "standard",
        eps: float = 0.7,
        alpha: float | None = None,
        steps: int = 5,
        search: int = 16,
        max_payload: int = 1460,
        max_gap_us: float = 1e6,
        eval_eps: Sequence[float] | None = None,
        eval_steps: int = 10,
        eval_restarts: int = 3,
        eval_search: int = 64,
        eval_seed: int = 0,
        class_weights: Sequence[float] | None = None,
        domain_names: Sequence[str] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval, domain_names)
        check_instance("model", model, nn.Module, "an nn.Module (e.g. TabularMLP)")
        check_choice("recipe", recipe, RECIPES)
        self.features = check_features(features)
        width = getattr(model, "num_features", len(self.features))
        if width != len(self.features):
            raise ValueError(f"model takes {width} features but features lists {len(self.features)}")
        if getattr(model, "num_classes", 2) != 2:
            raise ValueError(f"model must output 2 logits (benign, attack), got num_classes={model.num_classes}")
        eval_eps = [eps] if eval_eps is None else list(eval_eps)
        if class_weights is not None and (len(class_weights) != 2 or any(float(w) <= 0 for w in class_weights)):
            raise InvalidArgumentError(
                f"class_weights must be two positive numbers [benign, attack], got {class_weights!r}")
        # The network and callables are rebuilt from the saved config, not pickled into the
        # checkpoint, which keeps checkpoints loadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])
        self.model = model
        self.normalizer = SignedLogStandardize(len(self.features))
        self.recipe = recipe
        self.eps = parse_budget(eps, "eps")
        attack_args = {"features": self.features, "max_payload": max_payload, "max_gap_us": max_gap_us}
        self.training_attack = (ConstrainedPGD(eps=eps, alpha=alpha, steps=steps, search=search, **attack_args)
                                if recipe == "constrained_at" else None)
        self.eval_attacks = [ConstrainedPGD(eps=e, steps=eval_steps, restarts=eval_restarts, search=eval_search,
                                            **attack_args) for e in eval_eps]
        names = [a.name for a in self.eval_attacks]
        if len(set(names)) != len(names):
            raise ValueError(f"eval_eps repeats a budget: {eval_eps}")
        self.register_buffer("class_weights", None if class_weights is None else
                             torch.tensor([float(w) for w in class_weights]), persistent=False)
        self.train_acc = BinaryAccuracy()
        self._eval_rng = RankGenerator(eval_seed)

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Fits the input normaliser on the DataModule's training flows (once; checkpoints keep it)."""
        if self.normalizer.fitted or self._trainer is None:
            return
        datamodule = self.trainer.datamodule
        modules = [datamodule, getattr(datamodule, "source", None), *getattr(datamodule, "targets", {}).values()]
        for module in modules:
            layout = getattr(module, "features", None)
            if layout is not None and tuple(layout) != self.features:
                raise ValueError(f"the DataModule's features {list(layout)} differ from the model's {list(self.features)}")
        source = next((m for m in modules if hasattr(m, "train_features")), None)
        if source is None:
            if stage == "fit":
                raise RuntimeError(
                    "DDoSDetector fits its normaliser on the training flows: use a FlowDataModule (or a "
                    "DomainGeneralizationDataModule whose source is one), or call model.normalizer.fit(x_train) first"
                )
            rank_zero_warn("DDoSDetector's normaliser is not fitted; load a checkpoint or call model.normalizer.fit")
            return
        self.normalizer.fit(source.train_features().to(self.normalizer.mean.device))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, 2)`` of raw flows ``(B, F)``."""
        return self.model(self.normalizer(x))

    # -- module protocol -----------------------------------------------------------------------------
    def attack_loss(self, inputs: Tensor, batch: Any) -> Tensor:
        """The margin the attacks maximise (:func:`margin_loss`), training and evaluation alike."""
        return margin_loss(self(inputs), split_batch(batch)[1])

    def with_adversarial_inputs(self, batch: Any, inputs_adv: Tensor) -> Any:
        """Only attack flows take their adversarial version: benign traffic is not the attacker's."""
        x, y = split_batch(batch)
        attacked = (y == ATTACK)[:, None]
        return super().with_adversarial_inputs(batch, torch.where(attacked, inputs_adv.to(x.dtype), x))

    # -- training ------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = split_batch(batch)
        logits = self(x)
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        self.train_acc(logits.detach().argmax(dim=1), y)
        self.log("train/loss", loss.detach(), prog_bar=True)
        self.log("train/acc", self.train_acc, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    # -- evaluation ----------------------------------------------------------------------------------
    def _scores(self, stage: str, dataloader_idx: int, which: str) -> BinaryStatScores:
        # One stat-score counter per (stage, dataloader, clean | attack index).
        return self.domain_metric(stage, dataloader_idx, BinaryStatScores, which)  # type: ignore[return-value]

    @override
    def evaluation_step(self, batch: Any, stage: str, dataloader_idx: int = 0) -> None:
        x, y = split_batch(batch)
        logits = self(x)
        preds = logits.argmax(dim=1)
        self._scores(stage, dataloader_idx, "clean").update(preds, y)
        suffix = self.domain_suffix(stage, dataloader_idx)
        self.log(f"{stage}/loss{suffix}", F.cross_entropy(logits, y), sync_dist=True, add_dataloader_idx=False)
        attacked = y == ATTACK
        if not self.eval_attacks:
            return
        generator = self._eval_rng.get(x.device, self.global_rank)
        with torch.inference_mode(False):
            # Lightning evaluates under inference_mode; the targets enter the attack's graph.
            x_attack, y_attack = x[attacked].clone(), y[attacked].clone()
        for index, attack in enumerate(self.eval_attacks):
            preds_adv = preds.clone()
            if bool(attacked.any()):
                with attack_mode(self, "eval"):
                    x_adv = attack(lambda z: margin_loss(self(z), y_attack), x_attack, generator=generator)
                preds_adv[attacked] = self(x_adv).argmax(dim=1)
            self._scores(stage, dataloader_idx, f"a{index}").update(preds_adv, y)

    @override
    def on_evaluation_epoch_end(self, stage: str) -> None:
        for suffix, which, stats in self.domain_results(stage):
            scores = detection_scores(stats)
            if which == "clean":
                for name, value in scores.items():
                    self.log(f"{stage}/{name}{suffix}", value, prog_bar=name == "f1", add_dataloader_idx=False)
            else:
                attack = self.eval_attacks[int(which[1:])].name
                for name in ("recall", "precision", "f1"):
                    self.log(f"{stage}/{name}_adv/{attack}{suffix}", scores[name], add_dataloader_idx=False)

    @override
    def on_evaluation_epoch_start(self, stage: str) -> None:
        self._eval_rng.reset(self.device, self.global_rank)

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Attack probabilities ``(B,)``."""
        inputs = batch if isinstance(batch, Tensor) else split_batch(batch)[0]
        return F.softmax(self(inputs), dim=1)[:, ATTACK]
