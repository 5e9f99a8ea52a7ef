"""ConjugateProbe on a plain user LightningModule, on dict batches, and on an HF causal LM."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from robust_lightning.callbacks.conjugate_probe import ConjugateProbe
from robust_lightning.lightning_modules.nup.model import (
    PROBE_STATISTICS,
    causal_lm_prefill_probe,
    probe_statistics,
)

NAMES = (*PROBE_STATISTICS, "loss")


def _reference(module, x, y, predicted: bool = False) -> dict[str, torch.Tensor]:
    module.eval()
    z = x.clone().requires_grad_(True)
    logits = module.net(z)
    loss = F.cross_entropy(logits, logits.argmax(1) if predicted else y, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), z)
    return {**probe_statistics(x, grad), "loss": loss.detach()}


def test_logs_every_stage_and_matches_a_direct_single_backward(helpers) -> None:
    x, y = helpers.make_data(n=16)
    module = helpers.PlainClassifier(batchnorm=True, lr=0.0)
    probe = ConjugateProbe(keep_per_sample=True)
    trainer = helpers.make_trainer([probe], limit_train_batches=2)
    loader = helpers.make_loader(x, y, batch_size=8)
    trainer.fit(module, loader, loader)
    for prefix in ("train", "val"):
        for name in NAMES:
            assert f"{prefix}/probe/{name}" in trainer.callback_metrics, f"{prefix}/probe/{name}"
    trainer.test(module, loader, verbose=False)
    per_sample = probe.per_sample("test")
    reference = _reference(module, x, y)
    for name in NAMES:
        assert torch.allclose(per_sample[name], reference[name], rtol=1e-4, atol=1e-7), name
        assert float(trainer.callback_metrics[f"test/probe/{name}"]) == pytest.approx(float(reference[name].mean()),
                                                                                     rel=1e-4, abs=1e-7)
    # The probe is an observer: no parameter gradients, BatchNorm statistics untouched by test.
    bn = module.net[1]
    running_mean = bn.running_mean.clone()
    module.zero_grad(set_to_none=True)
    trainer.test(module, loader, verbose=False)
    assert torch.equal(bn.running_mean, running_mean)
    assert all(p.grad is None for p in module.parameters())


def test_predicted_label_probe_dict_batches_and_every_n_batches(helpers) -> None:
    x, y = helpers.make_data(n=24)
    y_wrong = (y + 1) % helpers.CLASSES  # the predicted-label probe must not read the labels
    module = helpers.PlainClassifier()
    probe = ConjugateProbe(stages=["test"], loss="predicted", every_n_batches=2, keep_per_sample=True)
    trainer = helpers.make_trainer([probe])
    trainer.test(module, helpers.make_loader(x, y_wrong, batch_size=8, dict_batches=True), verbose=False)
    per_sample = probe.per_sample("test")
    assert per_sample["loss"].shape == (16,)  # batches 0 and 2 of 3
    keep = torch.cat([torch.arange(0, 8), torch.arange(16, 24)])
    reference = _reference(module, x[keep], y[keep], predicted=True)
    assert torch.allclose(per_sample["coupling"], reference["coupling"], rtol=1e-4)
    assert "train/probe/loss" not in trainer.callback_metrics


def test_arguments_are_checked_and_name_themselves() -> None:
    for kwargs, match in [({"stages": ["predict"]}, "stages"), ({"every_n_batches": 0}, "every_n_batches"),
                          ({"loss": "true"}, "loss"), ({"lm_loss": "answer"}, "lm_loss"),
                          ({"model_mode": "test"}, "model_mode"), ({"causal_lm": ""}, "causal_lm"),
                          ({"baseline": "zero"}, "baseline")]:
        with pytest.raises(ValueError, match=match):
            ConjugateProbe(**kwargs)
    with pytest.raises(RuntimeError, match="keep_per_sample"):
        ConjugateProbe().per_sample("test")


# -- HF causal LM -------------------------------------------------------------------------------------
class TinyCausalLM(pl.LightningModule):
    """A user module holding an HF causal LM as ``self.lm``; SFT-style dict batches."""

    def __init__(self) -> None:
        super().__init__()
        transformers = pytest.importorskip("transformers")
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=30, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                         bos_token_id=0, eos_token_id=0)
        self.lm = transformers.GPT2LMHeadModel(config)

    def training_step(self, batch, batch_idx):
        return self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).loss

    def test_step(self, batch, batch_idx):
        self.log("test/lm_loss", self.lm(input_ids=batch["input_ids"], labels=batch["labels"]).loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _sft_loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(6):
        prompt, answer = torch.randint(1, 30, (3 + i % 3,), generator=g), torch.randint(1, 30, (2,), generator=g)
        samples.append((prompt, answer))

    def collate(items):
        length = max(len(p) + len(a) for p, a in items)
        ids = torch.zeros(len(items), length, dtype=torch.long)
        attention = torch.zeros_like(ids)
        prompt_mask = torch.zeros_like(ids, dtype=torch.bool)
        labels = torch.full_like(ids, -100)
        for row, (p, a) in enumerate(items):
            ids[row, :len(p) + len(a)] = torch.cat([p, a])
            attention[row, :len(p) + len(a)] = 1
            prompt_mask[row, :len(p)] = True
            labels[row, len(p):len(p) + len(a)] = a
        return {"input_ids": ids, "attention_mask": attention, "prompt_mask": prompt_mask, "labels": labels}

    return DataLoader(samples, batch_size=3, collate_fn=collate)


def test_causal_lm_probe_on_prompt_embeddings_at_prefill(helpers) -> None:
    module = TinyCausalLM()
    probe = ConjugateProbe(stages=["train", "test"], causal_lm="lm", keep_per_sample=True)
    trainer = helpers.make_trainer([probe], limit_train_batches=2)
    loader = _sft_loader()
    trainer.fit(module, loader)
    assert "train/probe/correlation" in trainer.callback_metrics
    module.zero_grad(set_to_none=True)
    trainer.test(module, loader, verbose=False)
    per_sample = probe.per_sample("test")
    batches = list(loader)
    expected = torch.cat([causal_lm_prefill_probe(module.lm, b["input_ids"], b["attention_mask"],
                                                  b["prompt_mask"])[0]["spread_product"] for b in batches])
    assert torch.allclose(per_sample["spread_product"], expected, rtol=1e-4)
    assert all(p.grad is None for p in module.lm.parameters())


def test_causal_lm_errors_are_clear(helpers) -> None:
    module = TinyCausalLM()
    loader = _sft_loader()
    trainer = helpers.make_trainer([ConjugateProbe(stages=["test"])])
    with pytest.raises(TypeError, match="causal_lm"):
        trainer.test(module, loader, verbose=False)
    trainer = helpers.make_trainer([ConjugateProbe(stages=["test"], causal_lm="model")])
    with pytest.raises(AttributeError, match="causal_lm='model'"):
        trainer.test(module, loader, verbose=False)
