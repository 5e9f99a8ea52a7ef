"""SIA under Lightning's ``ModelParallelStrategy`` (FSDP2) on 2 CPU processes (gloo), with a recorder.

Run by ``test_sia_fsdp.py`` as ``python -m tests.lightning_modules.sia.fsdp_run {align,inject} OUT_DIR``;
Lightning's launcher re-runs the same command for rank 1. Each rank writes ``OUT_DIR/rank<r>.json``
(its micro-batches, losses, what the embedding table looked like); rank 0 writes the full step-0
gradients (``grads0.pt``), the last validation metrics (``metrics.json``) and, through the module's
own ``export_dir``, the trained model (``export/``).
"""

from __future__ import annotations

import json
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from robust_lightning.lightning_modules.sia import SIAAlign, SIADataModule, SIAInject

# Shared with the single-process reference in test_sia_fsdp.py.
MODEL = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}
DATA = {"num_products": 8, "num_queries": 20, "eval_batch_size": 512}
# lr 2e-3 leaves the align model refusing some prompts after 4 steps (neither none nor all), so
# the validation comparison is not between two constant answers.
MODULES = {
    "align": (SIAAlign, {"model_config": MODEL, "adv_weight": 0.5, "adv_eps": 0.3, "adv_steps": 3, "eval_steps": 2,
                         "suffix_prob": 0.5, "suffix_candidates": 4, "lr": 2e-3, "seed": 0}),
    # Only the inserted layers train (embeddings, head and the original layers stay frozen).
    "inject": (SIAInject, {"model_config": MODEL, "insert_every": 1, "train_embeddings": False, "lr": 1e-2, "seed": 0}),
}
BATCH_PER_RANK = 2  # align: with DistributedSampler(seed=0) step 1 gives rank 1 no harmful sample (lockstep path)
STEPS = 4
TRAINER = {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": STEPS, "limit_val_batches": 1,
           "num_sanity_val_steps": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
           "enable_model_summary": False}


def build(stage: str, export_dir: Path, **data_kwargs: Any) -> tuple[pl.LightningModule, dict[str, Any]]:
    """The module of ``stage`` and the keyword arguments of its datamodule."""
    cls, kwargs = MODULES[stage]
    return cls(**kwargs, export_dir=str(export_dir)), {**DATA, "stage": stage, "batch_size": BATCH_PER_RANK, **data_kwargs}


def raw_samples(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The samples a batch was collated from (the align batch carries them; an LM batch is unpadded)."""
    if "samples" in batch:
        return batch["samples"]
    return [{"ids": ids[mask.bool()].tolist()} for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=False)]


def full(t: torch.Tensor) -> torch.Tensor:
    """The full value of a parameter or gradient, gathering a sharded ``DTensor`` (a collective)."""
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone().cpu()


class Recorder(pl.Callback):
    """Records each rank's micro-batches, losses and the step-0 gradients."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        weight = module.model.get_input_embeddings().weight
        self.steps.append({
            "samples": raw_samples(batch), "harmful": int(batch["harmful"].sum()) if "harmful" in batch else 0,
            "embedding_type": type(weight).__name__, "embedding_placements": [str(p) for p in getattr(weight, "placements", ())],
            "embedding_local_rows": int(getattr(weight, "to_local", lambda: weight)().shape[0]),
            "embedding_rows": int(weight.shape[0]),
        })

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.steps[-1]["loss"] = float(trainer.callback_metrics["train/loss"])

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer: Any) -> None:
        if trainer.global_step == 0:
            grads = {n: full(p.grad) for n, p in module.model.named_parameters() if p.grad is not None}
            if trainer.is_global_zero:
                torch.save(grads, self.out / "grads0.pt")

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.steps))
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            (self.out / "metrics.json").write_text(json.dumps(metrics))


def main(stage: str, out: Path) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)
    module, data_kwargs = build(stage, out / "export")
    # A short collective timeout: ranks out of lockstep fail in minutes instead of hanging for 30.
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timedelta(minutes=2))
    trainer = pl.Trainer(**TRAINER, devices=2, strategy=strategy, callbacks=[Recorder(out)])
    trainer.fit(module, datamodule=SIADataModule(**data_kwargs))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
