"""Audio quality assessment data: list-file loaders and a generated corpus with a spurious cue.

The score schema and file readers live in :mod:`robust_lightning.datamodules.audio_io`, the
generated corpus and its degradations in :mod:`robust_lightning.datamodules.audio_synthetic`;
both are re-exported here.

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
clip's frozen features can be cached.
WAV files (PCM 8/16/24/32-bit, float 32/64, WAVE_FORMAT_EXTENSIBLE) are read by a small RIFF
parser (in ``audio_io``), so no audio backend is needed; other formats go through ``soundfile`` if installed
(``torchaudio.load`` needs ``torchcodec`` since torchaudio 2.9).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from robust_lightning._extras import require
from robust_lightning._validation import check_positive
from robust_lightning.datamodules._common import (
    check_non_negative_int,
    check_positive_int,
)
from robust_lightning.datamodules.audio_io import (
    ASPECTS,
    AUDIOMOS_COLUMNS,
    AUDIOMOS_CONTENT_TYPES,
    CONTENT_TYPES,
    AudioRecord,
    _parse_score,
    _read_csv_rows,
    _require_columns,
    read_audio,
    read_features,
    write_wav,
)
from robust_lightning.datamodules.audio_synthetic import (
    _check_corpus_args,
    _CorpusParams,
    add_noise_at_snr,
    band_limit,
    espeak_available,
    generate_spurious_cue_corpus,
    hard_clip,
    quantize,
    snr_db,
)
from robust_lightning.errors import DataFileError, MissingFileError

AF = require("torchaudio.functional", "audio")

# Re-exported so `from robust_lightning.datamodules.audio_quality import ...` keeps working.
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


def _relative_ids(paths: Sequence[Path]) -> list[str]:
    """Each path relative to the deepest folder common to all of them, in POSIX form."""
    if not paths:
        return []
    absolute = [p.absolute() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    return [p.relative_to(root).as_posix() for p in absolute]


class AudioQualityDataset(Dataset[dict[str, Any]]):
    """Mono clips of fixed length (or their precomputed features) with scores and domain ids.

    Each item is a dict: ``waveform`` float32 ``(clip_samples,)`` in ``[-1, 1]`` and ``length``
    (real samples before zero padding) -- or, with ``features_dir``, ``features`` float32
    ``(C, T)`` -- plus ``scores`` float32 ``(num_aspects,)``, ``corpus``, ``content_type``,
    ``system`` (int64 ids), ``key``: a string naming the file (path, size, modification time)
    and the decoding (sample rate, clip length) that feature caches use, and ``clip_id``: the
    record's ``sample_id`` (the list file's identifier) or, where that is empty, the audio file's
    path under the folder holding every clip; it stays the same when the data is copied, moved
    or touched, which is what seeded groupings hash.

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
        self.clip_ids = [r.sample_id or relative
                         for r, relative in zip(self.records, _relative_ids([r.path for r in self.records]), strict=True)]
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
            "clip_id": self.clip_ids[index],
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
        self.clip_seconds = check_positive("clip_seconds", clip_seconds)
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

    @override
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

    @override
    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("train", shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("val", shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("test", shuffle=False)

    @override
    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("test", shuffle=False)

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

    @override
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
            if not row.get("path"):
                raise DataFileError(f"{path}, row {line}: field 'path' is empty")
            audio = Path(row["path"])
            audio = audio if audio.is_absolute() else path.parent / audio
            if self.features_dir is None and not audio.is_file():
                raise MissingFileError(f"{path}, row {line}: audio file {audio} (field 'path') does not exist")
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

    @override
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

    @override
    def prepare_data(self) -> None:
        if self.generate_if_missing:
            generate_spurious_cue_corpus(self.root, **self.generation)
        elif not (self.root / "train.csv").is_file():
            raise FileNotFoundError(
                f"no generated corpus in {self.root}; set generate_if_missing=true or run "
                "robust_lightning.datamodules.audio_quality.generate_spurious_cue_corpus(root)"
            )

    @override
    def setup(self, stage: str | None = None) -> None:
        # prepare_data runs only on the first rank/process; generation is idempotent and
        # atomic, so calling it here too covers direct setup() calls and other ranks.
        self.prepare_data()
        super().setup(stage)

