"""Audio quality data on disk: the score schema, WAV/feature readers and writers, list-file rows.

The quality aspects and AudioMOS 2025 track 2 columns (:data:`ASPECTS`,
:data:`AUDIOMOS_COLUMNS`, :data:`AUDIOMOS_CONTENT_TYPES`), a small RIFF parser for WAV files (PCM
8/16/24/32-bit, float 32/64, WAVE_FORMAT_EXTENSIBLE; other formats via ``soundfile`` if
installed), :class:`AudioRecord` and the CSV helpers the DataModules of
:mod:`robust_lightning.datamodules.audio_quality` read their lists with.
"""

from __future__ import annotations

import csv
import math
import os
import struct
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robust_lightning._checkpoint import load_checkpoint
from robust_lightning.datamodules._records import check_sample_rate
from robust_lightning.errors import DataFileError, MissingFileError

__all__ = [
    "ASPECTS",
    "AUDIOMOS_COLUMNS",
    "AUDIOMOS_CONTENT_TYPES",
    "CONTENT_TYPES",
    "AudioRecord",
    "read_audio",
    "read_features",
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


# --------------------------------------------------------------------------------------------
# Audio I/O
# --------------------------------------------------------------------------------------------
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataFileError(f"{path} is not a RIFF/WAVE file (truncated or another format)")
    offset, fmt, pcm = 12, None, None
    while offset + 8 <= len(data):
        chunk_id = data[offset:offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = data[offset + 8:offset + 8 + size]  # streamed files may over-state the size
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise DataFileError(f"{path}: truncated WAV header: the 'fmt ' chunk at byte {offset} has "
                                    f"{len(body)} of its 16 bytes")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body, 0)
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack_from("<H", body, 24)  # first 2 bytes of the sub-format GUID
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            pcm = body
        offset += 8 + size + (size & 1)  # chunks are padded to an even size
    if fmt is None or pcm is None:
        raise DataFileError(f"{path}: missing 'fmt ' or 'data' chunk (truncated or not a WAV file)")
    tag, channels, rate, block_align, bits = fmt
    check_sample_rate(rate, None, source=path)
    if channels < 1 or block_align < 1:
        raise DataFileError(f"{path}: WAV header has {channels} channel(s) and block_align {block_align}; "
                            "both must be >= 1")
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
        raise DataFileError(f"{path}: unsupported WAV encoding (format tag {tag:#x}, {bits} bits)")
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
        raise MissingFileError(f"audio file not found: {path}")
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
    ``.pt`` (``torch.load(weights_only=True)``), as a float32 tensor. Nothing is unpickled.
    """
    path = Path(path)
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32, copy=False))
    if path.suffix == ".pt":
        value = load_checkpoint(path, argument="feature file")
        if not isinstance(value, Tensor):
            raise DataFileError(f"{path} must hold a single tensor, got {type(value).__name__}")
        return value.float()
    raise ValueError(f"feature files must be .npy or .pt, got {path}")



# --------------------------------------------------------------------------------------------
# Generic CSV and AudioMOS track 2
# --------------------------------------------------------------------------------------------
def _read_csv_rows(path: Path, argument: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise MissingFileError(f"{argument}: list file not found: {path}")
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise DataFileError(f"{argument}: {path} has no rows")
    return rows


def _require_columns(rows: list[dict[str, str]], columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DataFileError(f"{path}: missing column(s) {missing}; found {sorted(rows[0])}")


def _parse_score(value: str, column: str, path: Path, line: int) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DataFileError(f"{path}, row {line}: column {column!r} is not a number: {value!r}") from None
    if not math.isfinite(score):
        raise DataFileError(f"{path}, row {line}: column {column!r} is not finite: {value!r}")
    return score


