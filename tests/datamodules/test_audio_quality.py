"""Audio quality data: WAV I/O, degradations, the generated spurious-cue corpus, the CSV and
AudioMOS track 2 list loaders and precomputed features."""

from __future__ import annotations

import csv
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from robust_lightning.datamodules.audio_quality import (
    ASPECTS,
    AUDIOMOS_COLUMNS,
    AudioMOSTrack2DataModule,
    AudioQualityCSVDataModule,
    AudioQualityDataset,
    AudioRecord,
    SpuriousCueSpeechDataModule,
    add_noise_at_snr,
    band_limit,
    generate_spurious_cue_corpus,
    hard_clip,
    quantize,
    read_audio,
    snr_db,
    write_wav,
)

SR = 16000


def _generate(root: Path, **kwargs: object) -> Path:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*espeak-ng not found.*")
        return generate_spurious_cue_corpus(root, **{"n_train": 60, "n_val": 8, "n_test": 60, "clip_seconds": 1.0,
                                                     **kwargs})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("corpus") / "c")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


# -- audio I/O ------------------------------------------------------------------------------
def test_wav_roundtrip_16bit(tmp_path: Path) -> None:
    audio = np.sin(2 * np.pi * 440 * np.arange(800) / SR) * 0.5
    write_wav(tmp_path / "a.wav", np.stack([audio, -audio]), SR)
    read, rate = read_audio(tmp_path / "a.wav")
    assert rate == SR and read.shape == (2, 800) and read.dtype == np.float32
    np.testing.assert_allclose(read[0], audio, atol=1 / 32767)
    np.testing.assert_allclose(read[1], -audio, atol=1 / 32767)


def test_read_float32_wav(tmp_path: Path) -> None:
    samples = np.linspace(-0.9, 0.9, 50, dtype="<f4")
    body = samples.tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 8000 * 4, 4, 32)
    data = (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(body)) + b"WAVE" + b"fmt " +
            struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body)
    (tmp_path / "f.wav").write_bytes(data)
    read, rate = read_audio(tmp_path / "f.wav")
    assert rate == 8000
    np.testing.assert_array_equal(read[0], samples)


def test_read_audio_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="RIFF"):
        read_audio(tmp_path / "bad.wav")


# -- degradations ------------------------------------------------------------------------------
def test_degradations_do_what_they_say() -> None:
    rng = np.random.default_rng(0)
    clean = np.sin(2 * np.pi * 200 * np.arange(SR) / SR) + 0.5 * np.sin(2 * np.pi * 5000 * np.arange(SR) / SR)
    for snr in (0.0, 10.0, 30.0):
        assert snr_db(clean, add_noise_at_snr(clean, snr, rng)) == pytest.approx(snr, abs=1e-6)
    low = band_limit(clean, 1000.0, SR)
    spectrum = np.abs(np.fft.rfft(low))
    freqs = np.fft.rfftfreq(SR, 1 / SR)
    assert spectrum[freqs > 1000].max() < 1e-6 * spectrum.max()
    np.testing.assert_allclose(low, np.sin(2 * np.pi * 200 * np.arange(SR) / SR), atol=1e-9)
    clipped = hard_clip(clean, 0.5)
    assert np.abs(clipped).max() == pytest.approx(0.5 * np.abs(clean).max())
    assert len(np.unique(quantize(clean, 3))) <= 2 ** 3 - 1


# -- generated corpus ----------------------------------------------------------------------------
def test_corpus_files_targets_and_reuse(corpus: Path) -> None:
    train = _rows(corpus / "train.csv")
    assert len(train) == 60 and len(_rows(corpus / "dev.csv")) == 8 and len(_rows(corpus / "test.csv")) == 60
    for row in train[:10]:
        audio, rate = read_audio(corpus / row["path"])
        assert rate == SR and audio.shape == (1, SR) and np.abs(audio).max() <= 1.0
        # Production quality is the known function of the degradation severity.
        assert float(row["production_quality"]) == pytest.approx(1 + 9 * (1 - float(row["severity"])), abs=2e-3)
    before = (corpus / "train.csv").stat().st_mtime_ns
    assert _generate(corpus.parent / "c") == corpus  # same parameters: reused, not rewritten
    assert (corpus / "train.csv").stat().st_mtime_ns == before


