"""NERO-Net: one search on 1 process against the same search on N gloo ranks (CPU).

Both runs train the same individuals (seeded by ``(seed, generation, index)``), so the ratio
``time(1 process) / time(N ranks)`` is the speed-up of the parallel evaluation, and the
benchmark also checks that the generations are identical. Each process uses one thread, so
N ranks need N free cores for the ratio to mean anything; the JSON records the core count.
Times are measured inside the processes (after imports), around ``NeroNetSearch.run()``,
including process-group set-up and the result all-gather.

Usage::

    python benchmarks/nero_net_parallel.py                 # -> benchmarks/results/nero_net_parallel.json
    python benchmarks/nero_net_parallel.py --ranks 4 --offspring 8 --generations 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from robust_lightning import DigitsDataModule
from robust_lightning.lightning_modules.nero_net import FitnessConfig, NeroNetSearch, SearchSpace
from robust_lightning.lightning_modules.nero_net.search import TIMING_FIELDS

SPACE = SearchSpace(features_layers=(1, 8), classification_layers=(1, 2), conv_filters=(8, 32),
                    fc_units=(32, 128), batch_size=(32, 128), lr=(0.0005, 0.01))


def _search(run_dir: str, args: argparse.Namespace) -> NeroNetSearch:
    return NeroNetSearch(DigitsDataModule(image_size=args.image_size, seed=0), mean=[0.5], std=[0.5],
                         generations=args.generations, offspring=args.offspring, seed=0,
                         epochs_per_unit=args.epochs, max_params=200_000,
                         fitness=FitnessConfig(threshold=0.8, eps=0.1), space=SPACE, run_dir=run_dir,
                         wandb=False, plot=False, device="cpu")


def _timed_run(run_dir: str, args: argparse.Namespace) -> float:
    torch.set_num_threads(1)
    search = _search(run_dir, args)
    start = time.perf_counter()
    search.run()
    return time.perf_counter() - start


def _worker(rank: int, world: int, port: int, run_dir: str, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    seconds = _timed_run(run_dir, args)
    Path(run_dir, f"time_rank{rank}.json").write_text(json.dumps(seconds))


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "individuals.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--offspring", type=int, default=4)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "nero_net_parallel.json"))
    args = parser.parse_args()
    # Other jobs on a shared machine move these timings, so the JSON says when and under what load.
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        single = _timed_run(str(Path(tmp) / "single"), args)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ddp_dir = Path(tmp) / "ddp"
        mp.spawn(_worker, args=(args.ranks, port, str(ddp_dir), args), nprocs=args.ranks, join=True)
        parallel = max(json.loads((ddp_dir / f"time_rank{r}.json").read_text()) for r in range(args.ranks))
        identical = _records(Path(tmp) / "single") == _records(ddp_dir)
    result = {
        "benchmark": "nero_net_parallel", "ranks": args.ranks, "offspring": args.offspring,
        "generations": args.generations, "epochs_per_unit": args.epochs, "image_size": args.image_size,
        "single_process_s": single, "parallel_s": parallel, "speedup": single / parallel,
        "identical_generations": identical, "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "platform": platform.platform(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1_5_15_before": load_before, "load_avg_1_5_15_after": os.getloadavg(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
