"""DDoS flow detection: standard vs constrained adversarial training and its control, in and across datasets.

Every run trains a :class:`DDoSDetector` on synthetic CIC-IDS2017-style flows (long CSV
headers, :data:`FLOW_PROFILES["cicids2017"]`) and tests it on the held-out 2017-style split and
on synthetic CSE-CIC-IDS2018-style flows (short headers; other RTTs, MSS, TCP stacks, attack
tools and traffic mix: a distribution shift), never seen in training. Both go through the real
CSV loader. Metrics: detection recall/precision/F1 (attack = positive class) on clean flows and
with every attack flow replaced by the constrained attack's output at each budget ``eps``.
The last epoch is tested (no checkpoint selection).

Arms (``--recipes``): ``standard``, ``constrained_at`` and its control ``random_feasible``: the
standard recipe plus ``AdversarialTraining(RandomFeasibleFlows(eps))``, which replaces each
training attack flow by the feasible flow of one uniform point of the same control box and
budget (no search, no gradient): the augmentation of constrained AT without its worst case.

``--setting ci`` runs the effect test's shorter setting instead
(``tests/lightning_modules/ddos/test_effect.py``, :func:`ci_detection_under_attack`: MLP 64-32 on
1,500 flows whose synthetic corpus *and* split are drawn from the seed, 6 epochs, in-dataset
only) and writes ``benchmarks/results/ddos_effect_test.json``.

Usage::

    python benchmarks/ddos_synthetic.py                          # MLP + CNN x 3 arms x 3 seeds
    python benchmarks/ddos_synthetic.py --models mlp --seeds 0 --epochs 4
    python benchmarks/ddos_synthetic.py --seeds 0 --audit --out benchmarks/results/ddos_synthetic_audit.json
    python benchmarks/ddos_synthetic.py --setting ci --seeds 0 1 2 3 4   # the effect test's setting

Writes ``benchmarks/results/ddos_synthetic.json`` (settings and one record per run) and prints a
Markdown table of mean +- sample std (``ddof=1``) over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust_lightning import AdversarialTraining, Attack
from robust_lightning.attacks.constrained import CONTROLS, ConstrainedPGD, FlowConstraints, constrained_pgd
from robust_lightning.datamodules.domain_generalization import (
    DomainGeneralizationDataModule,
)
from robust_lightning.datamodules.flows import DEFAULT_FEATURES, FlowDataModule
from robust_lightning.lightning_modules.ddos import DDoSDetector, TabularCNN, TabularMLP
from robust_lightning.lightning_modules.ddos.lightning_module import margin_loss

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE, TARGET = "cic2017", "cse2018"
CONTROL = "random_feasible"
ARMS = ("standard", CONTROL, "constrained_at")
CI_KEY = "test/recall_adv/cpgd10_eps0.7"


class RandomFeasibleFlows(Attack):
    """Constrained AT's control: each flow moved to one uniform point of the attacker's control box.

    Same feasible set and budget as :class:`ConstrainedPGD` (``u ~ U[0, eps]^4`` through
    :meth:`FlowConstraints.apply`), but no corner or random search and no gradient step, so
    training on it is augmentation with feasible perturbations that are not the worst case.
    """

    kind = CONTROL

    def __init__(self, eps: float = 0.7, features: Any = None, max_payload: int = 1460,
                 max_gap_us: float = 1e6) -> None:
        # The budget is a control box, not an L-p ball: no norm in the name (as ConstrainedPGD).
        super().__init__(eps=eps, norm="linf", bounds=(-float("inf"), float("inf")), name=f"{CONTROL}_eps{eps:g}")
        self.constraints = FlowConstraints(features, max_payload=max_payload, max_gap_us=max_gap_us)

    def __call__(self, loss_fn: Any, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            u = torch.rand(x.shape[0], len(CONTROLS), generator=generator, device=x.device, dtype=x.dtype)
            return self.constraints.apply(x.detach(), u * self.eps, self.eps)


def arm_callbacks(arm: str, eps: float) -> list[pl.Callback]:
    """The control's augmentation callback; the other arms' attacks come from their recipe."""
    return [AdversarialTraining(RandomFeasibleFlows(eps=eps))] if arm == CONTROL else []


def ci_detection_under_attack(arm: str, seed: int, root: Path, flows: int = 1500, epochs: int = 6) -> dict[str, float]:
    """The effect test's run: corpus and split of ``seed``, MLP 64-32, eps 0.7, 6 epochs, last epoch tested."""
    pl.seed_everything(seed, verbose=False)
    data = FlowDataModule(str(root / f"cicids2017_seed{seed}"), synthetic="cicids2017", synthetic_flows=flows,
                          synthetic_files=1, synthetic_seed=seed, seed=seed, batch_size=64, eval_batch_size=1024)
    model = DDoSDetector(TabularMLP(len(DEFAULT_FEATURES), hidden=(64, 32)),
                         recipe="standard" if arm == CONTROL else arm, eps=0.7, steps=3, search=8,
                         eval_eps=[0.7], eval_steps=10, eval_restarts=2, eval_search=32,
                         optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=1e-4))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=arm_callbacks(arm, 0.7))
    trainer.fit(model, datamodule=data)
    (results,) = trainer.test(model, datamodule=data, verbose=False)
    return results


