"""NERO-Net's search: a (1+lambda) evolution strategy with an FGSM-driven fitness.

Loop (Fast-DENSER's ``engine.main``, cdvetal/fast-denser3): generation 0 trains ``lambda``
random individuals; every later generation trains ``lambda`` mutants of the parent; the
parent of the next generation is the fittest of ``[parent] + offspring`` (elitism: the parent
keeps its measured fitness and wins ties). Candidates get standard training only -- NERO-Net
keeps adversarial training out of the loop so that robustness comes from the architecture --
and are scored on a held-out split by :func:`robust_fitness`.

Every random draw comes from a generator seeded by ``(seed, generation, index)``: mutation
uses ``random.Random`` seeded with that triple, training seeds torch with it. Nothing depends
on the order individuals are trained in or on which rank trains them, so a resumed search
and a search spread over several ranks give the same generations as one uninterrupted
single-process run (with an epoch budget; a seconds budget depends on the machine's speed).

Parallel evaluation: under ``torch.distributed`` (``torchrun``, ``srun``, or any launcher
setting ``RANK``/``WORLD_SIZE``) offspring ``i`` is trained by rank ``i % world_size``;
results travel as JSON bytes through ``all_gather`` (no pickling) and every rank selects the
same parent. Rank 0 alone writes the run directory.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from robust_lightning._checkpoint import atomic_write_text, read_json_state
from robust_lightning._validation import check_int_at_least, check_probability, is_int, is_number
from robust_lightning.attacks.base import FGSM
from robust_lightning.attacks.core import attack_mode, parse_budget
from robust_lightning.errors import CheckpointError, InvalidArgumentError
from robust_lightning.lightning_modules.nero_net.genotype import (
    Genotype,
    MutationRates,
    SearchSpace,
    mutate,
    random_genotype,
)
from robust_lightning.lightning_modules.nero_net.model import InvalidGenotypeError, NeroNet
from robust_lightning.nn.layers import Normalize

__all__ = ["FitnessConfig", "NeroNetSearch", "plot_fitness", "robust_fitness"]

STATE_FILE = "state.json"
LOG_FILE = "individuals.jsonl"
BEST_FILE = "best_genotype.yaml"
STATE_FORMAT = 1
# Fields of a record that depend on the machine, not on the search.
TIMING_FIELDS = ("train_seconds", "eval_seconds", "rank")


def _is_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def _is_positive_int(value: Any) -> bool:
    return is_int(value) and value >= 1


@dataclass
class FitnessConfig:
    """The robust fitness rule (see :func:`robust_fitness`) and its FGSM attack.

    Args:
        threshold: clean-accuracy threshold ``tau``.
        robust_weight: weight ``w`` of the FGSM accuracy above the threshold (1: FGSM only).
        eps: FGSM budget (L-inf; a float or a fraction such as ``"8/255"``).
        max_eval_samples: evaluate on at most this many held-out samples (``None``: all).
        eval_batch_size: batch size of the clean and FGSM evaluation.
    """

    threshold: float = 0.7
    robust_weight: float = 1.0
    eps: float | str = "8/255"
    max_eval_samples: int | None = None
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        if not _is_number(self.threshold) or not 0 <= self.threshold <= 1:
            raise ValueError(f"fitness.threshold must be in [0, 1], got {self.threshold!r}")
        if not _is_number(self.robust_weight) or not 0 <= self.robust_weight <= 1:
            raise ValueError(f"fitness.robust_weight must be in [0, 1], got {self.robust_weight!r}")
        if parse_budget(self.eps, "fitness.eps") < 0:
            raise ValueError(f"fitness.eps must be >= 0, got {self.eps!r}")
        if self.max_eval_samples is not None and not _is_positive_int(self.max_eval_samples):
            raise ValueError("fitness.max_eval_samples must be a positive int or null, "
                             f"got {self.max_eval_samples!r}")
        if not _is_positive_int(self.eval_batch_size):
            raise ValueError(f"fitness.eval_batch_size must be a positive int, got {self.eval_batch_size!r}")


def robust_fitness(clean_acc: float, fgsm_acc: float, threshold: float, robust_weight: float = 1.0) -> float:
    r"""NERO-Net's thresholded fitness; our exact formula.

    .. math::
        f = \\begin{cases} a_{clean} & a_{clean} < \\tau \\\\
                           1 + w\\,a_{FGSM} + (1 - w)\\,a_{clean} & a_{clean} \\ge \\tau \\end{cases}

    The paper states the rule (below a clean-accuracy threshold the fitness is the clean
    accuracy, above it the post-attack accuracy drives it); the offset 1 is our reading: it
    ranks every individual above the threshold over every one below it, so the robust term can
    never pull the search towards inaccurate networks. ``w = 1`` is the pure-FGSM rule.
    """
    for name, value in (("clean_acc", clean_acc), ("fgsm_acc", fgsm_acc), ("threshold", threshold),
                        ("robust_weight", robust_weight)):
        check_probability(name, value)
    if clean_acc < threshold:
        return float(clean_acc)
    return 1.0 + robust_weight * fgsm_acc + (1.0 - robust_weight) * clean_acc


def _seed_of(seed: int, generation: int, index: int) -> int:
    digest = hashlib.sha256(f"nero-net/{seed}/{generation}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


# -- distributed helpers ----------------------------------------------------------------
class _Distributed:
    """Rank/world and a JSON all-gather; initialises the process group from the environment."""

    def __init__(self) -> None:
        self.owned = False
        if dist.is_available() and not dist.is_initialized():
            env = os.environ
            if "RANK" not in env and "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
                # srun without torchrun: map SLURM's variables (MASTER_ADDR/PORT must be set).
                env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
                env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
            if int(env.get("WORLD_SIZE", "1")) > 1:
                backend = "nccl" if torch.cuda.is_available() else "gloo"
                dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=6))
                self.owned = True
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.group = None
        if self.active and dist.get_backend() != "gloo":
            # Results are small CPU byte tensors: a gloo group moves them without the GPU.
            self.group = dist.new_group(backend="gloo")

    def all_gather_json(self, payload: Any) -> list[Any]:
        if not self.active:
            return [payload]
        data = torch.frombuffer(bytearray(json.dumps(payload).encode()), dtype=torch.uint8)
        size = torch.tensor([data.numel()], dtype=torch.int64)
        sizes = [torch.zeros_like(size) for _ in range(self.world)]
        dist.all_gather(sizes, size, group=self.group)
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: data.numel()] = data
        gathered = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded, group=self.group)
        return [json.loads(bytes(t[: int(s.item())].tolist()).decode()) for t, s in zip(gathered, sizes, strict=False)]

    def barrier(self) -> None:
        if self.active:
            dist.barrier(group=self.group)

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


# -- training and evaluation of one individual -----------------------------------------
def _make_optimizer(learning: dict[str, Any], params: Any) -> torch.optim.Optimizer:
    """The genotype's learning block as a torch optimizer (Fast-DENSER's gradient-descent /
    rmsprop / adam; "decay" is read as L2 weight decay -- our reading).
    """
    opt = learning["optimizer"]
    if opt == "sgd":
        return torch.optim.SGD(params, lr=learning["lr"], momentum=learning["momentum"],
                               nesterov=bool(learning["nesterov"]) and learning["momentum"] > 0,
                               weight_decay=learning["weight_decay"])
    if opt == "rmsprop":
        return torch.optim.RMSprop(params, lr=learning["lr"], alpha=learning["rho"],
                                   weight_decay=learning["weight_decay"])
    return torch.optim.Adam(params, lr=learning["lr"], betas=(learning["beta1"], learning["beta2"]),
                            weight_decay=learning["weight_decay"])


def _accuracy(model: nn.Module, loader: DataLoader, device: torch.device, attack: FGSM | None) -> float:
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if attack is not None and attack.eps > 0:
            with attack_mode(model):
                x = attack(lambda inputs, y=y: F.cross_entropy(model(inputs), y, reduction="none"), x)
        with torch.no_grad():
            correct += int((model(x).argmax(dim=1) == y).sum())
        total += int(y.numel())
    return correct / max(total, 1)


@dataclass
class _Task:
    generation: int
    index: int
    genotype: dict[str, Any]
    budget_units: int
    operations: list[str]


class NeroNetSearch:
    """NERO-Net's (1+lambda)-ES over Fast-DENSER genotypes.

    Args:
        data: a LightningDataModule with ``train_dataset`` and ``val_dataset`` after
            ``setup("fit")``; candidates train on the first and are scored on the second.
        num_classes: classes of the task.
        mean: per-channel mean of the :class:`Normalize` layer in front of every network.
        std: per-channel std of that layer.
        generations: generations to run (generation 0 is the random initial population).
        offspring: ``lambda``, offspring per generation (Fast-DENSER's default 4).
        seed: seed of every random choice (see the module docstring).
        epochs_per_unit: training epochs per budget unit (``None``: seconds only).
        seconds_per_unit: training seconds per budget unit (``None``: epochs only). With both,
            training stops at whichever comes first; seconds make a search machine-dependent.
        max_params: candidates with more trainable parameters are rejected (fitness 0).
        fitness: the fitness rule and its FGSM attack.
        space: grammar ranges (Fast-DENSER's defaults).
        mutation: mutation rates (Fast-DENSER's defaults).
        run_dir: directory of a new search; must not hold a search already.
        resume: directory of an earlier (possibly killed) search to continue; then ``run_dir``
            is ignored. The search settings must be the same (``generations`` may grow).
        device: ``"auto"`` (``cuda:LOCAL_RANK`` when available, else CPU), ``"cpu"`` or
            ``"cuda"``.
        wandb: also log to Weights & Biases (offline unless ``WANDB_MODE=online``): a table of
            every individual and the per-generation best.
        plot: write ``fitness.png`` (fitness per generation) into the run directory.
    """

    def __init__(
        self,
        data: pl.LightningDataModule,
        num_classes: int = 10,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        generations: int = 10,
        offspring: int = 4,
        seed: int = 0,
        epochs_per_unit: int | None = 1,
        seconds_per_unit: float | None = None,
        max_params: int | None = 5_000_000,
        fitness: FitnessConfig = FitnessConfig(),
        space: SearchSpace = SearchSpace(),
        mutation: MutationRates = MutationRates(),
        run_dir: str = "runs/nero_net/search",
        resume: str | None = None,
        device: str = "auto",
        wandb: bool = True,
        plot: bool = True,
    ) -> None:
        if not isinstance(data, pl.LightningDataModule):
            raise TypeError(f"data must be a LightningDataModule, got {type(data).__name__}")
        for name, value, minimum in (("num_classes", num_classes, 2), ("generations", generations, 1),
                                     ("offspring", offspring, 1), ("seed", seed, 0)):
            check_int_at_least(name, value, minimum)
        if epochs_per_unit is None and seconds_per_unit is None:
            raise ValueError("set epochs_per_unit and/or seconds_per_unit: an individual needs a training budget")
        if epochs_per_unit is not None and not _is_positive_int(epochs_per_unit):
            raise ValueError(f"epochs_per_unit must be a positive int or null, got {epochs_per_unit!r}")
        if seconds_per_unit is not None and not (_is_number(seconds_per_unit) and seconds_per_unit > 0):
            raise ValueError(f"seconds_per_unit must be a positive number or null, got {seconds_per_unit!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        for name, value in (("fitness", fitness), ("space", space), ("mutation", mutation)):
            expected = {"fitness": FitnessConfig, "space": SearchSpace, "mutation": MutationRates}[name]
            if not isinstance(value, expected):
                raise TypeError(f"{name} must be a {expected.__name__}, got {type(value).__name__}")
        self.data = data
        self.num_classes = num_classes
        Normalize(mean, std)  # checks mean/std early, with its own error messages
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.generations = generations
        self.offspring = offspring
        self.seed = seed
        self.epochs_per_unit = epochs_per_unit
        self.seconds_per_unit = None if seconds_per_unit is None else float(seconds_per_unit)
        self.max_params = max_params
        self.fitness = fitness
        self.eps = parse_budget(fitness.eps, "fitness.eps")
        self.space = space
        self.mutation = mutation
        self.resume = resume
        self.run_dir = Path(resume if resume is not None else run_dir)
        self.device_name = device
        self.use_wandb = wandb
        self.plot = plot
        self.settings = {
            "num_classes": num_classes, "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "offspring": offspring, "seed": seed, "epochs_per_unit": epochs_per_unit,
            "seconds_per_unit": self.seconds_per_unit, "max_params": max_params,
            "fitness": dataclasses.asdict(fitness), "space": json.loads(json.dumps(dataclasses.asdict(space))),
            "mutation": dataclasses.asdict(mutation), "data": _describe_data(data),
        }
        self._train: Dataset | None = None
        self._val: Dataset | None = None
        self._input_shape: tuple[int, int, int] | None = None

    # -- data -------------------------------------------------------------------------
    def _setup_data(self) -> None:
        if self._train is not None:
            return
        self.data.prepare_data()
        self.data.setup("fit")
        train = getattr(self.data, "train_dataset", None)
        val = getattr(self.data, "val_dataset", None)
        if train is None or val is None or len(val) == 0:
            raise ValueError(
                f"{type(self.data).__name__} must provide train_dataset and a non-empty val_dataset after "
                "setup('fit'): the fitness is measured on a held-out split (e.g. CIFAR10DataModule val_size)"
            )
        if self.fitness.max_eval_samples is not None and len(val) > self.fitness.max_eval_samples:
            val = Subset(val, range(self.fitness.max_eval_samples))
        self._train, self._val = train, val
        sample = val[0][0]
        if not isinstance(sample, Tensor) or sample.dim() != 3:
            raise ValueError(f"data must yield (C, H, W) image tensors, got {type(sample).__name__}")
        self._input_shape = tuple(int(s) for s in sample.shape)  # type: ignore[assignment]

    def _test_dataset(self) -> Dataset:
        self.data.setup("test")
        test = getattr(self.data, "test_dataset", None)
        if test is None or len(test) == 0:
            raise ValueError(f"{type(self.data).__name__} has no test_dataset after setup('test')")
        return test

    def retrain(self, genotype: dict[str, Any], budget_units: int, seeds: Sequence[int], split: str = "test",
                device: str | torch.device = "cpu") -> list[dict[str, Any]]:
        """Train a genotype again with fresh seeds and score it (reports, not selection).

        Seeds are drawn from a generation index no search reaches (``-1 - seed``), so they
        never coincide with the search's own.
        """
        device = torch.device(device)
        return [self.evaluate(_Task(-1 - s, 0, genotype, budget_units, ["retrain"]), device, split) for s in seeds]

    def _device(self, dist_ctx: _Distributed) -> torch.device:
        if self.device_name == "cpu" or (self.device_name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available")
        return torch.device("cuda", dist_ctx.local_rank % torch.cuda.device_count())

    # -- one individual ----------------------------------------------------------------
    def evaluate(self, task: _Task, device: torch.device, split: str = "val") -> dict[str, Any]:
        """Train one candidate from scratch with standard training and score it.

        Args:
            task: the genotype, its budget and its ``(generation, index)`` (hence its seed).
            device: where to train.
            split: ``"val"`` (the search's held-out split) or ``"test"`` (for reports after the
                search; never used for selection).
        """
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self._setup_data()
        assert self._train is not None and self._val is not None and self._input_shape is not None
        eval_set = self._val if split == "val" else self._test_dataset()
        genotype = Genotype.from_dict(task.genotype)
        record: dict[str, Any] = {
            "generation": task.generation, "index": task.index, "budget_units": task.budget_units,
            "operations": task.operations, "seed": _seed_of(self.seed, task.generation, task.index),
        }
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # Weights, dropout masks and shuffling all come from this individual's own seed.
            torch.manual_seed(record["seed"])
            try:
                network = NeroNet(genotype, self._input_shape, self.num_classes, max_params=self.max_params)
            except InvalidGenotypeError as error:
                record.update(genotype=genotype.to_dict(), description=genotype.describe(), valid=False,
                              reason=str(error), params=None, clean_acc=0.0, fgsm_acc=0.0, fitness=0.0,
                              epochs=0, steps=0, train_seconds=0.0, eval_seconds=0.0, diverged=False)
                return record
            record.update(genotype=network.genotype.to_dict(), description=network.genotype.describe(),
                          repairs=network.repairs, valid=True, reason=None,
                          params=sum(p.numel() for p in network.parameters() if p.requires_grad))
            model = nn.Sequential(Normalize(self.mean, self.std), network).to(device)
            learning = network.genotype.learning
            optimizer = _make_optimizer(learning, model.parameters())
            generator = torch.Generator().manual_seed(record["seed"])
            loader = DataLoader(self._train, batch_size=learning["batch_size"], shuffle=True, generator=generator,
                                drop_last=len(self._train) > learning["batch_size"])
            max_epochs = None if self.epochs_per_unit is None else self.epochs_per_unit * task.budget_units
            max_seconds = None if self.seconds_per_unit is None else self.seconds_per_unit * task.budget_units
            start, epochs, steps, diverged = time.perf_counter(), 0, 0, False
            model.train()
            while (max_epochs is None or epochs < max_epochs) and not diverged:
                for x, y in loader:
                    x, y = x.to(device), y.to(device)
                    loss = F.cross_entropy(model(x), y)
                    if not torch.isfinite(loss):
                        # A diverged candidate keeps the weights it has; its accuracy says the rest.
                        diverged = True
                        break
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    steps += 1
                    if max_seconds is not None and time.perf_counter() - start > max_seconds:
                        break
                epochs += 1
                if max_seconds is not None and time.perf_counter() - start > max_seconds:
                    break
            train_seconds = time.perf_counter() - start
            model.eval()
            start = time.perf_counter()
            val_loader = DataLoader(eval_set, batch_size=self.fitness.eval_batch_size, shuffle=False)
            clean = _accuracy(model, val_loader, device, None)
            robust = _accuracy(model, val_loader, device, FGSM(eps=self.eps))
        record.update(clean_acc=clean, fgsm_acc=robust, diverged=diverged,
                      fitness=robust_fitness(clean, robust, self.fitness.threshold, self.fitness.robust_weight),
                      epochs=epochs, steps=steps, train_seconds=train_seconds,
                      eval_seconds=time.perf_counter() - start)
        return record

    def _evaluate_or_reject(self, task: _Task, device: torch.device) -> dict[str, Any]:
        try:
            return self.evaluate(task, device)
        except torch.OutOfMemoryError as error:
            # A network too large for the device is an unfit individual, not a failed search.
            if device.type == "cuda":
                torch.cuda.empty_cache()
            genotype = Genotype.from_dict(task.genotype)
            return {"generation": task.generation, "index": task.index, "budget_units": task.budget_units,
                    "operations": task.operations, "seed": _seed_of(self.seed, task.generation, task.index),
                    "genotype": genotype.to_dict(), "description": genotype.describe(), "valid": False,
                    "reason": f"out of memory: {str(error).splitlines()[0]}", "params": None, "clean_acc": 0.0,
                    "fgsm_acc": 0.0, "fitness": 0.0, "epochs": 0, "steps": 0, "train_seconds": 0.0,
                    "eval_seconds": 0.0, "diverged": False}

    # -- the loop ----------------------------------------------------------------------
    def _tasks(self, generation: int, parent: dict[str, Any] | None) -> list[_Task]:
        tasks = []
        for index in range(self.offspring):
            rng = random.Random(f"nero-net/{self.seed}/{generation}/{index}")
            if parent is None:
                tasks.append(_Task(generation, index, random_genotype(rng, self.space).to_dict(), 1, ["random"]))
                continue
            child, longer, ops = mutate(Genotype.from_dict(parent["genotype"]), rng, self.space, self.mutation)
            units = parent["budget_units"] + 1 if longer else 1
            tasks.append(_Task(generation, index, child.to_dict(), units, ops))
        return tasks

    def _settings_json(self) -> dict[str, Any]:
        # Through JSON, so tuples compare equal to the lists a reloaded state holds.
        return json.loads(json.dumps(self.settings, default=str))

    def _load_state(self) -> dict[str, Any] | None:
        path = self.run_dir / STATE_FILE
        if self.resume is None:
            if path.exists():
                raise InvalidArgumentError(f"run_dir {str(self.run_dir)!r} already holds a search; pass --resume "
                                 f"{self.run_dir} to continue it or choose another run_dir")
            return None
        if not path.is_file():
            raise InvalidArgumentError(f"resume={self.resume!r} holds no {STATE_FILE}: nothing to resume")
        state = read_json_state(path, argument="resume state", required=_STATE_KEYS)
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} has format {state.get('format')!r}, expected {STATE_FORMAT}")
        _check_state(state, path)
        settings = self._settings_json()
        if state["settings"] != settings:
            changed = sorted(k for k in settings if state["settings"].get(k) != settings[k])
            raise ValueError(f"resume: the search settings differ from the run's ({', '.join(changed)}); "
                             "only 'generations' may change when resuming")
        return state

    def run(self) -> dict[str, Any]:
        """Run (or resume) the search; returns the final state (parent, history).

        The state is checkpointed after every generation: ``state.json`` (plain JSON, written
        atomically), ``individuals.jsonl`` (one line per trained candidate) and
        ``best_genotype.yaml`` (the parent, ready for ``train_best.yaml``).
        """
        dist_ctx = _Distributed()
        try:
            return self._run(dist_ctx)
        finally:
            dist_ctx.close()

    def _run(self, dist_ctx: _Distributed) -> dict[str, Any]:
        main = dist_ctx.rank == 0
        state = self._load_state()
        dist_ctx.barrier()
        self._setup_data()
        device = self._device(dist_ctx)
        if state is None:
            state = {"format": STATE_FORMAT, "settings": self._settings_json(), "generation": -1, "parent": None,
                     "history": [], "input_shape": list(self._input_shape or ()), "wandb_id": None}
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_log(state["generation"])
        logger = _WandbTable(self, state) if (main and self.use_wandb) else None
        try:
            for generation in range(state["generation"] + 1, self.generations):
                tasks = self._tasks(generation, state["parent"])
                mine = [self._evaluate_or_reject(t, device) for t in tasks
                        if t.index % dist_ctx.world == dist_ctx.rank]
                for record in mine:
                    record["rank"] = dist_ctx.rank
                results = sorted((r for part in dist_ctx.all_gather_json(mine) for r in part),
                                 key=lambda r: r["index"])
                population = ([state["parent"]] if state["parent"] is not None else []) + results
                # max() keeps the first of equals: the parent wins ties (elitism).
                parent = max(population, key=lambda r: r["fitness"])
                state["parent"] = parent
                state["generation"] = generation
                state["history"].append({
                    "generation": generation, "best_fitness": parent["fitness"],
                    "best_clean_acc": parent["clean_acc"], "best_fgsm_acc": parent["fgsm_acc"],
                    "best_params": parent["params"],
                    "best_from": f"gen{parent['generation']}/{parent['index']}",
                    "offspring_best_fitness": max(r["fitness"] for r in results),
                    "offspring_best_fgsm_acc": max(r["fgsm_acc"] for r in results),
                })
                if main:
                    with (self.run_dir / LOG_FILE).open("a") as log:
                        for record in results:
                            log.write(_json_line(record) + "\n")
                    best = {"genotype": parent["genotype"], "fitness": parent["fitness"],
                            "clean_acc": parent["clean_acc"], "fgsm_acc": parent["fgsm_acc"],
                            "params": parent["params"], "found_in": state["history"][-1]["best_from"],
                            "budget_units": parent["budget_units"], "input_shape": state["input_shape"]}
                    _atomic_write(self.run_dir / BEST_FILE, yaml.safe_dump(best, sort_keys=False))
                    if logger is not None:
                        logger.log(generation, results, state)
                    # The state is written last: a kill before this line replays the generation.
                    _atomic_write(self.run_dir / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))
                    if self.plot:
                        plot_fitness(self.run_dir / LOG_FILE, self.run_dir / "fitness.png", state["history"])
                    h = state["history"][-1]
                    print(f"[nero-net] generation {generation}/{self.generations - 1}: parent fitness "
                          f"{h['best_fitness']:.4f} (clean {h['best_clean_acc']:.3f}, FGSM {h['best_fgsm_acc']:.3f}, "
                          f"{h['best_from']}); offspring best FGSM {h['offspring_best_fgsm_acc']:.3f}", flush=True)
                dist_ctx.barrier()
        finally:
            if logger is not None:
                logger.finish()
        if main:
            print(f"[nero-net] best genotype: {self.run_dir / BEST_FILE} ({state['parent']['description']})",
                  flush=True)
        return state

    def _truncate_log(self, generation: int) -> None:
        """Drop log lines of a generation that was being trained when the search was killed.

        A kill mid-append can leave a last line cut short; it belongs to the unfinished
        generation and is dropped too. A line that cannot be read before the end is corruption.
        """
        path = self.run_dir / LOG_FILE
        if not path.exists():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    continue  # the half-written line of the generation being trained
                raise CheckpointError(f"{path}, line {number}: not valid JSON (corrupt); it was not used") from None
            if record.get("generation", generation + 1) <= generation:
                kept.append(line)
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))


def _describe_data(data: pl.LightningDataModule) -> dict[str, Any]:
    hparams = getattr(data, "hparams", {}) or {}
    return {"class": f"{type(data).__module__}.{type(data).__qualname__}",
            **{k: v for k, v in dict(hparams).items() if k not in ("num_workers", "data_dir")}}


def _atomic_write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


_STATE_KEYS = ("format", "settings", "generation", "parent", "history", "input_shape")


def _check_state(state: dict[str, Any], path: Path) -> None:
    """A parsed state is self-consistent: one history entry per finished generation, a parent
    once a generation has finished. Anything else was not written by a finished generation.
    """
    generation, history, parent = state["generation"], state["history"], state["parent"]
    if not is_int(generation) or generation < -1:
        raise CheckpointError(f"{path}: 'generation' must be an int >= -1, got {generation!r}; it was not used")
    if not isinstance(history, list) or len(history) != generation + 1:
        raise CheckpointError(f"{path}: 'history' must list {generation + 1} generation(s), got "
                              f"{len(history) if isinstance(history, list) else type(history).__name__}; "
                              "it was not used")
    if generation >= 0 and not (isinstance(parent, dict) and {"genotype", "fitness"} <= set(parent)):
        raise CheckpointError(f"{path}: 'parent' must hold the best individual (genotype, fitness); it was not used")


class _WandbTable:
    """W&B logging of the search: per-generation scalars and a table of all individuals."""

    COLUMNS = ("generation", "index", "description", "params", "clean_acc", "fgsm_acc", "fitness",
               "budget_units", "valid", "operations")

    def __init__(self, search: NeroNetSearch, state: dict[str, Any]) -> None:
        from robust_lightning._extras import require

        wandb = require("wandb", "wandb", feature="NeroNetSearch(wandb=True)")
        self.wandb = wandb
        state["wandb_id"] = state.get("wandb_id") or uuid.uuid4().hex[:8]
        os.environ.setdefault("WANDB_MODE", "offline")
        self.run = wandb.init(project="robust-lightning", dir=str(search.run_dir), id=state["wandb_id"],
                              resume="allow", name=f"nero_net/{search.run_dir.name}", config=search.settings,
                              job_type="evolve")
        self.rows: list[list[Any]] = []
        log = search.run_dir / LOG_FILE
        if log.exists():
            for line in log.read_text().splitlines():
                if line.strip():
                    self.rows.append(self._row(json.loads(line)))

    def _row(self, record: dict[str, Any]) -> list[Any]:
        row = [record.get(c) for c in self.COLUMNS]
        row[-1] = "; ".join(record.get("operations") or [])
        return row

    def log(self, generation: int, results: list[dict[str, Any]], state: dict[str, Any]) -> None:
        self.rows.extend(self._row(r) for r in results)
        best = state["history"][-1]
        self.run.log({"search/best_fitness": best["best_fitness"], "search/best_clean_acc": best["best_clean_acc"],
                      "search/best_fgsm_acc": best["best_fgsm_acc"], "search/generation": generation,
                      "search/individuals": self.wandb.Table(columns=list(self.COLUMNS), data=self.rows)})

    def finish(self) -> None:
        self.run.finish()


def plot_fitness(log_path: str | Path, out_path: str | Path, history: list[dict[str, Any]] | None = None,
                 title: str | None = None) -> None:
    """Fitness per generation: every individual (dots) and the parent's fitness/FGSM accuracy.

    Args:
        log_path: the search's ``individuals.jsonl``.
        out_path: PNG to write.
        history: the state's per-generation history (read from ``state.json`` beside the log
            when ``None``).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_path = Path(log_path)
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if history is None:
        history = json.loads((log_path.parent / STATE_FILE).read_text())["history"]
    fig, (ax_fit, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_fit.scatter([r["generation"] for r in records], [r["fitness"] for r in records], s=14, alpha=0.5,
                   label="individuals")
    gens = [h["generation"] for h in history]
    ax_fit.plot(gens, [h["best_fitness"] for h in history], "o-", color="C3", label="parent (best so far)")
    ax_fit.set_xlabel("generation")
    ax_fit.set_ylabel("fitness (clean if < tau, else 1 + FGSM)")
    ax_fit.legend(fontsize=8)
    ax_acc.plot(gens, [h["best_clean_acc"] for h in history], "o-", label="parent clean acc")
    ax_acc.plot(gens, [h["best_fgsm_acc"] for h in history], "s-", label="parent FGSM acc")
    ax_acc.scatter([r["generation"] for r in records], [r["fgsm_acc"] for r in records], s=10, alpha=0.4,
                   color="C2", label="individuals' FGSM acc")
    ax_acc.set_xlabel("generation")
    ax_acc.set_ylabel("accuracy (held-out split)")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend(fontsize=8)
    for ax in (ax_fit, ax_acc):
        ax.set_xticks(gens)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)

