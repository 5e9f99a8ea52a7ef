"""ConjugateProbe: the Neural Uncertainty Principle's input–gradient probe as a callback.

Zhang et al. ("Neural Uncertainty Principle", arXiv:2603.19562) read an input and its loss
gradient as conjugate observables; a single backward pass per batch gives statistics that
signal adversarial fragility (classifiers) and hallucination risk (LLMs, at prefill). The
callback runs that backward on the batches of the chosen stages and logs the batch means of the
per-sample statistics of :func:`~robust_lightning.attacks.probes.probe_statistics`
(spread product, correlation of ``x`` and ``∇x L``, mean ``|x ⊙ ∇x L|``, ...) as
``<stage>/probe/<name>``. The formulas are our reading of the paper (see that module).

* Classifiers: any LightningModule following the module protocol (``robust_lightning/protocol.py``):
  ``x = attack_inputs(batch)`` and ``L = attack_loss(x, batch)`` (true labels), or, with
  ``loss="predicted"``, the cross-entropy of the model's own prediction (the label-free probe).
* HF causal LMs: ``causal_lm="model"`` names the attribute holding the LM; batches are dicts
  with ``input_ids`` (and optionally ``attention_mask`` and a prompt mask); the probe is taken
  on the prompt embeddings at prefill (:func:`~robust_lightning.attacks.probes.causal_lm_prefill_probe`).

The probe costs one extra forward and backward per probed batch (``every_n_batches`` thins it);
parameters never receive gradients and BatchNorm statistics are untouched
(:func:`~robust_lightning.attacks.core.attack_mode`). It sees the batch as it is when its hook
runs: list it before :class:`AdversarialTraining` to probe the clean training inputs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from robust_lightning._validation import check_int_at_least, check_number
from robust_lightning.attacks.core import attack_mode
from robust_lightning.attacks.probes import (
    LM_LOSSES,
    causal_lm_prefill_probe,
    input_gradient,
    probe_statistics,
)
from robust_lightning.callbacks._common import grad_enabled_batch, precision_context
from robust_lightning.protocol import logits_of, protocol_method

__all__ = ["ConjugateProbe"]

STAGES = ("train", "validate", "test")
_PREFIX = {"train": "train", "validate": "val", "test": "test"}
LOSSES = ("protocol", "predicted")


class ConjugateProbe(Callback):
    """Log per-batch input–gradient statistics (the NUP probe) for classifiers and causal LMs.

    Args:
        stages: Any of ``"train"``, ``"validate"``, ``"test"``.
        every_n_batches: Probe batches whose index is a multiple of this.
        loss: Classifiers: ``"protocol"`` (the module's ``attack_loss``, true labels) or
            ``"predicted"`` (cross-entropy of the predicted label; logits models only).
        baseline: Reference input ``b`` of ``coupling = mean |(x - b) ⊙ g|``.
        causal_lm: Dotted attribute path of an HF causal LM on the LightningModule (e.g.
            ``"model"``); set it to probe prompt embeddings instead of the protocol's inputs.
        lm_loss: Prefill loss of the LM probe, ``"next_token"`` or ``"prompt"``.
        prompt_mask_key: Batch key of a bool ``(B, T)`` prompt mask (LM probe; a missing key
            means every attended token is prompt; ``None`` ignores it).
        model_mode: ``"eval"`` or ``"train"`` mode while probing (restored afterwards).
        keep_per_sample: Keep every probed sample's statistics of the current epoch of each
            stage, readable with :meth:`per_sample` (for analysis; memory grows with the epoch).

    Raises:
        ValueError: On an out-of-range argument (the message names it).
    """

    def __init__(
        self,
        stages: Sequence[str] = ("train", "validate", "test"),
        every_n_batches: int = 1,
        loss: Literal["protocol", "predicted"] = "protocol",
        baseline: float = 0.0,
        causal_lm: str | None = None,
        lm_loss: Literal["next_token", "prompt"] = "next_token",
        prompt_mask_key: str | None = "prompt_mask",
        model_mode: Literal["eval", "train"] = "eval",
        keep_per_sample: bool = False,
    ) -> None:
        stages = [stages] if isinstance(stages, str) else list(stages)
        unknown = sorted(set(stages) - set(STAGES))
        if unknown or not stages:
            raise ValueError(f"stages must be a non-empty list among {STAGES}, got {stages!r}")
        check_int_at_least("every_n_batches", every_n_batches, 1)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if lm_loss not in LM_LOSSES:
            raise ValueError(f"lm_loss must be one of {LM_LOSSES}, got {lm_loss!r}")
        if model_mode not in ("eval", "train"):
            raise ValueError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        if causal_lm is not None and (not isinstance(causal_lm, str) or not causal_lm):
            raise ValueError(f"causal_lm must be None or an attribute path such as 'model', got {causal_lm!r}")
        check_number("baseline", baseline)
        self.stages = tuple(stages)
        self.every_n_batches = every_n_batches
        self.loss = loss
        self.baseline = float(baseline)
        self.causal_lm = causal_lm
        self.lm_loss = lm_loss
        self.prompt_mask_key = prompt_mask_key
        self.model_mode = model_mode
        self.keep_per_sample = bool(keep_per_sample)
        self._records: dict[str, dict[str, list[Tensor]]] = {}

    # -- the probe -------------------------------------------------------------------------
    def _language_model(self, pl_module: pl.LightningModule) -> nn.Module:
        model: Any = pl_module
        for part in self.causal_lm.split("."):  # type: ignore[union-attr]
            if not hasattr(model, part):
                raise AttributeError(f"causal_lm={self.causal_lm!r}: {type(model).__name__} has no attribute {part!r}")
            model = getattr(model, part)
        if not isinstance(model, nn.Module) or not callable(getattr(model, "get_input_embeddings", None)):
            raise TypeError(f"causal_lm={self.causal_lm!r} must name an HF causal LM (with get_input_embeddings()), "
                            f"got {type(model).__name__}")
        return model

    def _probe_language_model(self, pl_module: pl.LightningModule, batch: Any) -> tuple[dict[str, Tensor], Tensor]:
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise TypeError("the causal-LM probe expects dict batches with 'input_ids' (and optionally "
                            f"'attention_mask' and {self.prompt_mask_key!r}), got {type(batch).__name__}")
        prompt_mask = batch.get(self.prompt_mask_key) if self.prompt_mask_key is not None else None
        return causal_lm_prefill_probe(self._language_model(pl_module), batch["input_ids"],
                                       batch.get("attention_mask"), prompt_mask, self.lm_loss, self.model_mode)

    def _probe_classifier(self, pl_module: pl.LightningModule, batch: Any) -> tuple[dict[str, Tensor], Tensor]:
        if (isinstance(batch, Mapping) and "input_ids" in batch
                and not callable(getattr(pl_module, "attack_inputs", None))):
            raise TypeError("this batch holds token ids: set causal_lm='<attribute of the HF model>' to probe "
                            "prompt embeddings, or define attack_inputs/attack_loss on the LightningModule")
        inputs = protocol_method(pl_module, "attack_inputs")(batch)
        if self.loss == "protocol":
            attack_loss = protocol_method(pl_module, "attack_loss")
            loss_fn = lambda x: attack_loss(x, batch)
        else:
            def loss_fn(x: Tensor) -> Tensor:
                logits = logits_of(pl_module, x, None).float()
                return F.cross_entropy(logits, logits.detach().argmax(1), reduction="none")
        loss, grad = input_gradient(loss_fn, inputs)
        return probe_statistics(inputs, grad, baseline=self.baseline), loss

    def probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any) -> dict[str, Tensor]:
        """Per-sample statistics (and ``loss``) of one batch, without logging."""
        with grad_enabled_batch(batch) as cloned, attack_mode(pl_module, self.model_mode), \
                precision_context(trainer):
            if self.causal_lm is not None:
                statistics, loss = self._probe_language_model(pl_module, cloned)
            else:
                statistics, loss = self._probe_classifier(pl_module, cloned)
        return {**statistics, "loss": loss.float()}

    # -- hooks ------------------------------------------------------------------------------
    def _run(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
             batch_idx: int) -> None:
        if stage not in self.stages or trainer.sanity_checking or batch_idx % self.every_n_batches:
            return
        values = self.probe(trainer, pl_module, batch)
        batch_size = int(next(iter(values.values())).shape[0])
        prefix = _PREFIX[stage]
        for name, value in values.items():
            pl_module.log(f"{prefix}/probe/{name}", value.mean(), on_step=stage == "train", on_epoch=True,
                          batch_size=batch_size, sync_dist=True)
        if self.keep_per_sample:
            for name, value in values.items():
                self._records.setdefault(stage, defaultdict(list))[name].append(value.detach().cpu())

    def _reset(self, stage: str) -> None:
        self._records.pop(stage, None)

    def per_sample(self, stage: str) -> dict[str, Tensor]:
        """The kept per-sample statistics of the latest epoch of ``stage``, in batch order.

        Raises:
            RuntimeError: If ``keep_per_sample`` is off.
        """
        if not self.keep_per_sample:
            raise RuntimeError("per-sample statistics are kept only with keep_per_sample=True")
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return {name: torch.cat(parts) for name, parts in self._records.get(stage, {}).items()}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._reset("train")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._reset("validate")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset("test")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._run("train", trainer, pl_module, batch, batch_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._run("validate", trainer, pl_module, batch, batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._run("test", trainer, pl_module, batch, batch_idx)
