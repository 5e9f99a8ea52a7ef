"""The baseline-vs-GRL experiment behind the README table and the effect test.

On the generated spurious-cue corpus (:func:`~robust_lightning.datamodules.audio_quality.
generate_spurious_cue_corpus`: each source corpus adds its own hum, and the corpus follows the
quality band in train/dev but not in test), train the same model twice from the same seed, once
as the no-GRL baseline and once with the corpus head behind the gradient-reversal layer, then
measure on the test split:

* ``srcc``: utterance-level SRCC of production quality (the aspect the degradations define);
* ``domain_acc``: accuracy of the model's own corpus head;
* ``probe_acc``: a post-hoc linear probe (5-fold logistic regression) predicting the corpus
  from the frozen encoder output ``z``; chance is ``1 / num_corpora``.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torchmetrics.functional import spearman_corrcoef

from robust_lightning.datamodules.audio_quality import SpuriousCueSpeechDataModule
from robust_lightning.lightning_modules.audio_grl.lightning_module import AudioQualityGRL
from robust_lightning.lightning_modules.audio_grl.metrics import domain_probe_accuracy
from robust_lightning.lightning_modules.audio_grl.model import LogMelFrontend

__all__ = ["EXPERIMENT_DEFAULTS", "run_spurious_cue_experiment"]

#: The setting of the README table (tests use the same, see tests/lightning_modules/audio_grl).
#: Two choices are ours, not the released code's (README, "our readings"): ``lr_schedule="cosine"``
#: anneals the learning rate from ``lr`` to ``lr_final`` over the run, and the corpus head is
#: wider than the paper's (64, 32); with either left at the paper's value the SRCC gain reversed
#: on some seeds or thread counts. ``domain_loss_weight`` ``None`` couples it to ``grl_lambda``
#: as in the released code. Two settings exist only for the README's tuning table:
#: ``corpus_heads`` splits the corpus adversary into that many heads of weight ``1 / corpus_heads``,
#: and ``domain_lr_multiplier`` puts the domain heads in their own Adam param group at that
#: multiple of ``lr`` (1.0 keeps the single group).
EXPERIMENT_DEFAULTS: dict[str, Any] = dict(
    epochs=30, lr=3e-3, lr_schedule="cosine", lr_final=0.0, batch_size=32, grl_lambda=1.0, grl_schedule="constant",
    domain_loss_weight=None, domain_hidden=(128, 128), head="mse", n_mels=40, num_corpora=3, cue_correlation=0.9,
    hum_level_db=-20.0, n_train=480, n_val=60, n_test=300, clip_seconds=2.0, corpus_heads=1, domain_lr_multiplier=1.0,
)
_LR_SCHEDULES = ("constant", "cosine")


def run_spurious_cue_experiment(root: str | Path, seed: int, adversarial: bool, data_seed: int = 0,
                                **overrides: Any) -> dict[str, float]:
    """Trains one model on the generated corpus and returns its test metrics.

    Nothing here pins the intra-op thread count: the README reports the comparison with one
    and with two threads (the summation order differs); the SRCC gain holds on both, the probe
    drop on average over seeds.

    Args:
        root: Corpus folder (generated on first use, reused after).
        seed: Model seed (initialisation, dropout, batch order).
        adversarial: GRL model (``True``) or no-GRL baseline (``False``).
        data_seed: Corpus generation seed.
        **overrides: Keys of :data:`EXPERIMENT_DEFAULTS`.

    Returns:
        ``{"srcc", "domain_acc", "probe_acc", "train_srcc"}``.

    Raises:
        ValueError: For unknown settings, an unknown ``lr_schedule``, ``corpus_heads`` below 1
            or a non-positive ``domain_lr_multiplier``.
    """
    unknown = set(overrides) - set(EXPERIMENT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown experiment settings {sorted(unknown)}; known: {sorted(EXPERIMENT_DEFAULTS)}")
    cfg = {**EXPERIMENT_DEFAULTS, **overrides}
    if cfg["lr_schedule"] not in _LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {_LR_SCHEDULES}, got {cfg['lr_schedule']!r}")
    if not isinstance(cfg["corpus_heads"], int) or cfg["corpus_heads"] < 1:
        raise ValueError(f"corpus_heads must be a positive integer, got {cfg['corpus_heads']!r}")
    if not cfg["domain_lr_multiplier"] > 0:
        raise ValueError(f"domain_lr_multiplier must be positive, got {cfg['domain_lr_multiplier']!r}")
    return _run(root, seed, adversarial, data_seed, cfg)


class _DomainHeadsAdam:
    """Adam with the domain heads in a param group of their own at ``multiplier`` x ``lr``.

    A benchmark-side optimizer factory (the module takes any): it needs the model, whose
    ``net`` exists only after setup, so ``model`` is set after construction.
    """

    def __init__(self, lr: float, multiplier: float) -> None:
        self.lr = lr
        self.multiplier = multiplier
        self.model: AudioQualityGRL | None = None

    def __call__(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Adam:
        if self.model is None or self.model.net is None:
            raise RuntimeError("_DomainHeadsAdam.model must be set (and set up) before the optimizer is built")
        head_ids = {id(p) for p in self.model.net.domain_heads.parameters()}
        params = list(params)
        rest = [p for p in params if id(p) not in head_ids]
        heads = [p for p in params if id(p) in head_ids]
        groups: list[dict[str, Any]] = [{"params": rest}, {"params": heads, "lr": self.lr * self.multiplier}]
        return torch.optim.Adam(groups, lr=self.lr)


def _run(root: str | Path, seed: int, adversarial: bool, data_seed: int, cfg: dict[str, Any]) -> dict[str, float]:
    datamodule = SpuriousCueSpeechDataModule(
        root=str(root), seed=data_seed, num_corpora=cfg["num_corpora"], cue_correlation=cfg["cue_correlation"],
        hum_level_db=cfg["hum_level_db"], batch_size=cfg["batch_size"], clip_seconds=cfg["clip_seconds"],
        n_train=cfg["n_train"], n_val=cfg["n_val"], n_test=cfg["n_test"],
    )
    pl.seed_everything(seed, verbose=False)
    heads = cfg["corpus_heads"]
    # The first head keeps the name "corpus": its accuracy is the reported ``domain_acc``.
    domains = [{"strategy": "corpus", "name": "corpus" if i == 0 else f"corpus_{i}", "num_domains": cfg["num_corpora"],
                "weight": 1.0 / heads} for i in range(heads)]
    domain_heads_adam = _DomainHeadsAdam(cfg["lr"], cfg["domain_lr_multiplier"])
    model = AudioQualityGRL(
        frontend=LogMelFrontend(n_mels=cfg["n_mels"]),
        domains=domains, domain_hidden=tuple(cfg["domain_hidden"]),
        adversarial=adversarial, grl_lambda=cfg["grl_lambda"], domain_loss_weight=cfg["domain_loss_weight"],
        grl_schedule=cfg["grl_schedule"], head=cfg["head"],
        optimizer=(functools.partial(torch.optim.Adam, lr=cfg["lr"]) if cfg["domain_lr_multiplier"] == 1.0
                   else domain_heads_adam),
        # Stepped once per epoch: lr -> lr_final along a half cosine over the run.
        lr_scheduler=(functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=cfg["epochs"],
                                        eta_min=cfg["lr_final"])
                      if cfg["lr_schedule"] == "cosine" else None),
    )
    # The heads exist only once setup has seen the data; the optimizer is built after that.
    domain_heads_adam.model = model
    trainer = pl.Trainer(max_epochs=cfg["epochs"], accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, gradient_clip_val=5.0, deterministic=True)
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(espeak|does not have many workers|SpearmanCorrcoef).*")
            trainer.fit(model, datamodule)
    finally:
        for logger, level in zip(loggers, levels, strict=False):
            logger.setLevel(level)
    test = model.encode(datamodule.test_dataloader())
    train = model.encode(datamodule.train_dataloader())
    assert model.net is not None
    model.eval()
    with torch.no_grad():
        logits = model.net.domain_heads["corpus"](test["z"])
    return {
        "srcc": float(spearman_corrcoef(test["mean"][:, 0], test["scores"][:, 0])),
        "domain_acc": float((logits.argmax(1) == test["corpus"]).float().mean()),
        "probe_acc": domain_probe_accuracy(test["z"], test["corpus"], seed=seed),
        "train_srcc": float(spearman_corrcoef(train["mean"][:, 0], train["scores"][:, 0])),
    }