def test_corpus_cue_follows_quality_in_train_not_in_test(corpus: Path) -> None:
    def agreement(rows: list[dict[str, str]]) -> float:
        band = [min(int(float(r["severity"]) * 3), 2) for r in rows]
        corpus_id = ["abc".index(r["domain"][-1]) for r in rows]
        return float(np.mean(np.equal(band, corpus_id)))

    assert agreement(_rows(corpus / "train.csv")) > 0.85  # cue_correlation 0.9 (+ chance hits)
    assert agreement(_rows(corpus / "test.csv")) < 0.55  # independent: ~1/3


def test_corpus_hum_frequency_identifies_the_corpus(corpus: Path) -> None:
    hum = {"corpus_a": 1000.0, "corpus_b": 1750.0, "corpus_c": 2500.0}
    for row in _rows(corpus / "test.csv")[:12]:
        audio, _ = read_audio(corpus / row["path"])
        spectrum = np.abs(np.fft.rfft(audio[0]))
        freqs = np.fft.rfftfreq(audio.shape[1], 1 / SR)
        power = {name: spectrum[np.abs(freqs - f) < 3].max() for name, f in hum.items()}
        assert max(power, key=power.get) == row["domain"]


def test_corpus_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cue_correlation"):
        generate_spurious_cue_corpus(tmp_path / "x", cue_correlation=1.5)
    with pytest.raises(ValueError, match="num_corpora"):
        SpuriousCueSpeechDataModule(root=str(tmp_path / "x"), num_corpora=1)
    with pytest.raises(ValueError, match="cue"):
        SpuriousCueSpeechDataModule(root=str(tmp_path / "x"), cue="buzz")  # type: ignore[arg-type]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not a generated corpus"):
        generate_spurious_cue_corpus(tmp_path / "other")


def test_spurious_cue_datamodule_batches(corpus: Path) -> None:
    dm = SpuriousCueSpeechDataModule(root=str(corpus), n_train=60, n_val=8, n_test=60, clip_seconds=1.0,
                                     batch_size=16)
    dm.setup("fit")
    assert dm.corpus_names == ["corpus_a", "corpus_b", "corpus_c"] and dm.num_corpora == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["waveform"].shape == (16, SR) and batch["waveform"].dtype == torch.float32
    assert batch["waveform"].abs().max() <= 1.0
    assert batch["scores"].shape == (16, 4) and batch["corpus"].dtype == torch.int64
    assert len(batch["key"]) == 16 and len(set(batch["key"])) == 16
    assert len(set(batch["clip_id"])) == 16 and all(not Path(c).is_absolute() for c in batch["clip_id"])


def test_clip_ids_survive_copying_the_corpus(corpus: Path, tmp_path: Path) -> None:
    """Seeded groupings hash ``clip_id``: a copy elsewhere, with new mtimes, must keep every id."""
    copy = tmp_path / "moved"
    shutil.copytree(corpus, copy, copy_function=shutil.copyfile)  # copyfile: fresh mtimes
    ids, keys = [], []
    for root in (corpus, copy):
        dm = SpuriousCueSpeechDataModule(root=str(root), n_train=60, n_val=8, n_test=60, clip_seconds=1.0,
                                         batch_size=16)
        dm.setup("fit")
        ids.append(dm.datasets["train"].clip_ids)
        keys.append(dm.datasets["train"].keys)
    assert ids[0] == ids[1] and len(set(ids[0])) == 60
    assert not set(keys[0]) & set(keys[1])  # the cache keys do name the location
    assert ids[0][0] == "train_0000"  # the list file's sample_id
    # Records without a sample_id fall back to their path under the clips' common folder.
    clips = [corpus / "wav" / "train" / "train_0000.wav", corpus / "wav" / "dev" / "dev_0001.wav"]
    unnamed = AudioQualityDataset([AudioRecord(path=c, scores=(1.0,) * 4) for c in clips], {"default": 0},
                                  {"default": 0}, sample_rate=SR, clip_samples=SR, preload=False)
    assert unnamed.clip_ids == ["train/train_0000.wav", "dev/dev_0001.wav"]


