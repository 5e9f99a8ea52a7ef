"""DRSF building blocks in pure torch (usable without Lightning).

Li et al., "Let Synthetic Data Shine: Domain Reassembly and Soft-Fusion for Single Domain
Generalization" (arXiv:2503.13617). Two parts, each read from the paper's description (its exact
formulas are not public to us; README.md, "Our reading", lists every choice):

* **Discriminative feature decoupling and reassembly** (:class:`EntropyGuidedChannelAttention`):
  a channel attention ``a`` computed from each channel's pooled response and its spatial
  entropy splits a feature map into a task part ``a * x`` and a bias part ``(1 - a) * x``; in
  training the task part of one sample is reassembled with the bias part of another, so what
  the bias channels carry cannot predict the label, and an entropy target (focused, low-entropy
  channels are task channels) keeps the split from collapsing.
* **Multi-level domain soft fusion** (:class:`SoftDomainFusion`): features of two differently
  style-perturbed views of the same images are interpolated with random weights
  ``lam ~ U(0, 1)``; a discriminator behind a gradient-reversal layer predicts ``lam`` (the soft
  domain label) at several feature levels, so the encoder is pushed to make the transition
  between the views' features continuous and unpredictable.

Style perturbation comes from :class:`MixStyle` (Zhou et al. 2021, feature statistics mixed
with ``Beta(0.1, 0.1)`` weights) and :class:`RandomConvolution` (Xu et al. 2021, "Robust and
Generalizable Visual Representation Learning via Random Convolutions").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_positive, check_positive_int, check_probability, is_int
from robust_lightning.nn.backbones import PreActResNet18
from robust_lightning.nn.grl import GradientReversal

__all__ = [
    "EMBEDDING",
    "DRSFNet",
    "DRSFOutput",
    "DigitCNN",
    "EntropyGuidedChannelAttention",
    "MixStyle",
    "MultiLevelBackbone",
    "PreActResNet18Levels",
    "RandomConvolution",
    "SoftDomainFusion",
    "SoftFusionDiscriminator",
    "js_divergence",
    "sample_beta",
    "soft_fuse",
    "spatial_entropy",
]

# Name of the pooled feature vector, the last level a backbone exposes (after its last stage).
EMBEDDING = "embedding"




# -- backbones exposing multi-level features ------------------------------------------------
class MultiLevelBackbone(nn.Module):
    """A classifier split into named stages, so methods can act between them.

    Subclasses fill ``stages`` (applied in order), ``stage_names``, ``stage_channels`` (output
    channels of each stage) and ``head`` (pooled ``(B, C)`` features to logits). Pooling is
    global average pooling, so the head is independent of the input resolution.
    """

    stages: nn.ModuleList
    stage_names: tuple[str, ...]
    stage_channels: tuple[int, ...]
    head: nn.Module
    num_classes: int

    @property
    def level_channels(self) -> dict[str, int]:
        """Channels of every level: each stage, then :data:`EMBEDDING` (the pooled vector)."""
        return {**dict(zip(self.stage_names, self.stage_channels, strict=False)), EMBEDDING: self.stage_channels[-1]}

    @override
    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class DigitCNN(MultiLevelBackbone):
    """Three-stage CNN for 16-32 px digits, grey or RGB (stages halve the resolution).

    ``stage1``: two 3x3 conv-BN-ReLU at ``width`` then 2x2 max-pool; ``stage2``: the same at
    ``2 * width``; ``stage3``: one conv-BN-ReLU at ``4 * width`` then max-pool; global average
    pooling and a linear head.

    Args:
        num_classes: Number of logits.
        in_channels: Image channels (1 or 3).
        width: Channels of the first stage.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_channels", in_channels)
        check_positive_int("width", width)
        self.num_classes = num_classes
        widths = (width, 2 * width, 4 * width)
        self.stages = nn.ModuleList([
            nn.Sequential(*_conv_bn_relu(in_channels, widths[0]), *_conv_bn_relu(widths[0], widths[0]),
                          nn.MaxPool2d(2)),
            nn.Sequential(*_conv_bn_relu(widths[0], widths[1]), *_conv_bn_relu(widths[1], widths[1]),
                          nn.MaxPool2d(2)),
            nn.Sequential(*_conv_bn_relu(widths[1], widths[2]), nn.MaxPool2d(2)),
        ])
        self.stage_names = ("stage1", "stage2", "stage3")
        self.stage_channels = widths
        self.head = nn.Linear(widths[2], num_classes)


