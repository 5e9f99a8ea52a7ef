"""RobustnessEvaluation: clean and attacked accuracy during validation and test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.aggregation import MeanMetric

from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import attack_mode
from robust_lightning.callbacks._common import RankGenerator, grad_enabled_batch, precision_context
from robust_lightning.protocol import protocol_method

__all__ = ["RobustnessEvaluation"]

CLEAN = "clean"


class RobustnessEvaluation(Callback):
    """Accuracy under each attack, logged as ``val/robust_acc/<attack>`` and ``test/...``.

    Works under Lightning's default ``inference_mode=True``: the callback leaves inference mode
    for the attack and clones the batch. The attack runs on the unwrapped module in eval mode;
    each rank attacks its own shard and the accuracies are reduced across ranks (torchmetrics
    sums of correct counts and sample counts), so the logged value is the global accuracy.
    ``<stage>/robust_acc/clean`` is the clean accuracy on exactly the samples attacked, which
    keeps the two comparable when ``limit_batches`` evaluates a subset.

    Args:
        attacks: attacks to evaluate, each logged under its ``name``.
        every_n_epochs: run during validation every n epochs (test always runs).
        limit_batches: evaluate only the first n batches of each validation/test epoch;
            ``None`` evaluates all.
        model_mode: mode the model is attacked in (``"eval"`` matches how it is deployed).
        seed: seed for random starts; every evaluation restarts the same stream so numbers are
            comparable across epochs and reproducible after resuming.
    """

    def __init__(
        self,
        attacks: Sequence[Attack],
        every_n_epochs: int = 1,
        limit_batches: int | None = None,
        model_mode: Literal["eval", "train"] = "eval",
        seed: int = 0,
    ) -> None:
        attacks = list(attacks) if not isinstance(attacks, Attack) else [attacks]
        if not attacks:
            raise ValueError("attacks must name at least one attack, e.g. [PGD(eps='8/255')]")
        for attack in attacks:
            if not isinstance(attack, Attack):
                raise TypeError(f"attacks must be Attack instances, got {type(attack).__name__}")
        names = [a.name for a in attacks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates or CLEAN in names:
            raise ValueError(f"attack names must be unique and not {CLEAN!r}; repeated: {duplicates}; "
                             "pass name=... to tell them apart")
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be an int >= 1, got {every_n_epochs!r}")
        if limit_batches is not None and (not isinstance(limit_batches, int) or limit_batches < 1):
            raise ValueError(f"limit_batches must be None or an int >= 1, got {limit_batches!r}")
        if model_mode not in ("eval", "train"):
            raise ValueError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        self.attacks = attacks
        self.every_n_epochs = every_n_epochs
        self.limit_batches = limit_batches
        self.model_mode = model_mode
        self.seed = seed
        self._rng = RankGenerator(seed)
        self._metrics: dict[str, MeanMetric] = {}
        self._active = False

    # -- which epochs/batches -------------------------------------------------------------
    def _should_run(self, trainer: pl.Trainer, stage: str) -> bool:
        if trainer.sanity_checking:
            return False
        if stage == "val":
            return (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return True

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._active = self._should_run(trainer, stage)
        if not self._active:
            return
        names = [CLEAN, *(a.name for a in self.attacks)]
        # States made under Lightning's inference_mode could not be updated by the attack
        # code, which runs outside it; build them as ordinary tensors.
        with torch.inference_mode(False):
            self._metrics = {n: MeanMetric(sync_on_compute=True).to(pl_module.device) for n in names}
        self._rng.reset(pl_module.device, trainer.global_rank)

    def _evaluate_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._active or (self.limit_batches is not None and batch_idx >= self.limit_batches):
            return
        correct_fn = protocol_method(pl_module, "prediction_correct")
        attack_loss = protocol_method(pl_module, "attack_loss")
        with grad_enabled_batch(batch) as batch:
            inputs = protocol_method(pl_module, "attack_inputs")(batch)
            generator = self._rng.get(inputs.device, trainer.global_rank)
            with attack_mode(pl_module, self.model_mode), precision_context(trainer):
                self._metrics[CLEAN].update(correct_fn(inputs, batch).float())
                for attack in self.attacks:
                    inputs_adv = attack(lambda x: attack_loss(x, batch), inputs, generator=generator)
                    self._metrics[attack.name].update(correct_fn(inputs_adv, batch).float())

    def _finish(self, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._active:
            return
        self._active = False
        for name, metric in self._metrics.items():
            # All ranks call compute() (a collective); ranks without samples contribute zero
            # weight, so the reduced mean is over all evaluated samples.
            if metric.update_count == 0 and not torch.distributed.is_initialized():
                continue
            value = metric.compute()
            # Already reduced across ranks; sync_dist just keeps Lightning from warning and is
            # a no-op on identical values.
            pl_module.log(f"{stage}/robust_acc/{name}", value, sync_dist=True)

    # -- Lightning hooks -------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._evaluate_batch(trainer, pl_module, batch, batch_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._evaluate_batch(trainer, pl_module, batch, batch_idx)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(pl_module, "test")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Print the last validation accuracies so a run ends with its headline numbers."""
        rows = {k: float(v) for k, v in trainer.callback_metrics.items()
                if k == "val/acc" or k.startswith("val/robust_acc/")}
        if rows:
            width = max(len(k) for k in rows)
            lines = [f"  {k:<{width}}  {v:.4f}" for k, v in sorted(rows.items())]
            rank_zero_info("Final validation accuracy (clean and under attack):\n" + "\n".join(lines))

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}
