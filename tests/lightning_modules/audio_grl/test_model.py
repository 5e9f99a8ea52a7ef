"""Pure-torch pieces: front-ends, feature cache, encoder, heads, Gaussian NLL, gradient reversal."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch.distributions import MultivariateNormal

from robust_lightning.lightning_modules.audio_grl import (
    AudioQualityGRLNet,
    FeatureCache,
    HFWav2Vec2Frontend,
    LogMelFrontend,
    QualityEncoder,
    QualityHead,
    TorchaudioSSLFrontend,
    gaussian_nll,
)
from robust_lightning.nn.grl import GradientReversal

# A tiny wav2vec2 (2 conv layers, 2 transformer layers) so tests build it in milliseconds.
TINY_W2V2 = dict(
    extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2)], extractor_conv_bias=False,
    encoder_embed_dim=16, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=8, encoder_pos_conv_groups=2,
    encoder_num_layers=2, encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=32,
    encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
    aux_num_out=None,
)


def _tiny_ssl(**kwargs: object) -> TorchaudioSSLFrontend:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no checkpoint.*")
        return TorchaudioSSLFrontend("wav2vec2_model", TINY_W2V2, **kwargs)  # type: ignore[arg-type]


def test_gaussian_nll_matches_torch_distribution() -> None:
    torch.manual_seed(0)
    head = QualityHead(8, num_aspects=4, kind="gaussian")
    mean, scale_tril = head(torch.randn(5, 8))
    assert torch.all(torch.triu(scale_tril, diagonal=1) == 0)
    assert torch.all(torch.diagonal(scale_tril, dim1=-2, dim2=-1) > 0)
    target = torch.rand(5, 4) * 9 + 1
    expected = -MultivariateNormal(mean, scale_tril=scale_tril).log_prob(target)
    torch.testing.assert_close(gaussian_nll(mean, scale_tril, target), expected)


def test_quality_head_kinds_and_score_scale() -> None:
    head = QualityHead(8, num_aspects=3, kind="mse")
    for p in head.parameters():
        torch.nn.init.zeros_(p)
    mean, scale_tril = head(torch.randn(2, 8))
    assert scale_tril is None
    torch.testing.assert_close(mean, torch.full((2, 3), 5.5))  # 4.5 * 0 + 5.5, the 1-10 midpoint
    with pytest.raises(ValueError, match="kind"):
        QualityHead(8, kind="laplace")


def test_encoder_shape_matches_released_architecture() -> None:
    # (40 ch, 201 frames) -> conv5 197 -> pool5 39 -> conv5 35 -> pool5 7; 32 channels.
    encoder = QualityEncoder(40, 201)
    assert encoder.out_features == 32 * 7
    assert encoder(torch.randn(3, 40, 201)).shape == (3, 224)
    with pytest.raises(ValueError, match="expects features"):
        encoder(torch.randn(3, 40, 200))
    with pytest.raises(ValueError, match="frames"):
        QualityEncoder(40, 8)


def test_gradient_reversal_and_baseline_detach() -> None:
    torch.manual_seed(0)
    net = AudioQualityGRLNet(10, 60, domains={"corpus": 3}, conv_channels=(4,), dropout=0.0, grl_lambda=0.3)
    x, labels = torch.randn(6, 10, 60), torch.tensor([0, 1, 2, 0, 1, 2])

    def encoder_grad(adversarial: bool, through_grl: bool) -> torch.Tensor | None:
        net.zero_grad()
        net.adversarial = adversarial
        z = net.encoder(x)
        logits = net.domain_logits(z)["corpus"] if through_grl else net.domain_heads["corpus"](z)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        grad = net.encoder.blocks[0][0].weight.grad
        return None if grad is None else grad.clone()

    plain = encoder_grad(True, through_grl=False)
    reversed_ = encoder_grad(True, through_grl=True)
    assert plain is not None and reversed_ is not None
    torch.testing.assert_close(reversed_, -0.3 * plain)
    baseline = encoder_grad(False, through_grl=True)
    assert baseline is None or torch.all(baseline == 0)
    assert isinstance(net.grl, GradientReversal)


def test_logmel_frontend_shape_and_frozen() -> None:
    frontend = LogMelFrontend(n_mels=20)
    assert frontend.output_shape(16000) == (20, 101)
    assert not any(p.requires_grad for p in frontend.parameters())
    features = frontend(torch.randn(2, 16000) * 0.1)
    assert features.shape == (2, 20, 101) and torch.isfinite(features).all()
    with pytest.raises(ValueError, match="waveforms"):
        frontend(torch.randn(16000))


def test_feature_cache_memory_and_disk(tmp_path: Path) -> None:
    frontend = LogMelFrontend(n_mels=8)
    waves = torch.randn(3, 4000) * 0.1
    cache = FeatureCache(str(tmp_path))
    first = cache(frontend, waves, None, ["a", "b", "c"])
    assert cache.computed == 3
    again = cache(frontend, waves[[2, 0]], None, ["c", "a"])
    assert cache.computed == 3  # nothing recomputed
    torch.testing.assert_close(again, first[[2, 0]])
    fresh = FeatureCache(str(tmp_path))  # a new process: reads the disk entries
    torch.testing.assert_close(fresh(frontend, torch.zeros(3, 4000), None, ["a", "b", "c"]), first)
    assert fresh.computed == 0
    other = LogMelFrontend(n_mels=8, hop_length=80)  # other config -> other key, no stale reuse
    assert other.cache_key() != frontend.cache_key()
    assert fresh(other, waves, None, ["a", "b", "c"]).shape[2] != first.shape[2]
    with pytest.raises(ValueError, match="keys"):
        cache(frontend, waves, None, ["a"])


def test_torchaudio_ssl_frontend_checkpoint_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    frontend = _tiny_ssl(layer=2)
    wave = torch.randn(2, 1600)
    features = frontend(wave)
    channels, frames = frontend.output_shape(1600)
    assert features.shape == (2, 16, frames) and channels == 16
    path = tmp_path / "w2v2.pt"
    torch.save(frontend.model.state_dict(), path)
    torch.manual_seed(1)
    loaded = TorchaudioSSLFrontend("wav2vec2_model", TINY_W2V2, checkpoint=str(path), layer=2)
    torch.testing.assert_close(loaded(wave), features)
    # Layer 1 is a different, earlier hidden state.
    assert not torch.allclose(_tiny_ssl(layer=1, checkpoint=str(path))(wave), features)


def test_torchaudio_ssl_frontend_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="factory"):
        TorchaudioSSLFrontend("conformer")
    with pytest.raises(ValueError, match="layer"):
        _tiny_ssl(layer=5)
    with pytest.raises(FileNotFoundError):
        _tiny_ssl(checkpoint=str(tmp_path / "none.pt"))
    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match"):
        _tiny_ssl(checkpoint=str(tmp_path / "bad.pt"))


def test_hf_wav2vec2_frontend_from_local_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, num_feat_extract_layers=2,
    )
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path / "w2v2")
    frontend = HFWav2Vec2Frontend(str(tmp_path / "w2v2"), layer=1)
    features = frontend(torch.randn(2, 1600))
    assert features.shape[:2] == (2, 16) and torch.isfinite(features).all()
    with pytest.raises(ValueError, match="layer"):
        HFWav2Vec2Frontend(str(tmp_path / "w2v2"), layer=7)
    with pytest.raises(FileNotFoundError):
        HFWav2Vec2Frontend(str(tmp_path / "missing"))


def test_nll_is_finite_for_confident_heads() -> None:
    # A large raw diagonal is softplus'd, never exp'd: no overflow at confident predictions.
    mean = torch.zeros(1, 2)
    tril = torch.diag_embed(torch.full((1, 2), 1e-3))
    value = gaussian_nll(mean, tril, torch.zeros(1, 2))
    assert math.isfinite(float(value))


def test_released_nll_variant_clamps_the_log_determinant() -> None:
    mean, target = torch.zeros(2, 2), torch.tensor([[0.5, -0.5], [1.0, 0.0]])
    small = torch.diag_embed(torch.full((2, 2), 0.1))  # log det Sigma = 4 log 0.1 < 0: clamped
    maha = 0.5 * (target / 0.1).pow(2).sum(-1)
    torch.testing.assert_close(gaussian_nll(mean, small, target, log_det_floor=1e-6), maha + 0.5e-6)
    large = torch.diag_embed(torch.full((2, 2), 2.0))  # log det = 4 log 2 > floor: unchanged
    expected = 0.5 * (target / 2).pow(2).sum(-1) + 2 * math.log(2.0)
    torch.testing.assert_close(gaussian_nll(mean, large, target, log_det_floor=1e-6), expected)