class PreActResNet18Levels(MultiLevelBackbone):
    """:class:`robust_lightning.nn.PreActResNet18` exposed as four named stages (for CIFAR-size images).

    The network is the shared backbone itself, re-grouped, not a copy: ``stage1`` is the stem
    plus the first residual stage, ``stage2``/``stage3`` the next two, ``stage4`` the last plus
    the final BN-ReLU.

    Args:
        num_classes: Number of logits.
        in_channels: Image channels.
        width: Channels of the first stage (64 in the paper).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        net = PreActResNet18(num_classes=num_classes, in_channels=in_channels, width=width)
        self.num_classes = num_classes
        layers = list(net.layers)
        self.stages = nn.ModuleList([
            nn.Sequential(net.conv1, layers[0]),
            layers[1],
            layers[2],
            nn.Sequential(layers[3], net.bn, nn.ReLU()),
        ])
        self.stage_names = ("stage1", "stage2", "stage3", "stage4")
        self.stage_channels = tuple(width * 2**i for i in range(4))
        self.head = net.linear


# -- style perturbation ---------------------------------------------------------------------
def sample_beta(alpha: float, size: int, generator: torch.Generator | None = None) -> Tensor:
    """``size`` draws of ``Beta(alpha, alpha)`` on the CPU, from ``generator`` when given.

    ``torch.distributions.Beta`` takes no generator, so this uses ``X / (X + Y)`` with
    ``X, Y ~ Gamma(alpha, 1)``. For small ``alpha`` both gammas can underflow to 0; such draws
    are set to 0.5 rather than NaN.
    """
    concentration = torch.full((2, size), float(alpha))
    gammas = torch._standard_gamma(concentration, generator=generator)
    total = gammas.sum(dim=0)
    lam = gammas[0] / total.clamp_min(torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, lam, torch.full_like(lam, 0.5))


class MixStyle(nn.Module):
    """MixStyle (Zhou et al., ICLR 2021): mix instance feature statistics across the batch.

    With probability ``p`` per call (training only), each sample's per-channel mean and std are
    replaced by ``lam * own + (1 - lam) * other``'s, ``lam ~ Beta(alpha, alpha)`` per sample and
    ``other`` a random permutation of the batch. Statistics are detached, as in the reference
    implementation (github.com/KaiyangZhou/mixstyle-release, ``imcls/models/mixstyle.py``), so
    the gradient does not flow through the style.

    Args:
        p: Probability of mixing in a call.
        alpha: Beta concentration; 0.1 puts most weight near 0 and 1 (strong style swaps).
        eps: Added to the variance.
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = check_probability("p", p)
        self.alpha = check_positive("alpha", alpha)
        self.eps = check_positive("eps", eps)

    @override
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training or self.p == 0.0 or x.shape[0] < 2:
            return x
        if torch.rand((), generator=generator).item() >= self.p:
            return x
        batch = x.shape[0]
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sigma = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        normed = (x - mu) / sigma
        # Sampled on the CPU from the (optional) generator, then moved: reproducible on any device.
        lam = sample_beta(self.alpha, batch, generator).to(x.device, x.dtype).view(batch, 1, 1, 1)
        perm = torch.randperm(batch, generator=generator).to(x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
        return normed * sigma_mix + mu_mix

    @override
    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}"


