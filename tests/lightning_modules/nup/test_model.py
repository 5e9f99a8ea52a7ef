"""NUP pure-torch pieces: probe statistics, the single-backward gradient, ConjMask, the LM prefill probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning.lightning_modules.nup.model import (
    PROBE_STATISTICS,
    ConjMask,
    causal_lm_prefill_probe,
    conj_mask,
    conj_mask_inputs,
    input_gradient,
    probe_statistics,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _classifier(seed: int = 0, batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5)]
    return nn.Sequential(*layers)


def _images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed))


# -- probe_statistics ---------------------------------------------------------------------------
def test_probe_statistics_match_a_numpy_reference_with_and_without_a_mask() -> None:
    g = torch.Generator().manual_seed(0)
    x, grad = torch.rand(3, 2, 5, generator=g, dtype=torch.float64), torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 2, 5, generator=g) > 0.3
    for m in (None, mask):
        stats = probe_statistics(x, grad, mask=m, baseline=0.25)
        assert set(stats) == set(PROBE_STATISTICS)
        for i in range(3):
            keep = np.ones(10, bool) if m is None else m[i].flatten().numpy()
            xi, gi = x[i].flatten().numpy()[keep], grad[i].flatten().numpy()[keep]
            sx, sg = xi.std(), gi.std()
            cov = ((xi - xi.mean()) * (gi - gi.mean())).mean()
            expected = {"x_spread": sx, "grad_spread": sg, "spread_product": sx * sg, "covariance": cov,
                        "correlation": cov / (sx * sg), "coupling": np.abs((xi - 0.25) * gi).mean(),
                        "grad_norm": np.linalg.norm(gi)}
            for name, value in expected.items():
                assert float(stats[name][i]) == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_spread_product_bounds_the_covariance_and_perfect_coupling_gives_correlation_one() -> None:
    x = torch.rand(4, 30, generator=torch.Generator().manual_seed(2))
    stats = probe_statistics(x, torch.randn(4, 30))
    assert bool((stats["spread_product"] >= stats["covariance"].abs() - 1e-7).all())
    assert torch.allclose(probe_statistics(x, 3 * x - 1)["correlation"], torch.ones(4), atol=1e-5)
    assert torch.allclose(probe_statistics(x, -x)["correlation"], -torch.ones(4), atol=1e-5)


def test_a_constant_input_has_zero_correlation_not_nan() -> None:
    stats = probe_statistics(torch.full((2, 8), 0.5), torch.randn(2, 8))
    assert torch.equal(stats["correlation"], torch.zeros(2))
    assert torch.equal(stats["spread_product"], torch.zeros(2))


def test_probe_statistics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        probe_statistics(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no component"):
        probe_statistics(torch.zeros(2, 3), torch.zeros(2, 3), mask=torch.tensor([[True] * 3, [False] * 3]))
    with pytest.raises(ValueError, match="bool"):
        probe_statistics(torch.zeros(2, 3), torch.zeros(2, 3), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="baseline"):
        probe_statistics(torch.zeros(2, 3), torch.zeros(2, 3), baseline=float("nan"))


# -- input_gradient -----------------------------------------------------------------------------
def test_input_gradient_is_the_input_gradient_and_leaves_parameters_alone() -> None:
    model = _classifier().eval()
    x, y = _images(), torch.arange(6) % 5
    loss, grad = input_gradient(lambda z: F.cross_entropy(model(z), y, reduction="none"), x)
    reference = x.clone().requires_grad_(True)
    F.cross_entropy(model(reference), y, reduction="sum").backward()
    assert torch.allclose(grad, reference.grad, atol=1e-6)
    assert loss.shape == (6,) and not loss.requires_grad
    for p in model.parameters():
        p.grad = None
    with torch.inference_mode():  # Lightning validates under inference mode
        x_inference = x.clone()
        _, grad_inference = input_gradient(lambda z: F.cross_entropy(model(z), y, reduction="none"), x_inference)
    assert torch.allclose(grad_inference, grad)
    assert all(p.grad is None for p in model.parameters())


def test_input_gradient_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="per-sample loss"):
        input_gradient(lambda z: z.sum(), torch.rand(3, 2))
    with pytest.raises(ValueError, match="does not depend"):
        input_gradient(lambda z: torch.ones(3, requires_grad=True) * 1.0, torch.rand(3, 2))
    with pytest.raises(ValueError, match="does not depend"):
        input_gradient(lambda z: torch.ones(3), torch.rand(3, 2))
    with pytest.raises(TypeError, match="floating-point"):
        input_gradient(lambda z: z, torch.ones(3, 2, dtype=torch.long))


# -- ConjMask -------------------------------------------------------------------------------------
def test_conj_mask_selects_the_top_fraction_by_input_times_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    x, grad = torch.rand(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g)
    mask = conj_mask(x, grad, fraction=0.2, baseline=0.5)
    assert mask.shape == x.shape and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [5] * 4  # round(0.2 * 25)
    contribution = ((x - 0.5) * grad).abs().flatten(1)
    for i in range(4):
        chosen = contribution[i][mask[i].flatten()]
        others = contribution[i][~mask[i].flatten()]
        assert float(chosen.min()) >= float(others.max())
    signed = conj_mask(x, grad, fraction=0.2, baseline=0.5, score="positive").flatten(1)
    top_signed = ((x - 0.5) * grad).flatten(1).topk(5, dim=1).indices
    assert torch.equal(signed, torch.zeros_like(signed).scatter_(1, top_signed, True))
    assert not conj_mask(x, grad, fraction=0.0).any()
    assert conj_mask(x, grad, fraction=1.0).all()


@pytest.mark.parametrize(("kwargs", "match"), [({"fraction": 1.5}, "fraction"), ({"fraction": -0.1}, "fraction"),
                                               ({"score": "max"}, "score"), ({"baseline": float("inf")}, "baseline")])
def test_conj_mask_rejects_bad_arguments(kwargs, match) -> None:
    args = {"fraction": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        conj_mask(torch.rand(2, 4), torch.rand(2, 4), **args)
    with pytest.raises(ValueError, match=match):
        ConjMask(nn.Identity(), **args)


def test_conj_mask_inputs_use_the_predicted_label_and_set_masked_components_to_the_baseline() -> None:
    model = _classifier().eval()
    x = _images()
    predicted = model(x).argmax(1)
    masked = conj_mask_inputs(model, x, fraction=0.25, baseline=0.3)
    assert torch.equal(masked, conj_mask_inputs(model, x, fraction=0.25, baseline=0.3, labels=predicted))
    changed = masked != x
    assert bool((masked[changed] == 0.3).all())
    _, grad = input_gradient(lambda z: F.cross_entropy(model(z), predicted, reduction="none"), x)
    mask = conj_mask(x, grad, 0.25, 0.3)
    assert torch.equal(masked, torch.where(mask, torch.full_like(x, 0.3), x))
    # Another label gives another mask: training may use the true label instead.
    other = (predicted + 1) % 5
    assert not torch.equal(masked, conj_mask_inputs(model, x, fraction=0.25, baseline=0.3, labels=other))
    assert conj_mask_inputs(model, x, fraction=0.0) is x


def test_conj_mask_gradient_is_masked_and_straight_through_is_the_identity() -> None:
    model = _classifier().eval()
    x = _images().requires_grad_(True)
    masked = conj_mask_inputs(model, x, fraction=0.25)
    mask = masked.detach() != x.detach()
    (grad_masked,) = torch.autograd.grad(masked.sum(), x)
    assert torch.equal(grad_masked, (~mask).float())  # detached mask: zero gradient where masked
    through = conj_mask_inputs(model, x, fraction=0.25, straight_through=True)
    assert torch.equal(through.detach(), masked.detach())
    (grad_through,) = torch.autograd.grad(through.sum(), x)
    assert torch.equal(grad_through, torch.ones_like(x))


def test_conj_mask_keeps_batchnorm_statistics_modes_and_parameter_gradients_untouched() -> None:
    model = _classifier()
    model.train()
    bn = model[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    conj_mask_inputs(model, _images(), fraction=0.2)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_conj_mask_module_wraps_a_classifier_and_works_under_inference_mode() -> None:
    model = _classifier().eval()
    x = _images()
    wrapped = ConjMask(model, fraction=0.2, baseline=0.0)
    with torch.inference_mode():
        out = wrapped(x.clone())
    assert torch.allclose(out, model(conj_mask_inputs(model, x, 0.2)).detach())
    assert torch.equal(ConjMask(model, fraction=0.0)(x), model(x))
    assert "fraction=0.2" in repr(wrapped)
    with pytest.raises(TypeError, match="classifier"):
        ConjMask("model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="logits"):
        ConjMask(nn.Flatten(0))(x)


def test_conj_mask_changes_predictions_of_a_trained_digits_model() -> None:
    """As documented: on a standard model, eval-only masking of the top 10% removes evidence."""
    from tests.data.trained import digits_tensors, trained_digits_model

    model = trained_digits_model()
    x, y = digits_tensors("test")
    with torch.no_grad():
        clean = model(x).argmax(1)
        masked = ConjMask(model, fraction=0.1)(x).argmax(1)
        lightly = ConjMask(model, fraction=0.02)(x).argmax(1)
    changed, changed_lightly = float((masked != clean).float().mean()), float((lightly != clean).float().mean())
    # Measured, trained_digits_model seeds 0/1/2: 10% masking changes 0.57/0.72/0.72 of the predictions,
    # 2% changes 0.23/0.18/0.23; accuracy 0.97-0.98 -> 0.27-0.42 at 10%.
    assert changed > 0.3 and changed > changed_lightly > 0.05
    assert float((masked == y).float().mean()) < float((clean == y).float().mean())


# -- LLM prefill probe ------------------------------------------------------------------------------
def _tiny_lm(kind: str) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                         bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(config)
    config = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(config)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_prefill_probe_reads_the_prompt_only_and_matches_a_manual_backward(kind: str) -> None:
    model = _tiny_lm(kind)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, 40, (2, 5), generator=g)
    answer = torch.randint(1, 40, (2, 3), generator=g)
    stats, loss = causal_lm_prefill_probe(model, prompt)
    # Appended answer tokens do not change a prefill probe (causal attention, prompt mask).
    ids = torch.cat([prompt, answer], 1)
    prompt_mask = torch.zeros_like(ids, dtype=torch.bool)
    prompt_mask[:, :5] = True
    stats_long, loss_long = causal_lm_prefill_probe(model, ids, prompt_mask=prompt_mask)
    assert torch.allclose(loss, loss_long, atol=1e-5)
    for name in PROBE_STATISTICS:
        assert torch.allclose(stats[name], stats_long[name], rtol=1e-4, atol=1e-7), name
    assert all(p.grad is None for p in model.parameters()) and model.training  # frozen, mode restored
    # Manual single backward on the prompt embeddings with the model's own greedy next token.
    model.eval()
    embeds = model.get_input_embeddings()(prompt).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits[:, -1]
    manual = F.cross_entropy(logits, logits.argmax(1), reduction="none")
    manual.sum().backward()
    reference = probe_statistics(embeds.detach(), embeds.grad)
    assert torch.allclose(loss, manual.detach(), atol=1e-5)
    assert torch.allclose(stats["coupling"], reference["coupling"], rtol=1e-4)


def test_prefill_probe_handles_padding_and_the_prompt_loss() -> None:
    model = _tiny_lm("gpt2")
    g = torch.Generator().manual_seed(1)
    short, long = torch.randint(1, 40, (1, 3), generator=g), torch.randint(1, 40, (1, 6), generator=g)
    ids = torch.zeros(2, 6, dtype=torch.long)
    ids[0, :3], ids[1] = short[0], long[0]
    attention = torch.zeros_like(ids)
    attention[0, :3], attention[1] = 1, 1
    for lm_loss in ("next_token", "prompt"):
        batched, batched_loss = causal_lm_prefill_probe(model, ids, attention_mask=attention, lm_loss=lm_loss)
        alone, alone_loss = causal_lm_prefill_probe(model, short, lm_loss=lm_loss)
        assert torch.allclose(batched_loss[0], alone_loss[0], atol=1e-5)
        assert torch.allclose(batched["spread_product"][0], alone["spread_product"][0], rtol=1e-4)
    # The prompt loss is the mean teacher-forced NLL of the prompt's own tokens (eval mode: no dropout).
    with torch.no_grad():
        logits = model.eval()(input_ids=short).logits[0, :-1]
    expected = F.cross_entropy(logits, short[0, 1:])
    _, prompt_loss = causal_lm_prefill_probe(model, short, lm_loss="prompt")
    assert float(prompt_loss[0]) == pytest.approx(float(expected), rel=1e-5)


def test_prefill_probe_errors_name_the_argument() -> None:
    model = _tiny_lm("gpt2")
    ids = torch.randint(1, 40, (2, 4))
    with pytest.raises(ValueError, match="lm_loss"):
        causal_lm_prefill_probe(model, ids, lm_loss="answer")
    with pytest.raises(ValueError, match="no prompt token"):
        causal_lm_prefill_probe(model, ids, prompt_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="two prompt tokens"):
        causal_lm_prefill_probe(model, ids[:, :1], lm_loss="prompt")
    with pytest.raises(ValueError, match="attention_mask"):
        causal_lm_prefill_probe(model, ids, attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="input_ids"):
        causal_lm_prefill_probe(model, ids.float())
    with pytest.raises(TypeError, match="get_input_embeddings"):
        causal_lm_prefill_probe(nn.Linear(2, 2), ids)
