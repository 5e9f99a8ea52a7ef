"""Front-ends from the ecosystem: any ``nn.Module`` (a torchaudio transform, a torchaudio
wav2vec2-family model as ``torchaudio.pipelines`` bundles return) works as AudioQualityGRL's
front-end, wrapped in :class:`ModuleFrontend`. No downloads: the models are built untrained."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torchaudio

from robust_lightning.datamodules.audio_quality import SpuriousCueSpeechDataModule
from robust_lightning.lightning_modules.audio_grl import AudioQualityGRL, FeatureCache, LogMelFrontend, ModuleFrontend


def _tiny_wav2vec2() -> torchaudio.models.Wav2Vec2Model:
    """The architecture of ``torchaudio.pipelines.WAV2VEC2_BASE.get_model()``, scaled down."""
    torch.manual_seed(0)
    return torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2), (8, 2, 2)],
        extractor_conv_bias=False, encoder_embed_dim=12, encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=4, encoder_pos_conv_groups=2, encoder_num_layers=1, encoder_num_heads=2,
        encoder_attention_dropout=0.0, encoder_ff_interm_features=16, encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> SpuriousCueSpeechDataModule:
    root = tmp_path_factory.mktemp("module_frontend") / "corpus"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*espeak-ng.*")
        datamodule = SpuriousCueSpeechDataModule(root=str(root), n_train=16, n_val=8, n_test=8, clip_seconds=0.5,
                                                 batch_size=8, content_types=["speech", "music", "audio"])
        datamodule.prepare_data()
    return datamodule


def test_torchaudio_melspectrogram_trains_as_frontend(corpus: SpuriousCueSpeechDataModule) -> None:
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=16)
    model = AudioQualityGRL(frontend=mel, domains=[{"strategy": "corpus", "num_domains": 3}])
    assert isinstance(model.frontend, ModuleFrontend) and model.frontend.module is mel
    assert not any(p.requires_grad for p in mel.parameters())
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, corpus)
    assert trainer.global_step == 2
    assert model.hparams.feature_shape == [16, 51]  # 0.5 s at 16 kHz, hop 160, centred frames
    assert "val/srcc" in trainer.callback_metrics


def test_log_of_a_torchaudio_transform_matches_our_logmel() -> None:
    ours = LogMelFrontend(n_mels=16)
    theirs = ModuleFrontend(torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160,
                                                                 n_mels=16), log=True)
    waveform = torch.rand(2, 4000) * 2 - 1
    torch.testing.assert_close(theirs(waveform), ours(waveform))


def test_wav2vec2_family_model_outputs_channels_first() -> None:
    model = _tiny_wav2vec2()
    frontend = ModuleFrontend(model)
    assert frontend.time_first, "torchaudio's Wav2Vec2Model returns (B, T, C)"
    waveform = torch.rand(3, 1600) * 2 - 1
    features = frontend(waveform)
    expected, _ = model.eval()(waveform)
    assert features.shape == (3, 12, expected.shape[1])
    torch.testing.assert_close(features, expected.transpose(1, 2))
    assert frontend.output_shape(1600) == (12, expected.shape[1])


def test_cache_key_follows_the_weights(tmp_path: Path) -> None:
    first, second = ModuleFrontend(_tiny_wav2vec2()), ModuleFrontend(_tiny_wav2vec2())
    assert first.cache_key() == second.cache_key()  # same seed, same weights
    with torch.no_grad():
        next(second.module.parameters()).add_(1.0)
    second._weights_hash = None
    assert first.cache_key() != second.cache_key()
    cache = FeatureCache(str(tmp_path))
    waveform = torch.rand(2, 1600)
    cache(first, waveform, None, ["a", "b"])
    cache(first, waveform, None, ["a", "b"])
    assert cache.computed == 2


def test_bad_outputs_name_the_shape_and_non_modules_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 1, 4, 100\)"):
        ModuleFrontend(torch.nn.Unflatten(1, (1, 4, 100)))(torch.rand(2, 400))
    with pytest.raises(TypeError, match="frontend must be a torch.nn.Module"):
        AudioQualityGRL(frontend="mel")  # type: ignore[arg-type]
