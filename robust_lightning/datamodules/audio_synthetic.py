"""A generated speech-quality corpus with a spurious "source corpus" cue, and the degradations.

:func:`generate_spurious_cue_corpus` writes espeak-ng speech (or formant speech without espeak-ng,
plus music-like and ambient clips) degraded by known amounts (additive noise at a given SNR,
band-limiting, clipping, quantisation) that define the quality targets, and a per-corpus cue (a
constant hum and/or a loudness offset) that predicts quality in the training and dev splits but
is independent of it in the test split. Read it with
:class:`robust_lightning.datamodules.audio_quality.SpuriousCueSpeechDataModule`.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from robust_lightning._extras import require
from robust_lightning._validation import check_number, check_probability
from robust_lightning.datamodules._common import (
    GENERATED_MANIFEST,
    check_int_at_least,
    check_non_negative_int,
    check_positive_int,
    generate_once,
    read_generated_manifest,
)
from robust_lightning.datamodules.audio_io import (
    ASPECTS,
    CONTENT_TYPES,
    read_audio,
    write_wav,
)

AF = require("torchaudio.functional", "audio")

__all__ = [
    "add_noise_at_snr",
    "band_limit",
    "espeak_available",
    "generate_spurious_cue_corpus",
    "hard_clip",
    "quantize",
    "snr_db",
]

_CORPUS_VERSION = 1


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
    lfilter = require("scipy.signal", "audio").lfilter

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
        for formant, bandwidth in zip(vowels[rng.integers(len(vowels))], (80, 100, 120), strict=False):
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
    check_number("clip_seconds", p.clip_seconds, 0.5, 30)
    check_int_at_least("num_corpora", p.num_corpora, 2, "a cue needs at least two corpora")
    if p.cue not in ("hum", "loudness", "both"):
        raise ValueError(f"cue must be 'hum', 'loudness' or 'both', got {p.cue!r}")
    check_probability("cue_correlation", p.cue_correlation)
    check_number("hum_level_db", p.hum_level_db, -60, 0, reason="dB re the speech RMS")
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
    for (split, _, _), a in zip(flat, audio, strict=False):
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


