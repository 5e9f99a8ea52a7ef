"""BadLLM-TG evidence: CACC/ASR of a poisoned victim before and after the defence.

Generated sentiment corpus (``generate_sentiment_corpus``, 2000 sentences), tiny BERT victim
(hidden 32, 1 layer) trained 5 epochs on poison rate 0.2 / target label 1, tiny GPT-2 trigger
generator, defence = 5 rounds on 600 clean training samples with the ``BackdoorDefense`` defaults
(1-2 pooled triggers per triggered copy, clean originals kept, pool temperature 0.02; see
``robust_lightning/lightning_modules/badllm_tg/pipeline.py``). The options reproduce the
ablations of the README (e.g. ``--rounds 3 --max-triggers 1 --pool-temperature 0.1 --replace``
is the previous behaviour).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/badllm_tg_evidence.py --attacks badnets addsent --seeds 0 1 2 3
    OMP_NUM_THREADS=1 python benchmarks/badllm_tg_evidence.py --seeds 0 --defense-ratio 0 \
        --out benchmarks/results/badllm_tg_clean_finetune_control.json   # the control

Writes ``benchmarks/results/badllm_tg_evidence.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.experiments.badllm_tg import run_badllm_tg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", nargs="+", default=["badnets", "addsent"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--max-words", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="defence rounds (epochs)")
    parser.add_argument("--max-triggers", type=int, default=2, help="BackdoorDefense max_triggers_per_sample")
    parser.add_argument("--pool-temperature", type=float, default=0.02)
    parser.add_argument("--defense-ratio", type=float, default=0.5,
                        help="BackdoorDefense defense_ratio; 0 is the clean fine-tuning control (same samples "
                             "and epochs, no triggered copies)")
    parser.add_argument("--replace", action="store_true",
                        help="keep_clean=False: triggered samples replace their clean originals (ablation)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "badllm_tg_evidence.json"))
    args = parser.parse_args()
    kwargs = {"max_words": args.max_words, "max_triggers_per_sample": args.max_triggers,
              "pool_temperature": args.pool_temperature, "keep_clean": not args.replace,
              "defense_ratio": args.defense_ratio}
    runs = [run_badllm_tg(a, s, defense_epochs=args.rounds, defense_kwargs=kwargs)
            for a in args.attacks for s in args.seeds]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**kwargs, "rounds": args.rounds, "runs": runs}, indent=1))
    print("| attack | seed | CACC before | ASR before | CACC after | ASR after | ASR reduction |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        b, a = r["before"], r["after"]
        red = 1 - a["asr"] / b["asr"] if b["asr"] > 0 else float("nan")
        print(f"| {r['attack']} | {r['seed']} | {100 * b['cacc']:.1f} | {100 * b['asr']:.1f} | "
              f"{100 * a['cacc']:.1f} | {100 * a['asr']:.1f} | {100 * red:.0f}% |")
    for attack in args.attacks:
        sub = [r for r in runs if r["attack"] == attack]

        def mean(key: str, when: str, sub: list = sub) -> float:
            return statistics.mean(r[when][key] for r in sub)

        print(f"| {attack} | mean | {100 * mean('cacc', 'before'):.1f} | {100 * mean('asr', 'before'):.1f} | "
              f"{100 * mean('cacc', 'after'):.1f} | {100 * mean('asr', 'after'):.1f} | |")


if __name__ == "__main__":
    main()
