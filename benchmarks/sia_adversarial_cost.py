"""Cost of SIA's embedding-space adversarial training relative to plain SFT, as ratios.

One SIAAlign training step (forward, loss, backward) on a real SFT batch of the synthesized
data, plain (``adv_weight=0``) against adversarial (``adv_steps`` PGD steps on the prompt
embeddings of the harmful samples, then the adversarial forward). The two alternate in rounds
(so load from other processes hits both alike); each figure is the median over rounds.
Expected ratio ~ ``1 + adv_steps + 1`` forward/backward passes over 1 (the attack runs on the
whole batch with eps = 0 for non-harmful samples); the random-noise control
(``adv_perturbation="noise"``) costs the one extra forward/backward only (~2).

Usage::

    python benchmarks/sia_adversarial_cost.py              # -> benchmarks/results/sia_adversarial_cost.json
    python benchmarks/sia_adversarial_cost.py --hidden 128 --steps 10 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from robust_lightning.lightning_modules.sia import SIAAlign, SIADataModule


class _Trainerless:
    """What SIAAlign reads from a trainer: the datamodule, the step and the strategy (none: unsharded)."""

    def __init__(self, datamodule: SIADataModule) -> None:
        self.datamodule = datamodule
        self.global_step = 0
        self.strategy = None


def _module(dm: SIADataModule, hidden: int, adv_weight: float, steps: int, perturbation: str = "pgd") -> SIAAlign:
    config = {"model_type": "llama", "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64}
    module = SIAAlign(model_config=config, adv_weight=adv_weight, adv_steps=steps,
                      adv_perturbation=perturbation)  # type: ignore[arg-type]
    module._trainer = _Trainerless(dm)  # type: ignore[assignment]
    module.log = lambda *a, **k: None  # type: ignore[method-assign]
    module.configure_model()
    return module


def _step_time(module: SIAAlign, batch: dict, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        loss = module.training_step(batch, 0)
        loss.backward()
        module.model.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sia_adversarial_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dm = SIADataModule(stage="align", batch_size=args.batch_size)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    modules = {"plain": _module(dm, args.hidden, 0.0, args.steps),
               "noise": _module(dm, args.hidden, 0.5, args.steps, "noise"),
               "adversarial": _module(dm, args.hidden, 0.5, args.steps)}
    for m in modules.values():
        _step_time(m, batch, 1)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(args.rounds):
        for name, m in modules.items():
            times[name].append(_step_time(m, batch, args.calls))
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "sia_adversarial_cost",
        "config": {**{k: v for k, v in vars(args).items() if k != "out"},
                   "harmful_in_batch": int(batch["harmful"].sum()), "batch": int(batch["input_ids"].shape[0])},
        "median_step_s": medians,
        "ratio_adversarial_over_plain": medians["adversarial"] / medians["plain"],
        "ratio_noise_over_plain": medians["noise"] / medians["plain"],
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