def make_data(args: argparse.Namespace, seed: int) -> DomainGeneralizationDataModule:
    """2017-style source (train/val/test split by ``seed``) and a 2018-style target (test only)."""
    root = Path(args.data_dir)
    source = FlowDataModule(str(root / "cicids2017"), synthetic="cicids2017", synthetic_flows=args.flows,
                            synthetic_seed=0, seed=seed, batch_size=args.batch_size, eval_batch_size=2048)
    target = FlowDataModule(str(root / "csecicids2018"), synthetic="csecicids2018", synthetic_flows=args.target_flows,
                            synthetic_seed=1, seed=seed, val_fraction=0.0, test_fraction=0.5, eval_batch_size=2048)
    return DomainGeneralizationDataModule(source, {TARGET: target}, source_name=SOURCE)


def make_model(args: argparse.Namespace, kind: str, arm: str) -> DDoSDetector:
    width = len(DEFAULT_FEATURES)
    network = TabularMLP(width, hidden=(128, 64)) if kind == "mlp" else TabularCNN(width, channels=(16, 32), hidden=64)
    return DDoSDetector(network, recipe="standard" if arm == CONTROL else arm, eps=args.eps, steps=args.steps, search=args.search,
                        eval_eps=args.eval_eps, eval_steps=args.eval_steps, eval_restarts=args.eval_restarts,
                        eval_search=args.eval_search,
                        optimizer=lambda p: torch.optim.AdamW(p, lr=args.lr, weight_decay=1e-4))


def run(args: argparse.Namespace, kind: str, recipe: str, seed: int) -> dict[str, Any]:
    pl.seed_everything(seed, verbose=False)
    data = make_data(args, seed)
    model = make_model(args, kind, recipe)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=args.epochs, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=arm_callbacks(recipe, args.eps))
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    train_s = time.perf_counter() - start
    metrics = {k: v for per_loader in trainer.test(model, datamodule=data, verbose=False) for k, v in per_loader.items()}
    record = {"model": kind, "recipe": recipe, "seed": seed, "train_s": round(train_s, 1)}
    record.update({k: round(float(v), 4) for k, v in metrics.items() if "/loss" not in k})
    if args.audit:
        record.update(audit(model, data.source, args, seed))
    return record


@torch.no_grad()
def _recall(model: DDoSDetector, x: torch.Tensor) -> float:
    return round(float((model(x).argmax(dim=1) == 1).float().mean()), 4)


