"""KGATDetector: plain, adversarial (MTD / cls / loc / combined) and knowledge-guided adversarial
training of any mmdet 3.x detector on infrared images.

Training step (recipe ``adversarial`` or ``kgat``), as ``fit_one_epoch_Knowledge`` in the
released code: the first ``adversarial_images`` images of the batch are attacked
(:class:`~robust_lightning.attacks.detection.DetectionAttack`, MTD by default) and put in front
of the whole clean batch; the detector's loss on that concatenation is

* ``adversarial``: ``loc + cls + other``;
* ``kgat``: ``w_rel * w_rel2 * loc + cls + other`` with the thermal-radiation relation factor
  ``w_rel = 1 - ln(1 + 0.5 rho)`` and the reliability factor ``w_rel2`` (``knowledge.py``).

Evaluation: COCO mAP50 and mAP50:95 (torchmetrics ``MeanAveragePrecision``) on clean images and
under each of ``eval_attacks``: ``val/map50``, ``val/map50_95``, ``val/robust_map50/<attack>``,
``val/robust_map50_95/<attack>`` (``test/...`` alike).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision
from typing_extensions import override

from robust_lightning._checkpoint import load_checkpoint
from robust_lightning._validation import check_choice, check_int_at_least
from robust_lightning.attacks.core import attack_mode
from robust_lightning.attacks.detection import DetectionAttack, split_detection_losses
from robust_lightning.attacks.generators import RankGenerator
from robust_lightning.lightning_modules.base import RobustMethod
from robust_lightning.lightning_modules.kgat.knowledge import (
    knowledge_gray_vectors,
    relation_stability_matrix,
    relation_weight,
    reliability_weight,
    spearman_rho,
)
from robust_lightning.lightning_modules.kgat.model import MMDetDetector

__all__ = ["RECIPES", "KGATDetector"]

Recipe = Literal["plain", "adversarial", "kgat"]
RECIPES: tuple[str, ...] = ("plain", "adversarial", "kgat")


class KGATDetector(RobustMethod):
    """Knowledge-guided adversarial training of an mmdet detector (Zhao et al., KGAT).

    Args:
        detector: mmdet model config: ``"mmdet::<folder>/<file>.py"``, a local config file, or
            the model dict (see :func:`~robust_lightning.lightning_modules.kgat.build_detector_config`).
        num_classes: Object classes (written into every head of the config).
        detector_overrides: Dotted-key overrides of the model config (e.g. a smaller backbone).
        checkpoint: Local detector weights to start from (``weights_only=True``).
        recipe: ``"plain"``, ``"adversarial"`` or ``"kgat"``.
        train_attack: Attack that makes the training examples; default MTD, one step,
            ``eps = alpha = 8/255`` (the released training setting).
        adversarial_images: How many images of each batch are attacked and added (``n``: 4 is
            ``fit_one_epoch_Knowledge``'s default, ``train_adversarial.py`` passes 2); clipped to
            the batch size.
        eval_attacks: Attacks evaluated at validation/test; default MTD, one step, 4/255 (the
            released evaluation setting). ``[]`` evaluates clean mAP only.
        relation_matrix: Path of the ``(K, K)`` relation-stability matrix R (``torch.save`` of a
            tensor, e.g. from ``python -m robust_lightning.lightning_modules.kgat.knowledge``);
            ``None`` computes it from the datamodule's training split at the start of fitting
            (from ``InfraredDetectionDataModule.iter_train_gray``).
        relation_beta: ``beta`` of ``w_rel = 1 - ln(1 + beta rho)`` (0.5).
        knowledge_topk: Predicted boxes per class used for the predicted gray means (5).
        knowledge_score_threshold: Minimum score of those boxes (0.1).
        attack_model_mode: ``"eval"`` (BatchNorm running statistics, our default for every
            attack) or ``"train"`` (the released code attacks in training mode; statistics are
            restored afterwards either way).
        attack_seed: Seed of the attacks' random starts (per rank).
        optimizer: Optimizer factory (``None``: SGD, lr 0.01, momentum 0.9, weight decay 1e-4).
        lr_scheduler: Optional scheduler factory.
        scheduler_interval: ``"epoch"`` or ``"step"``.
    """

    def __init__(
        self,
        detector: str | dict[str, Any],
        num_classes: int,
        detector_overrides: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        recipe: Recipe = "kgat",
        train_attack: DetectionAttack | None = None,
        adversarial_images: int = 4,
        eval_attacks: list[DetectionAttack] | None = None,
        relation_matrix: str | None = None,
        relation_beta: float = 0.5,
        knowledge_topk: int = 5,
        knowledge_score_threshold: float = 0.1,
        attack_model_mode: Literal["eval", "train"] = "eval",
        attack_seed: int | None = 0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)  # type: ignore[arg-type]
        check_choice("recipe", recipe, RECIPES)
        check_int_at_least("adversarial_images", adversarial_images, 1)
        if train_attack is not None and not isinstance(train_attack, DetectionAttack):
            raise ValueError(f"train_attack must be a DetectionAttack, got {type(train_attack).__name__}")
        if eval_attacks is not None and not all(isinstance(a, DetectionAttack) for a in eval_attacks):
            raise ValueError("eval_attacks must be a list of DetectionAttack")
        if not 0.0 <= relation_beta < 1.0:
            raise ValueError(f"relation_beta must be in [0, 1), got {relation_beta!r}")
        check_int_at_least("knowledge_topk", knowledge_topk, 1)
        if not 0.0 <= knowledge_score_threshold < 1.0:
            raise ValueError(f"knowledge_score_threshold must be in [0, 1), got {knowledge_score_threshold!r}")
        check_choice("attack_model_mode", attack_model_mode, ("eval", "train"))
        # Attack objects and factories stay out of the hyperparameters so checkpoints load with
        # torch.load(weights_only=True); the config file records them.
        self.save_hyperparameters(ignore=["train_attack", "eval_attacks", "optimizer", "lr_scheduler"])
        self.model = MMDetDetector(detector, num_classes, overrides=detector_overrides, checkpoint=checkpoint)
        self.num_classes = num_classes
        self.recipe = recipe
        self.train_attack = train_attack or DetectionAttack("mtd", eps="8/255", alpha="8/255", steps=1)
        self.adversarial_images = adversarial_images
        self.eval_attacks = list(eval_attacks) if eval_attacks is not None else [
            DetectionAttack("mtd", eps="4/255", alpha="4/255", steps=1)
        ]
        names = [a.name for a in self.eval_attacks]
        if len(set(names)) != len(names):
            raise ValueError(f"eval_attacks must have distinct names, got {names}")
        self.relation_beta = float(relation_beta)
        self.knowledge_topk = knowledge_topk
        self.knowledge_score_threshold = float(knowledge_score_threshold)
        self.attack_model_mode = attack_model_mode
        self._generators = RankGenerator(attack_seed)
        self.register_buffer("relation", torch.zeros(num_classes, num_classes), persistent=True)
        self._relation_ready = False
        if relation_matrix is not None:
            self.relation.copy_(self._load_relation(relation_matrix))
            self._relation_ready = True
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({"clean": self._map(), **{a.name: self._map() for a in self.eval_attacks}})
            for stage in ("val", "test")
        })

    @staticmethod
    def _map() -> MeanAveragePrecision:
        return MeanAveragePrecision(box_format="xyxy", iou_type="bbox")

    def _load_relation(self, path: str) -> Tensor:
        relation = load_checkpoint(path, argument="relation_matrix")
        if not isinstance(relation, Tensor) or relation.shape != (self.num_classes, self.num_classes):
            shape = tuple(relation.shape) if isinstance(relation, Tensor) else type(relation).__name__
            raise ValueError(
                f"relation_matrix {path} must hold a ({self.num_classes}, {self.num_classes}) tensor, got {shape}"
            )
        return relation.float()

    # ----------------------------------------------------------------------------------- setup
    @override
    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        classes = getattr(datamodule, "num_classes", None)
        if isinstance(classes, int) and classes != self.num_classes:
            raise ValueError(
                f"num_classes={self.num_classes} but the datamodule has {classes} classes "
                f"({getattr(datamodule, 'class_names', '?')})"
            )
        if self.recipe == "kgat" and not self._relation_ready:
            if not hasattr(datamodule, "iter_train_gray"):
                raise ValueError(
                    "recipe='kgat' needs relation_matrix=<path> or a datamodule with iter_train_gray() "
                    "(InfraredDetectionDataModule)"
                )
            relation = relation_stability_matrix(datamodule.iter_train_gray(), self.num_classes)
            self.relation.copy_(relation.to(self.relation))
            self._relation_ready = True

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # R is a checkpointed buffer; a resumed run must not recompute it.
        self._relation_ready = True
        state = checkpoint.get("kgat_attack_generator")
        self._generators.load_state(state)

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["kgat_attack_generator"] = self._generators.state()

    # ------------------------------------------------------------------------------- helpers
    def _samples(self, batch: Mapping[str, Any], images: Tensor, boxes: Sequence[Tensor] | None = None,
                 labels: Sequence[Tensor] | None = None, image_ids: Sequence[int] | None = None) -> list[Any]:
        """Mmdet data samples of ``images``; boxes, labels and ids default to the batch's."""
        boxes = batch["boxes"] if boxes is None else boxes
        labels = batch["labels"] if labels is None else labels
        if image_ids is None:
            image_ids = batch["image_ids"].tolist()
        # Validation runs under inference_mode; the attack needs autograd, and inference tensors
        # cannot be saved for backward, so the targets are normal clones.
        boxes = [b.detach().clone().to(images.device) for b in boxes]
        labels = [y.detach().clone().to(images.device) for y in labels]
        return self.model.data_samples(boxes, labels, tuple(images.shape[-2:]), image_ids)

    def loss_parts(self, images: Tensor, samples: list[Any]) -> dict[str, Tensor]:
        """``{"loc", "cls", "other"}`` losses of the detector on ``images``."""
        return split_detection_losses(self.model.loss(images, samples))

    def _attack(self, attack: DetectionAttack, images: Tensor, samples: list[Any]) -> Tensor:
        generator = self._generators.get(images.device, self.global_rank)
        with torch.inference_mode(False), torch.enable_grad(), attack_mode(self.model, self.attack_model_mode):
            return attack(lambda x: self.loss_parts(x, samples), images, generator=generator)

    @torch.no_grad()
    def _predict(self, images: Tensor, samples: list[Any]) -> list[Any]:
        with attack_mode(self.model, "eval"):
            return self.model.predict(images, samples)

    def knowledge_weights(self, images: Tensor, samples: list[Any], labels: Sequence[Tensor]) -> dict[str, float]:
        """``rho``, ``w_rel`` and ``w_rel2`` of a batch (KGAT's two knowledge factors)."""
        predictions = self._predict(images, samples)
        pred_gray, gt_gray = knowledge_gray_vectors(
            images,
            [p.bboxes for p in predictions], [p.scores for p in predictions], [p.labels for p in predictions],
            [s.gt_instances.bboxes for s in samples], [s.gt_instances.labels for s in samples],
            self.num_classes, topk=self.knowledge_topk, score_threshold=self.knowledge_score_threshold,
        )
        rho = spearman_rho(pred_gray, gt_gray)
        present = torch.cat([y.reshape(-1).cpu() for y in labels]) if labels else torch.zeros(0, dtype=torch.long)
        return {
            "rho": rho,
            "w_rel": relation_weight(rho, self.relation_beta),
            "w_rel2": reliability_weight(self.relation.cpu(), present),
        }

    # ------------------------------------------------------------------------------ training
    @override
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        images: Tensor = batch["images"]
        boxes, labels = list(batch["boxes"]), list(batch["labels"])
        ids = batch["image_ids"].tolist()
        if self.recipe != "plain":
            n = min(self.adversarial_images, images.shape[0])
            first = self._samples(batch, images[:n], boxes[:n], labels[:n], ids[:n])
            adversarial = self._attack(self.train_attack, images[:n], first)
            # The adversarial copies of the first n images go in front of the clean batch, each
            # with its own boxes (upstream concatenates the boxes in the other order: README).
            images = torch.cat([adversarial, images])
            boxes, labels, ids = boxes[:n] + boxes, labels[:n] + labels, ids[:n] + ids
        samples = self._samples(batch, images, boxes, labels, ids)
        parts = self.loss_parts(images, samples)
        loc_weight = 1.0
        if self.recipe == "kgat":
            weights = self.knowledge_weights(images, samples, labels)
            loc_weight = weights["w_rel"] * weights["w_rel2"]
            self.log_dict({f"train/{k}": float(v) for k, v in weights.items()}, batch_size=images.shape[0])
        loss = loc_weight * parts["loc"] + parts["cls"] + parts["other"]
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"non-finite detection loss {parts}; lower the learning rate or enable gradient clipping "
                "(trainer.gradient_clip_val, 10 in the released code)"
            )
        self.log_dict({"train/loss": loss.detach(), "train/loss_loc": parts["loc"].detach(),
                       "train/loss_cls": parts["cls"].detach()}, prog_bar=False, batch_size=images.shape[0])
        return loss

    # ---------------------------------------------------------------------------- evaluation
    @override
    def evaluation_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int = 0) -> None:
        images: Tensor = batch["images"]
        targets = [{"boxes": b.detach().clone(), "labels": y.detach().clone()}
                   for b, y in zip(batch["boxes"], batch["labels"], strict=True)]

        def update(name: str, x: Tensor, samples: list[Any]) -> None:
            predictions = self._predict(x, samples)
            preds = [{"boxes": p.bboxes.detach(), "scores": p.scores.detach(), "labels": p.labels.detach()}
                     for p in predictions]
            self.metrics[stage][name].update(preds, targets)

        samples = self._samples(batch, images)
        update("clean", images, samples)
        for attack in self.eval_attacks:
            adversarial = self._attack(attack, images, samples)
            update(attack.name, adversarial, samples)

    @override
    def on_evaluation_epoch_end(self, stage: str) -> None:
        for name, metric in self.metrics[stage].items():
            result = metric.compute()
            metric.reset()
            prefix = f"{stage}/" if name == "clean" else f"{stage}/robust_"
            suffix = "" if name == "clean" else f"/{name}"
            self.log(f"{prefix}map50{suffix}", result["map_50"].float(), prog_bar=name == "clean", sync_dist=False)
            self.log(f"{prefix}map50_95{suffix}", result["map"].float(), sync_dist=False)

    @override
    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Tensor]]:
        """Detections of each image: ``{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}``."""
        images: Tensor = batch["images"]
        predictions = self._predict(images, self._samples(batch, images))
        return [{"boxes": p.bboxes, "scores": p.scores, "labels": p.labels} for p in predictions]

    @override
    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
