"""SIA sharded with FSDP2: the building blocks on one process, and the real training steps on 2 CPU ranks.

The distributed test runs :mod:`.fsdp_run` (Lightning ``ModelParallelStrategy``, ``fully_shard`` on
every decoder layer, the embedding and the root, gloo) and replays each rank's micro-batches in
one unsharded process with ``accumulate_grad_batches=2`` (the data-parallel gradient: the mean of
the ranks' losses). Losses, step-0 gradients, trained (and frozen) weights and the deterministic
validation metrics must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from robust_lightning.lightning_modules.sia import (
    SIAAlign,
    SIADataModule,
    SIAInject,
    build_causal_lm,
    build_word_tokenizer,
)
from robust_lightning.lightning_modules.sia.datamodule import _collate_sft_with_samples
from robust_lightning.lightning_modules.sia.model import (
    collate_lm,
    collate_sft,
    embedding_pgd,
    embedding_std,
    gathered_parameters,
    is_sharded,
    shard_causal_lm,
)
from tests.lightning_modules.sia import fsdp_run

ROOT = Path(__file__).resolve().parents[3]


# --- one process ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(["a b c d e f g h i j k l"])


def test_lockstep_attack_with_a_zero_budget_runs_the_passes_and_returns_zero(tokenizer) -> None:
    torch.manual_seed(0)
    model = build_causal_lm(fsdp_run.MODEL, tokenizer)
    batch = collate_sft([{"prompt_ids": [2, 5, 6], "response_ids": [7, 3]}], tokenizer.pad_token_id)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    args = (model, batch["input_ids"], batch["attention_mask"], batch["labels"], batch["prompt_mask"])
    assert embedding_pgd(*args, eps=torch.zeros(1), alpha=0.1, steps=3).abs().max() == 0
    assert not calls, "without lockstep a zero budget runs no forward"
    delta = embedding_pgd(*args, eps=torch.zeros(1), alpha=0.1, steps=3, lockstep=True)
    assert delta.abs().max() == 0 and len(calls) == 3, "with lockstep it joins the other ranks' 3 passes"
    assert all(p.grad is None for p in model.parameters()) and all(p.requires_grad for p in model.parameters())


def test_sharding_helpers_on_an_unsharded_model(tokenizer) -> None:
    model = build_causal_lm(fsdp_run.MODEL, tokenizer)
    weight = model.get_input_embeddings().weight
    assert embedding_std(weight) == pytest.approx(float(weight.detach().std()), rel=1e-6)
    assert not is_sharded(model)
    with gathered_parameters(model) as inside:
        assert inside is model
    with pytest.raises(ValueError, match="1-D DeviceMesh"):
        shard_causal_lm(model, mesh=None)


class _Mesh:
    """Stands in for ModelParallelStrategy's 2-D device mesh (only names and sizes are read)."""

    mesh_dim_names = ("data_parallel", "tensor_parallel")

    def __init__(self, tensor_parallel: int) -> None:
        self.tp = tensor_parallel

    def __getitem__(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(size=lambda: self.tp if name == "tensor_parallel" else 1)


@pytest.mark.parametrize("cls", [SIAAlign, SIAInject])
def test_unsupported_sharding_setups_are_refused_by_name(cls) -> None:
    from lightning.pytorch.strategies import FSDPStrategy

    module = cls(model_config=fsdp_run.MODEL)
    module._device_mesh = _Mesh(tensor_parallel=2)
    with pytest.raises(ValueError, match="tensor_parallel size 2.*tensor_parallel_size=1"):
        module.configure_model()
    module._device_mesh = None
    module._trainer = SimpleNamespace(strategy=FSDPStrategy())
    with pytest.raises(ValueError, match="FSDPStrategy.*ModelParallelStrategy"):
        module.configure_model()


# --- two processes ---------------------------------------------------------------------------------
class _Recorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grads: dict[str, torch.Tensor] = {}
        self.initial: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.initial = {n: p.detach().clone() for n, p in module.model.named_parameters()}

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer: Any) -> None:
        if trainer.global_step == 0:
            self.grads = {n: p.grad.detach().clone() for n, p in module.model.named_parameters() if p.grad is not None}


