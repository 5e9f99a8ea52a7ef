"""Audio quality assessment data: list-file loaders and a generated corpus with a spurious cue.

Three DataModules share one dataset and batch format (see :class:`AudioQualityDataModule`):

* :class:`AudioQualityCSVDataModule`: a generic CSV per split (``path``, one column per quality
  aspect, ``domain``, optional ``system`` and ``content_type``).
* :class:`AudioMOSTrack2DataModule`: the AudioMOS Challenge 2025 track 2 lists (Audiobox
  Aesthetics axes). Our reading of the layout, from the paper's loader (610494/domainGRL,
  ``dataset/dataset_AES.py``: ``pd.read_csv(<data_path>/<list name>.csv)`` with the columns
  ``data_path``, ``Production_Quality``, ``Production_Complexity``, ``Content_Enjoyment``,
  ``Content_Usefulness``; the source corpus is the first folder after ``track2/`` in
  ``data_path``) and the Audiobox Aesthetics README (facebookresearch/audiobox-aesthetics:
  ``data_path`` names the corpus, e.g. ``LibriTTS``, ``cv-corpus-13.0-2023-03-09``, ``EARS``,
  ``MUSDB18``, ``musiccaps``, ``unbalanced_train_segments``)::

      ROOT/audiomos2025-track2-train_list.csv     sample_id,data_path,<4 axes> (any column order)
      ROOT/audiomos2025-track2-dev_list.csv
      ROOT/audiomos2025-track2-eval_list.csv      optional: the evaluation ground truth
      ROOT/<source corpus>/.../<clip>.wav          e.g. LibriTTS/, musiccaps/, EARS/, ...

* :class:`SpuriousCueSpeechDataModule`: a small corpus generated on first use
  (:func:`generate_spurious_cue_corpus`): espeak-ng speech degraded by known amounts (additive
  noise at a given SNR, band-limiting, clipping, quantisation) that define the quality targets,
  and a "source corpus" cue (a constant hum and/or a loudness offset per corpus) that predicts
  quality in the training and dev splits but is independent of it in the test split.

Every DataModule can instead serve precomputed frozen features (``features_dir``: one
``<audio stem>.npy``/``.pt`` per clip, the layout domainGRL's ``AESFeatures`` reads, e.g.
``track2/audio_feature_w2v2_xlsr_2b_layer11/``); batches then hold ``features`` ``(B, C, T)``.

Waveforms are mono float32 in ``[-1, 1]`` at ``sample_rate`` (resampled with
``torchaudio.functional.resample``), cut or zero-padded to ``clip_seconds`` from the start so a
clip's frozen features can be cached (DESIGN.md: audio inputs are waveforms in ``[-1, 1]``).
WAV files (PCM 8/16/24/32-bit, float 32/64, WAVE_FORMAT_EXTENSIBLE) are read by a small RIFF
parser here, so no audio backend is needed; other formats go through ``soundfile`` if installed
(``torchaudio.load`` needs ``torchcodec`` since torchaudio 2.9).
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import struct
import subprocess
import tempfile
import warnings
import wave
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchaudio.functional as AF
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robust_lightning.datamodules._common import (
    GENERATED_MANIFEST,
    check_int_at_least,
    check_non_negative_int,
    check_positive_int,
    generate_once,
    read_generated_manifest,
)

__all__ = [
    "ASPECTS",
    "AUDIOMOS_COLUMNS",
    "AUDIOMOS_CONTENT_TYPES",
    "CONTENT_TYPES",
    "AudioMOSTrack2DataModule",
    "AudioQualityCSVDataModule",
    "AudioQualityDataModule",
    "AudioQualityDataset",
    "AudioRecord",
    "SpuriousCueSpeechDataModule",
    "add_noise_at_snr",
    "band_limit",
    "espeak_available",
    "generate_spurious_cue_corpus",
    "hard_clip",
    "quantize",
    "read_audio",
    "read_features",
    "snr_db",
    "write_wav",
]

#: Quality aspects, in the order of the score vectors (Audiobox Aesthetics' four axes).
ASPECTS: tuple[str, ...] = (
    "production_quality",
    "production_complexity",
    "content_enjoyment",
    "content_usefulness",
)
#: AudioMOS 2025 track 2 column of each aspect.
AUDIOMOS_COLUMNS: dict[str, str] = {
    "production_quality": "Production_Quality",
    "production_complexity": "Production_Complexity",
    "content_enjoyment": "Content_Enjoyment",
    "content_usefulness": "Content_Usefulness",
}
#: Content types, in the id order of domainGRL's "TYPE" grouping (0 audio, 1 music, 2 speech).
CONTENT_TYPES: tuple[str, ...] = ("audio", "music", "speech")
#: Source corpus -> content type, as domainGRL's ``TYPE_MAPPING`` (unknown corpora -> "audio").
AUDIOMOS_CONTENT_TYPES: dict[str, str] = {
    "unbalanced_train_segments": "audio",
    "musiccaps": "music",
    "MUSDB18": "music",
    "cv-corpus-13.0-2023-03-09": "speech",
    "LibriTTS": "speech",
    "EARS": "speech",
}

_CORPUS_VERSION = 1


# --------------------------------------------------------------------------------------------
# Audio I/O
# --------------------------------------------------------------------------------------------
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a RIFF/WAVE file")
    offset, fmt, pcm = 12, None, None
    while offset + 8 <= len(data):
        chunk_id = data[offset:offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = data[offset + 8:offset + 8 + size]  # streamed files may over-state the size
        if chunk_id == b"fmt ":
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body, 0)
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack_from("<H", body, 24)  # first 2 bytes of the sub-format GUID
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            pcm = body
        offset += 8 + size + (size & 1)  # chunks are padded to an even size
    if fmt is None or pcm is None:
        raise ValueError(f"{path}: missing 'fmt ' or 'data' chunk")
    tag, channels, rate, block_align, bits = fmt
    frames = len(pcm) // block_align
    pcm = pcm[: frames * block_align]
    if tag == _WAVE_FORMAT_PCM and bits == 8:
        audio = (np.frombuffer(pcm, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == _WAVE_FORMAT_PCM and bits == 16:
        audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    elif tag == _WAVE_FORMAT_PCM and bits == 24:
        raw = np.frombuffer(pcm, np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        audio = value.astype(np.float32) / float(1 << 23)
    elif tag == _WAVE_FORMAT_PCM and bits == 32:
        audio = (np.frombuffer(pcm, "<i4").astype(np.float64) / 2.0**31).astype(np.float32)
    elif tag == _WAVE_FORMAT_IEEE_FLOAT and bits in (32, 64):
        audio = np.frombuffer(pcm, "<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported WAV encoding (format tag {tag:#x}, {bits} bits)")
    return audio.reshape(-1, channels).T.copy(), int(rate)


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Reads an audio file as float32 ``(channels, frames)`` in ``[-1, 1]`` and its sample rate.

    WAV is parsed here (PCM 8/16/24/32-bit, IEEE float, extensible headers, streamed headers with
    over-stated sizes); other formats (FLAC, MP3, ...) need the optional ``soundfile`` package.

    Args:
        path: Audio file.

    Returns:
        ``(audio, sample_rate)``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ImportError: For a non-WAV file when ``soundfile`` is not installed.
        ValueError: For a malformed or unsupported WAV file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.suffix.lower() in (".wav", ".wave"):
        return _read_wav(path)
    try:
        import soundfile  # optional: only for non-WAV corpora (AudioMOS ships FLAC/MP3 too)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading {path.suffix} files needs the optional 'soundfile' package "
            "(pip install soundfile); WAV is read without it"
        ) from error
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return audio.T.copy(), int(rate)


def write_wav(path: str | os.PathLike[str], audio: np.ndarray | Tensor, sample_rate: int) -> Path:
    """Writes 16-bit PCM WAV (values clipped to ``[-1, 1]``).

    Args:
        path: Output file; parent folders are created.
        audio: ``(frames,)`` or ``(channels, frames)`` float samples.
        sample_rate: Sample rate in Hz.

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.asarray(audio.detach().cpu() if isinstance(audio, Tensor) else audio, np.float64)
    samples = samples[None] if samples.ndim == 1 else samples
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").T  # interleave channels
    with wave.open(str(path), "wb") as file:
        file.setnchannels(samples.shape[0])
        file.setsampwidth(2)
        file.setframerate(int(sample_rate))
        file.writeframes(pcm.tobytes())
    return path