class RandomConvolution(nn.Module):
    """RandConv input augmentation (Xu et al., ICLR 2021) on ``[0, 1]`` images.

    Each call draws one kernel size from ``kernel_sizes`` and, per sample, a random
    ``C -> C`` kernel with Kaiming-normal weights (std ``1 / sqrt(C k^2)``), blends the filtered
    image with the original by ``alpha ~ U(0, 1)`` per sample (RandConv's "mixing" variant) and
    clamps to ``[0, 1]`` so the DataModule contract still holds. Random filters keep shapes and
    change local texture, contrast, blur and polarity: the kind of appearance a synthetic source
    over-fits to.

    ``intensity`` says what happens to the filtered image's intensities:

    * ``"free"`` (RandConv as published): the image is centred to ``[-1, 1]`` (``2x - 1``, the
      normalisation RandConv's digit experiments filter), filtered, and mapped back, so the
      random kernel's sum sets a random contrast and polarity per sample.
    * ``"match"``: the filtered image is rescaled to the sample's own per-channel mean and std,
      so only texture and polarity change, never the global contrast.

    Args:
        kernel_sizes: Odd kernel sizes to draw from.
        mix: Blend with the original image (``False``: the filtered image alone).
        intensity: ``"free"`` or ``"match"``.
    """

    def __init__(self, kernel_sizes: Sequence[int] = (1, 3, 5, 7), mix: bool = True,
                 intensity: str = "free") -> None:
        super().__init__()
        if intensity not in ("free", "match"):
            raise ValueError(f"intensity must be 'free' or 'match', got {intensity!r}")
        self.intensity = intensity
        sizes = tuple(kernel_sizes)
        if not sizes or any(not is_int(k) or k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(f"kernel_sizes must be a non-empty list of odd positive ints, got {kernel_sizes!r}")
        self.kernel_sizes = sizes
        self.mix = bool(mix)

    @override
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"RandomConvolution expects images (B, C, H, W), got {tuple(x.shape)}")
        batch, channels, height, width = x.shape
        k = self.kernel_sizes[int(torch.randint(len(self.kernel_sizes), (), generator=generator))]
        weight = torch.randn(batch * channels, channels, k, k, generator=generator)
        weight = (weight / math.sqrt(channels * k * k)).to(x.device, x.dtype)
        source = 2.0 * x - 1.0 if self.intensity == "free" else x
        # One grouped convolution filters every sample with its own kernel.
        out = F.conv2d(source.reshape(1, batch * channels, height, width), weight, padding=k // 2, groups=batch)
        out = out.view(batch, channels, height, width)
        if self.intensity == "free":
            out = (out + 1.0) / 2.0
        else:
            mean, std = x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True)
            out_mean, out_std = out.mean(dim=(2, 3), keepdim=True), out.std(dim=(2, 3), keepdim=True)
            out = (out - out_mean) / (out_std + 1e-6) * std + mean
        if self.mix:
            alpha = torch.rand(batch, 1, 1, 1, generator=generator).to(x.device, x.dtype)
            out = alpha * x + (1 - alpha) * out
        return out.clamp(0.0, 1.0)

    @override
    def extra_repr(self) -> str:
        return f"kernel_sizes={self.kernel_sizes}, mix={self.mix}, intensity={self.intensity!r}"