class _Replay(SIADataModule):
    """The SIA data, with training batches replayed from a list of sample lists."""

    def __init__(self, replay: list[list[dict[str, Any]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.replay = replay

    def train_dataloader(self) -> DataLoader:
        pad = self.tokenizer.pad_token_id
        collate = partial(collate_lm if self.stage == "inject" else _collate_sft_with_samples, pad_id=pad)
        return DataLoader(self.replay, batch_size=None, shuffle=False, collate_fn=collate)


def _reference(stage: str, micro_batches: list[list[dict[str, Any]]], export: Path) -> tuple[pl.Trainer, _Recorder]:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    pl.seed_everything(0, verbose=False)
    module, data_kwargs = fsdp_run.build(stage, export)
    data = _Replay(micro_batches, **data_kwargs)
    recorder = _Recorder()
    trainer = pl.Trainer(**{**fsdp_run.TRAINER, "limit_train_batches": len(micro_batches)}, devices=1,
                         accumulate_grad_batches=2, callbacks=[recorder])
    trainer.fit(module, datamodule=data)
    return trainer, recorder


# Validation metrics that involve no randomness (greedy decoding only).
DETERMINISTIC = {"align": ("qa_em", "refusal", "over_refusal"), "inject": ("qa_em",)}


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("stage", ["align", "inject"])
def test_fsdp_on_two_ranks_matches_one_unsharded_process(stage: str, tmp_path: Path) -> None:
    out = tmp_path / "fsdp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        env.pop(key, None)  # let Lightning's launcher pick a free port and set the ranks
    run = subprocess.run([sys.executable, "-m", "tests.lightning_modules.sia.fsdp_run", stage, str(out)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(steps) for steps in ranks] == [fsdp_run.STEPS] * 2

    # The embedding table (the attack's input space) was really sharded by rows over the ranks.
    for step0, step1 in zip(*ranks, strict=False):
        assert step0["embedding_type"] == step1["embedding_type"] == "DTensor"
        assert step0["embedding_placements"] == ["S(0)"]
        assert step0["embedding_local_rows"] + step1["embedding_local_rows"] == step0["embedding_rows"]
        assert step0["embedding_local_rows"] < step0["embedding_rows"]
    if stage == "align":
        # Some step had harmful samples on one rank only: the other joined the attack in lockstep.
        assert any((a["harmful"] == 0) != (b["harmful"] == 0) for a, b in zip(*ranks, strict=False)), "data order no longer covers it"

    micro_batches = [step[r]["samples"] for step in zip(*ranks, strict=False) for r in (0, 1)]
    trainer, reference = _reference(stage, micro_batches, tmp_path / "reference")
    model = trainer.lightning_module.model

    # Same per-rank losses (clean SFT + embedding PGD, or LM loss) at every step.
    fsdp_losses = [step[r]["loss"] for step in zip(*ranks, strict=False) for r in (0, 1)]
    assert fsdp_losses == pytest.approx(reference.losses, rel=1e-4, abs=1e-5)

    # Same step-0 gradients (reduce-scattered shards gathered) for exactly the trainable parameters.
    grads = torch.load(out / "grads0.pt", weights_only=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == set(reference.grads) == trainable
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference.grads[name], rtol=1e-4, atol=1e-6, msg=name)

    # The export gathered the sharded weights: the trained model equals the unsharded one.
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(out / "export", local_files_only=True, trust_remote_code=False)
    assert exported.config.architectures == ["LlamaForCausalLM"]
    trained = dict(model.named_parameters())
    assert set(trained) == {n for n, _ in exported.named_parameters()}
    for name, value in exported.named_parameters():
        torch.testing.assert_close(value, trained[name].detach(), rtol=1e-4, atol=1e-5, msg=name)
        if name not in trainable:
            assert torch.equal(value, reference.initial[name]), f"frozen {name} changed under FSDP"
    moved = max(float((trained[n].detach() - reference.initial[n]).abs().max()) for n in trainable)
    assert moved > 1e-3, "training must have changed the weights for the comparison to mean anything"

    # Validation ran sharded (records split over the ranks, counts summed over them): the
    # deterministic greedy metrics equal the single-process ones; the attacked ones exist.
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    assert set(metrics) == set(expected) == {f"val/{m}" for m in trainer.lightning_module._metric_names()}
    for name in DETERMINISTIC[stage]:
        assert metrics[f"val/{name}"] == pytest.approx(expected[f"val/{name}"], abs=1e-6), (name, metrics, expected)
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