# --------------------------------------------------------------------------------------------
# Records, dataset, batch format
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioRecord:
    """One clip of a split: where it is and what is known about it.

    Attributes:
        path: Resolved audio file.
        scores: One score per aspect (``ASPECTS`` order unless the datamodule says otherwise).
        corpus: Source corpus ("domain") name.
        system: System name (the unit of system-level metrics).
        content_type: One of :data:`CONTENT_TYPES`.
        sample_id: Identifier from the list file (defaults to the path).
    """

    path: Path
    scores: tuple[float, ...]
    corpus: str = "default"
    system: str = "default"
    content_type: str = "speech"
    sample_id: str = ""


def read_features(path: str | os.PathLike[str]) -> Tensor:
    """Loads one clip's precomputed features: ``.npy`` (``np.load(allow_pickle=False)``) or
    ``.pt`` (``torch.load(weights_only=True)``), as a float32 tensor. Nothing is unpickled."""
    path = Path(path)
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32, copy=False))
    if path.suffix == ".pt":
        value = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(value, Tensor):
            raise ValueError(f"{path} must hold a single tensor, got {type(value).__name__}")
        return value.float()
    raise ValueError(f"feature files must be .npy or .pt, got {path}")


class AudioQualityDataset(Dataset[dict[str, Any]]):
    """Mono clips of fixed length (or their precomputed features) with scores and domain ids.

    Each item is a dict: ``waveform`` float32 ``(clip_samples,)`` in ``[-1, 1]`` and ``length``
    (real samples before zero padding) -- or, with ``features_dir``, ``features`` float32
    ``(C, T)`` -- plus ``scores`` float32 ``(num_aspects,)``, ``corpus``, ``content_type``,
    ``system`` (int64 ids) and ``key``: a string naming the file (path, size, modification time)
    and the decoding (sample rate, clip length) that feature caches use.

    Precomputed features follow the released domainGRL layout (``dataset/dataset_AES.py``,
    ``_load_features``): one file per clip named after the audio file's stem, ``.npy`` there,
    in a flat folder such as ``track2/audio_feature_w2v2_xlsr_2b_layer11/``. Our reading: the
    array is ``(C, T)`` (their model takes ``in_shape = features[0].shape`` with
    ``in_shape[0]`` as the Conv1d channels); ``feature_layout="TC"`` transposes ``(T, C)`` files.

    Args:
        records: The clips.
        corpus_ids: Corpus name -> id.
        system_ids: System name -> id.
        sample_rate: Output sample rate.
        clip_samples: Output length: longer clips are cut from the start, shorter ones padded.
        preload: Decode every clip (or feature file) once here instead of on every access.
        features_dir: Folder of precomputed features (``<stem>.npy`` or ``<stem>.pt``); ``None``
            loads audio.
        feature_layout: ``"CT"`` or ``"TC"``: axis order of the stored arrays.
        num_frames: Crop/zero-pad features to this many frames; ``None`` requires equal lengths.
    """

    def __init__(
        self,
        records: Sequence[AudioRecord],
        corpus_ids: Mapping[str, int],
        system_ids: Mapping[str, int],
        sample_rate: int,
        clip_samples: int,
        preload: bool = True,
        features_dir: str | os.PathLike[str] | None = None,
        feature_layout: Literal["CT", "TC"] = "CT",
        num_frames: int | None = None,
    ) -> None:
        self.records = list(records)
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.features_dir = Path(features_dir) if features_dir is not None else None
        self.feature_layout = feature_layout
        self.num_frames = num_frames
        self.corpus = torch.tensor([corpus_ids[r.corpus] for r in self.records], dtype=torch.int64)
        self.system = torch.tensor([system_ids[r.system] for r in self.records], dtype=torch.int64)
        self.content_type = torch.tensor(
            [CONTENT_TYPES.index(r.content_type) for r in self.records], dtype=torch.int64
        )
        self.scores = torch.tensor([r.scores for r in self.records], dtype=torch.float32)
        if self.features_dir is not None:
            self.feature_paths = [self._feature_path(r.path) for r in self.records]
            self.keys = [self._key(p) for p in self.feature_paths]
        else:
            self.keys = [self._key(r.path) for r in self.records]
        self._cache: list[tuple[Tensor, int]] | None = None
        if preload:
            self._cache = [self._load(i) for i in range(len(self.records))]

    def _feature_path(self, audio: Path) -> Path:
        assert self.features_dir is not None
        for suffix in (".npy", ".pt"):
            candidate = self.features_dir / f"{audio.stem}{suffix}"
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"features_dir: no {audio.stem}.npy or {audio.stem}.pt in {self.features_dir} for audio {audio}"
        )

    def _key(self, path: Path) -> str:
        stat = path.stat()
        decoding = "features" if self.features_dir is not None else f"sr={self.sample_rate}|n={self.clip_samples}"
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{decoding}"

    def _load_features(self, index: int) -> tuple[Tensor, int]:
        path = self.feature_paths[index]
        features = read_features(path)
        if features.dim() != 2:
            raise ValueError(f"{path}: features must be 2-D ({self.feature_layout}), got shape {tuple(features.shape)}")
        if self.feature_layout == "TC":
            features = features.t()
        frames = features.shape[1]
        if self.num_frames is not None:
            out = features.new_zeros(features.shape[0], self.num_frames)
            out[:, :min(frames, self.num_frames)] = features[:, :self.num_frames]
            features = out
        return features.contiguous(), min(frames, self.num_frames or frames)

    def _load(self, index: int) -> tuple[Tensor, int]:
        if self.features_dir is not None:
            return self._load_features(index)
        audio, rate = read_audio(self.records[index].path)
        waveform = torch.from_numpy(audio).mean(dim=0)  # mono: channel average
        if rate != self.sample_rate:
            waveform = AF.resample(waveform, rate, self.sample_rate)
        length = min(waveform.shape[0], self.clip_samples)
        out = torch.zeros(self.clip_samples, dtype=torch.float32)
        out[:length] = waveform[:length].clamp(-1.0, 1.0)
        return out, length

    def feature_shape(self) -> tuple[int, int]:
        """``(C, T)`` of the precomputed features (checked equal across clips when preloaded)."""
        if self.features_dir is None:
            raise RuntimeError("this dataset loads audio, not precomputed features")
        first = self[0]["features"].shape
        if self._cache is not None:
            for i, (features, _) in enumerate(self._cache):
                if features.shape != first:
                    raise ValueError(
                        f"precomputed features differ in shape: {self.feature_paths[0]} is {tuple(first)}, "
                        f"{self.feature_paths[i]} is {tuple(features.shape)}; set num_frames to crop/pad them"
                    )
        return int(first[0]), int(first[1])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        data, length = self._cache[index] if self._cache is not None else self._load(index)
        return {
            "features" if self.features_dir is not None else "waveform": data,
            "length": torch.tensor(length, dtype=torch.int64),
            "scores": self.scores[index],
            "corpus": self.corpus[index],
            "content_type": self.content_type[index],
            "system": self.system[index],
            "key": self.keys[index],
        }


