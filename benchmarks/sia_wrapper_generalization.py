"""Where SIA's adversarial alignment loses robustness: per jailbreak wrapper, training vs held-out.

The alignment effect recipe (``benchmarks/experiments/sia.py``, arm ``adversarial``: embedding
PGD-5 training, Llama hidden 64, 2 heads, 10 products, 20 epochs) is trained per seed as the
effect test trains it; then the same evaluation attack (embedding PGD-10, step 0.25 eps, random
start) is run on the harmful prompts of each wrapper separately: the two held-out wrappers of the
seed (``val/robust_refusal`` averages these) and the six training wrappers (the SFT records'
harmful prompts, seen in training). The training-time adversarial loss (``train/adv_loss``, the
refusal's loss under the 5-step training attack) is recorded per step.

It separates three explanations of a weak seed: a training attack that stays weak (its loss
would stay high or drop to 0 early), an evaluation attack that is stronger on longer prompts
(robust refusal would fall with prompt length on training wrappers too), and robustness that
does not carry over from the training wrappers to the held-out ones.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sia_wrapper_generalization.py --seeds 0 1 2 3 4   # -> benchmarks/results/sia_wrapper_generalization.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._seed_sweep import parse_seed_sweep_args, write_results
from benchmarks.experiments.sia import fit_alignment, last_validation


class _AdversarialLossTrace(pl.Callback):
    """``train/adv_loss`` after every training step that logged it."""

    def __init__(self) -> None:
        self.values: list[float] = []

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        value = trainer.callback_metrics.get("train/adv_loss")
        if value is not None:
            self.values.append(float(value))


def run_seed(seed: int) -> dict[str, Any]:
    """Train the adversarial arm for ``seed`` and attack each wrapper's harmful prompts."""
    start = time.perf_counter()
    trace = _AdversarialLossTrace()
    trainer, module, dm = fit_alignment(seed, "adversarial", callbacks=[trace])
    validation = last_validation(trainer)
    assert dm.data is not None
    bos = dm.tokenizer.bos_token_id
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for split, records in (("held-out", dm.data.val_harmful), ("training", [r for r in dm.data.sft if r.get("harmful")])):
        for r in records:
            groups.setdefault((split, r["wrapper"]), []).append(
                {"kind": "harmful", "prompt_ids": [bos, *dm.encode(r["prompt"])], "answer_ids": dm.refusal_ids})
    wrappers = []
    for (split, wrapper), records in groups.items():
        dm.val_records = records
        metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
        wrappers.append({"split": split, "wrapper": wrapper, "prompts": len(records),
                         "mean_prompt_tokens": statistics.mean(len(r["prompt_ids"]) for r in records),
                         "refusal": metrics["val/refusal"], "robust_refusal": metrics["val/robust_refusal"]})
    losses = trace.values
    return {"seed": seed, "validation": validation, "train_adv_loss_first_10_steps": statistics.mean(losses[:10]),
            "train_adv_loss_last_10_steps": statistics.mean(losses[-10:]), "train_adv_loss_every_10th": losses[::10],
            "wrappers": wrappers, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    args = parse_seed_sweep_args(__doc__.splitlines()[0], "sia_wrapper_generalization.json")
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(seed))
        row = rows[-1]
        print(seed, row["validation"], [(w["split"], w["wrapper"], round(w["robust_refusal"], 2)) for w in row["wrappers"]],
              flush=True)
        write_results(args.out, {
            "command": "OMP_NUM_THREADS=1 python benchmarks/sia_wrapper_generalization.py --seeds "
                       + " ".join(map(str, args.seeds)),
            "settings": {"recipe": "benchmarks/experiments/sia.py run_alignment(seed, 'adversarial')",
                         "evaluation": "embedding PGD-10 (the module's validation attack) on each wrapper's "
                                       "harmful prompts; training wrappers use the SFT records' harmful prompts"},
            "seeds": rows})


if __name__ == "__main__":
    main()
