"""Unit tests of the pure-torch Soft-Di[M]O pieces (tokenisers, transformer, sampling, losses)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.soft_dimo.model import (
    DigitFeatureClassifier,
    ImageDiscriminator,
    MaskedTokenTransformer,
    ScalarQuantizer,
    VQAutoencoder,
    arccos_mask_ratio,
    dimo_generator_loss,
    distillation_gradient,
    generator_inputs,
    guided_logits,
    mask_tokens,
    maskgit_sample,
    unmasking_schedule,
)


def _transformer(vocab: int = 8, length: int = 16) -> MaskedTokenTransformer:
    torch.manual_seed(0)
    return MaskedTokenTransformer(vocab, length, num_classes=10, dim=16, depth=1, heads=2, mlp_dim=32).eval()


def test_scalar_quantizer_round_trip_and_soft_decoding() -> None:
    quantizer = ScalarQuantizer(num_levels=5, image_size=4)
    images = torch.rand(3, 1, 4, 4)
    tokens = quantizer.encode(images)
    assert tokens.shape == (3, 16) and tokens.min() >= 0 and tokens.max() <= 4
    decoded = quantizer.decode_tokens(tokens)
    assert (decoded - images).abs().max() <= 0.125 + 1e-6  # half a level step (1/4 / 2)
    one_hot = F.one_hot(tokens, 5).float()
    torch.testing.assert_close(quantizer.decode_probs(one_hot), decoded)
    uniform = torch.full((1, 16, 5), 0.2)
    torch.testing.assert_close(quantizer.decode_probs(uniform), torch.full((1, 1, 4, 4), 0.5))


def test_vq_autoencoder_trains_and_straight_through_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    vq = VQAutoencoder(codebook_size=16, code_dim=8, image_size=16, hidden=16, downsamples=2)
    # Smooth images (4x4 upsampled): compressible by a 4x4 grid of 16 codes, unlike white noise.
    images = F.interpolate(torch.rand(8, 1, 4, 4), size=16, mode="bilinear", align_corners=False)
    assert vq.encode(images).shape == (8, vq.sequence_length) == (8, 16)
    loss, parts = vq.loss(images)
    loss.backward()
    assert vq.encoder[0].weight.grad is not None and vq.encoder[0].weight.grad.abs().sum() > 0
    assert vq.codebook.weight.grad.abs().sum() > 0
    optimizer = torch.optim.Adam(vq.parameters(), lr=3e-3)
    first = float(parts["reconstruction"])
    for _ in range(100):
        optimizer.zero_grad()
        vq.loss(images)[0].backward()
        optimizer.step()
    assert float(vq.loss(images)[1]["reconstruction"]) < 0.5 * first
    probs = torch.softmax(torch.randn(2, 16, 16, requires_grad=True), -1)
    assert vq.decode_probs(probs).shape == (2, 1, 16, 16)


def test_vq_rejects_bad_geometry() -> None:
    with pytest.raises(InvalidArgumentError, match="image_size"):
        VQAutoencoder(image_size=10, downsamples=2)


def test_soft_embedding_of_one_hot_equals_the_token_lookup() -> None:
    model = _transformer()
    tokens = torch.randint(0, 8, (2, 16))
    labels = torch.tensor([1, 2])
    soft = model.soft_embed(F.one_hot(tokens, 8).float())
    torch.testing.assert_close(model(None, labels, input_embeddings=soft), model(tokens, labels))
    assert model(tokens, labels).shape == (2, 16, 8)


def test_guidance_scale_one_is_the_conditional_pass_and_scale_zero_the_unconditional() -> None:
    model = _transformer()
    tokens = torch.randint(0, 9, (3, 16))
    labels = torch.tensor([0, 4, 9])
    torch.testing.assert_close(guided_logits(model, tokens, labels, 1.0), model(tokens, labels))
    unconditional = model(tokens, labels, torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(guided_logits(model, tokens, labels, 0.0), unconditional)


def test_mask_tokens_masks_exact_counts_and_generator_inputs_mask_the_fixed_share() -> None:
    tokens = torch.zeros(4, 64, dtype=torch.long)
    mask = mask_tokens(tokens, torch.tensor([0.0, 0.25, 0.6, 1.0]))
    assert mask.sum(-1).tolist() == [1, 16, 38, 64]
    inputs = generator_inputs(5, 64, 8, 0.6, torch.device("cpu"))
    assert ((inputs == 8).sum(-1) == 38).all()
    assert inputs.max() <= 8
    ratios = arccos_mask_ratio(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(ratios, torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("steps", [1, 2, 8, 12, 64])
def test_unmasking_schedule_reveals_every_token_once(steps: int) -> None:
    counts = unmasking_schedule(steps, 64)
    assert len(counts) == steps and sum(counts) == 64 and min(counts) >= 1


@pytest.mark.parametrize("steps", [1, 4])
def test_maskgit_sample_fills_every_position(steps: int) -> None:
    model = _transformer()
    tokens = maskgit_sample(model, torch.arange(6) % 10, steps=steps, guidance=2.0,
                            generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (6, 16) and tokens.max() < 8 and tokens.min() >= 0


def test_reverse_kl_gradient_is_the_autograd_gradient_of_kl_in_the_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, requires_grad=True)
    teacher = torch.randn(2, 3, 5)
    p = torch.softmax(logits, -1)
    kl = (p * (torch.log_softmax(logits, -1) - torch.log_softmax(teacher, -1))).sum()
    (expected,) = torch.autograd.grad(kl, logits)
    torch.testing.assert_close(distillation_gradient(teacher, logits.detach(), "rkl"), expected)
    forward = distillation_gradient(teacher, logits.detach(), "fkl")
    torch.testing.assert_close(forward, p.detach() - torch.softmax(teacher, -1))
    mixed = distillation_gradient(teacher, logits.detach(), "jeffreys", jeffreys_beta=0.25)
    torch.testing.assert_close(mixed, 0.75 * forward + 0.25 * expected)
    with pytest.raises(InvalidArgumentError, match="divergence"):
        distillation_gradient(teacher, logits.detach(), "js")  # type: ignore[arg-type]


def test_dimo_loss_gradient_is_g_on_masked_positions_over_the_batch() -> None:
    logits = torch.randn(2, 4, 3, requires_grad=True)
    g = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    dimo_generator_loss(logits, g, mask).backward()
    torch.testing.assert_close(logits.grad, torch.where(mask.unsqueeze(-1), g, 0.0) / 2)


def test_critics_shapes() -> None:
    images = torch.rand(4, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    classifier = DigitFeatureClassifier(width=4, feature_dim=12)
    assert classifier(images).shape == (4, 10) and classifier.features(images).shape == (4, 12)
    assert ImageDiscriminator(width=4)(images, labels).shape == (4,)
    assert ImageDiscriminator(num_classes=0, width=4)(images).shape == (4,)
