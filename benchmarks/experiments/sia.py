"""SIA's two effect recipes and their controls, one short real run per call (effect test, README table).

* Injection (claim 1): :class:`~robust_lightning.lightning_modules.sia.SIAInject` (Llama hidden 32,
  4 heads, 2 -> 4 layers, only the new layers plus embeddings/head train, 20 products, 30 epochs),
  held-out exact match before and after; control: the same run on the corpus without any text
  that names a held-out product, for the same number of updates.
* Alignment (claim 2): :class:`~robust_lightning.lightning_modules.sia.SIAAlign` (Llama hidden 64,
  2 heads, 2 layers, 10 products, 20 epochs, lr 5e-3, budget 0.3 std(E)) in three arms of
  :data:`ALIGN_ARMS`: plain SFT, random ``±eps`` embedding noise (the noise-augmentation control)
  and embedding PGD-5 (the mechanism), each attacked with embedding PGD-10 on held-out wrappers.

Every seed sets the synthetic data (``data_seed``) as well as initialisation and attack randomness.
Used by ``benchmarks/sia_effect.py`` and ``tests/lightning_modules/sia/test_sia.py``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch

from robust_lightning.lightning_modules.sia import SIAAlign, SIADataModule, SIAInject

__all__ = ["ALIGN_ARMS", "ALIGN_MODEL", "INJECT_MODEL", "drop_heldout_facts", "fit_alignment", "last_validation",
           "run_alignment", "run_injection"]

_LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}
INJECT_MODEL: dict[str, Any] = {**_LLAMA, "num_attention_heads": 4, "num_key_value_heads": 4}
ALIGN_MODEL: dict[str, Any] = {**_LLAMA, "hidden_size": 64, "intermediate_size": 128}
ALIGN_ARMS: dict[str, dict[str, Any]] = {
    "plain": {"adv_weight": 0.0},
    "noise": {"adv_weight": 0.5, "adv_perturbation": "noise"},
    "adversarial": {"adv_weight": 0.5, "adv_perturbation": "pgd"},
}


def _trainer(epochs: int, **kwargs: Any) -> pl.Trainer:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def drop_heldout_facts(dm: SIADataModule) -> int:
    """Removes from ``dm``'s injection corpus every text naming a held-out product; returns how many."""
    dm.setup("fit")
    assert dm.data is not None
    held = {r["product"] for r in dm.data.val_qa}
    bos, eos = dm.tokenizer.bos_token_id, dm.tokenizer.eos_token_id
    kept = [r["text"] for r in dm.data.corpus if not held & set(r["text"].split())]
    dropped = len(dm.train_samples) - len(kept)
    dm.train_samples = [{"ids": [bos, *dm.encode(text), eos]} for text in kept]
    return dropped


def run_injection(seed: int, facts: bool = True, max_steps: int | None = None) -> dict[str, Any]:
    """One injection run: 30 epochs, or ``max_steps`` updates (the control matches the method's count).

    Args:
        seed: data, initialisation and evaluation seed.
        facts: ``False`` drops the held-out products' texts from the corpus (the control).
        max_steps: updates instead of 30 epochs.

    Returns:
        ``base_qa_em`` (the up-scaled model before training), ``qa_em`` (after), ``steps``,
        ``corpus`` (texts trained on), ``frozen_unchanged`` (the original layers kept their
        weights) and ``seconds``.
    """
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    dm = SIADataModule(stage="inject", data_seed=seed, num_products=20, batch_size=32)
    if not facts and drop_heldout_facts(dm) == 0:
        raise RuntimeError("the corpus names no held-out product: nothing to remove")
    module = SIAInject(model_config=INJECT_MODEL, insert_every=1, train_embeddings=True, lr=3e-3, seed=seed)
    if max_steps is None:
        trainer = _trainer(30, check_val_every_n_epoch=30)
    else:
        trainer = _trainer(-1, max_steps=max_steps, check_val_every_n_epoch=None, val_check_interval=max_steps)
    base = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/qa_em"]
    assert module.model is not None
    frozen = {n: p.detach().clone() for n, p in module.model.named_parameters() if not p.requires_grad}
    trainer.fit(module, datamodule=dm)
    unchanged = all(torch.equal(p, frozen[n]) for n, p in module.model.named_parameters() if n in frozen)
    return {"base_qa_em": float(base), "qa_em": float(trainer.callback_metrics["val/qa_em"]),
            "steps": int(trainer.global_step), "corpus": len(dm.train_samples), "frozen_unchanged": unchanged,
            "seconds": round(time.perf_counter() - start, 1)}


def fit_alignment(seed: int, arm: str, callbacks: list[pl.Callback] | None = None,
                  ) -> tuple[pl.Trainer, SIAAlign, SIADataModule]:
    """Train one alignment run of ``arm`` (a key of :data:`ALIGN_ARMS`) and return its parts.

    ``callbacks`` only observe the run (e.g. record a logged value); the trained module, its
    datamodule and the trainer are returned for further evaluation.
    """
    if arm not in ALIGN_ARMS:
        raise ValueError(f"arm must be one of {sorted(ALIGN_ARMS)}, got {arm!r}")
    pl.seed_everything(seed, verbose=False)
    dm = SIADataModule(stage="align", data_seed=seed, num_products=10, batch_size=32)
    module = SIAAlign(model_config=ALIGN_MODEL, adv_eps=0.3, adv_alpha=0.5, adv_steps=5, eval_steps=10, lr=5e-3,
                      seed=seed, **ALIGN_ARMS[arm])
    trainer = _trainer(20, check_val_every_n_epoch=20, callbacks=callbacks)
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm


def last_validation(trainer: pl.Trainer) -> dict[str, float]:
    """The ``val/*`` metrics of ``trainer``'s last validation, without the ``val/`` prefix."""
    return {k.removeprefix("val/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def run_alignment(seed: int, arm: str) -> dict[str, Any]:
    """One alignment run of ``arm`` (a key of :data:`ALIGN_ARMS`); the last validation's metrics.

    Returns:
        ``qa_em``, ``refusal``, ``robust_refusal`` (embedding PGD-10), ``robust_refusal_suffix``,
        ``over_refusal`` and ``seconds``.
    """
    start = time.perf_counter()
    trainer, _, _ = fit_alignment(seed, arm)
    out: dict[str, Any] = last_validation(trainer)
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out