# -- list loaders ------------------------------------------------------------------------------
def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def test_csv_datamodule_resamples_and_pads(tmp_path: Path) -> None:
    t = np.arange(4000) / 8000
    write_wav(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 300 * t), 8000)  # 0.5 s at 8 kHz
    write_wav(tmp_path / "b.wav", 0.5 * np.sin(2 * np.pi * 300 * np.arange(32000) / SR), SR)
    _write_csv(tmp_path / "train.csv", ["path", *ASPECTS, "domain", "system"],
               [["a.wav", 1, 2, 3, 4, "x", "s1"], ["b.wav", 5, 6, 7, 8, "y", "s2"]])
    dm = AudioQualityCSVDataModule(str(tmp_path), val_csv=None, test_csv=None, clip_seconds=1.0, batch_size=2)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["length"].tolist() == [8000, 16000]  # resampled to 16 kHz, then padded / cut
    assert batch["waveform"][0, 8000:].abs().max() == 0
    torch.testing.assert_close(batch["scores"], torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]))
    with pytest.raises(RuntimeError, match="no val split"):
        dm.val_dataloader()


def test_csv_datamodule_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        AudioQualityCSVDataModule(str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="clip_seconds must be a finite number > 0, got -1.0"):
        AudioQualityCSVDataModule(str(tmp_path), clip_seconds=-1.0)
    with pytest.raises(ValueError, match="feature_layout"):
        AudioQualityCSVDataModule(str(tmp_path), feature_layout="NCT")  # type: ignore[arg-type]
    _write_csv(tmp_path / "train.csv", ["path", "production_quality"], [["a.wav", 1]])
    with pytest.raises(ValueError, match="missing column"):
        AudioQualityCSVDataModule(str(tmp_path), val_csv=None, test_csv=None).setup("fit")
    _write_csv(tmp_path / "train.csv", ["path", *ASPECTS], [["a.wav", 1, 2, 3, 4]])
    with pytest.raises(FileNotFoundError, match=r"train\.csv, row 2: audio file .*a\.wav"):
        AudioQualityCSVDataModule(str(tmp_path), val_csv=None, test_csv=None).setup("fit")
    write_wav(tmp_path / "a.wav", np.zeros(160), SR)
    with pytest.raises(FileNotFoundError, match="val_csv"):
        AudioQualityCSVDataModule(str(tmp_path), val_csv="nope.csv", test_csv=None).setup("fit")


def test_audiomos_track2_lists(tmp_path: Path) -> None:
    header = ["sample_id", "data_path", *[AUDIOMOS_COLUMNS[a] for a in ASPECTS]]
    rows = []
    for i, corpus in enumerate(["LibriTTS", "musiccaps", "unbalanced_train_segments", "LibriTTS"]):
        write_wav(tmp_path / corpus / "sub" / f"clip{i}.wav", np.zeros(1600), SR)
        # Lists written on another machine: the part after track2/ is resolved under root.
        rows.append([f"id{i}", f"/elsewhere/data/track2/{corpus}/sub/clip{i}.wav", 5, 4, 6, 7])
    _write_csv(tmp_path / "audiomos2025-track2-train_list.csv", header, rows)
    dm = AudioMOSTrack2DataModule(str(tmp_path), val_list=None, test_list=None, clip_seconds=0.2, batch_size=4)
    dm.setup("fit")
    assert dm.corpus_names == ["LibriTTS", "musiccaps", "unbalanced_train_segments"]
    batch = next(iter(torch.utils.data.DataLoader(dm.datasets["train"], 4)))
    # domainGRL's TYPE grouping: speech corpora -> speech, musiccaps -> music, AudioSet -> audio.
    assert [dm.content_type_names[i] for i in batch["content_type"]] == ["speech", "music", "audio", "speech"]
    assert batch["waveform"].shape == (4, 3200)
    with pytest.raises(ValueError, match="content_types"):
        AudioMOSTrack2DataModule(str(tmp_path), content_types={"LibriTTS": "talk"})


