"""DRSFClassifier: single-domain generalisation with domain reassembly and adversarial soft fusion.

One module, three methods, so the baselines are trained by exactly the same code:

* ``erm``: cross-entropy on the source images (no augmentation).
* ``mixstyle``: ERM with MixStyle (Zhou et al. 2021, ``Beta(0.1, 0.1)``) after the early stages.
* ``drsf``: two views per batch, the source image and a random-convolution view (Xu et al. 2021),
  both through the MixStyle backbone with entropy-guided decoupling/reassembly blocks; the loss is

  ``CE(both views) + fusion_weight * mean_levels BCE(D_l(GRL(lam f_a + (1 - lam) f_b)), lam)
  + consistency_weight * JS(p_a, p_b) + entropy_weight * BCE(attention, 1 - entropy)``

  with the gradient-reversal scale faded in by DANN's schedule.

Evaluation is one plain forward pass (no views, no MixStyle, attention with its running bias);
with a :class:`~robust_lightning.datamodules.DomainGeneralizationDataModule` it logs
``val/acc/<domain>`` and ``test/acc/<domain>`` for every domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from robust_lightning._validation import (
    check_choice,
    check_instance,
    check_int_at_least,
    check_names,
    check_non_negative,
)
from robust_lightning.lightning_modules.base import RobustMethod
from robust_lightning.lightning_modules.drsf.model import (
    DRSFNet,
    EntropyGuidedChannelAttention,
    MultiLevelBackbone,
    RandomConvolution,
    SoftDomainFusion,
    js_divergence,
)
from robust_lightning.nn.grl import dann_lambda
from robust_lightning.nn.layers import Normalize
from robust_lightning.protocol import split_batch

__all__ = ["METHODS", "DRSFClassifier"]

Method = Literal["erm", "mixstyle", "drsf"]
METHODS: tuple[str, ...] = ("erm", "mixstyle", "drsf")


class DRSFClassifier(RobustMethod):
    """Image classifier trained on one (synthetic) domain to generalise to unseen (real) ones.

    Args:
        backbone: A :class:`~robust_lightning.lightning_modules.drsf.MultiLevelBackbone`
            (``DigitCNN`` for digits, ``PreActResNet18Levels`` for CIFAR-size images).
        num_classes: Number of classes; checked against the backbone.
        mean: Per-channel mean of the inner :class:`Normalize` layer.
        std: Per-channel std of the inner :class:`Normalize` layer.
        method: ``"erm"``, ``"mixstyle"`` or ``"drsf"``.
        mixstyle_levels: Stages followed by MixStyle (``mixstyle`` and ``drsf``).
        mixstyle_p: Probability MixStyle fires in a forward pass.
        mixstyle_alpha: MixStyle's Beta concentration.
        randconv_kernel_sizes: Kernel sizes of the random-convolution view (``drsf``).
        randconv_mix: Blend the random-convolution view with the image by ``alpha ~ U(0, 1)``
            (RandConv's mixing variant); ``False`` uses the filtered image alone.
        randconv_intensity: ``"free"`` (published RandConv: random contrast and polarity) or
            ``"match"`` (filtered view rescaled to the image's own mean and std).
        attention_levels: Stages followed by an entropy-guided decoupling/reassembly block
            (``drsf``); empty disables it.
        attention_reduction: Reduction of the attention MLP.
        bias_at_eval: What the attention blocks put in the bias channels at evaluation:
            ``"mean"`` (running mean) or ``"own"``.
        entropy_weight: Weight of the entropy guidance of the attention.
        fusion_levels: Levels with a soft-fusion discriminator (stage names or
            ``"embedding"``); empty disables soft fusion.
        fusion_weight: Weight of the soft-label discriminator loss.
        grl_lambda: Largest gradient-reversal scale.
        grl_schedule: ``"dann"`` (``grl_lambda * (2 / (1 + exp(-10 p)) - 1)`` over training
            progress ``p``) or ``"constant"``.
        discriminator_hidden: Hidden width of the discriminators.
        consistency_weight: Weight of the Jensen-Shannon consistency between the two views.
        domain_names: Names of the evaluation dataloaders; ``None`` takes the DataModule's
            ``domain_names`` (as :class:`DomainGeneralizationDataModule` provides).
        optimizer: Callable building the optimizer from the parameters (``None``: AdamW, lr 1e-3,
            weight decay 1e-4).
        lr_scheduler: Optional callable building a scheduler from the optimizer.
        scheduler_interval: Step the scheduler every ``"epoch"`` or ``"step"``.

    Raises:
        TypeError: If ``backbone`` is not a ``MultiLevelBackbone``.
        ValueError: If an argument is out of range (the message names it).
    """

    def __init__(
        self,
        backbone: MultiLevelBackbone,
        num_classes: int = 10,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        method: Method = "drsf",
        mixstyle_levels: Sequence[str] = ("stage1", "stage2"),
        mixstyle_p: float = 0.5,
        mixstyle_alpha: float = 0.1,
        randconv_kernel_sizes: Sequence[int] = (1, 3, 5, 7),
        randconv_mix: bool = True,
        randconv_intensity: Literal["free", "match"] = "free",
        attention_levels: Sequence[str] = ("stage2",),
        attention_reduction: int = 4,
        bias_at_eval: Literal["mean", "own"] = "mean",
        entropy_weight: float = 0.1,
        fusion_levels: Sequence[str] = ("stage2", "stage3"),
        fusion_weight: float = 1.0,
        grl_lambda: float = 1.0,
        grl_schedule: Literal["dann", "constant"] = "dann",
        discriminator_hidden: int = 64,
        consistency_weight: float = 1.0,
        domain_names: Sequence[str] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval, domain_names)
        check_instance("backbone", backbone, MultiLevelBackbone,
                       "a MultiLevelBackbone (DigitCNN, PreActResNet18Levels or a subclass exposing named stages)")
        check_choice("method", method, METHODS)
        check_int_at_least("num_classes", num_classes, 2)
        if getattr(backbone, "num_classes", num_classes) != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the backbone has {backbone.num_classes} outputs"
            )
        check_choice("grl_schedule", grl_schedule, ("dann", "constant"))
        mixstyle_levels = check_names("mixstyle_levels", mixstyle_levels, "level names")
        attention_levels = check_names("attention_levels", attention_levels, "level names")
        fusion_levels = check_names("fusion_levels", fusion_levels, "level names")
        known = tuple(backbone.level_channels)
        unknown = [level for level in fusion_levels if level not in known]
        if unknown:
            raise ValueError(f"fusion_levels must name levels {known}, got unknown {unknown}")
        # The backbone and callables are rebuilt from the saved config, not pickled into the
        # checkpoint, which keeps checkpoints loadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["backbone", "optimizer", "lr_scheduler"])

        self.method = method
        self.num_classes = num_classes
        self.normalize = Normalize(mean, std)
        # Baselines get exactly the pieces they name and nothing else: ERM a bare backbone,
        # MixStyle the backbone plus MixStyle layers.
        self.net = DRSFNet(
            backbone,
            mixstyle_levels=mixstyle_levels if method != "erm" else (),
            attention_levels=attention_levels if method == "drsf" else (),
            mixstyle_p=mixstyle_p,
            mixstyle_alpha=mixstyle_alpha,
            attention_reduction=attention_reduction,
            bias_at_eval=bias_at_eval,
        )
        self.entropy_weight = check_non_negative("entropy_weight", entropy_weight)
        self.fusion_weight = check_non_negative("fusion_weight", fusion_weight)
        self.grl_lambda = check_non_negative("grl_lambda", grl_lambda)
        self.consistency_weight = check_non_negative("consistency_weight", consistency_weight)
        self.grl_schedule = grl_schedule
        self.randconv: RandomConvolution | None = None
        self.fusion: SoftDomainFusion | None = None
        if method == "drsf":
            self.randconv = RandomConvolution(randconv_kernel_sizes, mix=randconv_mix,
                                              intensity=randconv_intensity)
            if fusion_levels:
                channels = backbone.level_channels
                self.fusion = SoftDomainFusion({level: channels[level] for level in fusion_levels},
                                               hidden=discriminator_hidden, grl_lambda=0.0)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``[0, 1]`` images (normalisation is inside, as everywhere in the package)."""
        return self.net(self.normalize(x))

    def current_grl_lambda(self) -> float:
        """The gradient-reversal scale for the current step."""
        if self.grl_schedule == "constant" or self._trainer is None:
            return self.grl_lambda
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return self.grl_lambda * dann_lambda(min(1.0, self.global_step / total))

    # -- training ------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = split_batch(batch)
        if self.method != "drsf":
            out = self.net.forward_features(self.normalize(x), perturb=self.method == "mixstyle")
            logits = out.logits
            loss = F.cross_entropy(logits, y)
        else:
            loss, logits = self._drsf_loss(x, y)
        self.train_acc(logits.detach(), y)
        self.log("train/loss", loss.detach(), prog_bar=True)
        self.log("train/acc", self.train_acc, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def _drsf_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        assert self.randconv is not None
        batch = x.shape[0]
        # Both views in one forward pass: BatchNorm sees both styles, and MixStyle's and the
        # reassembly's permutations mix statistics and bias parts across views as well.
        views = torch.cat([x, self.randconv(x)])
        out = self.net.forward_features(self.normalize(views), perturb=True)
        logits_a, logits_b = out.logits[:batch], out.logits[batch:]
        task = F.cross_entropy(out.logits, y.repeat(2))
        loss = task
        logs = {"train/task": task.detach()}
        if self.consistency_weight > 0:
            consistency = js_divergence(logits_a, logits_b)
            loss = loss + self.consistency_weight * consistency
            logs["train/consistency"] = consistency.detach()
        if self.fusion is not None and self.fusion_weight > 0:
            grl = self.current_grl_lambda()
            self.fusion.set_grl_lambda(grl)
            features_a = {level: out.features[level][:batch] for level in self.fusion.levels}
            features_b = {level: out.features[level][batch:] for level in self.fusion.levels}
            fusion_losses = self.fusion(features_a, features_b)
            fusion = torch.stack(list(fusion_losses.values())).mean()
            loss = loss + self.fusion_weight * fusion
            logs["train/fusion"] = fusion.detach()
            logs["train/grl_lambda"] = torch.tensor(grl)
        if out.attention and self.entropy_weight > 0:
            guidance = torch.stack([EntropyGuidedChannelAttention.entropy_loss(a, h)
                                    for a, h in out.attention.values()]).mean()
            loss = loss + self.entropy_weight * guidance
            logs["train/entropy_guidance"] = guidance.detach()
            logs["train/attention_mean"] = torch.stack([a.detach().mean() for a, _ in out.attention.values()]).mean()
        self.log_dict(logs)
        return loss, logits_a

    # -- evaluation ----------------------------------------------------------------------
    @override
    def evaluation_step(self, batch: Any, stage: str, dataloader_idx: int = 0) -> None:
        x, y = split_batch(batch)
        logits = self(x)
        # One accuracy per evaluation dataloader (domain), made on first use.
        accuracy = self.domain_metric(stage, dataloader_idx,
                                      lambda: MulticlassAccuracy(self.num_classes, average="micro"))
        accuracy.update(logits, y)
        suffix = self.domain_suffix(stage, dataloader_idx)
        self.log(f"{stage}/loss{suffix}", F.cross_entropy(logits, y), sync_dist=True, add_dataloader_idx=False)

    @override
    def on_evaluation_epoch_end(self, stage: str) -> None:
        for suffix, _, accuracy in self.domain_results(stage):
            self.log(f"{stage}/acc{suffix}", accuracy, prog_bar=True, add_dataloader_idx=False)
