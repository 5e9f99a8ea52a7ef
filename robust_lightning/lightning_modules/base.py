"""RobustMethod: the base every method LightningModule derives from (directly or via RobustClassifier).

One place for what every method needs and used to copy (torchgeo's ``BaseTask`` is the model):

* **optimizer / scheduler**: the ``optimizer`` and ``lr_scheduler`` callables (LightningCLI's
  ``OptimizerCallable``/``LRSchedulerCallable``, so YAML picks them) and ``scheduler_interval``
  become ``configure_optimizers``' return value here. Without a configured optimizer the
  method's :meth:`RobustMethod.default_optimizer` builds one; :meth:`RobustMethod.optimizer_parameters`
  says what it optimises (all parameters by default).
* **per-stage metrics**: :meth:`RobustMethod.add_stage_metrics` makes ``train_<name>``,
  ``val_<name>``, ``test_<name>``.
* **attach once**: a method that trains on adversarial inputs sets ``self.training_attack``
  (and ``self.attack_model_mode``); ``configure_callbacks`` attaches one
  :class:`~robust_lightning.callbacks.AdversarialTraining` for it, once per Trainer (Lightning
  asks again on every fit/validate/test call; the first callback, with its generator state, stays).
* **evaluation plumbing**: ``validation_step``/``test_step`` (any number of dataloaders) call
  :meth:`RobustMethod.evaluation_step` with the stage name, the epoch hooks call
  :meth:`RobustMethod.on_evaluation_epoch_start`/:meth:`RobustMethod.on_evaluation_epoch_end`;
  with several evaluation dataloaders (named evaluation domains) metrics made by
  :meth:`RobustMethod.domain_metric` are kept one per (stage, dataloader) and read back,
  named by domain, with :meth:`RobustMethod.domain_results`.
* **predict**: softmax of ``forward`` on the batch's inputs; methods with other outputs override.
* **self-contained checkpoints**: under LightningCLI the hyperparameters are the config itself
  (plain data, the backbone's and optimizer's ``class_path``/``init_args`` included), so they are
  all kept (``ignore`` only applies to objects collected from ``__init__``'s frame) and
  ``Method.load_from_checkpoint(path)`` rebuilds the module with no arguments; a restored
  module keeps every saved hyperparameter, so a load -> save -> load cycle is stable.

A method overrides only what differs (see ``docs/architecture.md``, "how to add a method").
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn
from torchmetrics import Metric
from typing_extensions import override

from robust_lightning.attacks.base import Attack
from robust_lightning.callbacks.adversarial_training import AdversarialTraining
from robust_lightning.lightning_modules._domains import check_domain_names, evaluation_domain
from robust_lightning.lightning_modules._optim import check_scheduler_interval, optimizers_config
from robust_lightning.protocol import AdversarialMixin, split_batch

__all__ = ["STAGES", "RobustMethod"]

#: The stages with metrics of their own (``predict`` logs nothing).
STAGES: tuple[str, ...] = ("train", "val", "test")


def _plain_data(value: Any) -> Any:
    """``value`` with argparse/jsonargparse namespaces turned into dicts.

    LightningCLI's instantiator parses the checkpoint's hyperparameters in place, so nested
    ``class_path`` configs may come back as namespaces, which ``torch.load(weights_only=True)``
    could not read once saved again.
    """
    if isinstance(value, argparse.Namespace):
        value = value.as_dict() if hasattr(value, "as_dict") else vars(value)
    if isinstance(value, dict):
        return {k: _plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_data(v) for v in value)
    return value


class RobustMethod(AdversarialMixin, pl.LightningModule):
    """Base LightningModule of the package's methods.

    Args:
        optimizer: Callable building the optimizer from :meth:`optimizer_parameters`;
            ``None`` uses :meth:`default_optimizer` (each method documents its own).
        lr_scheduler: Optional callable building a scheduler from the optimizer.
        scheduler_interval: Step the scheduler every ``"epoch"`` or ``"step"``.
        domain_names: Names of the evaluation dataloaders (metric-key suffixes); ``None``
            takes the DataModule's ``domain_names`` when it has them, else ``domain0``,
            ``domain1``, ... when there are several loaders and no suffix for one.

    Attributes:
        training_attack: The attack :class:`AdversarialTraining` runs on every training batch
            (``None``: no callback is attached). Set it in the subclass's ``__init__``.
        attack_model_mode: ``"eval"`` or ``"train"`` mode of the model while that attack runs.
        optimizer_factory, lr_scheduler_factory, scheduler_interval: The arguments above.

    Raises:
        InvalidArgumentError: For a bad ``scheduler_interval`` or ``domain_names``.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        domain_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.scheduler_interval = check_scheduler_interval(scheduler_interval)
        self.domain_names = check_domain_names(domain_names)
        self.training_attack: Attack | None = None
        self.attack_model_mode: Literal["eval", "train"] = "eval"
        # One metric per (stage, evaluation dataloader, kind), made on first use: the number of
        # domains is known only once the DataModule's loaders exist.
        self.domain_metrics = nn.ModuleDict()

    # -- hyperparameters -----------------------------------------------------------------------
    @override
    def save_hyperparameters(self, *args: Any, ignore: Sequence[str] | str | None = None,
                             frame: Any = None, logger: bool = True) -> None:
        if _given_hyperparameters.get() is not None:
            # LightningCLI hands over the config as plain data: nothing in it needs leaving out,
            # and keeping the backbone's config is what lets load_from_checkpoint rebuild it.
            ignore = None
        if frame is None:
            frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        super().save_hyperparameters(*args, ignore=ignore, frame=frame, logger=logger)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Keys this instance did not record (a CLI checkpoint's backbone config, Lightning's
        # _instantiator) are kept, so saving the restored module writes the same hyperparameters;
        # arguments given to load_from_checkpoint win over the saved ones.
        saved = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY) or {}
        missing = {k: _plain_data(v) for k, v in saved.items() if k not in self.hparams}
        if missing:
            self.hparams.update(missing)

    # -- optimizers ----------------------------------------------------------------------------
    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The optimizer when none is configured: AdamW (lr 1e-3, weight decay 1e-4).

        Methods override this with their paper's choice and document it in their ``optimizer``
        argument.
        """
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)

    def optimizer_parameters(self) -> Iterable[Any]:
        """What the optimizer gets: every parameter (override for frozen parts or param groups)."""
        return self.parameters()

    @override
    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory if self.optimizer_factory is not None else self.default_optimizer
        return optimizers_config(self.optimizer_parameters(), factory, self.lr_scheduler_factory,
                                 self.scheduler_interval)

    # -- metrics -------------------------------------------------------------------------------
    def add_stage_metrics(self, name: str, factory: Callable[[], Metric], stages: Sequence[str] = STAGES) -> None:
        """Sets ``self.<stage>_<name> = factory()`` for each stage (one metric object per stage,
        so a stage's running state never mixes with another's).
        """
        for stage in stages:
            setattr(self, f"{stage}_{name}", factory())

    # -- adversarial training: attach once ------------------------------------------------------
    @override
    def configure_callbacks(self) -> list[pl.Callback]:
        attack = self.training_attack
        if attack is None:
            return []
        # Lightning asks again on every fit/validate/test call; the callback attached the first
        # time (with its generator state) stays.
        if self._trainer is not None and any(
            isinstance(c, AdversarialTraining) and c.attack is attack for c in self.trainer.callbacks
        ):
            return []
        return [AdversarialTraining(attack, model_mode=self.attack_model_mode)]

    # -- evaluation ----------------------------------------------------------------------------
    def evaluation_step(self, batch: Any, stage: str, dataloader_idx: int) -> None:
        """One validation (``stage="val"``) or test (``"test"``) step on dataloader ``dataloader_idx``."""
        raise NotImplementedError(
            f"{type(self).__name__} must define evaluation_step (or validation_step and test_step)"
        )

    def on_evaluation_epoch_start(self, stage: str) -> None:
        """Called at the start of every validation/test epoch (e.g. to reseed evaluation attacks)."""

    def on_evaluation_epoch_end(self, stage: str) -> None:
        """Called at the end of every validation/test epoch (log :meth:`domain_results` here)."""

    @override
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.evaluation_step(batch, "val", dataloader_idx)

    @override
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.evaluation_step(batch, "test", dataloader_idx)

    @override
    def on_validation_epoch_start(self) -> None:
        self.on_evaluation_epoch_start("val")

    @override
    def on_test_epoch_start(self) -> None:
        self.on_evaluation_epoch_start("test")

    @override
    def on_validation_epoch_end(self) -> None:
        self.on_evaluation_epoch_end("val")

    @override
    def on_test_epoch_end(self) -> None:
        self.on_evaluation_epoch_end("test")

    # -- evaluation domains (several evaluation dataloaders) -------------------------------------
    def domain_name(self, stage: str, dataloader_idx: int) -> str | None:
        """Name of evaluation dataloader ``dataloader_idx`` (``None`` when there is only one)."""
        return evaluation_domain(self, self.domain_names, stage, dataloader_idx)

    def domain_suffix(self, stage: str, dataloader_idx: int) -> str:
        """``"/<domain>"`` for metric keys of dataloader ``dataloader_idx``, ``""`` for a single loader."""
        name = self.domain_name(stage, dataloader_idx)
        return "" if name is None else f"/{name}"

    def domain_metric(self, stage: str, dataloader_idx: int, factory: Callable[[], Metric],
                      kind: str = "main") -> Metric:
        """The ``kind`` metric of (``stage``, ``dataloader_idx``), made by ``factory`` on first use."""
        if "_" in stage or "_" in kind:
            raise ValueError(f"stage and kind must not contain '_', got {stage!r}, {kind!r}")
        # ModuleDict keys may not hold dots (attack names do), hence indices and plain kinds.
        key = f"{stage}_{dataloader_idx}_{kind}"
        if key not in self.domain_metrics:
            self.domain_metrics[key] = factory().to(self.device)
        return self.domain_metrics[key]  # type: ignore[return-value]

    def domain_results(self, stage: str) -> Iterator[tuple[str, str, Any]]:
        """``(suffix, kind, value)`` of every domain metric of ``stage`` updated this epoch.

        ``value`` is the metric's ``compute()`` (which synchronises across processes, so every
        rank yields the same); the metric is reset after it is yielded.
        """
        for key in sorted(k for k in self.domain_metrics if k.startswith(f"{stage}_")):
            metric = self.domain_metrics[key]
            if not metric.update_called:
                continue
            _, index, kind = key.split("_", 2)
            yield self.domain_suffix(stage, int(index)), kind, metric.compute()
            metric.reset()

    # -- predict -------------------------------------------------------------------------------
    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Class probabilities ``(B, C)``: softmax of ``forward`` on the inputs (a tensor batch or
        the inputs of an ``(inputs, target)`` batch).
        """
        inputs = batch if isinstance(batch, Tensor) else split_batch(batch)[0]
        return F.softmax(self(inputs), dim=1)
