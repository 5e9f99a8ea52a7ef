"""Killed between generations / rounds / files and resumed, the result equals an uninterrupted
run (JSON state compared); a half-written state file is detected and not trusted (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from robust_lightning import DigitsDataModule, LastCheckpoint
from robust_lightning.errors import CheckpointError, DataFileError
from robust_lightning.lightning_modules.nero_net import FitnessConfig, NeroNetSearch, SearchSpace
from robust_lightning.lightning_modules.nero_net.search import TIMING_FIELDS

# ------------------------------------------------------------------------------------------- NERO-Net
SPACE = SearchSpace(features_layers=(1, 3), classification_layers=(1, 2), init_features_layers=(1, 2),
                    conv_filters=(4, 8), fc_units=(16, 32), batch_size=(64, 96), lr=(0.001, 0.01))


class _Killed(Exception):
    pass


def _search(run_dir: Path, **kwargs: Any) -> NeroNetSearch:
    settings: dict[str, Any] = dict(
        data=DigitsDataModule(image_size=8, seed=0), mean=[0.5], std=[0.5], generations=2, offspring=2, seed=0,
        epochs_per_unit=1, max_params=20_000, fitness=FitnessConfig(threshold=0.5, eps=0.1), space=SPACE,
        run_dir=str(run_dir), wandb=False, plot=False, device="cpu",
    )
    settings.update(kwargs)
    return NeroNetSearch(**settings)


class _DiesInGeneration1(NeroNetSearch):
    def evaluate(self, task: Any, device: torch.device) -> dict[str, Any]:
        if task.generation == 1:
            raise _Killed
        return super().evaluate(task, device)


def _without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _state(run_dir: Path) -> dict[str, Any]:
    return _without_timing(json.loads((run_dir / "state.json").read_text()))


def _log(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "individuals.jsonl").read_text().splitlines()
    return [_without_timing(json.loads(line)) for line in lines]


@pytest.fixture(scope="module")
def killed_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted 2-generation search and one killed while training generation 1."""
    root = tmp_path_factory.mktemp("nero")
    _search(root / "full").run()
    killed = _search(root / "killed")
    killed.__class__ = _DiesInGeneration1
    with pytest.raises(_Killed):
        killed.run()
    return root / "full", root / "killed"


def _copy(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_nero_net_killed_between_generations_resumes_to_the_uninterrupted_state(killed_search, tmp_path) -> None:
    full, killed = killed_search
    run = _copy(killed, tmp_path / "run")
    assert _state(run)["generation"] == 0
    # The kill came mid-append: a half-written line of generation 1 ends the log.
    with (run / "individuals.jsonl").open("a") as log:
        log.write('{"generation": 1, "index": 0, "fitn')
    _search(tmp_path / "unused", resume=str(run)).run()
    assert _state(run) == _state(full)
    assert _log(run) == _log(full)


@pytest.mark.parametrize("damage", ["truncated", "empty", "inconsistent"])
def test_nero_net_half_written_state_is_detected_not_trusted(killed_search, tmp_path, damage: str) -> None:
    run = _copy(killed_search[1], tmp_path / "run")
    state = run / "state.json"
    text = state.read_text()
    if damage == "truncated":
        state.write_text(text[: len(text) // 2])
    elif damage == "empty":
        state.write_text("")
    else:  # parses, but claims a generation its history does not hold
        payload = json.loads(text)
        payload["generation"] = 1
        state.write_text(json.dumps(payload))
    damaged = {p.name: p.read_bytes() for p in run.iterdir()}
    match = r"state\.json.*(not valid JSON|'history' must list 2).*it was not used"
    with pytest.raises(CheckpointError, match=match):
        _search(tmp_path / "unused", resume=str(run)).run()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == damaged, "a refused run is left as it was"


# ------------------------------------------------------------------------------------------------ SIA
def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_sia_synthesis_killed_mid_write_is_completed_by_the_next_setup(tmp_path, monkeypatch) -> None:
    import importlib

    from robust_lightning.lightning_modules.sia.datamodule import SIADataModule

    synthesize = importlib.import_module("robust_lightning.lightning_modules.sia.synthesize")

    synthesize.write_dataset(tmp_path / "full", num_products=6, num_queries=20)
    written: list[str] = []
    real_write = synthesize.atomic_write_text

    def dies_after_three_files(path, text):
        if len(written) == 3:
            raise _Killed
        written.append(Path(path).name)
        real_write(path, text)

    monkeypatch.setattr(synthesize, "atomic_write_text", dies_after_three_files)
    with pytest.raises(_Killed):
        synthesize.write_dataset(tmp_path / "run", num_products=6, num_queries=20)
    monkeypatch.setattr(synthesize, "atomic_write_text", real_write)
    assert not synthesize.is_complete_dataset(tmp_path / "run") and len(written) == 3

    module = SIADataModule(stage="align", data_dir=str(tmp_path / "run"), num_products=6, num_queries=20)
    with pytest.warns(UserWarning, match="incomplete synthesized dataset"):
        module.setup("fit")
    assert _files(tmp_path / "run") == _files(tmp_path / "full")
    # A split file damaged after a complete write is refused, not read.
    corpus = tmp_path / "run" / "corpus.jsonl"
    corpus.write_bytes(corpus.read_bytes()[:-10])
    with pytest.raises(DataFileError, match=r"corpus\.jsonl does not match"):
        SIADataModule(stage="inject", data_dir=str(tmp_path / "run")).setup("fit")


# ---------------------------------------------------------------------------------------------- BadLLM-TG
class _DieBeforeRound(pl.Callback):
    """Killed after round ``epoch - 1`` was checkpointed, before round ``epoch`` generates."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Killed


def _defense_run(tmp_path: Path, name: str, max_epochs: int, callbacks: list[pl.Callback],
                 ckpt_path: Path | None = None):
    from benchmarks.experiments.badllm_tg import TINY_BERT, TINY_GPT2
    from robust_lightning.attacks.text import BadNetsPoisoner
    from robust_lightning.datamodules.text import TextBackdoorDataModule
    from robust_lightning.lightning_modules.badllm_tg import BackdoorDefense

    pl.seed_everything(0, verbose=False)
    data = TextBackdoorDataModule(eval_poisoner=BadNetsPoisoner(poison_rate=0.2), num_samples=120, batch_size=16)
    defense = BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, generation_steps=1,
                              num_candidates=4, reward_samples=8, seed=0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_train_batches=2,
                         limit_val_batches=1, default_root_dir=tmp_path / name,
                         callbacks=[LastCheckpoint(dirpath=tmp_path / name), *callbacks])
    trainer.fit(defense, datamodule=data, ckpt_path=ckpt_path)
    return defense, trainer


def _round_state(defense) -> dict[str, Any]:
    pool = defense.generator.pool.state_dict()
    weights = {k: v.float().sum().item() for k, v in defense.state_dict().items()}
    return json.loads(json.dumps({"pool": pool, "weights": weights}))


@pytest.mark.slow
def test_badllm_tg_killed_between_rounds_resumes_to_the_uninterrupted_pool(tmp_path) -> None:
    full, _ = _defense_run(tmp_path, "full", 3, [])
    with pytest.raises(_Killed):
        _defense_run(tmp_path, "killed", 3, [_DieBeforeRound(epoch=2)])
    last = tmp_path / "killed" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed, trainer = _defense_run(tmp_path, "resumed", 3, [], ckpt_path=last)
    assert trainer.current_epoch == 3
    assert _round_state(resumed) == _round_state(full)
