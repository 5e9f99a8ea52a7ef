"""What the frozen-feature cache saves: training epochs of AudioQualityGRL with and without it.

The front-end is frozen, so features need computing once per clip; without the cache every
epoch runs it again. Measured in one process on the same generated corpus: the mean time of
epochs 2..N (epoch 1 fills the cache) with ``cache_features=True`` against
``cache_features=False``, for the log-mel front-end and a small randomly initialised torchaudio
wav2vec2 (SSL front-ends are where the cache matters; XLS-R is ~100x larger still).

Usage::

    python benchmarks/audio_grl_feature_cache.py   # -> benchmarks/results/audio_grl_feature_cache.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust_lightning.datamodules.audio_quality import SpuriousCueSpeechDataModule  # noqa: E402
from robust_lightning.lightning_modules.audio_grl import (  # noqa: E402
    AudioQualityGRL,
    LogMelFrontend,
    TorchaudioSSLFrontend,
)

# wav2vec2 "base"-like layout at reduced width (4 layers, 256 dims): big enough to dominate a step.
SMALL_W2V2 = dict(
    extractor_mode="group_norm", extractor_conv_layer_config=[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2,
    extractor_conv_bias=False, encoder_embed_dim=256, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=32,
    encoder_pos_conv_groups=8, encoder_num_layers=4, encoder_num_heads=4, encoder_attention_dropout=0.0,
    encoder_ff_interm_features=1024, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
    encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None,
)


class _EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)


def _epoch_seconds(frontend_name: str, cache: bool, dm: SpuriousCueSpeechDataModule, epochs: int) -> float:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no checkpoint.*")
        frontend = (LogMelFrontend(n_mels=40) if frontend_name == "logmel"
                    else TorchaudioSSLFrontend("wav2vec2_model", SMALL_W2V2, layer=4))
    model = AudioQualityGRL(frontend=frontend, domains=[{"strategy": "corpus", "num_domains": 3}],
                            head="mse", cache_features=cache)
    timer = _EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(model, dm)
    return sum(timer.times[1:]) / len(timer.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--root", default="data/audio_grl_bench_corpus")
    parser.add_argument("--out", default="benchmarks/results/audio_grl_feature_cache.json")
    args = parser.parse_args()
    # Other jobs on a shared machine move these timings, so the JSON says when and under what load.
    load_before = os.getloadavg()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*espeak-ng.*")
        dm = SpuriousCueSpeechDataModule(root=args.root, n_train=args.n_train, n_val=8, n_test=8, batch_size=16)
        dm.prepare_data()
    results = {}
    for name in ("logmel", "wav2vec2_small"):
        cached = _epoch_seconds(name, True, dm, args.epochs)
        uncached = _epoch_seconds(name, False, dm, args.epochs)
        results[name] = {"epoch_s_cached": cached, "epoch_s_uncached": uncached, "speedup": uncached / cached}
        print(name, json.dumps(results[name]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "epochs": args.epochs, "n_train": args.n_train,
                               "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                           "torch_threads": torch.get_num_threads()},
                               "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "load_avg_1_5_15_before": load_before, "load_avg_1_5_15_after": os.getloadavg()},
                              indent=2))


if __name__ == "__main__":
    main()