def audit(model: DDoSDetector, source: FlowDataModule, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Attack strength at eps = --eps on the 2017-style test attack flows: how far is the evaluation
    attack from plain PGD, a stronger PGD and a gradient-free random search of the control box?"""
    x, y, _ = source.splits["test"]
    flows = x[y == 1]
    target = torch.ones(len(flows), dtype=torch.long)
    constraints = model.eval_attacks[0].constraints
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def loss(z: torch.Tensor) -> torch.Tensor:
        return margin_loss(model(z), target)

    out = {"audit/clean": _recall(model, flows)}
    settings = {"pgd10": {"steps": 10}, "eval_attack": {"steps": args.eval_steps, "restarts": args.eval_restarts,
                                                          "search": args.eval_search},
                "strong": {"steps": 20, "restarts": 5, "search": 512}}
    for name, kwargs in settings.items():
        x_adv = constrained_pgd(loss, flows, constraints, eps=args.eps, generator=torch.Generator().manual_seed(seed),
                                **kwargs)
        out[f"audit/{name}"] = _recall(model, x_adv)
        out[f"audit/{name}_violations"] = sum(constraints.violations(x_adv, flows, args.eps).values())
    generator = torch.Generator().manual_seed(seed + 1)
    detected = torch.ones(len(flows), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(args.audit_samples):
            u = torch.rand(len(flows), 4, generator=generator) * args.eps
            detected &= model(constraints.apply(flows, u, args.eps)).argmax(dim=1) == 1
    out[f"audit/random{args.audit_samples}"] = round(float(detected.float().mean()), 4)
    return out


def attack_name(eps: float, args: argparse.Namespace) -> str:
    return ConstrainedPGD(eps=eps, steps=args.eval_steps).name


def table(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def cell(rows: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in rows if key in r]
        if not values:
            return "-"
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {spread:.3f}"

    lines = []
    for domain, title in ((SOURCE, "in-dataset (2017-style test split)"), (TARGET, "cross-dataset (2018-style)")):
        head = ["model", "recipe", "clean recall", "clean F1"]
        for eps in args.eval_eps:
            head += [f"recall eps={eps:g}", f"F1 eps={eps:g}"]
        lines += [f"\n**{title}**\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for kind in args.models:
            for recipe in args.recipes:
                rows = [r for r in records if r["model"] == kind and r["recipe"] == recipe]
                cells = [kind, recipe, cell(rows, f"test/recall/{domain}"), cell(rows, f"test/f1/{domain}")]
                for eps in args.eval_eps:
                    name = attack_name(eps, args)
                    cells += [cell(rows, f"test/recall_adv/{name}/{domain}"), cell(rows, f"test/f1_adv/{name}/{domain}")]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def audit_table(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    keys = ["audit/clean", "audit/pgd10", "audit/eval_attack", "audit/strong", f"audit/random{args.audit_samples}"]
    head = ["model", "recipe", "clean", "PGD-10 (1 run)", "eval attack", "strong PGD", f"random search ({args.audit_samples})"]
    lines = [f"\n**attack strength, recall of 2017-style test attack flows at eps={args.eps:g}**\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        if "audit/clean" in r:
            lines.append("| " + " | ".join([r["model"], f"{r['recipe']} (seed {r['seed']})"] +
                                           [f"{r[k]:.3f}" for k in keys]) + " |")
    return "\n".join(lines)


def ci_main(args: argparse.Namespace, out: Path) -> None:
    """Every arm of :func:`ci_detection_under_attack` per seed, one JSON row per seed."""
    rows = []
    for seed in args.seeds:
        row: dict[str, Any] = {"seed": seed}
        for arm in args.recipes:
            start = time.perf_counter()
            results = ci_detection_under_attack(arm, seed, Path(args.data_dir))
            row[arm] = {"recall": round(float(results["test/recall"]), 4), "attacked_recall": round(float(results[CI_KEY]), 4),
                        "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"setting": "ci", "flows": 1500, "epochs": 6, "model": "mlp 64-32", "eps": 0.7, "attacked": CI_KEY,
                "threads": args.threads, "torch": torch.__version__}
    out.write_text(json.dumps({"settings": settings, "runs": rows}, indent=1) + "\n")
    print("| seed | " + " | ".join(f"recall, {a} | attacked recall, {a}" for a in args.recipes) + " |")
    print("|---|" + "---|---|" * len(args.recipes))
    for row in rows:
        print(f"| {row['seed']} | " + " | ".join(f"{row[a]['recall']:.3f} | {row[a]['attacked_recall']:.3f}"
                                                for a in args.recipes) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--recipes", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--setting", default="readme", choices=["readme", "ci"],
                        help="readme: the README tables; ci: the effect test's shorter setting")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--flows", type=int, default=6000, help="2017-style flows (train/val/test)")
    parser.add_argument("--target-flows", type=int, default=4000, help="2018-style flows (half tested)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eps", type=float, default=0.7, help="training budget (log-growth)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--search", type=int, default=16)
    parser.add_argument("--eval-eps", nargs="+", type=float, default=[0.35, 0.7, 1.0])
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--eval-restarts", type=int, default=3)
    parser.add_argument("--eval-search", type=int, default=64)
    parser.add_argument("--audit", action="store_true",
                        help="also measure attack strength (plain PGD, strong PGD, random search) at --eps")
    parser.add_argument("--audit-samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "robust_lightning_ddos_data"),
                        help="scratch folder the synthetic CSVs are generated into (fixed seeds; the path does not change the numbers); default: outside the repository, under the temp dir")
    parser.add_argument("--out", default=None,
                        help="default: benchmarks/results/ddos_synthetic.json (ddos_effect_test.json with --setting ci)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_MODE", "offline")
    if args.setting == "ci":
        ci_main(args, Path(args.out or RESULTS / "ddos_effect_test.json"))
        return
    out = Path(args.out or RESULTS / "ddos_synthetic.json")
    records: list[dict[str, Any]] = []
    if out.exists():  # resume: runs already in the file are kept
        previous = json.loads(out.read_text())
        if previous.get("settings") == {k: v for k, v in vars(args).items() if k not in ("out", "models", "recipes", "seeds")}:
            records = previous["runs"]
    done = {(r["model"], r["recipe"], r["seed"]) for r in records}
    for kind in args.models:
        for recipe in args.recipes:
            for seed in args.seeds:
                if (kind, recipe, seed) in done:
                    continue
                record = run(args, kind, recipe, seed)
                records.append(record)
                print(json.dumps(record), flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                settings = {k: v for k, v in vars(args).items() if k not in ("out", "models", "recipes", "seeds")}
                out.write_text(json.dumps({"settings": settings, "runs": records}, indent=1))
    print(table(records, args))
    if args.audit:
        print(audit_table(records, args))


if __name__ == "__main__":
    main()
