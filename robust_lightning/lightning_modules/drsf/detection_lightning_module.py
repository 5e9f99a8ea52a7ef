"""DRSFDetector: DRSF's single-domain-generalisation recipe on a one-stage mmdet detector.

Training step (``method="drsf"``), after the released ``do_mask_da_train``
(``fantasioly/DRSF``, ``maskrcnn_benchmark/engine/trainer.py``), with a batch of labelled source
images and their unlabelled pseudo-target views (``SyntheticThermalStylesDataModule``):

1. source and pseudo-target images go through the backbone and neck together; the detection
   loss is computed on the source images only;
2. image-level domain loss: :class:`~.detection_model.ImageDomainHead` on every neck level behind
   a gradient reversal of ``image_grl_weight`` (0.025), source = 1, target = 0;
3. instance-level domain loss: :class:`~.detection_model.InstanceDomainHead` on the
   classification tower's per-location features at the ``instances_per_image`` locations with
   the highest class score (our reading of RoI features for a one-stage detector: FCOS has no
   RoIs), behind a reversal of ``instance_grl_weight`` (0.1);
4. consistency: L1 between the image-level domain probability at those locations and the
   instance-level one, features behind non-reversing scalers ``consistency_weight * w`` (0.1);
5. masked pseudo-labels: the EMA teacher (``teacher_alpha`` 0.9) labels the unmasked
   pseudo-target images (score >= ``pseudo_label_threshold``, 0.8), the student learns them on
   block-masked copies (block ``mask_block_size`` 32, ratio ``mask_ratio`` 0.5), classification
   loss only, weight ``pseudo_label_weight`` (1);
6. options from our classification DRSF (not in the released detection code): entropy-guided
   decoupling/reassembly on one backbone stage (``reassembly=True``) and multi-level soft fusion
   of source and pseudo-target neck features with a soft-label discriminator
   (``fusion_weight > 0``).

``method="plain"`` is step 1 on the source images alone (the control). Evaluation: COCO mAP50
and mAP50:95 (torchmetrics) of the student: ``val/map50`` on the source-style validation split,
``test/map50`` on the test split (the held-out style with ``SyntheticThermalStylesDataModule``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision
from typing_extensions import override

from robust_lightning._validation import check_bool, check_choice, check_number, check_positive_int
from robust_lightning.attacks.core import attack_mode
from robust_lightning.attacks.detection import split_detection_losses
from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.base import RobustMethod
from robust_lightning.lightning_modules.drsf.detection_model import (
    EMATeacher,
    ImageDomainHead,
    InstanceDomainHead,
    block_mask,
    capture_outputs,
    consistency_loss,
    gather_locations,
    image_domain_loss,
    instance_domain_loss,
    scale_gradient,
    select_pseudo_labels,
    top_locations,
)
from robust_lightning.lightning_modules.drsf.model import (
    EntropyGuidedChannelAttention,
    SoftFusionDiscriminator,
    soft_fuse,
)
from robust_lightning.nn.mmdet_detector import MMDetDetector

__all__ = ["DETECTION_METHODS", "DRSFDetector"]

DetectionMethod = Literal["plain", "drsf"]
DETECTION_METHODS: tuple[str, ...] = ("plain", "drsf")


class DRSFDetector(RobustMethod):
    """DRSF (Li et al. 2025, code ``fantasioly/DRSF``) on a one-stage mmdet detector.

    Args:
        detector: mmdet model config (``"mmdet::<folder>/<file>.py"``, a file, or the dict); a
            one-stage dense detector with a ``bbox_head`` that has ``cls_convs`` (FCOS,
            RetinaNet, ATSS, ...).
        num_classes: Object classes.
        detector_overrides: Dotted-key overrides of the model config.
        checkpoint: Local detector weights (``weights_only=True``).
        method: ``"drsf"`` or ``"plain"`` (source-only training, the control).
        image_grl_weight: Reversal weight of the image-level head (``DA_IMG_GRL_WEIGHT``, 0.025).
        instance_grl_weight: Reversal weight of the instance-level head (``DA_INS_GRL_WEIGHT``, 0.1).
        consistency_weight: ``COS_WEIGHT`` (0.1); 0 drops the consistency term.
        image_head_hidden: Hidden channels of the image-level head (512 released).
        instance_head_hidden: Hidden width of the instance-level head (1024 released).
        instances_per_image: Locations per image fed to the instance-level head.
        pseudo_labels: Masked pseudo-label training with the EMA teacher.
        pseudo_label_threshold: Teacher score threshold (``PSEUDO_LABEL_THRESHOLD``, 0.8).
        pseudo_label_weight: ``PSEUDO_LABEL_LAMBDA`` (1).
        teacher_alpha: EMA coefficient (``TEACHER_ALPHA``, 0.9).
        mask_block_size: ``MASKING_BLOCK_SIZE`` (32 pixels at 800-1600 px images).
        mask_ratio: ``MASKING_RATIO`` (0.5).
        reassembly: Entropy-guided decoupling/reassembly on backbone stage ``reassembly_stage``.
        reassembly_stage: Index into the backbone's outputs (-1: the last).
        entropy_weight: Weight of the attention's entropy guidance.
        fusion_weight: Weight of the multi-level soft-fusion discriminator loss (0 = off).
        fusion_grl: Reversal scale of the soft-fusion discriminators.
        seed: Seed of the masks and the soft-fusion weights.
        optimizer: Optimizer factory (default AdamW 2e-3, weight decay 1e-4).
        lr_scheduler: Optional scheduler factory.
        scheduler_interval: ``"epoch"`` or ``"step"``.
    """

    def __init__(
        self,
        detector: str | dict[str, Any],
        num_classes: int,
        detector_overrides: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        method: DetectionMethod = "drsf",
        image_grl_weight: float = 0.025,
        instance_grl_weight: float = 0.1,
        consistency_weight: float = 0.1,
        image_head_hidden: int = 512,
        instance_head_hidden: int = 1024,
        instances_per_image: int = 32,
        pseudo_labels: bool = True,
        pseudo_label_threshold: float = 0.8,
        pseudo_label_weight: float = 1.0,
        teacher_alpha: float = 0.9,
        mask_block_size: int = 32,
        mask_ratio: float = 0.5,
        reassembly: bool = False,
        reassembly_stage: int = -1,
        entropy_weight: float = 0.1,
        fusion_weight: float = 0.0,
        fusion_grl: float = 1.0,
        seed: int = 0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        check_choice("method", method, DETECTION_METHODS)
        self.image_grl_weight = check_number("image_grl_weight", image_grl_weight, 0.0)
        self.instance_grl_weight = check_number("instance_grl_weight", instance_grl_weight, 0.0)
        self.consistency_weight = check_number("consistency_weight", consistency_weight, 0.0)
        self.pseudo_label_weight = check_number("pseudo_label_weight", pseudo_label_weight, 0.0)
        self.entropy_weight = check_number("entropy_weight", entropy_weight, 0.0)
        self.fusion_weight = check_number("fusion_weight", fusion_weight, 0.0)
        self.fusion_grl = check_number("fusion_grl", fusion_grl, 0.0)
        self.instances_per_image = check_positive_int("instances_per_image", instances_per_image)
        self.mask_block_size = check_positive_int("mask_block_size", mask_block_size)
        check_number("mask_ratio", mask_ratio, 0.0, 1.0, high_open=True)
        check_number("pseudo_label_threshold", pseudo_label_threshold, 0.0, 1.0)
        check_bool("pseudo_labels", pseudo_labels)
        check_bool("reassembly", reassembly)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.method = method
        self.model = MMDetDetector(detector, num_classes, overrides=detector_overrides, checkpoint=checkpoint)
        detector_module = self.model.detector
        head = getattr(detector_module, "bbox_head", None)
        if hasattr(detector_module, "roi_head") or head is None or not hasattr(head, "cls_convs"):
            raise InvalidArgumentError(
                f"DRSFDetector needs a one-stage dense detector with bbox_head.cls_convs (FCOS, RetinaNet, ATSS), "
                f"got {type(detector_module).__name__}; the released two-stage RoI version is not ported (README)"
            )
        neck = getattr(detector_module, "neck", None)
        channels = int(getattr(neck, "out_channels", head.in_channels))
        levels = int(getattr(neck, "num_outs", len(head.prior_generator.strides)))
        tower = int(head.feat_channels) if len(head.cls_convs) else int(head.in_channels)
        self.num_classes = num_classes
        self.image_head = ImageDomainHead(channels, levels, check_positive_int("image_head_hidden", image_head_hidden))
        self.instance_head = InstanceDomainHead(tower, check_positive_int("instance_head_hidden", instance_head_hidden))
        self.pseudo_labels = pseudo_labels
        self.pseudo_label_threshold = float(pseudo_label_threshold)
        self.mask_ratio = float(mask_ratio)
        self.reassembly_stage = int(reassembly_stage)
        self.attention: EntropyGuidedChannelAttention | None = None
        if reassembly:
            stage_channels = self._backbone_channels()
            if not -len(stage_channels) <= self.reassembly_stage < len(stage_channels):
                raise InvalidArgumentError(
                    f"reassembly_stage must index the backbone's {len(stage_channels)} outputs, got {reassembly_stage!r}")
            self.attention = EntropyGuidedChannelAttention(stage_channels[self.reassembly_stage])
        self.teacher = EMATeacher(self._student(), teacher_alpha) if (method == "drsf" and pseudo_labels) else None
        self.fusion = nn.ModuleList(
            SoftFusionDiscriminator(channels, hidden=64, spatial=True, grl_lambda=self.fusion_grl) for _ in range(levels)
        ) if self.fusion_weight > 0 else None
        self._generator = torch.Generator().manual_seed(int(seed))
        # [pseudo-labelled images, pseudo-target images offered] over the run (diagnostics).
        self.pseudo_label_counts = [0, 0]
        self.metrics = nn.ModuleDict({stage: MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
                                      for stage in ("val", "test")})

    def _backbone_channels(self) -> list[int]:
        backbone = self.model.detector.backbone
        with torch.no_grad(), attack_mode(backbone, "eval"):  # a probe must not move BN statistics
            return [int(x.shape[1]) for x in backbone(torch.zeros(1, 3, 64, 64))]

    # ------------------------------------------------------------------------------ features
    def _student(self) -> nn.ModuleDict:
        """The detector and the reassembly block (what the teacher averages and what predicts)."""
        parts: dict[str, nn.Module] = {"model": self.model}
        if self.attention is not None:
            parts["attention"] = self.attention
        return nn.ModuleDict(parts)

    def _samples(self, images: Tensor, boxes: Sequence[Tensor] | None = None,
                 labels: Sequence[Tensor] | None = None) -> list[Any]:
        count = images.shape[0]
        if boxes is None:
            boxes = [images.new_zeros((0, 4)) for _ in range(count)]
            labels = [torch.zeros(0, dtype=torch.long, device=images.device) for _ in range(count)]
        boxes = [b.detach().clone().to(images.device) for b in boxes]
        labels = [y.detach().clone().to(images.device) for y in labels]
        return self.model.data_samples(boxes, labels, tuple(images.shape[-2:]))

    def extract_features(self, inputs: Tensor, parts: nn.ModuleDict | None = None
                         ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        """Neck features of preprocessed ``inputs`` and auxiliary losses (entropy guidance).

        ``parts`` is :meth:`_student` (default) or the teacher's copy of it.
        """
        parts = self._student() if parts is None else parts
        detector = parts["model"].detector
        attention_block = parts["attention"] if "attention" in parts else None
        aux: dict[str, Tensor] = {}
        stages = list(detector.backbone(inputs))
        if attention_block is not None:
            stage = self.reassembly_stage
            stages[stage], attention, entropy = attention_block.forward_with_aux(stages[stage])
            if attention_block.training:
                aux["entropy_guidance"] = self.entropy_weight * attention_block.entropy_loss(attention, entropy)
        features = detector.neck(tuple(stages)) if getattr(detector, "with_neck", False) else tuple(stages)
        return tuple(features), aux

    @torch.no_grad()
    def predict_instances(self, images: Tensor, parts: nn.ModuleDict | None = None) -> list[Any]:
        """Post-processed detections (``InstanceData``: bboxes, scores, labels) of ``parts``
        (default: the student) in eval mode.
        """
        parts = self._student() if parts is None else parts
        model = parts["model"]
        samples = self._samples(images)
        with attack_mode(parts, "eval"):
            if "attention" not in parts:
                return model.predict(images, samples)
            inputs, samples = model.preprocess(images, samples)
            features, _ = self.extract_features(inputs, parts)
            return model.detector.bbox_head.predict(features, samples, rescale=False)

    def _pseudo_label_loss(self, pseudo_images: Tensor) -> tuple[Tensor, int]:
        """Masked pseudo-label classification loss and the number of pseudo-labelled images."""
        assert self.teacher is not None
        self.teacher.update(self._student(), int(self.global_step))
        predictions = self.predict_instances(pseudo_images, self.teacher.model)
        kept, boxes, labels = select_pseudo_labels([p.bboxes for p in predictions], [p.scores for p in predictions],
                                                   [p.labels for p in predictions], self.pseudo_label_threshold)
        self.pseudo_label_counts[0] += len(kept)
        self.pseudo_label_counts[1] += pseudo_images.shape[0]
        if not kept:
            return pseudo_images.new_zeros(()), 0
        preprocessor = self.model.detector.data_preprocessor
        fill = float(torch.as_tensor(preprocessor.mean).float().mean()) / 255.0
        masked, _ = block_mask(pseudo_images[kept], self.mask_block_size, self.mask_ratio, fill, self._generator)
        losses = self.model.loss(masked, self._samples(masked, boxes, labels))
        # Box regression (and centerness, FCOS's box-quality branch) of the masked pass is
        # multiplied by 0 in the released code; only classification learns from pseudo-labels.
        return split_detection_losses(losses)["cls"], len(kept)

    def drsf_losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Every loss term of a DRSF training step (weighted; their sum is the training loss)."""
        images: Tensor = batch["images"]
        pseudo: Tensor = batch["pseudo_images"].to(images)
        count = images.shape[0]
        detector = self.model.detector
        head = detector.bbox_head
        samples = self._samples(images, batch["boxes"], batch["labels"]) + self._samples(pseudo)
        inputs, samples = self.model.preprocess(torch.cat([images, pseudo]), samples)
        features, losses = self.extract_features(inputs)
        tower = head.cls_convs[-1] if len(head.cls_convs) else None
        if tower is not None:
            with capture_outputs(tower) as tower_features:
                outputs = head(features)
        else:
            outputs = head(features)
            tower_features = list(features)
        from mmdet.models.utils import unpack_gt_instances

        gt_instances, _, img_metas = unpack_gt_instances(samples[:count])
        source_outputs = tuple([level[:count] for level in per_level] for per_level in outputs)
        detection = split_detection_losses(head.loss_by_feat(*source_outputs, gt_instances, img_metas))
        losses["detection"] = detection["loc"] + detection["cls"] + detection["other"]

        domain = torch.cat([images.new_ones(count), images.new_zeros(pseudo.shape[0])])
        image_logits = self.image_head([scale_gradient(f, -self.image_grl_weight) for f in features])
        losses["da_image"] = image_domain_loss(image_logits, domain)
        locations = top_locations(outputs[0], self.instances_per_image)
        instances = gather_locations(tower_features, locations)
        instance_domain = domain[torch.cat([b for b, _ in locations])]
        losses["da_instance"] = instance_domain_loss(
            self.instance_head(scale_gradient(instances, -self.instance_grl_weight)), instance_domain)
        if self.consistency_weight > 0:
            image_probability = [p.sigmoid() for p in self.image_head(
                [scale_gradient(f, self.consistency_weight * self.image_grl_weight) for f in features])]
            image_at_instances = gather_locations(image_probability, locations)
            instance_probability = self.instance_head(
                scale_gradient(instances, self.consistency_weight * self.instance_grl_weight)).sigmoid()
            losses["da_consistency"] = consistency_loss(image_at_instances, instance_probability)
        if self.fusion is not None:
            lam = torch.rand(count, generator=self._generator).to(images)
            losses["soft_fusion"] = self.fusion_weight * torch.stack([
                discriminator.loss(soft_fuse(f[:count], f[count:], lam), lam)
                for discriminator, f in zip(self.fusion, features, strict=True)
            ]).mean()
        if self.teacher is not None and self.pseudo_label_weight > 0:
            pseudo_loss, labelled = self._pseudo_label_loss(pseudo)
            losses["pseudo_label"] = self.pseudo_label_weight * pseudo_loss
            self.log("train/pseudo_labelled_images", float(labelled), batch_size=count)
        return losses

    # ------------------------------------------------------------------------------ training
    @override
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        images: Tensor = batch["images"]
        if self.method == "plain":
            parts = split_detection_losses(self.model.loss(images, self._samples(images, batch["boxes"], batch["labels"])))
            losses = {"detection": parts["loc"] + parts["cls"] + parts["other"]}
        else:
            if "pseudo_images" not in batch:
                raise InvalidArgumentError(
                    "method='drsf' needs batches with 'pseudo_images' (SyntheticThermalStylesDataModule)")
            losses = self.drsf_losses(batch)
        loss = torch.stack([v for v in losses.values()]).sum()
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"non-finite DRSF detection loss {losses}; lower the learning rate or clip gradients")
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=images.shape[0])
        self.log("train/loss", loss.detach(), batch_size=images.shape[0])
        return loss

    # ---------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch: Mapping[str, Any], stage: str) -> None:
        images: Tensor = batch["images"]
        predictions = self.predict_instances(images)
        self.metrics[stage].update(
            [{"boxes": p.bboxes.detach(), "scores": p.scores.detach(), "labels": p.labels.detach()} for p in predictions],
            [{"boxes": b.detach().clone(), "labels": y.detach().clone()}
             for b, y in zip(batch["boxes"], batch["labels"], strict=True)],
        )

    @override
    def evaluation_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int) -> None:
        self._evaluate(batch, stage)

    @override
    def on_evaluation_epoch_end(self, stage: str) -> None:
        result = self.metrics[stage].compute()
        self.metrics[stage].reset()
        self.log(f"{stage}/map50", result["map_50"].float(), prog_bar=True)
        self.log(f"{stage}/map50_95", result["map"].float())

    @override
    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Tensor]]:
        """Detections of each image: ``{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}``."""
        predictions = self.predict_instances(batch["images"])
        return [{"boxes": p.bboxes, "scores": p.scores, "labels": p.labels} for p in predictions]

    @override
    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """AdamW, lr 2e-3, weight decay 1e-4 (our choice for the small FCOS)."""
        return torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)

    @override
    def optimizer_parameters(self) -> list[nn.Parameter]:
        # The EMA teacher follows the student and never gets an optimizer step.
        return [p for name, p in self.named_parameters() if not name.startswith("teacher.")]