# -- discriminative feature decoupling and reassembly ------------------------------------------
def spatial_entropy(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Normalised spatial entropy of each channel's activation mass, in ``[0, 1]``.

    Each channel's non-negative response ``relu(x)`` is normalised to a distribution over the
    ``H * W`` positions and its Shannon entropy divided by ``log(H * W)``: 0 when all the mass
    sits at one position (a focused, shape-like detector), 1 when it is spread evenly (a flat
    intensity/texture response, or a dead channel).

    Args:
        x: Features ``(B, C, H, W)``.
        eps: Added mass so all-zero channels count as uniform.

    Returns:
        ``(B, C)`` entropies in ``[0, 1]``.
    """
    if x.dim() != 4:
        raise ValueError(f"spatial_entropy expects features (B, C, H, W), got {tuple(x.shape)}")
    positions = x.shape[2] * x.shape[3]
    if positions < 2:
        return torch.zeros(x.shape[:2], device=x.device, dtype=x.dtype)
    mass = F.relu(x).flatten(2) + eps
    p = mass / mass.sum(dim=2, keepdim=True)
    return (-(p * p.log()).sum(dim=2) / math.log(positions)).clamp(0.0, 1.0)


class EntropyGuidedChannelAttention(nn.Module):
    """Entropy-guided channel attention with decoupling and cross-sample reassembly.

    ``a = sigmoid(MLP([avgpool(x), 1 - H(x)]))`` per sample and channel, where ``H`` is
    :func:`spatial_entropy`. The features split into a task part ``a * x`` and a bias part
    ``(1 - a) * x``. In training, sample ``i`` is reassembled from its own task part and the bias
    part of sample ``perm[i]`` (a random other sample, which generally has another label), so
    anything the bias channels carry is label noise and the downstream layers learn to ignore it.
    In evaluation the bias part is replaced by its running mean (tracked like BatchNorm's
    statistics), i.e. the expectation of what training put there: the bias channels are
    suppressed rather than passed through with the target domain's shift. ``bias_at_eval="own"``
    keeps each sample's own bias part instead (the block is then the identity at test time).

    :meth:`entropy_loss` is the entropy guidance: binary cross-entropy pulling ``a`` towards
    ``1 - H`` min-max scaled over the channels of each sample, so focused channels go to the
    task part and diffuse ones to the bias part, and the split cannot collapse to ``a = 1``.

    Args:
        channels: Feature channels.
        reduction: Hidden width of the MLP is ``max(4, channels // reduction)``.
        bias_at_eval: ``"mean"`` (running mean of the bias part) or ``"own"``.
        momentum: Momentum of the running mean.
    """

    def __init__(self, channels: int, reduction: int = 4, bias_at_eval: str = "mean",
                 momentum: float = 0.1) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        if bias_at_eval not in ("mean", "own"):
            raise ValueError(f"bias_at_eval must be 'mean' or 'own', got {bias_at_eval!r}")
        self.channels = channels
        self.bias_at_eval = bias_at_eval
        self.momentum = check_probability("momentum", momentum)
        hidden = max(4, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.register_buffer("running_bias", torch.zeros(channels))

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(attention, entropy)``, both ``(B, C)``; the entropy is a detached guide."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"EntropyGuidedChannelAttention({self.channels}) expects (B, {self.channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        entropy = spatial_entropy(x.detach().float()).to(x.dtype)
        descriptor = torch.cat([x.mean(dim=(2, 3)), 1.0 - entropy], dim=1)
        return torch.sigmoid(self.mlp(descriptor)), entropy

    def forward_with_aux(self, x: Tensor, perm: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reassembled features plus ``(attention, entropy)`` for :meth:`entropy_loss`.

        Args:
            x: Features ``(B, C, H, W)``.
            perm: In training, the permutation whose bias parts are borrowed; ``None`` draws one.

        Returns:
            ``(out, attention, entropy)``.
        """
        a, entropy = self.attention(x)
        gate = a[:, :, None, None]
        task, bias = gate * x, (1.0 - gate) * x
        if self.training:
            if perm is None:
                perm = torch.randperm(x.shape[0]).to(x.device)
            with torch.no_grad():
                batch_mean = bias.mean(dim=(0, 2, 3)).float()
                self.running_bias.mul_(1 - self.momentum).add_(self.momentum * batch_mean)
            return task + bias[perm], a, entropy
        if self.bias_at_eval == "own":
            return task + bias, a, entropy
        return task + self.running_bias.to(x.dtype)[None, :, None, None], a, entropy

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_aux(x)[0]

    @staticmethod
    def entropy_loss(attention: Tensor, entropy: Tensor) -> Tensor:
        """BCE between the attention and ``1 - entropy`` min-max scaled per sample (detached)."""
        low = entropy.min(dim=1, keepdim=True).values
        high = entropy.max(dim=1, keepdim=True).values
        target = 1.0 - (entropy - low) / (high - low).clamp_min(1e-6)
        return F.binary_cross_entropy(attention.float().clamp(1e-6, 1 - 1e-6), target.float().detach())

    @override
    def extra_repr(self) -> str:
        return f"channels={self.channels}, bias_at_eval={self.bias_at_eval!r}"


# -- multi-level domain soft fusion ---------------------------------------------------------
def soft_fuse(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    """``lam * a + (1 - lam) * b`` with one weight per sample (``lam`` of shape ``(B,)``)."""
    if a.shape != b.shape:
        raise ValueError(f"soft_fuse needs features of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if lam.shape != (a.shape[0],):
        raise ValueError(f"lam must have shape ({a.shape[0]},), got {tuple(lam.shape)}")
    weight = lam.to(a.dtype).view(-1, *([1] * (a.dim() - 1)))
    return weight * a + (1 - weight) * b


class SoftFusionDiscriminator(nn.Module):
    """Predicts the soft domain label (the fusion weight) of fused features, behind a GRL.

    On feature maps it is a per-location head like Domain Adaptive Faster R-CNN's image-level
    domain classifier (Chen et al. 2018: 1x1 conv, ReLU, 1x1 conv to one logit per position);
    on pooled vectors, a two-layer MLP. The gradient-reversal layer sits in front, so the
    discriminator minimises the loss while the encoder that produced the features maximises it.

    Args:
        in_channels: Channels of the features.
        hidden: Hidden width.
        spatial: ``True`` for ``(B, C, H, W)`` maps, ``False`` for ``(B, C)`` vectors.
        grl_lambda: Initial gradient-reversal scale (the LightningModule schedules it).
    """

    def __init__(self, in_channels: int, hidden: int = 64, spatial: bool = True, grl_lambda: float = 1.0) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("hidden", hidden)
        self.spatial = bool(spatial)
        self.grl = GradientReversal(grl_lambda)
        if self.spatial:
            self.net: nn.Module = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True),
                                                nn.Conv2d(hidden, 1, 1))
        else:
            self.net = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    @override
    def forward(self, features: Tensor) -> Tensor:
        """Logits of the soft label: ``(B, 1, H, W)`` for maps, ``(B, 1)`` for vectors."""
        expected = 4 if self.spatial else 2
        if features.dim() != expected:
            raise ValueError(f"discriminator expects {expected}-d features, got {tuple(features.shape)}")
        return self.net(self.grl(features))

    def loss(self, features: Tensor, lam: Tensor) -> Tensor:
        """Binary cross-entropy of the predicted label against the soft label ``lam`` ``(B,)``.

        Its minimum is the entropy of ``lam`` (not 0): the soft target is a probability, and a
        perfect discriminator predicts it exactly.
        """
        logits = self(features).float()
        target = lam.float().view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
        return F.binary_cross_entropy_with_logits(logits, target)


class SoftDomainFusion(nn.Module):
    """Soft fusion of two views' features with a soft-label discriminator at each level.

    For every level, ``fused = lam * view_a + (1 - lam) * view_b`` with ``lam ~ U(0, 1)`` per
    sample (drawn independently per level), and that level's :class:`SoftFusionDiscriminator`
    predicts ``lam``. The losses are returned per level; their sum, through the GRLs, trains the
    discriminators to read the mixing weight and the encoder to hide it.

    Args:
        level_channels: Channels of each fused level, e.g. ``{"stage2": 64, "embedding": 128}``;
            :data:`EMBEDDING` is a pooled vector, every other level a feature map.
        hidden: Hidden width of the discriminators.
        grl_lambda: Initial gradient-reversal scale.
    """

    def __init__(self, level_channels: Mapping[str, int], hidden: int = 64, grl_lambda: float = 1.0) -> None:
        super().__init__()
        if not level_channels:
            raise ValueError("level_channels must name at least one level")
        self.levels = tuple(level_channels)
        self.discriminators = nn.ModuleDict({
            level: SoftFusionDiscriminator(channels, hidden, spatial=level != EMBEDDING, grl_lambda=grl_lambda)
            for level, channels in level_channels.items()
        })

    def set_grl_lambda(self, value: float) -> None:
        """Sets the gradient-reversal scale of every level (e.g. from :func:`dann_lambda`)."""
        for discriminator in self.discriminators.values():
            discriminator.grl.lambda_ = float(value)

    @override
    def forward(self, features_a: Mapping[str, Tensor], features_b: Mapping[str, Tensor],
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-level soft-label losses for two views' features (same batch, same order)."""
        losses = {}
        for level in self.levels:
            a, b = features_a[level], features_b[level]
            lam = torch.rand(a.shape[0], generator=generator).to(a.device)
            losses[level] = self.discriminators[level].loss(soft_fuse(a, b, lam), lam)
        return losses


def js_divergence(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Jensen-Shannon divergence between two batches of predictions, averaged over the batch."""
    p = F.softmax(logits_a.float(), dim=1)
    q = F.softmax(logits_b.float(), dim=1)
    log_m = (0.5 * (p + q)).clamp_min(1e-7).log()
    return 0.5 * (F.kl_div(log_m, p, reduction="batchmean") + F.kl_div(log_m, q, reduction="batchmean"))


# -- the whole network ----------------------------------------------------------------------
class DRSFOutput:
    """What :meth:`DRSFNet.forward_features` returns: logits, features per level, attention aux.

    Attributes:
        logits: ``(B, num_classes)``.
        features: Every level's features, each stage's output after its MixStyle/attention, and
            :data:`EMBEDDING` (the pooled vector).
        attention: Per attention level, ``(attention, entropy)`` for the entropy loss.
    """

    __slots__ = ("attention", "features", "logits")

    def __init__(self, logits: Tensor, features: dict[str, Tensor], attention: dict[str, tuple[Tensor, Tensor]]):
        self.logits = logits
        self.features = features
        self.attention = attention


class DRSFNet(nn.Module):
    """A multi-level backbone with MixStyle and entropy-guided attention between its stages.

    The soft-fusion discriminators and the random-convolution views live in the training logic
    (:class:`~robust_lightning.lightning_modules.drsf.DRSFClassifier`), since they act on pairs
    of forward passes; this module is one forward pass. In evaluation MixStyle is off and the
    attention blocks use their running bias, so ``forward`` is deterministic.

    Args:
        backbone: A :class:`MultiLevelBackbone`.
        mixstyle_levels: Stages after which MixStyle is applied (when ``perturb=True`` in
            training).
        attention_levels: Stages after which an :class:`EntropyGuidedChannelAttention` sits.
        mixstyle_p: MixStyle probability.
        mixstyle_alpha: MixStyle Beta concentration.
        attention_reduction: MLP reduction of the attention blocks.
        bias_at_eval: Attention blocks' evaluation mode (``"mean"`` or ``"own"``).
    """

    def __init__(
        self,
        backbone: MultiLevelBackbone,
        mixstyle_levels: Sequence[str] = (),
        attention_levels: Sequence[str] = (),
        mixstyle_p: float = 0.5,
        mixstyle_alpha: float = 0.1,
        attention_reduction: int = 4,
        bias_at_eval: str = "mean",
    ) -> None:
        super().__init__()
        if not isinstance(backbone, MultiLevelBackbone):
            raise TypeError(
                f"backbone must be a MultiLevelBackbone (e.g. DigitCNN, PreActResNet18Levels), got "
                f"{type(backbone).__name__}"
            )
        self.backbone = backbone
        names = backbone.stage_names
        for arg, levels in (("mixstyle_levels", mixstyle_levels), ("attention_levels", attention_levels)):
            unknown = [level for level in levels if level not in names]
            if unknown:
                raise ValueError(f"{arg} must name backbone stages {names}, got unknown {unknown}")
        channels = dict(zip(names, backbone.stage_channels, strict=False))
        self.mixstyle = nn.ModuleDict({level: MixStyle(mixstyle_p, mixstyle_alpha) for level in mixstyle_levels})
        self.attention = nn.ModuleDict({
            level: EntropyGuidedChannelAttention(channels[level], attention_reduction, bias_at_eval)
            for level in attention_levels
        })

    @property
    def level_channels(self) -> dict[str, int]:
        """Channels of every level (stages and :data:`EMBEDDING`)."""
        return self.backbone.level_channels

    def forward_features(self, x: Tensor, perturb: bool = False,
                         generator: torch.Generator | None = None) -> DRSFOutput:
        """One forward pass keeping every level's features.

        Args:
            x: Normalised images.
            perturb: Apply MixStyle (only in training mode).
            generator: Optional generator for MixStyle's and the reassembly's randomness.
        """
        features: dict[str, Tensor] = {}
        attention: dict[str, tuple[Tensor, Tensor]] = {}
        for name, stage in zip(self.backbone.stage_names, self.backbone.stages, strict=False):
            x = stage(x)
            if perturb and name in self.mixstyle:
                x = self.mixstyle[name](x, generator=generator)
            if name in self.attention:
                perm = None
                if self.training:
                    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
                x, a, entropy = self.attention[name].forward_with_aux(x, perm)
                attention[name] = (a, entropy)
            features[name] = x
        embedding = F.adaptive_avg_pool2d(x, 1).flatten(1)
        features[EMBEDDING] = embedding
        return DRSFOutput(self.backbone.head(embedding), features, attention)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x).logits
