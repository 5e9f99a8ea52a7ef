"""The (1+lambda)-ES: fitness rule, reproducibility, resume, distributed evaluation, evidence."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from robust_lightning import DigitsDataModule
from robust_lightning.lightning_modules.nero_net import (
    FitnessConfig,
    NeroNetSearch,
    SearchSpace,
    load_genotype,
    robust_fitness,
)
from robust_lightning.lightning_modules.nero_net import search as search_module
from robust_lightning.lightning_modules.nero_net.search import TIMING_FIELDS

# Tiny but real: 8x8 digits, narrow grammar ranges, one epoch per budget unit.
SPACE = SearchSpace(features_layers=(1, 6), classification_layers=(1, 2), init_features_layers=(1, 2),
                    conv_filters=(4, 16), fc_units=(16, 64), batch_size=(32, 96), lr=(0.001, 0.01))


def _search(run_dir: Path, **kwargs: Any) -> NeroNetSearch:
    settings: dict[str, Any] = dict(
        data=DigitsDataModule(image_size=8, seed=0), mean=[0.5], std=[0.5], generations=3, offspring=3, seed=0,
        epochs_per_unit=1, max_params=50_000, fitness=FitnessConfig(threshold=0.5, eps=0.1), space=SPACE,
        run_dir=str(run_dir), wandb=False, plot=False, device="cpu",
    )
    settings.update(kwargs)
    return NeroNetSearch(**settings)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "individuals.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for line in lines]


def _state(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "state.json").read_text())


def test_fitness_rule() -> None:
    # Below tau: clean accuracy, whatever the FGSM accuracy.
    assert robust_fitness(0.6, 0.5, threshold=0.7) == pytest.approx(0.6)
    # At or above tau: 1 + FGSM accuracy (w = 1), so any such individual beats any below tau.
    assert robust_fitness(0.7, 0.2, threshold=0.7) == pytest.approx(1.2)
    assert robust_fitness(0.95, 0.0, threshold=0.7) > robust_fitness(0.69, 0.69, threshold=0.7)
    # Above tau a more robust individual wins even with lower clean accuracy.
    assert robust_fitness(0.8, 0.4, threshold=0.7) > robust_fitness(0.99, 0.3, threshold=0.7)
    # robust_weight mixes clean accuracy back in above tau.
    assert robust_fitness(0.8, 0.4, threshold=0.7, robust_weight=0.5) == pytest.approx(1.6)
    with pytest.raises(ValueError, match="clean_acc"):
        robust_fitness(1.5, 0.2, threshold=0.7)
    with pytest.raises(ValueError, match="fitness.threshold"):
        FitnessConfig(threshold=2.0)
    with pytest.raises(ValueError, match="fitness.eps"):
        FitnessConfig(eps="eight")


def test_same_seed_same_generations_and_elitism(tmp_path: Path) -> None:
    first = _search(tmp_path / "a").run()
    second = _search(tmp_path / "b").run()
    records = _records(tmp_path / "a")
    assert records == _records(tmp_path / "b")
    assert first["history"] == second["history"]
    assert len(records) == 3 * 3
    assert {r["generation"] for r in records} == {0, 1, 2}
    # Elitism: the parent's fitness never decreases and is the best seen so far.
    best = [h["best_fitness"] for h in first["history"]]
    assert best == sorted(best)
    assert best[-1] == max(r["fitness"] for r in records)
    # Later generations are mutants of the parent, not random individuals.
    assert all(r["operations"] != ["random"] for r in records if r["generation"] > 0)
    # Another seed gives another search.
    _search(tmp_path / "c", seed=1, generations=1).run()
    assert _records(tmp_path / "c") != records[:3]
    # The best genotype file loads as a genotype.
    assert load_genotype(tmp_path / "a" / "best_genotype.yaml").to_dict() == first["parent"]["genotype"]


class _Killed(Exception):
    pass


class _KilledSearch(NeroNetSearch):
    """Dies while training generation 2 (after generation 1 was checkpointed)."""

    def evaluate(self, task: Any, device: torch.device) -> dict[str, Any]:
        if task.generation == 2 and task.index == 1:
            raise _Killed
        return super().evaluate(task, device)


def test_killed_search_resumes_identically(tmp_path: Path) -> None:
    _search(tmp_path / "full", generations=4).run()
    killed = _search(tmp_path / "run", generations=4)
    killed.__class__ = _KilledSearch
    with pytest.raises(_Killed):
        killed.run()
    assert _state(tmp_path / "run")["generation"] == 1
    # Simulate a kill between the log write and the checkpoint: a stray line of generation 2.
    with (tmp_path / "run" / "individuals.jsonl").open("a") as log:
        log.write(json.dumps({"generation": 2, "index": 0, "fitness": 9.0}) + "\n")
    with pytest.raises(ValueError, match="already holds a search"):
        _search(tmp_path / "run", generations=4).run()
    with pytest.raises(ValueError, match=r"settings differ.*offspring"):
        _search(tmp_path / "elsewhere", generations=4, offspring=2, resume=str(tmp_path / "run")).run()
    _search(tmp_path / "elsewhere", generations=4, resume=str(tmp_path / "run")).run()
    assert _records(tmp_path / "run") == _records(tmp_path / "full")
    assert _state(tmp_path / "run")["history"] == _state(tmp_path / "full")["history"]
    # Resuming a finished search with more generations extends it.
    _search(tmp_path / "x", generations=5, resume=str(tmp_path / "run")).run()
    assert _state(tmp_path / "run")["generation"] == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world: int, port: int, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    state = _search(Path(run_dir), generations=2, offspring=3).run()
    # Every rank ends with the same parent.
    Path(run_dir, f"parent_rank{rank}.json").write_text(json.dumps(state["parent"], sort_keys=True))


@pytest.mark.ddp
@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_result(tmp_path: Path, single_thread: None) -> None:
    single = _search(tmp_path / "single", generations=2, offspring=3).run()
    mp.spawn(_distributed_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "individuals.jsonl").read_text().splitlines()]
    assert {r["rank"] for r in lines} == {0, 1}, "both ranks must have trained offspring"
    assert _records(tmp_path / "ddp") == _records(tmp_path / "single")
    parents = [json.loads((tmp_path / "ddp" / f"parent_rank{r}.json").read_text()) for r in (0, 1)]
    strip = lambda p: {k: v for k, v in p.items() if k not in TIMING_FIELDS}  # noqa: E731
    assert strip(parents[0]) == strip(parents[1]) == strip(single["parent"])


def test_bad_search_arguments_raise_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="offspring"):
        _search(tmp_path, offspring=0)
    with pytest.raises(ValueError, match="epochs_per_unit and/or seconds_per_unit"):
        _search(tmp_path, epochs_per_unit=None, seconds_per_unit=None)
    with pytest.raises(TypeError, match="data must be a LightningDataModule"):
        _search(tmp_path, data="digits")
    with pytest.raises(TypeError, match="fitness must be a FitnessConfig"):
        _search(tmp_path, fitness={"threshold": 0.5})
    with pytest.raises(ValueError, match="device"):
        _search(tmp_path, device="tpu")
    with pytest.raises(ValueError, match="nothing to resume"):
        _search(tmp_path / "new", resume=str(tmp_path / "nowhere")).run()


@pytest.mark.slow
def test_robust_fitness_finds_more_fgsm_robust_parents_than_the_clean_only_control(tmp_path: Path,
                                                                                  single_thread: None) -> None:
    """The FGSM term of the fitness, not the search alone, makes the parent robust.

    Control: the same shipped digits search (configs/nero_net/evolve/digits.yaml, lambda = 4,
    8 generations) with ``fitness.robust_weight = 0``, i.e. selection by clean accuracy only;
    it would match the robust search if the FGSM term did nothing. Each seed sets the search
    seed and the digits split (``--data.init_args.seed``), and both final genotypes are
    retrained with fresh seeds on the untouched test split (benchmarks/nero_net_fitness_control.py,
    whose ``run_search`` this calls, so the test measures exactly the benchmark's setting).
    Measured (README, benchmarks/results/nero_net_fitness_control.json, seeds 0-4), robust minus
    control FGSM accuracy: val (what selection sees) +0.028/+0.159/+0.134/+0.042/+0.123, positive
    on every seed, so it is asserted per seed (>= 0.015); test (retrained)
    +0.040/+0.054/+0.092/-0.056/+0.131: seed 3 reverses, so the test split is asserted on the mean
    over the seeds run here (+0.062 for 0-2; +0.030 to +0.062 for any three consecutive measured
    seeds), not per seed.
    """
    from benchmarks.nero_net_fitness_control import run_search

    test_gaps = []
    for seed in (0, 1, 2):
        robust = run_search(seed, 1.0, tmp_path / f"robust_{seed}")
        control = run_search(seed, 0.0, tmp_path / f"control_{seed}")
        print(f"seed {seed}: robust fitness {robust}; clean-only control {control}")
        assert robust["val_clean_acc"] >= 0.8 and robust["test_clean_acc"] >= 0.8, robust  # tau = 0.8 kept
        assert robust["val_fgsm_acc"] - control["val_fgsm_acc"] >= 0.015, (seed, robust, control)
        test_gaps.append(robust["test_fgsm_acc"] - control["test_fgsm_acc"])
    # Not only a lucky draw of the selection: both genotypes retrained, fresh seeds, test split.
    assert sum(test_gaps) / len(test_gaps) >= 0.03, test_gaps


class _StepClock:
    """A clock that advances 35 ms per reading, so the time budget is met after a known step
    (35 ms divides no budget of a few 50 ms units, so no comparison is a float tie)."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.035
        return self.now


def test_seconds_budget_caps_training_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock instead of the wall clock: a timed assertion would flip on a loaded 2-core CI.
    monkeypatch.setattr(search_module, "time", _StepClock())
    state = _search(tmp_path / "t", generations=1, offspring=2, epochs_per_unit=None, seconds_per_unit=0.05).run()
    records = _records(tmp_path / "t")
    assert records and all(r["epochs"] == 1 for r in records)
    # The budget is read after every step, each reading 35 ms later: the first step past
    # 0.05 s per unit is the last one, far inside an epoch of the digits.
    assert [r["steps"] for r in records] == [math.floor(0.05 * r["budget_units"] / 0.035) + 1 for r in records]
    assert state["settings"]["seconds_per_unit"] == 0.05
