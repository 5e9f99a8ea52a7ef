"""Pure-torch pieces of Di[M]O / Soft-Di[M]O: tokenisers, the masked transformer, critics, losses.

Usable without Lightning. Facts taken from the authors' Di[M]O code (``yuanzhi-zhu/DiMO``) are
cited at the function that uses them; ``train_DIMO_MaskGit.py`` is "the reference" below and
``MaskGit_src/Network/transformer.py`` "the reference transformer".

Shapes: images ``(B, C, H, W)`` in ``[0, 1]``; token grids flattened to ``(B, N)``; logits and
probabilities ``(B, N, V)`` over the ``V`` image tokens (the [MASK] id ``V`` is an input only).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_int
from robust_lightning.errors import InvalidArgumentError

__all__ = [
    "DigitFeatureClassifier",
    "ImageDiscriminator",
    "MaskedTokenTransformer",
    "ScalarQuantizer",
    "VQAutoencoder",
    "arccos_mask_ratio",
    "cosine_mask_ratio",
    "dimo_generator_loss",
    "distillation_gradient",
    "generator_inputs",
    "guided_logits",
    "mask_tokens",
    "maskgit_sample",
    "unmasking_schedule",
]

Divergence = Literal["fkl", "rkl", "jeffreys"]


# --------------------------------------------------------------------------------------------
# Tokenisers
# --------------------------------------------------------------------------------------------


class ScalarQuantizer(nn.Module):
    """Per-pixel scalar quantiser: every pixel is one token, one of ``K`` grey levels.

    ``K`` levels evenly spaced in ``[0, 1]``; encoding picks the nearest level. Decoding a
    probability vector is the soft mixture ``sum_k p_k * level_k`` (the expected intensity),
    so a generator's softmax decodes to an image differentiably; a one-hot vector decodes to
    its level exactly.

    Args:
        num_levels: Number of grey levels ``K`` (>= 2), the vocabulary size.
        image_size: Side of the square images.
        channels: Image channels; each channel of each pixel is one token.
    """

    def __init__(self, num_levels: int = 8, image_size: int = 8, channels: int = 1) -> None:
        super().__init__()
        self.num_levels = check_int("num_levels", num_levels, minimum=2)
        self.image_size = check_int("image_size", image_size, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        self.register_buffer("levels", torch.linspace(0.0, 1.0, num_levels), persistent=False)

    @property
    def vocab_size(self) -> int:
        return self.num_levels

    @property
    def sequence_length(self) -> int:
        return self.channels * self.image_size * self.image_size

    @property
    def embedding_table(self) -> Tensor:
        """What a token means to the decoder: its level, ``(K, 1)``."""
        return self.levels.unsqueeze(-1)

    def encode(self, images: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in ``[0, 1]`` -> tokens ``(B, C*H*W)``."""
        index = torch.round(images.clamp(0.0, 1.0) * (self.num_levels - 1))
        return index.long().flatten(1)

    def decode_probs(self, probs: Tensor) -> Tensor:
        """Token distributions ``(B, N, K)`` -> images, the expected level of every pixel."""
        values = probs @ self.levels.to(probs.dtype)
        return values.view(-1, self.channels, self.image_size, self.image_size)

    def decode_tokens(self, tokens: Tensor) -> Tensor:
        return self.levels[tokens].view(-1, self.channels, self.image_size, self.image_size)

    def loss(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Nothing to train; returns zero so a caller can treat both tokenisers alike."""
        return images.new_zeros(()), {}


class VQAutoencoder(nn.Module):
    """A small VQ-VAE (van den Oord et al. 2017) for 16x16 (or 8x8) digits.

    A conv encoder downsamples by ``2**downsamples``; each latent vector is replaced by its
    nearest codebook entry with the straight-through estimator; a conv decoder maps the
    quantised grid back to an image (sigmoid output). Loss: ``MSE(x, x_hat) + ||sg(z) - e||^2
    + beta * ||z - sg(e)||^2`` (codebook and commitment terms, eq. 3 of the VQ-VAE paper).
    ``decode_probs`` feeds ``probs @ codebook`` (the soft embedding) to the decoder.

    Args:
        codebook_size: Number of codes ``V``.
        code_dim: Dimension of a code vector.
        image_size: Side of the square images (divisible by ``2**downsamples``).
        channels: Image channels.
        hidden: Width of the conv layers.
        downsamples: Number of stride-2 stages (1 or 2).
        commitment: ``beta`` of the commitment term.
    """

    def __init__(self, codebook_size: int = 32, code_dim: int = 16, image_size: int = 16,
                 channels: int = 1, hidden: int = 32, downsamples: int = 2,
                 commitment: float = 0.25) -> None:
        super().__init__()
        self.codebook_size = check_int("codebook_size", codebook_size, minimum=2)
        self.code_dim = check_int("code_dim", code_dim, minimum=1)
        self.image_size = check_int("image_size", image_size, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        if downsamples not in (1, 2):
            raise InvalidArgumentError(f"downsamples must be 1 or 2, got {downsamples!r}")
        if image_size % (2**downsamples):
            raise InvalidArgumentError(
                f"image_size must be divisible by 2**downsamples = {2**downsamples}, got {image_size}")
        self.downsamples = downsamples
        self.grid = image_size // 2**downsamples
        self.commitment = float(commitment)
        encoder: list[nn.Module] = []
        width = channels
        for _ in range(downsamples):
            encoder += [nn.Conv2d(width, hidden, 4, stride=2, padding=1), nn.ReLU()]
            width = hidden
        encoder += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, code_dim, 1)]
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [nn.Conv2d(code_dim, hidden, 3, padding=1), nn.ReLU()]
        for _ in range(downsamples):
            decoder += [nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU()]
        decoder += [nn.Conv2d(hidden, channels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)
        self.codebook = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    @property
    def vocab_size(self) -> int:
        return self.codebook_size

    @property
    def sequence_length(self) -> int:
        return self.grid * self.grid

    @property
    def embedding_table(self) -> Tensor:
        return self.codebook.weight

    def _latents(self, images: Tensor) -> Tensor:
        return self.encoder(images).permute(0, 2, 3, 1).reshape(images.shape[0], -1, self.code_dim)

    def _nearest(self, latents: Tensor) -> Tensor:
        distances = torch.cdist(latents, self.codebook.weight.unsqueeze(0).expand(latents.shape[0], -1, -1))
        return distances.argmin(-1)

    def encode(self, images: Tensor) -> Tensor:
        return self._nearest(self._latents(images))

    def _decode_vectors(self, vectors: Tensor) -> Tensor:
        grid = vectors.view(-1, self.grid, self.grid, self.code_dim).permute(0, 3, 1, 2)
        return torch.sigmoid(self.decoder(grid))

    def decode_probs(self, probs: Tensor) -> Tensor:
        return self._decode_vectors(probs @ self.codebook.weight.to(probs.dtype))

    def decode_tokens(self, tokens: Tensor) -> Tensor:
        return self._decode_vectors(self.codebook(tokens))

    def loss(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """VQ-VAE loss of a batch and its parts (reconstruction, codebook, commitment)."""
        latents = self._latents(images)
        codes = self.codebook(self._nearest(latents))
        codebook_loss = F.mse_loss(codes, latents.detach())
        commitment_loss = F.mse_loss(latents, codes.detach())
        # Straight-through: the decoder sees the codes, the encoder gets the decoder's gradient.
        quantised = latents + (codes - latents).detach()
        reconstruction = F.mse_loss(self._decode_vectors(quantised), images)
        total = reconstruction + codebook_loss + self.commitment * commitment_loss
        return total, {"reconstruction": reconstruction.detach(), "commitment": commitment_loss.detach()}


# --------------------------------------------------------------------------------------------
# Masked generative transformer
# --------------------------------------------------------------------------------------------


class MaskedTokenTransformer(nn.Module):
    """Class-conditional bidirectional transformer over a token grid (MaskGIT's network, small).

    Input: ``N`` image tokens (id ``V`` is [MASK]) plus one class token (id ``num_classes`` is
    the "no class" token used for classifier-free guidance). Output: logits over the ``V``
    image tokens at every image position, read out through the tied token embedding plus a
    per-position bias, as the reference transformer does (``logit = x @ tok_emb.T + bias``).

    ``input_embeddings`` replaces the token lookup: Soft-Di[M]O feeds soft embeddings
    (``probs @ token_embedding``) here. ``embedding_noise`` ``s`` mixes Gaussian noise into the
    image-token embeddings as ``s * noise + sqrt(1 - s^2) * emb`` (the reference transformer's
    ``noise_emb_perturb``).

    Args:
        vocab_size: Number of image tokens ``V``.
        sequence_length: Number of image positions ``N``.
        num_classes: Number of classes.
        dim: Width.
        depth: Number of pre-norm encoder layers.
        heads: Attention heads.
        mlp_dim: Hidden width of the feed-forward blocks.
        dropout: Dropout inside the encoder layers.
    """

    def __init__(self, vocab_size: int, sequence_length: int, num_classes: int = 10, dim: int = 64,
                 depth: int = 3, heads: int = 4, mlp_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=2)
        self.sequence_length = check_int("sequence_length", sequence_length, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        if dim % heads:
            raise InvalidArgumentError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.mask_id = vocab_size
        self.null_class = num_classes
        self.token_embedding = nn.Embedding(vocab_size + 1, dim)
        self.class_embedding = nn.Embedding(num_classes + 1, dim)
        self.position = nn.Parameter(torch.zeros(1, sequence_length + 1, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.token_embedding.weight, std=0.02)
        nn.init.trunc_normal_(self.class_embedding.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.output_bias = nn.Parameter(torch.zeros(sequence_length, vocab_size))

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.token_embedding(tokens)

    def soft_embed(self, probs: Tensor) -> Tensor:
        """Soft embeddings: expected token embedding under ``probs`` ``(B, N, V)``."""
        return probs @ self.token_embedding.weight[: self.vocab_size].to(probs.dtype)

    @property
    def mask_embedding(self) -> Tensor:
        return self.token_embedding.weight[self.mask_id]

    @override
    def forward(self, tokens: Tensor | None, labels: Tensor, drop_labels: Tensor | None = None,
                input_embeddings: Tensor | None = None, embedding_noise: float = 0.0) -> Tensor:
        """Logits ``(B, N, V)``.

        Args:
            tokens: ``(B, N)`` token ids (``V`` = [MASK]); ignored when ``input_embeddings``.
            labels: ``(B,)`` class ids.
            drop_labels: ``(B,)`` bools, True replaces the class by the "no class" token.
            input_embeddings: ``(B, N, dim)`` embeddings used instead of the token lookup.
            embedding_noise: Noise level ``s`` in ``[0, 1]`` on the image-token embeddings.
        """
        embeddings = input_embeddings if input_embeddings is not None else self.token_embedding(tokens)
        if embedding_noise > 0:
            noise = torch.randn_like(embeddings)
            embeddings = embedding_noise * noise + math.sqrt(1.0 - embedding_noise**2) * embeddings
        classes = labels
        if drop_labels is not None:
            classes = torch.where(drop_labels, torch.full_like(labels, self.null_class), labels)
        sequence = torch.cat([embeddings, self.class_embedding(classes).unsqueeze(1)], dim=1) + self.position
        hidden = self.norm(self.encoder(sequence))[:, : self.sequence_length]
        return hidden @ self.token_embedding.weight[: self.vocab_size].T + self.output_bias


def guided_logits(model: MaskedTokenTransformer, tokens: Tensor | None, labels: Tensor, scale: float | Tensor,
                  input_embeddings: Tensor | None = None) -> Tensor:
    """Classifier-free guidance ``l_u + scale * (l_c - l_u)`` (the reference's ``cfg_pred_model``).

    ``scale`` 1 is one conditional pass; otherwise conditional and unconditional run as one
    batch of ``2B``.
    """
    if isinstance(scale, (int, float)) and scale == 1.0:
        return model(tokens, labels, input_embeddings=input_embeddings)
    batch = labels.shape[0]
    drop = torch.cat([torch.zeros(batch, dtype=torch.bool, device=labels.device),
                      torch.ones(batch, dtype=torch.bool, device=labels.device)])
    both = model(None if tokens is None else tokens.repeat(2, 1), labels.repeat(2), drop,
                 input_embeddings=None if input_embeddings is None else input_embeddings.repeat(2, 1, 1))
    conditional, unconditional = both.chunk(2)
    if isinstance(scale, Tensor):
        scale = scale.view(-1, 1, 1)
    return unconditional + scale * (conditional - unconditional)


def cosine_mask_ratio(u: Tensor) -> Tensor:
    """MaskGIT's training schedule: mask ratio ``cos(pi/2 * u)`` for ``u ~ U(0, 1)``."""
    return torch.cos(0.5 * math.pi * u)


def arccos_mask_ratio(u: Tensor) -> Tensor:
    """The reference's re-masking schedule (``get_mask_code``, mode "arccos"): ``arccos(u) / (pi/2)``."""
    return torch.arccos(u) / (0.5 * math.pi)


def mask_tokens(tokens: Tensor, ratio: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Boolean mask ``(B, N)`` with exactly ``round(ratio * N)`` (>= 1) True positions per row.

    Exact counts via a random permutation, as the reference's ``get_mask_code`` ("exact version").
    """
    batch, length = tokens.shape
    counts = (ratio.to(tokens.device) * length).round().clamp(1, length).long()
    order = torch.rand(batch, length, device=tokens.device, generator=generator).argsort(-1).argsort(-1)
    return order < counts.unsqueeze(-1)


def generator_inputs(batch: int, length: int, vocab_size: int, mask_ratio: float, device: torch.device,
                     generator: torch.Generator | None = None) -> Tensor:
    """Di[M]O's one-step generator input: random tokens with ``mask_ratio`` of them set to [MASK].

    The reference's ``generate_one_step`` starts from uniform random tokens and masks a fixed
    share (config ``fixed_ratio: fix_0.6``) at random positions.
    """
    tokens = torch.randint(0, vocab_size, (batch, length), device=device, generator=generator)
    ratio = torch.full((batch,), float(mask_ratio), device=device)
    return torch.where(mask_tokens(tokens, ratio, generator), torch.full_like(tokens, vocab_size), tokens)


def unmasking_schedule(steps: int, length: int, mode: str = "arccos") -> list[int]:
    """Tokens revealed at each of ``steps`` sampling steps (the reference's ``adap_sche``), sum ``N``."""
    steps = check_int("steps", steps, minimum=1)
    if steps == 1:
        return [length]
    r = torch.linspace(1, 0, steps)
    if mode == "arccos":
        share = torch.arccos(r) / (0.5 * math.pi)
    elif mode == "cosine":
        share = torch.cos(r * 0.5 * math.pi)
    elif mode == "linear":
        share = 1 - r
    else:
        raise InvalidArgumentError(f"schedule must be 'arccos', 'cosine' or 'linear', got {mode!r}")
    counts = (share / share.sum() * length).round().clamp(min=1)
    counts[-1] += length - counts.sum()
    if counts[-1] < 1:  # too many steps for the length: spread one token per step
        counts = torch.ones(steps)
        counts[-1] = max(1, length - steps + 1)
    return [int(c) for c in counts]


@torch.no_grad()
def maskgit_sample(model: MaskedTokenTransformer, labels: Tensor, steps: int = 8, guidance: float = 2.0,
                   gumbel_temperature: float = 4.5, schedule: str = "arccos", guidance_ramp: bool = True,
                   generator: torch.Generator | None = None) -> Tensor:
    """Iterative MaskGIT decoding from an all-[MASK] grid; returns tokens ``(B, N)``.

    Follows the reference's ``val_sample``: at step ``i`` of ``T`` the guidance scale is
    ``guidance * i / (T - 1) + 1`` (ramp; constant ``1 + guidance`` with ``guidance_ramp=False``),
    tokens are sampled from the softmax, their confidence ``log p + r * Gumbel * (1 - i/(T-1))``
    ranks the still-masked positions and the ``schedule[i]`` most confident are kept. With
    ``T=1`` (where the reference's ramp divides by zero) every token is sampled at once at the
    final scale ``1 + guidance``.
    """
    batch, length = labels.shape[0], model.sequence_length
    device = labels.device
    tokens = torch.full((batch, length), model.mask_id, device=device, dtype=torch.long)
    counts = unmasking_schedule(steps, length, schedule)
    for index, count in enumerate(counts):
        progress = index / (len(counts) - 1) if len(counts) > 1 else 1.0
        scale = guidance * progress + 1.0 if guidance_ramp else guidance + 1.0
        probs = torch.softmax(guided_logits(model, tokens, labels, scale).float(), -1)
        sampled = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=generator).view(batch, length)
        confidence = torch.log(probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30))
        if gumbel_temperature > 0 and progress < 1.0:
            uniform = torch.rand(confidence.shape, device=device, generator=generator).clamp(1e-20, 1 - 1e-7)
            confidence = confidence + gumbel_temperature * (1 - progress) * -torch.log(-torch.log(uniform))
        masked = tokens == model.mask_id
        confidence = confidence.masked_fill(~masked, -math.inf)
        count = min(count, int(masked.sum(-1).min()))
        chosen = torch.zeros_like(masked)
        chosen.scatter_(1, confidence.topk(count, dim=-1).indices, True)
        chosen &= masked
        tokens = torch.where(chosen, sampled, tokens)
    # Any position left masked (only possible through rounding) takes its last sample.
    return torch.where(tokens == model.mask_id, sampled, tokens)


# --------------------------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------------------------


def distillation_gradient(teacher_logits: Tensor, auxiliary_logits: Tensor, divergence: Divergence = "fkl",
                          jeffreys_beta: float = 0.5) -> Tensor:
    """Di[M]O's per-token gradient ``g`` w.r.t. the generator's logits, ``(B, N, V)``.

    From the reference's generator update: forward KL ``g = p_aux - p_T``; reverse KL
    ``g = p_aux * (log p_aux - log p_T - KL(p_aux || p_T))``; Jeffreys
    ``(1 - beta) g_FKL + beta g_RKL``.
    """
    p_teacher = torch.softmax(teacher_logits.float(), -1)
    p_aux = torch.softmax(auxiliary_logits.float(), -1)
    forward = p_aux - p_teacher
    if divergence == "fkl":
        return forward
    log_teacher = torch.log_softmax(teacher_logits.float(), -1)
    log_aux = torch.log_softmax(auxiliary_logits.float(), -1)
    reverse_kl = (p_aux * (log_aux - log_teacher)).sum(-1, keepdim=True)
    reverse = p_aux * (log_aux - log_teacher - reverse_kl)
    if divergence == "rkl":
        return reverse
    if divergence == "jeffreys":
        return (1.0 - jeffreys_beta) * forward + jeffreys_beta * reverse
    raise InvalidArgumentError(f"divergence must be 'fkl', 'rkl' or 'jeffreys', got {divergence!r}")


def dimo_generator_loss(logits: Tensor, gradient: Tensor, mask: Tensor) -> Tensor:
    """``0.5 * ||l - sg(l - g)||^2`` on re-masked positions, summed and divided by the batch.

    Its gradient w.r.t. ``l`` is ``g`` at masked positions and 0 elsewhere (the reference's
    ``loss_dm`` with ``loss_reduction: sum``).
    """
    gradient = torch.where(mask.unsqueeze(-1), gradient, torch.zeros_like(gradient)).nan_to_num()
    target = (logits - gradient).detach()
    return 0.5 * F.mse_loss(logits.float(), target.float(), reduction="sum") / logits.shape[0]


# --------------------------------------------------------------------------------------------
# Critics on decoded images
# --------------------------------------------------------------------------------------------


class DigitFeatureClassifier(nn.Module):
    """Small CNN digit classifier; ``features`` is the penultimate layer (classifier-FD space).

    Args:
        channels: Image channels.
        num_classes: Number of classes.
        width: Channels of the first conv (the second has ``2 * width``).
        feature_dim: Size of the feature vector.
    """

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(8 * width, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_features = feature_dim

    def features(self, images: Tensor) -> Tensor:
        return self.body(images * 2.0 - 1.0)

    @override
    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


class ImageDiscriminator(nn.Module):
    """Small class-conditional CNN discriminator (projection head, Miyato & Koyama 2018).

    Args:
        channels: Image channels.
        num_classes: Number of classes (0 for an unconditional critic).
        width: Channels of the first conv.
    """

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out = nn.Linear(2 * width, 1)
        self.projection = nn.Embedding(num_classes, 2 * width) if num_classes > 0 else None

    @override
    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """Realness score ``(B,)`` (a logit)."""
        hidden = self.body(images * 2.0 - 1.0)
        score = self.out(hidden).squeeze(-1)
        if self.projection is not None and labels is not None:
            score = score + (self.projection(labels) * hidden).sum(-1)
        return score