# -- precomputed features -----------------------------------------------------------------------
def _features_corpus(tmp_path: Path, shapes: list[tuple[int, int]], suffix: str = ".npy") -> Path:
    (tmp_path / "feats").mkdir()
    rows = []
    for i, shape in enumerate(shapes):
        values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + i
        if suffix == ".npy":
            np.save(tmp_path / "feats" / f"clip{i}.npy", values)
        else:
            torch.save(torch.from_numpy(values), tmp_path / "feats" / f"clip{i}.pt")
        rows.append([f"audio/clip{i}.flac", 1 + i, 2, 3, 4, f"d{i % 2}"])  # audio need not exist
    _write_csv(tmp_path / "train.csv", ["path", *ASPECTS, "domain"], rows)
    return tmp_path


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_precomputed_features(tmp_path: Path, suffix: str) -> None:
    root = _features_corpus(tmp_path, [(6, 5)] * 3, suffix)
    dm = AudioQualityCSVDataModule(str(root), val_csv=None, test_csv=None, features_dir="feats",
                                   feature_layout="TC", batch_size=3)
    dm.setup("fit")
    assert dm.feature_shape == (5, 6)  # stored (T=6, C=5), served (C, T)
    batch = next(iter(torch.utils.data.DataLoader(dm.datasets["train"], batch_size=3)))
    assert "waveform" not in batch and batch["features"].shape == (3, 5, 6)
    expected = torch.arange(30, dtype=torch.float32).reshape(6, 5).t()
    torch.testing.assert_close(batch["features"][0], expected)
    assert batch["key"][0].startswith(str((root / "feats" / f"clip0{suffix}").resolve()))


def test_precomputed_features_lengths_and_errors(tmp_path: Path) -> None:
    root = _features_corpus(tmp_path, [(4, 7), (4, 9)])
    with pytest.raises(ValueError, match="num_frames"):
        AudioQualityCSVDataModule(str(root), val_csv=None, test_csv=None, features_dir="feats").setup("fit")
    dm = AudioQualityCSVDataModule(str(root), val_csv=None, test_csv=None, features_dir="feats", num_frames=8)
    dm.setup("fit")
    assert dm.feature_shape == (4, 8)
    assert dm.datasets["train"][0]["features"][:, 7].abs().sum() == 0  # zero-padded
    assert dm.datasets["train"][0]["length"] == 7
    (root / "feats" / "clip1.npy").unlink()
    with pytest.raises(FileNotFoundError, match="clip1"):
        AudioQualityCSVDataModule(str(root), val_csv=None, test_csv=None, features_dir="feats",
                                  num_frames=8).setup("fit")
    with pytest.raises(FileNotFoundError, match="features_dir"):
        AudioQualityCSVDataModule(str(root), val_csv=None, test_csv=None, features_dir="nowhere").setup("fit")


def test_npy_with_objects_is_refused(tmp_path: Path) -> None:
    root = _features_corpus(tmp_path, [(2, 3)])
    np.save(root / "feats" / "clip0.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        AudioQualityCSVDataModule(str(root), val_csv=None, test_csv=None, features_dir="feats").setup("fit")


def test_corpus_with_music_and_general_audio(tmp_path: Path) -> None:
    root = _generate(tmp_path / "mixed", n_train=30, n_test=12, content_types=["speech", "music", "audio"])
    rows = _rows(root / "train.csv")
    assert {r["content_type"] for r in rows} == {"speech", "music", "audio"}
    for row in rows:
        for aspect in ASPECTS:
            assert 1.0 <= float(row[aspect]) <= 10.0
    dm = SpuriousCueSpeechDataModule(root=str(root), n_train=30, n_val=8, n_test=12, clip_seconds=1.0,
                                     content_types=["speech", "music", "audio"])
    dm.setup("fit")
    types = {dm.content_type_names[i] for i in dm.datasets["train"].content_type.tolist()}
    assert types == {"speech", "music", "audio"}
    with pytest.raises(ValueError, match="content_types"):
        SpuriousCueSpeechDataModule(root=str(root), content_types=["speech", "noise"])
    with pytest.raises(ValueError, match="content_types"):
        generate_spurious_cue_corpus(tmp_path / "y", content_types="music")  # type: ignore[arg-type]