class AudioQualityDataModule(LightningDataModule):
    """Shared plumbing: subclasses read the list of :class:`AudioRecord` of each split.

    Batches are dicts (default collation of :class:`AudioQualityDataset` items): ``waveform``
    ``(B, clip_samples)``, ``length`` ``(B,)``, ``scores`` ``(B, num_aspects)``, ``corpus``,
    ``content_type``, ``system`` ``(B,)`` int64 and ``key`` (list of ``B`` strings).
    After ``setup``, ``corpus_names``, ``system_names`` and ``content_type_names`` give the id
    order, ``num_corpora`` and ``num_content_types`` the domain head sizes.

    Args:
        root: Data folder.
        aspects: Names of the score columns, in order (metric names use them).
        sample_rate: Output sample rate in Hz.
        clip_seconds: Clip length in seconds (cut from the start or zero-padded).
        batch_size: Training batch size (64 in the paper's code).
        eval_batch_size: Batch size for validation/test/predict; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes.
        preload: Decode all clips in ``setup`` (small corpora) instead of per access.
        features_dir: Folder of precomputed frozen features, one ``<audio stem>.npy``/``.pt``
            per clip (domainGRL layout); batches then carry ``features`` ``(B, C, T)`` instead
            of ``waveform`` and ``feature_shape`` is set after ``setup``. Relative paths are
            relative to ``root``.
        feature_layout: ``"CT"`` (default) or ``"TC"``: axis order of the stored arrays.
        num_frames: Crop/zero-pad precomputed features to this many frames.

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        root: str,
        aspects: Sequence[str] = ASPECTS,
        sample_rate: int = 16000,
        clip_seconds: float = 10.0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        preload: bool = True,
        features_dir: str | None = None,
        feature_layout: Literal["CT", "TC"] = "CT",
        num_frames: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(root, (str, os.PathLike)) or not str(root):
            raise ValueError(f"root must be a non-empty path, got {root!r}")
        aspects = tuple(aspects)
        if not aspects or len(set(aspects)) != len(aspects) or not all(isinstance(a, str) and a for a in aspects):
            raise ValueError(f"aspects must be distinct non-empty names, got {list(aspects)!r}")
        self.root = Path(root)
        self.aspects = aspects
        self.sample_rate = check_positive_int("sample_rate", sample_rate)
        if isinstance(clip_seconds, bool) or not isinstance(clip_seconds, (int, float)) or not (
            math.isfinite(clip_seconds) and clip_seconds > 0
        ):
            raise ValueError(f"clip_seconds must be a positive number, got {clip_seconds!r}")
        self.clip_seconds = float(clip_seconds)
        self.clip_samples = round(self.clip_seconds * self.sample_rate)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else check_positive_int("eval_batch_size", eval_batch_size)
        )
        self.num_workers = check_non_negative_int("num_workers", num_workers)
        self.preload = bool(preload)
        if feature_layout not in ("CT", "TC"):
            raise ValueError(f"feature_layout must be 'CT' or 'TC', got {feature_layout!r}")
        if features_dir is not None and (not isinstance(features_dir, (str, os.PathLike)) or not str(features_dir)):
            raise ValueError(f"features_dir must be a folder path or None, got {features_dir!r}")
        self.features_dir = None if features_dir is None else self.root / features_dir
        self.feature_layout = feature_layout
        self.num_frames = None if num_frames is None else check_positive_int("num_frames", num_frames)
        self.feature_shape: tuple[int, int] | None = None
        self.corpus_names: list[str] = []
        self.system_names: list[str] = []
        self.content_type_names: list[str] = list(CONTENT_TYPES)
        self.datasets: dict[str, AudioQualityDataset] = {}

    # -- subclass interface -------------------------------------------------------------------
    def read_split(self, split: Literal["train", "val", "test"]) -> list[AudioRecord] | None:
        """Records of ``split``, or ``None`` when the split is not available."""
        raise NotImplementedError

    # -- Lightning hooks ----------------------------------------------------------------------
    @property
    def num_corpora(self) -> int:
        return len(self.corpus_names)

    @property
    def num_content_types(self) -> int:
        return len(self.content_type_names)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.features_dir is not None and not self.features_dir.is_dir():
            raise FileNotFoundError(f"features_dir not found: {self.features_dir}")
        splits = {split: self.read_split(split) for split in ("train", "val", "test")}
        records = [r for split in splits.values() if split for r in split]
        for record in records:
            if len(record.scores) != len(self.aspects):
                raise ValueError(
                    f"{record.path}: {len(record.scores)} scores for {len(self.aspects)} aspects {self.aspects}"
                )
            if record.content_type not in CONTENT_TYPES:
                raise ValueError(f"{record.path}: content type {record.content_type!r} not in {CONTENT_TYPES}")
        # Ids come from the union of the splits, sorted, so every split agrees on them.
        self.corpus_names = sorted({r.corpus for r in records})
        self.system_names = sorted({r.system for r in records})
        corpus_ids = {name: i for i, name in enumerate(self.corpus_names)}
        system_ids = {name: i for i, name in enumerate(self.system_names)}
        for split, split_records in splits.items():
            if split_records:
                self.datasets[split] = AudioQualityDataset(
                    split_records, corpus_ids, system_ids, self.sample_rate, self.clip_samples, self.preload,
                    self.features_dir, self.feature_layout, self.num_frames,
                )
        if self.features_dir is not None:
            shapes = {split: ds.feature_shape() for split, ds in self.datasets.items()}
            if len(set(shapes.values())) > 1:
                raise ValueError(f"precomputed features differ in shape between splits: {shapes}; set num_frames")
            self.feature_shape = next(iter(shapes.values()))

    def _loader(self, split: str, shuffle: bool) -> DataLoader[dict[str, Any]]:
        if split not in self.datasets:
            if not self.datasets:
                raise RuntimeError(f"{type(self).__name__} has no data yet: call setup() first")
            raise RuntimeError(f"{type(self).__name__} has no {split} split (see its list-file arguments)")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("test", shuffle=False)


# --------------------------------------------------------------------------------------------
# Generic CSV and AudioMOS track 2
# --------------------------------------------------------------------------------------------
def _read_csv_rows(path: Path, argument: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: list file not found: {path}")
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"{argument}: {path} has no rows")
    return rows


def _require_columns(rows: list[dict[str, str]], columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {sorted(rows[0])}")


def _parse_score(value: str, column: str, path: Path, line: int) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}, row {line}: column {column!r} is not a number: {value!r}") from None
    if not math.isfinite(score):
        raise ValueError(f"{path}, row {line}: column {column!r} is not finite: {value!r}")
    return score


class AudioQualityCSVDataModule(AudioQualityDataModule):
    """One CSV per split: ``path``, one column per aspect, ``domain`` and optional columns.

    Format (header required, extra columns ignored)::

        path,production_quality,production_complexity,content_enjoyment,content_usefulness,domain,system,content_type
        wav/train/0000.wav,7.31,3.10,6.02,6.87,corpus_a,noise_l1,speech

    ``path`` is relative to ``root`` (or absolute). ``domain`` (the source corpus) defaults to
    ``"default"``, ``system`` to the domain (system-level metrics then aggregate per corpus),
    ``content_type`` (``audio``/``music``/``speech``) to ``"speech"``.

    Args:
        root: Folder of the CSV files (and of relative audio paths).
        train_csv: Training list, relative to ``root``.
        val_csv: Validation list; ``None`` for no validation split.
        test_csv: Test list; ``None`` for no test split.
        **kwargs: :class:`AudioQualityDataModule` arguments (``aspects`` names the score columns).
    """

    def __init__(
        self,
        root: str,
        train_csv: str = "train.csv",
        val_csv: str | None = "dev.csv",
        test_csv: str | None = "test.csv",
        aspects: Sequence[str] = ASPECTS,
        sample_rate: int = 16000,
        clip_seconds: float = 10.0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        preload: bool = True,
        features_dir: str | None = None,
        feature_layout: Literal["CT", "TC"] = "CT",
        num_frames: int | None = None,
    ) -> None:
        super().__init__(root, aspects, sample_rate, clip_seconds, batch_size, eval_batch_size, num_workers, preload,
                         features_dir, feature_layout, num_frames)
        self.split_files = {"train": train_csv, "val": val_csv, "test": test_csv}

    def read_split(self, split: Literal["train", "val", "test"]) -> list[AudioRecord] | None:
        name = self.split_files[split]
        if name is None:
            return None
        argument = {"train": "train_csv", "val": "val_csv", "test": "test_csv"}[split]
        path = self.root / name
        rows = _read_csv_rows(path, argument)
        _require_columns(rows, ("path", *self.aspects), path)
        records = []
        for line, row in enumerate(rows, start=2):
            audio = Path(row["path"])
            audio = audio if audio.is_absolute() else path.parent / audio
            corpus = row.get("domain") or "default"
            records.append(AudioRecord(
                path=audio,
                scores=tuple(_parse_score(row[a], a, path, line) for a in self.aspects),
                corpus=corpus,
                system=row.get("system") or corpus,
                content_type=row.get("content_type") or "speech",
                sample_id=row.get("sample_id") or row["path"],
            ))
        return records


class AudioMOSTrack2DataModule(AudioQualityDataModule):
    """AudioMOS Challenge 2025 track 2 (Audiobox Aesthetics) list files.

    Each list is a CSV with ``data_path`` and the four axis columns of :data:`AUDIOMOS_COLUMNS`
    (``sample_id`` and ``system``/``system_id`` optional, other columns ignored), as read by the
    paper's code. Audio paths are resolved in this order: an existing absolute path; the path
    relative to ``audio_root``; the part after the last ``track2/`` folder relative to
    ``audio_root`` (list files written on another machine keep working). The source corpus
    (the "corpus" domain) is the first folder after ``track2/`` or, without that marker, the
    first folder of the path relative to ``audio_root`` (domainGRL's "GT" grouping); the content
    type follows ``content_types`` (domainGRL's "TYPE" grouping; unknown corpora -> ``"audio"``).
    The natural-audio train/dev lists name no systems: ``system`` then falls back to the corpus.

    Args:
        root: Folder holding the list files.
        train_list: Training list file, relative to ``root``.
        val_list: Dev list; ``None`` for none.
        test_list: Evaluation list with ground truth; ``None`` for none.
        audio_root: Base of relative audio paths; ``None`` uses ``root``.
        content_types: Corpus -> content type; ``None`` uses :data:`AUDIOMOS_CONTENT_TYPES`.
        **kwargs: :class:`AudioQualityDataModule` arguments. For the paper's setting pass
            ``features_dir="audio_feature_w2v2_xlsr_2b_layer11"`` (XLS-R 2B layer-11 features
            extracted beforehand, one ``<stem>.npy`` per clip, as domainGRL reads them).
    """

    def __init__(
        self,
        root: str,
        train_list: str = "audiomos2025-track2-train_list.csv",
        val_list: str | None = "audiomos2025-track2-dev_list.csv",
        test_list: str | None = "audiomos2025-track2-eval_list.csv",
        audio_root: str | None = None,
        content_types: dict[str, str] | None = None,
        sample_rate: int = 16000,
        clip_seconds: float = 10.0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        preload: bool = False,
        features_dir: str | None = None,
        feature_layout: Literal["CT", "TC"] = "CT",
        num_frames: int | None = None,
    ) -> None:
        super().__init__(root, ASPECTS, sample_rate, clip_seconds, batch_size, eval_batch_size, num_workers, preload,
                         features_dir, feature_layout, num_frames)
        self.split_files = {"train": train_list, "val": val_list, "test": test_list}
        self.audio_root = Path(audio_root) if audio_root is not None else self.root
        self.content_types = dict(AUDIOMOS_CONTENT_TYPES if content_types is None else content_types)
        bad = {k: v for k, v in self.content_types.items() if v not in CONTENT_TYPES}
        if bad:
            raise ValueError(f"content_types values must be in {CONTENT_TYPES}, got {bad}")

    def _resolve(self, data_path: str) -> tuple[Path, str]:
        raw = Path(data_path)
        parts = raw.parts
        marker = max((i for i, p in enumerate(parts) if p == "track2"), default=None)
        candidates = [raw] if raw.is_absolute() else [self.audio_root / raw]
        if marker is not None and marker + 1 < len(parts):
            candidates.append(self.audio_root.joinpath(*parts[marker + 1:]))
        path = next((c for c in candidates if c.is_file()), candidates[-1])
        if marker is not None and marker + 2 < len(parts):
            corpus = parts[marker + 1]
        else:
            try:
                relative = path.relative_to(self.audio_root).parts
            except ValueError:
                relative = path.parts
            corpus = relative[0] if len(relative) > 1 else "unknown"
        return path, corpus

    def read_split(self, split: Literal["train", "val", "test"]) -> list[AudioRecord] | None:
        name = self.split_files[split]
        if name is None:
            return None
        argument = {"train": "train_list", "val": "val_list", "test": "test_list"}[split]
        path = self.root / name
        rows = _read_csv_rows(path, argument)
        columns = [AUDIOMOS_COLUMNS[a] for a in ASPECTS]
        _require_columns(rows, ("data_path", *columns), path)
        records = []
        for line, row in enumerate(rows, start=2):
            audio, corpus = self._resolve(row["data_path"])
            system = row.get("system") or row.get("system_id") or corpus
            records.append(AudioRecord(
                path=audio,
                scores=tuple(_parse_score(row[c], c, path, line) for c in columns),
                corpus=corpus,
                system=system,
                content_type=self.content_types.get(corpus, "audio"),
                sample_id=row.get("sample_id") or row["data_path"],
            ))
        return records


# --------------------------------------------------------------------------------------------
# Degradations (each documented by what a test can measure)
# --------------------------------------------------------------------------------------------
def snr_db(clean: np.ndarray, degraded: np.ndarray) -> float:
    """``10 log10(P_clean / P_error)`` with ``error = degraded - clean``."""
    error = np.asarray(degraded, np.float64) - np.asarray(clean, np.float64)
    power_error = float(np.mean(error**2))
    power_clean = float(np.mean(np.asarray(clean, np.float64) ** 2))
    return math.inf if power_error == 0.0 else 10.0 * math.log10(power_clean / power_error)


def add_noise_at_snr(clean: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """Adds white Gaussian noise scaled so that :func:`snr_db` of the result is exactly ``snr``."""
    noise = rng.standard_normal(clean.shape)
    scale = math.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10.0 ** (snr / 10.0)))
    return clean + scale * noise


def band_limit(audio: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    """Zeroes every DFT bin above ``cutoff_hz`` (an ideal low-pass over the whole clip)."""
    spectrum = np.fft.rfft(audio)
    spectrum[np.fft.rfftfreq(audio.shape[-1], 1.0 / sample_rate) > cutoff_hz] = 0.0
    return np.fft.irfft(spectrum, n=audio.shape[-1])


def hard_clip(audio: np.ndarray, level: float) -> np.ndarray:
    """Clips at ``level`` times the clip's peak (``level`` in ``(0, 1]``; 1 leaves it intact)."""
    threshold = level * float(np.max(np.abs(audio)))
    return np.clip(audio, -threshold, threshold)


def quantize(audio: np.ndarray, bits: int) -> np.ndarray:
    """Uniform mid-tread quantisation to ``bits`` bits of the clip scaled to full scale."""
    peak = float(np.max(np.abs(audio))) or 1.0
    steps = 2 ** (bits - 1) - 1
    return np.round(audio / peak * steps) / steps * peak


# --------------------------------------------------------------------------------------------
# Speech sources
# --------------------------------------------------------------------------------------------
_SENTENCES = (
    "the morning train left the station on time",
    "please put the blue cups back on the top shelf",
    "a small dog ran across the wet green field",
    "we will meet again at the old market square",
    "the river was cold after the long winter",
    "she found seven coins under the kitchen table",
    "turn left at the bakery and walk two blocks",
    "the lamp in the hallway needs a new bulb",
    "his letter arrived three days after the storm",
    "bring a warm coat because the night gets cold",
    "the children painted the fence bright yellow",
    "our team finished the project before lunch",
    "the pilot announced a short delay for landing",
    "fresh bread smells best early in the day",
    "they planted tomatoes along the garden wall",
    "the clock on the tower struck nine times",
    "a quiet voice answered from the next room",
    "the museum opens its doors at ten every morning",
    "heavy rain washed the dust from the roads",
    "the farmer counted the sheep before sunset",
    "my sister keeps her notes in a red folder",
    "the bus stops right in front of the library",
    "he tuned the old guitar before the concert",
    "the soup needs a little more salt and pepper",
)
_VOICES = ("en-us", "en", "en-gb-x-rp", "en-us+f2", "en-us+m3", "en+f4", "en-us+m7", "en+f3")


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` executable is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


@dataclass(frozen=True)
class _Utterance:
    text: str
    voice: str
    speed: int  # words per minute
    pitch: int  # espeak pitch, 0..99


def _espeak(utterance: _Utterance, sample_rate: int, workdir: str, index: int) -> np.ndarray:
    out = os.path.join(workdir, f"u{index}.wav")
    subprocess.run(
        ["espeak-ng", "-v", utterance.voice, "-s", str(utterance.speed), "-p", str(utterance.pitch),
         "-w", out, utterance.text],
        check=True, capture_output=True, timeout=60,
    )
    audio, rate = read_audio(out)
    waveform = torch.from_numpy(audio.mean(axis=0))
    if rate != sample_rate:
        waveform = AF.resample(waveform, rate, sample_rate)
    return waveform.numpy().astype(np.float64)


def _formant_speech(utterance: _Utterance, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-like fallback when espeak-ng is absent: a source-filter vowel/consonant sequence.

    A glottal pulse train (f0 from the pitch setting, with a falling contour) drives three
    formant resonators whose targets change every syllable; unvoiced syllable onsets are noise
    bursts. It is not intelligible, only speech-shaped (harmonics, formants, syllable rhythm).
    """
    from scipy.signal import lfilter

    syllables = max(4, round(len(utterance.text.split()) * 1.4))
    syllable_len = int(sample_rate * 60.0 / utterance.speed / 1.4)
    vowels = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
    pieces = []
    f0_base = 90.0 + utterance.pitch * 1.6
    for s in range(syllables):
        n = syllable_len
        t = np.arange(n) / sample_rate
        f0 = f0_base * (1.1 - 0.2 * s / syllables) * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
        phase = np.cumsum(f0 / sample_rate)
        source = (phase % 1.0) - 0.5  # sawtooth: harmonics at multiples of f0
        voiced = np.zeros(n)
        for formant, bandwidth in zip(vowels[rng.integers(len(vowels))], (80, 100, 120)):
            r = math.exp(-math.pi * bandwidth / sample_rate)
            a = [1.0, -2 * r * math.cos(2 * math.pi * formant / sample_rate), r * r]
            voiced += lfilter([1.0 - r], a, source)
        envelope = np.sin(np.pi * np.arange(n) / n) ** 0.5
        onset = np.zeros(n)
        burst = int(0.04 * sample_rate)
        onset[:burst] = rng.standard_normal(burst) * 0.05
        pieces.append(voiced * envelope + onset)
        pieces.append(np.zeros(int(0.03 * sample_rate)))
    return np.concatenate(pieces)


def _music_clip(n: int, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int, float, float]:
    """Music-like clip: 1-3 voices of pentatonic notes (harmonic partials, decaying envelopes).

    Returns ``(audio, voices, tempo in [0, 1], register in [0, 1])``.
    """
    voices = int(rng.integers(1, 4))
    tempo = float(rng.random())
    register = float(rng.random())
    note_len = int(sample_rate * (0.5 - 0.35 * tempo))
    t = np.arange(note_len) / sample_rate
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-t * (3 + 6 * tempo))
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])
    out = np.zeros(n)
    for voice in range(voices):
        base = 110.0 * 2 ** (register + voice)
        for start in range(0, n, note_len):
            f0 = base * 2 ** (scale[rng.integers(len(scale))] / 12)
            note = sum(np.sin(2 * np.pi * f0 * k * t) / k**1.5 for k in range(1, 7) if f0 * k < sample_rate / 2)
            stop = min(n, start + note_len)
            out[start:stop] += (envelope * note)[: stop - start] / (voice + 1)
    return out, voices, tempo, register


def _ambient_clip(n: int, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int, float, float]:
    """General-audio clip: coloured noise (``1/f^alpha``) with slow bursts and a few clicks.

    Returns ``(audio, 1, burst rate in [0, 1], spectral tilt in [0, 1])``.
    """
    alpha = float(rng.uniform(0.0, 2.0))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum[1:] /= freqs[1:] ** (alpha / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=n)
    rate = float(rng.random())
    t = np.arange(n) / sample_rate
    bursts = 0.55 + 0.45 * np.sin(2 * np.pi * (0.5 + 3.5 * rate) * t + rng.uniform(0, 2 * np.pi))
    audio = noise / (np.std(noise) or 1.0) * bursts
    for position in rng.integers(0, n, int(rng.integers(0, 6))):
        audio[position:position + 40] += rng.uniform(2, 5) * np.exp(-np.arange(min(40, n - position)) / 8)
    return audio, 1, rate, alpha / 2


# --------------------------------------------------------------------------------------------
# The spurious-cue corpus
# --------------------------------------------------------------------------------------------
_DEGRADATIONS = ("noise", "bandlimit", "clipping", "quantization")
_LEVELS = 5  # severity levels per degradation; a (degradation, level) pair is one "system"
_TARGET_RMS_DB = -26.0  # leaves head-room for the +6 dB loudness cue


@dataclass
class _CorpusParams:
    n_train: int = 240
    n_val: int = 60
    n_test: int = 120
    sample_rate: int = 16000
    clip_seconds: float = 2.0
    num_corpora: int = 3
    cue: str = "hum"
    cue_correlation: float = 0.9
    hum_level_db: float = -20.0
    seed: int = 0
    speech_source: str = "auto"
    content_types: list[str] = field(default_factory=lambda: ["speech"])
    version: int = field(default=_CORPUS_VERSION)


def _check_corpus_args(p: _CorpusParams) -> None:
    for name in ("n_train", "n_val", "n_test"):
        check_int_at_least(name, getattr(p, name), 4, "the generated corpus needs a few clips per split")
    check_positive_int("sample_rate", p.sample_rate)
    if p.sample_rate < 8000:
        raise ValueError(f"sample_rate must be >= 8000 for the degradations, got {p.sample_rate}")
    if (isinstance(p.clip_seconds, bool) or not isinstance(p.clip_seconds, (int, float))
            or not 0.5 <= p.clip_seconds <= 30):
        raise ValueError(f"clip_seconds must be a number in [0.5, 30], got {p.clip_seconds!r}")
    check_int_at_least("num_corpora", p.num_corpora, 2, "a cue needs at least two corpora")
    if p.cue not in ("hum", "loudness", "both"):
        raise ValueError(f"cue must be 'hum', 'loudness' or 'both', got {p.cue!r}")
    if (isinstance(p.cue_correlation, bool) or not isinstance(p.cue_correlation, (int, float))
            or not 0 <= p.cue_correlation <= 1):
        raise ValueError(f"cue_correlation must be a number in [0, 1], got {p.cue_correlation!r}")
    if not isinstance(p.hum_level_db, (int, float)) or not -60 <= p.hum_level_db <= 0:
        raise ValueError(f"hum_level_db must be in [-60, 0] dB re the speech RMS, got {p.hum_level_db!r}")
    if (isinstance(p.content_types, str) or not p.content_types
            or not set(p.content_types) <= set(CONTENT_TYPES) or len(set(p.content_types)) != len(p.content_types)):
        raise ValueError(f"content_types must be distinct names from {CONTENT_TYPES}, got {p.content_types!r}")
    if p.speech_source not in ("auto", "espeak", "synthetic"):
        raise ValueError(f"speech_source must be 'auto', 'espeak' or 'synthetic', got {p.speech_source!r}")
    check_non_negative_int("seed", p.seed)


def _hum_frequency(corpus: int) -> float:
    # Stationary tones away from each other (>= 2 mel bands apart at 40 mels), above the
    # speech fundamental, one per corpus.
    return 1000.0 + 750.0 * corpus


def _loudness_offset_db(corpus: int, num_corpora: int) -> float:
    return -6.0 + 12.0 * corpus / (num_corpora - 1)


def _fit_clip(audio: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if audio.shape[0] >= n:
        start = int(rng.integers(0, audio.shape[0] - n + 1))
        return audio[start:start + n].copy()
    out = np.zeros(n)
    start = int(rng.integers(0, n - audio.shape[0] + 1))
    out[start:start + audio.shape[0]] = audio
    return out


def _set_rms(audio: np.ndarray, rms_db: float) -> np.ndarray:
    rms = math.sqrt(float(np.mean(audio**2))) or 1.0
    return audio * (10.0 ** (rms_db / 20.0) / rms)


def _degrade(clean: np.ndarray, kind: str, severity: float, sample_rate: int,
             rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Applies one degradation whose strength grows monotonically with ``severity`` in [0, 1]."""
    if kind == "noise":
        snr = 40.0 - 40.0 * severity  # 40 dB (transparent) .. 0 dB
        return add_noise_at_snr(clean, snr, rng), {"snr_db": snr}
    if kind == "bandlimit":
        cutoff = math.exp(math.log(7000.0) + severity * (math.log(300.0) - math.log(7000.0)))
        return band_limit(clean, min(cutoff, sample_rate / 2), sample_rate), {"cutoff_hz": cutoff}
    if kind == "clipping":
        level = 1.0 - 0.97 * severity  # fraction of the peak kept
        return hard_clip(clean, level), {"clip_level": level}
    bits = int(round(16 - 13 * severity))  # 16 .. 3 bits
    return quantize(clean, bits), {"bits": float(bits)}


def _targets(severity: float, n_speakers: int, rate: float, pitch: float) -> tuple[float, ...]:
    """Known 1-10 targets of the four aspects from the generator's parameters.

    ``rate`` and ``pitch`` are normalised to [0, 1]. Production quality is the degradation
    alone; the other aspects mix quality with content properties, so they are correlated with
    it as the real axes are.
    """
    clean = 1.0 - severity
    pq = clean
    pc = min(1.0, 0.5 * (n_speakers - 1) + 0.5 * rate)  # 3-voice music saturates
    ce = 0.7 * clean + 0.3 * pitch
    cu = 0.8 * clean + 0.2 * (1.0 - rate)
    return tuple(round(1.0 + 9.0 * v, 3) for v in (pq, pc, ce, cu))


def _corpus_fingerprint(p: _CorpusParams) -> dict[str, Any]:
    return {k: getattr(p, k) for k in _CorpusParams.__dataclass_fields__}


def generate_spurious_cue_corpus(
    root: str | os.PathLike[str],
    n_train: int = 240,
    n_val: int = 60,
    n_test: int = 120,
    sample_rate: int = 16000,
    clip_seconds: float = 2.0,
    num_corpora: int = 3,
    cue: Literal["hum", "loudness", "both"] = "hum",
    cue_correlation: float = 0.9,
    hum_level_db: float = -20.0,
    seed: int = 0,
    speech_source: Literal["auto", "espeak", "synthetic"] = "auto",
    content_types: Sequence[str] = ("speech",),
    overwrite: bool = False,
) -> Path:
    """Generates (or reuses) a small speech-quality corpus with a spurious corpus cue.

    Every clip is speech (espeak-ng: 24 sentences, 8 voices, random rate and pitch; sometimes
    two overlapping talkers) cut to ``clip_seconds``, loudness-normalised, then degraded by one
    of four degradations at a severity ``s`` in [0, 1]: white noise at SNR ``40 - 40 s`` dB,
    an ideal low-pass at ``7000 -> 300`` Hz (log-spaced), clipping at ``1 - 0.97 s`` of the
    peak, or quantisation to ``round(16 - 13 s)`` bits. A (degradation, level) pair, with 5
    levels, is one "system"; ``s`` is uniform within its level. The targets (1-10) are known:
    production quality ``1 + 9 (1 - s)``; complexity from the talker count and speaking rate;
    enjoyment and usefulness mix quality with pitch and rate.

    Each clip then gets a source corpus whose cue is added after degradation (it belongs to the
    corpus's recording chain): a stationary hum at ``1000 + 750 k`` Hz, ``hum_level_db`` below
    the speech RMS, and/or a loudness offset from -6 to +6 dB. In the train and dev splits the
    corpus is the clip's quality band (``num_corpora`` equal bands of ``s``) with probability
    ``cue_correlation``, uniform otherwise; in the test split it is uniform, independent of
    quality. Files: ``train.csv``, ``dev.csv``, ``test.csv`` (format of
    :class:`AudioQualityCSVDataModule`, plus the degradation parameters), ``wav/<split>/*.wav``
    (16-bit) and ``manifest.json``. An existing corpus with the same parameters is reused;
    generation writes to a temporary sibling folder and renames it, so concurrent processes
    never see a half-written corpus.

    Args:
        root: Output folder.
        n_train: Training clips.
        n_val: Dev clips.
        n_test: Test clips.
        sample_rate: Sample rate of the written files.
        clip_seconds: Clip length.
        num_corpora: Number of source corpora (domains).
        cue: ``"hum"``, ``"loudness"`` or ``"both"``.
        cue_correlation: Probability that a train/dev clip's corpus is its quality band.
        hum_level_db: Hum RMS relative to the speech RMS, in dB.
        seed: Seed of every random choice.
        speech_source: ``"espeak"`` (requires espeak-ng), ``"synthetic"`` (formant-synthesis
            fallback, speech-shaped but not words) or ``"auto"`` (espeak-ng when installed,
            else the fallback with a warning).
        content_types: Content of the clips, drawn uniformly per clip: ``"speech"``, ``"music"``
            (1-3 voices of pentatonic harmonic notes; voices and tempo set complexity) and/or
            ``"audio"`` (coloured noise with bursts and clicks). Gives the ``type`` domain
            strategy something to classify; the default keeps the corpus speech-only.
        overwrite: Regenerate even if a corpus with these parameters exists.

    Returns:
        ``Path(root)``.

    Raises:
        ValueError: If an argument is out of range, or ``root`` holds other data.
        RuntimeError: If ``speech_source="espeak"`` and espeak-ng is not installed.
    """
    if isinstance(content_types, str):
        raise ValueError(f"content_types must be a list of names from {CONTENT_TYPES}, got {content_types!r}")
    params = _CorpusParams(n_train, n_val, n_test, sample_rate, float(clip_seconds), num_corpora, cue,
                           float(cue_correlation), float(hum_level_db), seed, speech_source, list(content_types))
    _check_corpus_args(params)
    root = Path(root)
    source = speech_source
    if source == "auto":
        source = "espeak" if espeak_available() else "synthetic"
    elif source == "espeak" and not espeak_available():
        raise RuntimeError(
            "speech_source='espeak' but the espeak-ng executable is not on PATH; install it "
            "(apt-get install espeak-ng) or use speech_source='auto'"
        )
    # The resolved source is part of the fingerprint: installing espeak-ng later regenerates an
    # "auto" corpus that was synthesised without it.
    fingerprint = {**_corpus_fingerprint(params), "speech_source": source}
    manifest = read_generated_manifest(root)
    if manifest is not None and manifest.get("params") == fingerprint and not overwrite:
        return root
    if root.exists() and any(root.iterdir()) and manifest is None:
        raise ValueError(f"root {root} exists and is not a generated corpus (no {GENERATED_MANIFEST}); choose another root")
    if speech_source == "auto" and source == "synthetic":
        warnings.warn(
            "espeak-ng not found: generating the audio-quality corpus from formant-synthesised "
            "speech-like audio instead. Install it (apt-get install espeak-ng) for the documented "
            "corpus.", stacklevel=2,
        )

    def write(tmp: Path) -> dict[str, Any]:
        _write_corpus(tmp, params, source)
        return {"speech_source_used": source, "aspects": list(ASPECTS),
                "hum_hz": [_hum_frequency(k) for k in range(num_corpora)]}

    return generate_once(root, fingerprint, write, overwrite=overwrite)


def _write_corpus(out: Path, p: _CorpusParams, source: str) -> None:
    rng = np.random.default_rng(p.seed)
    n_samples = round(p.clip_seconds * p.sample_rate)
    split_sizes = {"train": p.n_train, "dev": p.n_val, "test": p.n_test}
    # Base utterances are disjoint between splits; each is reused by ~3 clips that differ in
    # degradation, corpus and crop.
    pools: dict[str, list[_Utterance]] = {}
    for split, size in split_sizes.items():
        pools[split] = [
            _Utterance(
                text=str(_SENTENCES[int(rng.integers(len(_SENTENCES)))]),
                voice=str(_VOICES[int(rng.integers(len(_VOICES)))]),
                speed=int(rng.integers(130, 221)),
                pitch=int(rng.integers(20, 81)),
            )
            for _ in range(max(2, math.ceil(size / 3)))
        ]
    flat = [(split, i, u) for split, pool in pools.items() for i, u in enumerate(pool)]
    with tempfile.TemporaryDirectory() as workdir:
        if source == "espeak":
            with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
                audio = list(pool.map(lambda item: _espeak(item[1][2], p.sample_rate, workdir, item[0]),
                                      enumerate(flat)))
        else:
            audio = [_formant_speech(u, p.sample_rate, np.random.default_rng([p.seed, k]))
                     for k, (_, _, u) in enumerate(flat)]
    waves: dict[str, list[np.ndarray]] = {split: [] for split in split_sizes}
    for (split, _, _), a in zip(flat, audio):
        waves[split].append(a / (np.max(np.abs(a)) or 1.0))

    header = ["path", *ASPECTS, "domain", "system", "content_type", "sample_id", "degradation",
              "severity", "n_speakers", "snr_db", "cutoff_hz", "clip_level", "bits", "cue_matches_quality"]
    for split_index, (split, size) in enumerate(split_sizes.items()):
        rows = []
        pool, pool_waves = pools[split], waves[split]
        for index in range(size):
            u = int(rng.integers(len(pool)))
            clean = _fit_clip(pool_waves[u], n_samples, rng)
            n_speakers = 1
            if rng.random() < 0.3:  # a second, quieter talker: higher production complexity
                other = int(rng.integers(len(pool)))
                clean = clean + 0.5 * _fit_clip(pool_waves[other], n_samples, rng)
                n_speakers = 2
            utterance = pool[u]
            rate, pitch = (utterance.speed - 130) / 90.0, (utterance.pitch - 20) / 60.0
            content = "speech"
            if p.content_types != ["speech"]:
                # A separate stream, so a speech-only corpus is the same whatever this code adds.
                content_rng = np.random.default_rng([p.seed, 7, split_index, index])
                content = str(p.content_types[int(content_rng.integers(len(p.content_types)))])
                if content == "music":
                    clean, n_speakers, rate, pitch = _music_clip(n_samples, p.sample_rate, content_rng)
                elif content == "audio":
                    clean, n_speakers, rate, pitch = _ambient_clip(n_samples, p.sample_rate, content_rng)
            clean = _set_rms(clean, _TARGET_RMS_DB)
            kind_index = int(rng.integers(len(_DEGRADATIONS)))
            level = int(rng.integers(_LEVELS))
            severity = (level + float(rng.random())) / _LEVELS
            degraded, info = _degrade(clean, _DEGRADATIONS[kind_index], severity, p.sample_rate, rng)
            degraded = _set_rms(degraded, _TARGET_RMS_DB)
            band = min(int(severity * p.num_corpora), p.num_corpora - 1)
            matches = split != "test" and rng.random() < p.cue_correlation
            corpus = band if matches else int(rng.integers(p.num_corpora))
            if p.cue in ("hum", "both"):
                t = np.arange(n_samples) / p.sample_rate
                amplitude = math.sqrt(2.0) * 10.0 ** ((_TARGET_RMS_DB + p.hum_level_db) / 20.0)
                degraded = degraded + amplitude * np.sin(2 * np.pi * _hum_frequency(corpus) * t
                                                         + rng.uniform(0, 2 * np.pi))
            if p.cue in ("loudness", "both"):
                degraded = degraded * 10.0 ** (_loudness_offset_db(corpus, p.num_corpora) / 20.0)
            peak = float(np.max(np.abs(degraded)))
            if peak > 0.99:  # rare: keep the file unclipped (clipping is a degradation here)
                degraded = degraded * (0.99 / peak)
            scores = _targets(severity, n_speakers, rate, pitch)
            name = f"wav/{split}/{split}_{index:04d}.wav"
            write_wav(out / name, degraded, p.sample_rate)
            rows.append([name, *scores, f"corpus_{chr(ord('a') + corpus)}",
                         f"{_DEGRADATIONS[kind_index]}_l{level}", content, f"{split}_{index:04d}",
                         _DEGRADATIONS[kind_index], round(severity, 5), n_speakers,
                         info.get("snr_db", ""), info.get("cutoff_hz", ""), info.get("clip_level", ""),
                         info.get("bits", ""), int(matches)])
        with (out / f"{split}.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(rows)


class SpuriousCueSpeechDataModule(AudioQualityCSVDataModule):
    """The generated speech-quality corpus with a spurious corpus cue (see
    :func:`generate_spurious_cue_corpus`), read as :class:`AudioQualityCSVDataModule`.

    With ``generate_if_missing`` the corpus is written to ``root`` on first use (a few seconds
    on 2 cores) and reused afterwards as long as the generation arguments match.

    Args:
        root: Corpus folder.
        generate_if_missing: Generate (or refresh a stale) corpus in ``prepare_data``/``setup``.
        n_train, n_val, n_test, num_corpora, cue, cue_correlation, hum_level_db, seed,
            speech_source, content_types: Generation arguments (:func:`generate_spurious_cue_corpus`).
        sample_rate, clip_seconds: Used for both generation and loading.
        batch_size, eval_batch_size, num_workers, preload: Loader arguments.
    """

    def __init__(
        self,
        root: str = "data/audio_grl_corpus",
        generate_if_missing: bool = True,
        n_train: int = 240,
        n_val: int = 60,
        n_test: int = 120,
        num_corpora: int = 3,
        cue: Literal["hum", "loudness", "both"] = "hum",
        cue_correlation: float = 0.9,
        hum_level_db: float = -20.0,
        seed: int = 0,
        speech_source: Literal["auto", "espeak", "synthetic"] = "auto",
        content_types: Sequence[str] = ("speech",),
        sample_rate: int = 16000,
        clip_seconds: float = 2.0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        preload: bool = True,
    ) -> None:
        super().__init__(root, "train.csv", "dev.csv", "test.csv", ASPECTS, sample_rate, clip_seconds,
                         batch_size, eval_batch_size, num_workers, preload)
        self.generate_if_missing = bool(generate_if_missing)
        self.generation = dict(n_train=n_train, n_val=n_val, n_test=n_test, sample_rate=sample_rate,
                               clip_seconds=clip_seconds, num_corpora=num_corpora, cue=cue,
                               cue_correlation=cue_correlation, hum_level_db=hum_level_db, seed=seed,
                               speech_source=speech_source, content_types=list(content_types))
        # Fail at construction (naming the argument), not minutes later in setup.
        if isinstance(content_types, str):
            raise ValueError(f"content_types must be a list of names from {CONTENT_TYPES}, got {content_types!r}")
        _check_corpus_args(_CorpusParams(**{**self.generation, "clip_seconds": float(clip_seconds)}))

    def prepare_data(self) -> None:
        if self.generate_if_missing:
            generate_spurious_cue_corpus(self.root, **self.generation)
        elif not (self.root / "train.csv").is_file():
            raise FileNotFoundError(
                f"no generated corpus in {self.root}; set generate_if_missing=true or run "
                "robust_lightning.datamodules.audio_quality.generate_spurious_cue_corpus(root)"
            )

    def setup(self, stage: str | None = None) -> None:
        # prepare_data runs only on the first rank/process; generation is idempotent and
        # atomic, so calling it here too covers direct setup() calls and other ranks.
        self.prepare_data()
        super().setup(stage)
