"""DRSF's pure-torch pieces: backbones, MixStyle, RandConv, entropy-guided attention, soft fusion."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robust_lightning.lightning_modules.drsf import (
    EMBEDDING,
    DigitCNN,
    DRSFNet,
    EntropyGuidedChannelAttention,
    MixStyle,
    PreActResNet18Levels,
    RandomConvolution,
    SoftDomainFusion,
    SoftFusionDiscriminator,
    js_divergence,
    soft_fuse,
    spatial_entropy,
)
from robust_lightning.lightning_modules.drsf.model import sample_beta
from robust_lightning.nn import PreActResNet18


# -- backbones ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("in_channels", "size"), [(1, 16), (3, 32), (1, 12)])
def test_digit_cnn_levels(in_channels: int, size: int) -> None:
    net = DigitCNN(num_classes=7, in_channels=in_channels, width=4)
    assert net.level_channels == {"stage1": 4, "stage2": 8, "stage3": 16, EMBEDDING: 16}
    assert net(torch.rand(2, in_channels, size, size)).shape == (2, 7)


def test_preact_resnet_levels_is_the_shared_backbone_regrouped() -> None:
    torch.manual_seed(0)
    reference = PreActResNet18(num_classes=5, in_channels=3, width=8).eval()
    torch.manual_seed(0)
    levels = PreActResNet18Levels(num_classes=5, in_channels=3, width=8).eval()
    assert levels.level_channels == {"stage1": 8, "stage2": 16, "stage3": 32, "stage4": 64, EMBEDDING: 64}
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(levels(x), reference(x))


# -- style perturbation -------------------------------------------------------------------------
def test_sample_beta_range_and_shape() -> None:
    lam = sample_beta(0.1, 4000, torch.Generator().manual_seed(0))
    assert lam.shape == (4000,) and torch.isfinite(lam).all()
    assert 0.0 <= lam.min() and lam.max() <= 1.0
    # Beta(0.1, 0.1) is U-shaped: most mass near 0 and 1; mean 1/2.
    assert ((lam < 0.1) | (lam > 0.9)).float().mean() > 0.6
    assert abs(lam.mean().item() - 0.5) < 0.05
    assert abs(sample_beta(2.0, 4000, torch.Generator().manual_seed(0)).mean().item() - 0.5) < 0.03


def test_mixstyle_mixes_statistics_and_keeps_content() -> None:
    layer = MixStyle(p=1.0, alpha=0.1)
    x = torch.randn(8, 3, 5, 5) * torch.rand(8, 3, 1, 1) * 3 + torch.randn(8, 3, 1, 1)
    out = layer(x, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out, x)

    def normalise(t: torch.Tensor) -> torch.Tensor:
        return (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)

    # Only the per-instance mean/std change: the normalised map is the same.
    torch.testing.assert_close(normalise(out), normalise(x), atol=1e-3, rtol=1e-3)
    # Identical samples have one style: nothing to mix.
    same = x[:1].expand(4, -1, -1, -1).clone()
    torch.testing.assert_close(layer(same), same, atol=1e-5, rtol=1e-5)


def test_mixstyle_is_off_in_eval_and_at_p0() -> None:
    x = torch.randn(4, 2, 3, 3)
    assert torch.equal(MixStyle(p=1.0).eval()(x), x)
    assert torch.equal(MixStyle(p=0.0)(x), x)
    with pytest.raises(ValueError, match="p"):
        MixStyle(p=1.5)
    with pytest.raises(ValueError, match="alpha"):
        MixStyle(alpha=0.0)


def test_random_convolution_keeps_shape_range_and_is_reproducible() -> None:
    layer = RandomConvolution((3, 5))
    x = torch.rand(6, 3, 12, 12)
    a = layer(x, generator=torch.Generator().manual_seed(1))
    b = layer(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert not torch.allclose(a, x)


def test_random_convolution_1x1_on_grey_is_a_per_sample_affine_map() -> None:
    # A 1x1 kernel on one channel scales the image; after the rescaling to the sample's own mean
    # and std the view is the image or its negative (polarity flip) around the mean.
    layer = RandomConvolution((1,), mix=False, intensity="match")
    x = torch.rand(16, 1, 8, 8) * 0.5 + 0.25
    out = layer(x, generator=torch.Generator().manual_seed(0))
    centred_x = (x - x.mean((2, 3), keepdim=True)).flatten(1)
    centred_o = (out - out.mean((2, 3), keepdim=True)).flatten(1)
    correlation = torch.nn.functional.cosine_similarity(centred_x, centred_o, dim=1)
    assert torch.allclose(correlation.abs(), torch.ones(16), atol=1e-4)
    assert (correlation < 0).any() and (correlation > 0).any()


def test_random_convolution_free_intensity_randomises_contrast_and_polarity() -> None:
    # Published RandConv filters the centred image 2x - 1: a 1x1 kernel w maps x to
    # 0.5 + w (x - 0.5), a random contrast (|w|) and polarity (sign w) per sample.
    layer = RandomConvolution((1,), mix=False, intensity="free")
    x = torch.rand(64, 1, 8, 8) * 0.2 + 0.4  # small range: no clamping for |w| < 5
    out = layer(x, generator=torch.Generator().manual_seed(0))
    centred = (x - 0.5).flatten(1)
    slope = (centred * (out - 0.5).flatten(1)).sum(1) / centred.pow(2).sum(1)
    torch.testing.assert_close(out, 0.5 + slope[:, None, None, None] * (x - 0.5), atol=1e-5, rtol=1e-5)
    assert (slope < 0).sum() > 10 and (slope > 0).sum() > 10
    assert slope.abs().std() > 0.3
    # "match" keeps each sample's own contrast.
    matched = RandomConvolution((1,), mix=False, intensity="match")(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(matched.std((2, 3)), x.std((2, 3)), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("bad", [(), (2,), (3, 0), (True,)])
def test_random_convolution_rejects_bad_kernels(bad) -> None:
    with pytest.raises(ValueError, match="kernel_sizes"):
        RandomConvolution(bad)
    with pytest.raises(ValueError, match="intensity"):
        RandomConvolution((3,), intensity="auto")


# -- decoupling and reassembly --------------------------------------------------------------------
def test_spatial_entropy_of_focused_and_flat_maps() -> None:
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, 1, 2] = 5.0  # all mass at one position
    x[0, 1] = 1.0  # spread evenly
    x[0, 2, :2] = 1.0  # half the positions
    h = spatial_entropy(x)
    assert h[0, 0].item() == pytest.approx(0.0, abs=1e-4)
    assert h[0, 1].item() == pytest.approx(1.0, abs=1e-4)
    assert h[0, 2].item() == pytest.approx(math.log(8) / math.log(16), abs=1e-4)
    with pytest.raises(ValueError, match="B, C, H, W"):
        spatial_entropy(torch.rand(2, 3))


def test_attention_splits_features_and_reassembles_bias_across_samples() -> None:
    torch.manual_seed(0)
    block = EntropyGuidedChannelAttention(6, reduction=2)
    x = torch.randn(4, 6, 5, 5)
    identity = torch.arange(4)
    out, a, h = block.forward_with_aux(x, identity)
    # task + own bias = the input.
    torch.testing.assert_close(out, x)
    assert a.shape == h.shape == (4, 6) and ((a > 0) & (a < 1)).all()
    swap = torch.tensor([1, 0, 3, 2])
    out, a, _ = block.forward_with_aux(x, swap)
    gate = a[:, :, None, None]
    torch.testing.assert_close(out, gate * x + ((1 - gate) * x)[swap])


def test_attention_eval_uses_running_bias_or_own() -> None:
    torch.manual_seed(0)
    block = EntropyGuidedChannelAttention(4, momentum=1.0)
    x = torch.randn(8, 4, 3, 3)
    _, a, _ = block.forward_with_aux(x)
    expected_bias = ((1 - a[:, :, None, None]) * x).mean((0, 2, 3))
    torch.testing.assert_close(block.running_bias, expected_bias.detach())
    block.eval()
    out, a, _ = block.forward_with_aux(x)
    torch.testing.assert_close(out, a[:, :, None, None] * x + expected_bias[None, :, None, None])
    own = EntropyGuidedChannelAttention(4, bias_at_eval="own").eval()
    torch.testing.assert_close(own(x), x)
    with pytest.raises(ValueError, match="bias_at_eval"):
        EntropyGuidedChannelAttention(4, bias_at_eval="zero")
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        own(torch.rand(2, 5, 3, 3))


def test_entropy_guidance_sends_focused_channels_to_the_task_part() -> None:
    attention = torch.full((1, 2), 0.5, requires_grad=True)
    entropy = torch.tensor([[0.1, 0.9]])  # channel 0 focused, channel 1 diffuse
    EntropyGuidedChannelAttention.entropy_loss(attention, entropy).backward()
    assert attention.grad[0, 0] < 0 < attention.grad[0, 1]  # descent raises a_0, lowers a_1


# -- soft fusion ---------------------------------------------------------------------------------
def test_soft_fuse_interpolates_per_sample() -> None:
    a, b = torch.ones(3, 2, 2, 2), torch.zeros(3, 2, 2, 2)
    fused = soft_fuse(a, b, torch.tensor([1.0, 0.0, 0.25]))
    assert fused[0].eq(1).all() and fused[1].eq(0).all() and fused[2].eq(0.25).all()
    with pytest.raises(ValueError, match="same shape"):
        soft_fuse(a, b[:2], torch.ones(3))
    with pytest.raises(ValueError, match="lam"):
        soft_fuse(a, b, torch.ones(2))


def test_discriminator_reverses_the_gradient_into_the_features() -> None:
    torch.manual_seed(0)
    disc = SoftFusionDiscriminator(4, hidden=8, spatial=False, grl_lambda=0.5)
    features = torch.randn(6, 4, requires_grad=True)
    lam = torch.rand(6)
    disc.loss(features, lam).backward()
    reversed_grad = features.grad.clone()
    features.grad = None
    disc.grl.lambda_ = 0.0
    disc.loss(features, lam).backward()
    assert torch.equal(features.grad, torch.zeros_like(features.grad))
    # With lambda 1 and without the GRL the two gradients are exact negatives.
    features.grad = None
    disc.grl.lambda_ = 1.0
    disc.loss(features, lam).backward()
    plain = torch.autograd.grad(
        nn.functional.binary_cross_entropy_with_logits(disc.net(features).float(), lam[:, None]), features
    )[0]
    torch.testing.assert_close(features.grad, -plain)
    torch.testing.assert_close(reversed_grad, -0.5 * plain)
    with pytest.raises(ValueError, match="2-d"):
        disc(torch.rand(2, 4, 3, 3))


def test_soft_label_discriminator_learns_the_mixing_weight() -> None:
    """Fixed, separable views: the discriminator alone (GRL at 0) learns to read lam."""
    torch.manual_seed(0)
    fusion = SoftDomainFusion({"stage": 4, EMBEDDING: 4}, hidden=16, grl_lambda=0.0)
    optimizer = torch.optim.Adam(fusion.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    a_map, b_map = torch.randn(32, 4, 3, 3) + 2.0, torch.randn(32, 4, 3, 3) - 2.0
    views_a, views_b = {"stage": a_map, EMBEDDING: a_map.mean((2, 3))}, {"stage": b_map, EMBEDDING: b_map.mean((2, 3))}
    first = None
    for _ in range(150):
        losses = fusion(views_a, views_b, generator=generator)
        total = sum(losses.values())
        first = total.item() if first is None else first
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert set(losses) == {"stage", EMBEDDING}
    # The floor of BCE with soft targets U(0, 1) is E[H(lam)] = 0.5 nats per level.
    assert total.item() < first - 0.2
    assert total.item() < 2 * 0.5 + 0.1


def test_grl_makes_the_encoder_hide_the_soft_domain_label() -> None:
    """The adversarial game: an encoder behind the GRL removes the direction that tells views apart."""
    torch.manual_seed(0)
    content = torch.randn(256, 4)
    style = torch.zeros(256, 4)
    style[:, 0] = 3.0  # view a = content + style, view b = content - style

    def train(grl_lambda: float) -> float:
        torch.manual_seed(1)
        encoder = nn.Linear(4, 4)
        fusion = SoftDomainFusion({EMBEDDING: 4}, hidden=16, grl_lambda=grl_lambda)
        optimizer = torch.optim.Adam([*encoder.parameters(), *fusion.parameters()], lr=1e-2)
        generator = torch.Generator().manual_seed(0)
        for _ in range(300):
            fa, fb = encoder(content + style), encoder(content - style)
            loss = fusion({EMBEDDING: fa}, {EMBEDDING: fb}, generator=generator)[EMBEDDING]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            gap = (encoder(content + style) - encoder(content - style)).norm(dim=1).mean()
            return (gap / encoder(content).norm(dim=1).mean()).item()

    assert train(1.0) < 0.5 * train(0.0)


def test_soft_domain_fusion_needs_levels() -> None:
    with pytest.raises(ValueError, match="level_channels"):
        SoftDomainFusion({})


def test_js_divergence_properties() -> None:
    p = torch.randn(5, 4)
    assert js_divergence(p, p).item() == pytest.approx(0.0, abs=1e-6)
    q = torch.randn(5, 4)
    assert js_divergence(p, q).item() == pytest.approx(js_divergence(q, p).item(), rel=1e-5)
    far = torch.tensor([[100.0, -100.0]]), torch.tensor([[-100.0, 100.0]])
    assert js_divergence(*far).item() == pytest.approx(math.log(2), rel=1e-3)


# -- the network ---------------------------------------------------------------------------------
def test_drsf_net_levels_and_deterministic_eval() -> None:
    torch.manual_seed(0)
    net = DRSFNet(DigitCNN(width=4), mixstyle_levels=["stage1"], attention_levels=["stage2"])
    x = torch.randn(6, 1, 16, 16)
    out = net.forward_features(x, perturb=True)
    assert out.logits.shape == (6, 10)
    assert set(out.features) == {"stage1", "stage2", "stage3", EMBEDDING}
    assert set(out.attention) == {"stage2"}
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    with pytest.raises(ValueError, match="mixstyle_levels"):
        DRSFNet(DigitCNN(width=4), mixstyle_levels=["stage9"])
    with pytest.raises(ValueError, match="attention_levels"):
        DRSFNet(DigitCNN(width=4), attention_levels=[EMBEDDING])
    with pytest.raises(TypeError, match="MultiLevelBackbone"):
        DRSFNet(nn.Linear(2, 2))  # type: ignore[arg-type]
