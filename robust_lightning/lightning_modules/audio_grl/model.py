"""Pure-torch pieces of the domain-adversarial audio quality model (no Lightning).

Follows the released code of "Robust Generative Audio Quality Assessment: Disentangling Quality
from Spurious Correlations" (610494/domainGRL, ``model/model_domainGRL.py`` and
``model/model_domainGRL_multi.py``):

* frozen features ``(B, C, T)`` from a front-end (the paper: precomputed wav2vec2 XLS-R layer
  features; here also HuBERT, an HF ``Wav2Vec2Model`` or log-mel for small runs);
* a shared encoder of ``len(conv_channels)`` blocks ``Conv1d(k=5) -> LayerNorm((C, T)) -> ReLU
  -> Dropout(0.3) -> MaxPool1d(5)`` (32 channels each), flattened;
* a quality head MLP ``(64, 32)`` predicting, per aspect, a mean on the 1-10 scale
  (``4.5 * raw + 5.5``) and, for the Gaussian head, the Cholesky factor of the covariance;
* one or several domain classifiers ``(64, 32, num_domains)`` behind a gradient-reversal layer.

Differences from the released code, on purpose: the Cholesky factor is lower-triangular (theirs
fills the upper triangle and forms ``L L^T``; both parametrise every SPD matrix). The Gaussian
NLL is theirs by default (``log det Sigma`` clamped at 1e-6 from below, no constant) or, with
``log_det_floor=None``, the exact ``-log N(y; mu, Sigma)``.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._checkpoint import load_checkpoint
from robust_lightning._extras import require
from robust_lightning.nn.grl import GradientReversal
from robust_lightning.nn.layers import mlp

torchaudio = require("torchaudio", "audio", feature="audio_grl")

__all__ = [
    "AudioQualityGRLNet",
    "DomainClassifier",
    "FeatureCache",
    "Frontend",
    "HFWav2Vec2Frontend",
    "LogMelFrontend",
    "ModuleFrontend",
    "QualityEncoder",
    "QualityHead",
    "TorchaudioSSLFrontend",
    "gaussian_nll",
    "mlp",
]


# --------------------------------------------------------------------------------------------
# Front-ends (frozen feature extractors)
# --------------------------------------------------------------------------------------------
class Frontend(nn.Module):
    """A frozen feature extractor: waveforms ``(B, N)`` in ``[-1, 1]`` -> features ``(B, C, T)``.

    Subclasses implement :meth:`extract` and :meth:`config`; parameters never train (the module
    keeps them ``requires_grad=False`` and the LightningModule keeps the front-end in eval mode).
    """

    def freeze(self) -> None:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def config(self) -> dict[str, Any]:
        """Everything that changes the features; part of the feature-cache key."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """A short stable hash of :meth:`config` (plus the class name)."""
        text = repr(sorted({"class": type(self).__qualname__, **self.config()}.items()))
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def extract(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    @override
    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects waveforms (B, N), got {tuple(waveform.shape)}")
        with torch.no_grad():
            return self.extract(waveform, lengths)

    def output_shape(self, num_samples: int) -> tuple[int, int]:
        """``(channels, frames)`` of the features of a clip of ``num_samples`` samples."""
        was_training = self.training
        self.eval()
        reference = next(iter(self.buffers()), next(iter(self.parameters()), None))
        device = reference.device if reference is not None else torch.device("cpu")
        features = self(torch.zeros(1, num_samples, device=device))
        self.train(was_training)
        return int(features.shape[1]), int(features.shape[2])


class ModuleFrontend(Frontend):
    """Any ``nn.Module`` as a frozen front-end: a ``torchaudio.transforms.MelSpectrogram``, a
    ``torchaudio.pipelines`` bundle's ``get_model()``, a user's own feature extractor.

    The module maps waveforms ``(B, N)`` to features. Its output may be a tensor or a tuple whose
    first item is the features (torchaudio's wav2vec2 models return ``(features, lengths)``);
    ``(B, C, T)`` is used as is, ``(B, T)`` becomes one channel, and ``time_first=True`` reads
    ``(B, T, C)`` (transformer outputs). ``lengths`` is passed when ``forward`` takes it.

    Args:
        module: The feature extractor; its parameters are frozen.
        time_first: Output layout ``(B, T, C)``; ``None`` guesses it: ``True`` for torchaudio's
            ``Wav2Vec2Model`` (wav2vec2, HuBERT, WavLM), ``False`` otherwise.
        log: Take ``log(features + floor)`` (e.g. on a power spectrogram).
        floor: Added before the log.
    """

    def __init__(self, module: nn.Module, time_first: bool | None = None, log: bool = False,
                 floor: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if floor <= 0:
            raise ValueError(f"floor must be > 0, got {floor!r}")
        self.module = module
        if time_first is None:
            time_first = isinstance(module, torchaudio.models.Wav2Vec2Model)
        self.time_first = bool(time_first)
        self.log = bool(log)
        self.floor = float(floor)
        try:
            self._takes_lengths = "lengths" in inspect.signature(module.forward).parameters
        except (TypeError, ValueError):
            self._takes_lengths = False
        self._weights_hash: str | None = None
        self.freeze()

    @override
    def config(self) -> dict[str, Any]:
        # The module's repr names its class and hyper-parameters; the weights' hash tells two
        # checkpoints of one architecture apart (computed once: the weights are frozen).
        if self._weights_hash is None:
            digest = hashlib.sha1()
            for name, tensor in sorted(self.module.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()
                              if tensor.numel() else b"")
            self._weights_hash = digest.hexdigest()[:16]
        return {"module": repr(self.module), "weights": self._weights_hash, "time_first": self.time_first,
                "log": self.log, "floor": self.floor}

    @override
    def extract(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        output = self.module(waveform, lengths) if self._takes_lengths else self.module(waveform)
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, Tensor):
            raise TypeError(f"frontend {type(self.module).__name__} returned {type(output).__name__}; expected a "
                            "tensor or a tuple starting with one")
        if output.dim() == 2:
            output = output.unsqueeze(1)
        if output.dim() != 3:
            raise ValueError(f"frontend {type(self.module).__name__} returned features of shape {tuple(output.shape)} "
                             "for waveforms (B, N); expected (B, C, T) or (B, T, C) with time_first=True")
        if self.time_first:
            output = output.transpose(1, 2)
        output = output.float()
        return torch.log(output + self.floor) if self.log else output


def _file_signature(path: str | None) -> str | None:
    if path is None:
        return None
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


class LogMelFrontend(Frontend):
    """Log-mel spectrogram (``torchaudio.transforms.MelSpectrogram``), for small CPU runs.

    Args:
        sample_rate: Input sample rate.
        n_fft: FFT size (25 ms at 16 kHz by default).
        hop_length: Hop (10 ms at 16 kHz).
        n_mels: Mel bands (the conv encoder's input channels).
        f_min: Lowest band edge in Hz.
        f_max: Highest band edge; ``None`` is Nyquist.
        floor: Added before the log so silence stays finite.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160, n_mels: int = 40,
                 f_min: float = 0.0, f_max: float | None = None, floor: float = 1e-6) -> None:
        super().__init__()
        if floor <= 0:
            raise ValueError(f"floor must be > 0, got {floor!r}")
        self._config = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                            f_min=f_min, f_max=f_max, floor=floor)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max
        )
        self.floor = floor
        self.freeze()

    @override
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @override
    def extract(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return torch.log(self.mel(waveform.float()) + self.floor)


def _layer_index(layer: int, num_layers: int) -> int:
    # 1-based transformer layer as in the paper's "layer 11"; 0 is the CNN feature projection
    # output is not exposed by torchaudio, so 1..num_layers, or -1 for the last.
    if layer == -1:
        return num_layers - 1
    if not 1 <= layer <= num_layers:
        raise ValueError(f"layer must be in 1..{num_layers} or -1 (last), got {layer!r}")
    return layer - 1


class TorchaudioSSLFrontend(Frontend):
    """Hidden states of one transformer layer of a torchaudio wav2vec2/HuBERT model.

    The model is built by a ``torchaudio.models`` factory: either a named architecture
    (``wav2vec2_xlsr_300m``, ``wav2vec2_xlsr_2b``, ``hubert_base``, ...) or ``wav2vec2_model``
    with explicit dimensions (``factory_kwargs``) for small test models. Weights come from a
    local checkpoint (a state dict saved with ``torch.save``, read with ``weights_only=True``);
    nothing is downloaded. Without a checkpoint the weights are random, which is only useful in
    tests: a warning says so.

    Args:
        factory: Name of a function in ``torchaudio.models`` returning a ``Wav2Vec2Model``.
        factory_kwargs: Keyword arguments of the factory.
        checkpoint: Local state-dict file; ``None`` keeps the random initialisation.
        layer: Transformer layer (1-based; -1 is the last). The paper uses layer 11 of XLS-R.
        normalize_waveform: Zero-mean/unit-variance per clip first, as XLS-R and the
            ``*_large``/``*_xlsr`` pipelines expect.
    """

    def __init__(self, factory: str = "wav2vec2_xlsr_300m", factory_kwargs: dict[str, Any] | None = None,
                 checkpoint: str | None = None, layer: int = 11, normalize_waveform: bool = True) -> None:
        super().__init__()
        builder = getattr(torchaudio.models, factory, None)
        if not callable(builder) or not (factory.startswith(("wav2vec2", "hubert", "wavlm"))):
            raise ValueError(f"factory must name a wav2vec2/HuBERT/WavLM builder in torchaudio.models, got {factory!r}")
        kwargs = dict(factory_kwargs or {})
        try:
            self.model = builder(**kwargs)
        except TypeError as error:
            raise ValueError(f"factory_kwargs do not fit torchaudio.models.{factory}: {error}") from None
        if checkpoint is not None:
            state = load_checkpoint(checkpoint, argument="checkpoint")
            state = state.get("state_dict", state) if isinstance(state, Mapping) else state
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            # aux (CTC) heads of fine-tuned checkpoints are irrelevant to feature extraction.
            unexpected = [k for k in unexpected if not k.startswith("aux.")]
            if missing or unexpected:
                raise ValueError(
                    f"checkpoint {checkpoint} does not match torchaudio.models.{factory}: missing "
                    f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                )
        else:
            import warnings
            warnings.warn(f"TorchaudioSSLFrontend({factory}) has no checkpoint: its features are random", stacklevel=2)
        num_layers = len(self.model.encoder.transformer.layers)
        self.layer = layer
        self._index = _layer_index(layer, num_layers)
        self.normalize_waveform = bool(normalize_waveform)
        # Without a checkpoint the weights are random: fingerprint them so two random models
        # never share cache entries.
        random_weights = None if checkpoint is not None else repr(
            [round(float(p.detach().double().sum()), 6) for p in self.model.parameters()])
        self._config = dict(factory=factory, factory_kwargs=sorted(kwargs.items()), layer=layer,
                            checkpoint=_file_signature(checkpoint), normalize_waveform=self.normalize_waveform,
                            random_weights=random_weights)
        self.freeze()

    @override
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @override
    def extract(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = waveform.float()
        if self.normalize_waveform:
            x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-7)
        hidden, _ = self.model.extract_features(x, lengths, num_layers=self._index + 1)
        return hidden[self._index].transpose(1, 2)


class HFWav2Vec2Frontend(Frontend):
    """Hidden states of one layer of a Hugging Face ``Wav2Vec2Model`` stored in a local folder.

    Loaded with ``from_pretrained(path, local_files_only=True, trust_remote_code=False)``: no
    network access and no code from the checkpoint folder runs.

    Args:
        path: Folder written by ``save_pretrained`` (``config.json`` + weights).
        layer: Hidden state index (0 is the CNN/projection output, 1.. the transformer layers,
            -1 the last), as in ``output_hidden_states``.
        normalize_waveform: Zero-mean/unit-variance per clip first (``do_normalize`` of the
            XLS-R feature extractors).
    """

    def __init__(self, path: str, layer: int = 11, normalize_waveform: bool = True) -> None:
        super().__init__()
        Wav2Vec2Model = require("transformers", "text", feature="HFSpeechFrontend").Wav2Vec2Model

        if not Path(path).is_dir():
            raise FileNotFoundError(f"path must be a local folder written by save_pretrained, got {path!r}")
        self.model = Wav2Vec2Model.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        num_hidden = self.model.config.num_hidden_layers + 1
        if not (layer == -1 or 0 <= layer < num_hidden):
            raise ValueError(f"layer must be in 0..{num_hidden - 1} or -1, got {layer!r}")
        self.layer = layer
        self.normalize_waveform = bool(normalize_waveform)
        weights = sorted(p.name for p in Path(path).iterdir() if p.suffix in (".bin", ".safetensors"))
        self._config = dict(path=os.path.abspath(path), layer=layer, normalize_waveform=self.normalize_waveform,
                            weights=[_file_signature(str(Path(path) / w)) for w in weights])
        self.freeze()

    @override
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @override
    def extract(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = waveform.float()
        if self.normalize_waveform:
            x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-7)
        mask = None
        if lengths is not None:
            mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
        out = self.model(x, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[self.layer].transpose(1, 2)


# --------------------------------------------------------------------------------------------
# Feature cache
# --------------------------------------------------------------------------------------------
class FeatureCache:
    """Computes each clip's frozen features once: in memory and/or on disk.

    Entries are keyed by the clip key (file path, size, modification time, decoding; see
    ``AudioQualityDataset``) and the front-end's :meth:`Frontend.cache_key`, so changing the file
    or the front-end configuration never reuses stale features. Disk entries are
    ``<cache_dir>/<frontend key>/<sha1 of clip key>.pt``, written atomically (temp file + rename)
    so concurrent ranks can share a folder, and read with ``torch.load(weights_only=True)``.

    Args:
        cache_dir: Disk cache folder; ``None`` keeps features in memory only.
        in_memory: Also keep features in a dict (on CPU).
        dtype: Storage dtype (``torch.float16`` halves memory for large SSL features).

    Attributes:
        computed: Number of clips whose features were computed (not found in a cache).
    """

    def __init__(self, cache_dir: str | None = None, in_memory: bool = True,
                 dtype: torch.dtype = torch.float32) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.in_memory = bool(in_memory)
        self.dtype = dtype
        self.memory: dict[str, Tensor] = {}
        self.computed = 0

    def _disk_path(self, frontend_key: str, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / frontend_key / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"

    def _lookup(self, frontend_key: str, key: str) -> Tensor | None:
        entry = self.memory.get(f"{frontend_key}|{key}")
        if entry is None and self.cache_dir is not None:
            path = self._disk_path(frontend_key, key)
            if path.is_file():
                entry = load_checkpoint(path, argument="feature cache entry")
                if self.in_memory:
                    self.memory[f"{frontend_key}|{key}"] = entry
        return entry

    def _store(self, frontend_key: str, key: str, features: Tensor) -> None:
        # Features computed under inference_mode (validation) are inference tensors; a clone
        # outside inference mode is a normal tensor that training steps can use.
        with torch.inference_mode(False):
            stored = features.detach().to("cpu", self.dtype).clone()
        if self.in_memory:
            self.memory[f"{frontend_key}|{key}"] = stored
        if self.cache_dir is not None:
            path = self._disk_path(frontend_key, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(stored, tmp)
            os.replace(tmp, path)

    def __call__(self, frontend: Frontend, waveform: Tensor, lengths: Tensor | None,
                 keys: Sequence[str] | None) -> Tensor:
        """Features of a batch, computing only clips missing from the cache.

        Args:
            frontend: The frozen front-end.
            waveform: ``(B, N)`` waveforms.
            lengths: ``(B,)`` real lengths or ``None``.
            keys: ``B`` clip keys; ``None`` bypasses the cache.

        Returns:
            ``(B, C, T)`` features on ``waveform``'s device, float32.
        """
        if keys is None:
            self.computed += waveform.shape[0]
            return frontend(waveform, lengths).float()
        if len(keys) != waveform.shape[0]:
            raise ValueError(f"got {len(keys)} keys for a batch of {waveform.shape[0]} waveforms")
        frontend_key = frontend.cache_key()
        found = [self._lookup(frontend_key, k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            index = torch.tensor(missing, device=waveform.device)
            fresh = frontend(waveform[index], None if lengths is None else lengths[index])
            self.computed += len(missing)
            for row, i in enumerate(missing):
                self._store(frontend_key, keys[i], fresh[row])
                found[i] = fresh[row].detach()
        with torch.inference_mode(False):
            return torch.stack([f.to(waveform.device, torch.float32) for f in found])

    def clear(self) -> None:
        """Drops the in-memory entries (the disk cache stays)."""
        self.memory.clear()


# --------------------------------------------------------------------------------------------
# Encoder and heads
# --------------------------------------------------------------------------------------------
class QualityEncoder(nn.Module):
    """The shared encoder: ``[Conv1d(k) -> LayerNorm((C, T)) -> ReLU -> Dropout -> MaxPool1d]``
    per block (domainGRL's ``_get_conv1d_layer``), flattened to ``(B, out_features)``.

    LayerNorm normalises over channels *and* time, as in the released code, so the number of
    input frames is fixed at construction.

    Args:
        in_channels: Feature channels of the front-end.
        num_frames: Feature frames of one clip.
        conv_channels: Output channels of each block.
        kernel_size: Convolution kernel (no padding).
        pool_size: Max-pool window and stride.
        dropout: Dropout rate after each block's ReLU.
    """

    def __init__(self, in_channels: int, num_frames: int, conv_channels: Sequence[int] = (32, 32),
                 kernel_size: int = 5, pool_size: int = 5, dropout: float = 0.3) -> None:
        super().__init__()
        blocks = []
        channels, frames = in_channels, num_frames
        for i, out in enumerate(conv_channels):
            frames = frames - kernel_size + 1
            if frames < 1:
                raise ValueError(
                    f"block {i} leaves no frames ({num_frames} input frames, kernel_size={kernel_size}, "
                    f"pool_size={pool_size}); use longer clips, fewer conv_channels or smaller kernels"
                )
            block = [nn.Conv1d(channels, out, kernel_size), nn.LayerNorm((out, frames)), nn.ReLU(), nn.Dropout(dropout)]
            if pool_size > 1:
                if frames // pool_size < 1:
                    raise ValueError(f"block {i}: {frames} frames are fewer than pool_size={pool_size}; "
                                     "use longer clips or a smaller pool_size")
                block.append(nn.MaxPool1d(pool_size))
                frames //= pool_size
            blocks.append(nn.Sequential(*block))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.in_channels, self.num_frames = in_channels, num_frames
        self.out_features = channels * frames

    @override
    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 3 or features.shape[1:] != (self.in_channels, self.num_frames):
            raise ValueError(
                f"encoder expects features (B, {self.in_channels}, {self.num_frames}), got {tuple(features.shape)}; "
                "the clip length, sample rate or front-end differ from the ones the model was built for"
            )
        return self.blocks(features).flatten(1)


class QualityHead(nn.Module):
    """Per-aspect scores on the 1-10 scale; Gaussian (mean + Cholesky factor) or point (MSE).

    Raw outputs are mapped as in domainGRL (``apply_linear_transform``): ``mean = scale * raw +
    bias``. The Gaussian head also outputs ``k`` raw diagonal and ``k (k-1) / 2`` off-diagonal
    entries of a lower-triangular ``L`` (diagonal through softplus, plus ``min_std`` for
    conditioning); ``scale * L`` is the Cholesky factor of the covariance on the score scale.

    Args:
        in_features: Encoder output size.
        num_aspects: ``k``, the number of scores.
        hidden: Hidden widths of the MLP.
        kind: ``"gaussian"`` or ``"mse"``.
        scale: Multiplies the raw outputs (4.5 maps [-1, 1] to [1, 10]).
        bias: Added to the scaled means (5.5).
        min_std: Floor added to the softplus diagonal (in raw units).
    """

    def __init__(self, in_features: int, num_aspects: int = 4, hidden: Sequence[int] = (64, 32),
                 kind: str = "gaussian", scale: float = 4.5, bias: float = 5.5, min_std: float = 1e-3) -> None:
        super().__init__()
        if kind not in ("gaussian", "mse"):
            raise ValueError(f"kind must be 'gaussian' or 'mse', got {kind!r}")
        self.kind, self.k = kind, num_aspects
        self.scale, self.bias, self.min_std = float(scale), float(bias), float(min_std)
        out = num_aspects + (num_aspects + num_aspects * (num_aspects - 1) // 2 if kind == "gaussian" else 0)
        self.net = mlp(in_features, hidden, out)
        rows, cols = torch.tril_indices(num_aspects, num_aspects, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    @override
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """Returns ``(mean (B, k), scale_tril (B, k, k) or None)`` on the score scale."""
        raw = self.net(z)
        k = self.k
        mean = self.scale * raw[:, :k] + self.bias
        if self.kind == "mse":
            return mean, None
        tril = raw.new_zeros(raw.shape[0], k, k)
        diagonal = torch.arange(k, device=raw.device)
        tril[:, diagonal, diagonal] = F.softplus(raw[:, k:2 * k]) + self.min_std
        tril[:, self._rows, self._cols] = raw[:, 2 * k:]
        return mean, self.scale * tril


def gaussian_nll(mean: Tensor, scale_tril: Tensor, target: Tensor, log_det_floor: float | None = None) -> Tensor:
    """Per-sample ``-log N(target; mean, L L^T)`` with ``L = scale_tril`` lower-triangular.

    ``0.5 * (|L^{-1}(y - mu)|^2 + 2 sum log diag L + k log 2 pi)``, computed with a triangular
    solve (no explicit inverse or determinant), equal to
    ``-MultivariateNormal(mean, scale_tril=L).log_prob(target)``.

    With ``log_det_floor`` it is the released code's loss instead (610494/domainGRL,
    ``_multivariate_gnll_loss``): ``0.5 * maha + 0.5 * max(log det Sigma, floor)`` without the
    constant. The floor (1e-6 there) removes any reward for ``det Sigma < 1``, so the predicted
    covariance cannot collapse and the mean keeps receiving gradient.

    Args:
        mean: ``(B, k)``.
        scale_tril: ``(B, k, k)`` lower-triangular with a positive diagonal.
        target: ``(B, k)``.
        log_det_floor: ``None`` for the exact NLL, else the lower clamp of ``log det Sigma``.

    Returns:
        ``(B,)`` negative log-likelihoods.
    """
    diff = (target - mean).unsqueeze(-1)
    whitened = torch.linalg.solve_triangular(scale_tril, diff, upper=False).squeeze(-1)
    half_log_det = torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)
    if log_det_floor is not None:
        return 0.5 * whitened.pow(2).sum(-1) + 0.5 * torch.clamp(2 * half_log_det, min=log_det_floor)
    k = mean.shape[-1]
    return 0.5 * whitened.pow(2).sum(-1) + half_log_det + 0.5 * k * math.log(2 * math.pi)


class DomainClassifier(nn.Module):
    """An MLP domain classifier (``domain_classifier_neurons = (64, 32)`` in the paper's code)."""

    def __init__(self, in_features: int, num_domains: int, hidden: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        self.num_domains = num_domains
        self.net = mlp(in_features, hidden, num_domains)

    @override
    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class AudioQualityGRLNet(nn.Module):
    """Encoder + quality head + named domain classifiers behind one gradient-reversal layer.

    ``adversarial=False`` is the no-GRL baseline: the domain classifiers still train (so their
    accuracy can be compared) but read detached features, so no gradient from them reaches the
    encoder.

    Args:
        in_channels: Front-end feature channels.
        num_frames: Front-end frames per clip.
        num_aspects: Scores per clip.
        domains: Domain head name -> number of domains.
        conv_channels, kernel_size, pool_size, dropout: :class:`QualityEncoder` arguments.
        quality_hidden: Quality head hidden widths.
        domain_hidden: Domain classifier hidden widths.
        head: ``"gaussian"`` or ``"mse"``.
        grl_lambda: Initial reversal scale (``self.grl.lambda_`` may be changed later).
        adversarial: Reverse the domain gradient into the encoder (``False``: detach it).
        score_scale, score_bias: Score mapping of :class:`QualityHead`.
    """

    def __init__(self, in_channels: int, num_frames: int, num_aspects: int = 4,
                 domains: Mapping[str, int] | None = None, conv_channels: Sequence[int] = (32, 32),
                 kernel_size: int = 5, pool_size: int = 5, dropout: float = 0.3,
                 quality_hidden: Sequence[int] = (64, 32), domain_hidden: Sequence[int] = (64, 32),
                 head: str = "gaussian", grl_lambda: float = 0.1, adversarial: bool = True,
                 score_scale: float = 4.5, score_bias: float = 5.5) -> None:
        super().__init__()
        self.encoder = QualityEncoder(in_channels, num_frames, conv_channels, kernel_size, pool_size, dropout)
        self.quality = QualityHead(self.encoder.out_features, num_aspects, quality_hidden, head, score_scale,
                                   score_bias)
        self.grl = GradientReversal(grl_lambda)
        self.adversarial = bool(adversarial)
        self.domain_heads = nn.ModuleDict({
            name: DomainClassifier(self.encoder.out_features, n, domain_hidden) for name, n in (domains or {}).items()
        })

    def domain_logits(self, z: Tensor) -> dict[str, Tensor]:
        if not self.domain_heads:
            return {}
        reversed_z = self.grl(z) if self.adversarial else z.detach()
        return {name: head(reversed_z) for name, head in self.domain_heads.items()}

    @override
    def forward(self, features: Tensor) -> dict[str, Any]:
        """Returns ``{"z", "mean", "scale_tril", "domain_logits"}`` for features ``(B, C, T)``."""
        z = self.encoder(features)
        mean, scale_tril = self.quality(z)
        return {"z": z, "mean": mean, "scale_tril": scale_tril, "domain_logits": self.domain_logits(z)}
