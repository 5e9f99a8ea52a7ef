"""BadLLM-TG evidence: CACC/ASR of a poisoned victim before and after the defence (or its control).

Generated sentiment corpus (``generate_sentiment_corpus``, 2000 sentences; the seed varies the
corpus, the split, the poisoned subset and every model init), tiny BERT victim (hidden 32,
1 layer) trained 5 epochs on poison rate 0.2 / target label 1, tiny GPT-2 trigger generator over
a character-level vocabulary built from the defender's clean training text (never the victim's
tokenizer, which holds the trigger words), defence = ``--rounds`` rounds on 600 clean training
samples (``run_badllm_tg`` in ``benchmarks/experiments/badllm_tg.py``). The defaults are the
settings of the method README's table and of ``tests/lightning_modules/badllm_tg/test_effect.py``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/badllm_tg_evidence.py --seeds 0 1 2 3 4 5 6 7 8 9
    OMP_NUM_THREADS=1 python benchmarks/badllm_tg_evidence.py --seeds 0 1 2 3 4 5 6 7 8 9 --defense-ratio 0 \\
        --out benchmarks/results/badllm_tg_clean_finetune_control.json   # the control
    OMP_NUM_THREADS=1 python benchmarks/badllm_tg_evidence.py --attacks addsent --seeds 0 2 5 \
        --out benchmarks/results/badllm_tg_addsent_variants.json --variant NAME --set lr=0.002  # a variant

Writes ``benchmarks/results/badllm_tg_evidence.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _settings import parse_settings

from benchmarks.experiments.badllm_tg import DEFENSE_EPOCHS, DEFENSE_KWARGS, run_badllm_tg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", nargs="+", default=["badnets", "addsent"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-words", type=int, default=DEFENSE_KWARGS["max_words"],
                        help="longest trigger in generator tokens (characters at character level)")
    parser.add_argument("--rounds", type=int, default=DEFENSE_EPOCHS, help="defence rounds (epochs)")
    parser.add_argument("--num-candidates", type=int, default=DEFENSE_KWARGS["num_candidates"],
                        help="policy samples per REINFORCE update")
    parser.add_argument("--num-explore", type=int, default=DEFENSE_KWARGS["num_explore"],
                        help="samples of the frozen initial policy per update, into the pool only")
    parser.add_argument("--reward-samples", type=int, default=DEFENSE_KWARGS["reward_samples"])
    parser.add_argument("--generator-vocab-size", type=int, default=None,
                        help="BPE vocabulary of the generator (merges from the clean text); default character level")
    parser.add_argument("--max-triggers", type=int, default=DEFENSE_KWARGS["max_triggers_per_sample"],
                        help="BackdoorDefense max_triggers_per_sample")
    parser.add_argument("--pool-temperature", type=float, default=DEFENSE_KWARGS["pool_temperature"])
    parser.add_argument("--defense-ratio", type=float, default=DEFENSE_KWARGS["defense_ratio"],
                        help="BackdoorDefense defense_ratio; 0 is the clean fine-tuning control (same samples "
                             "and epochs, no triggered copies, no generator rounds)")
    parser.add_argument("--replace", action="store_true",
                        help="keep_clean=False: triggered samples replace their clean originals (ablation)")
    parser.add_argument("--text-keyed-pool", action="store_true",
                        help="pool_by_victim_tokens=False: the pool dedups triggers by text (ablation)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other BackdoorDefense argument of DEFENSE_KWARGS, e.g. --set lr=0.002 "
                             "--set repeat_triggers=false (applied after the flags above)")
    parser.add_argument("--variant", default=None,
                        help="store the runs as this named variant in --out, next to the variants already there "
                             "(one JSON of several variants, e.g. benchmarks/results/badllm_tg_variants.json)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "badllm_tg_evidence.json"))
    args = parser.parse_args()
    kwargs = {**DEFENSE_KWARGS, "max_words": args.max_words, "num_candidates": args.num_candidates,
              "num_explore": args.num_explore, "reward_samples": args.reward_samples,
              "generator_vocab_size": args.generator_vocab_size, "max_triggers_per_sample": args.max_triggers,
              "pool_temperature": args.pool_temperature, "keep_clean": not args.replace,
              "defense_ratio": args.defense_ratio, "pool_by_victim_tokens": not args.text_keyed_pool}
    settable = {k: v for k, v in DEFENSE_KWARGS.items() if isinstance(v, (bool, int, float, str)) or v is None}
    kwargs.update(parse_settings(args.set, settable))
    runs = []
    for attack in args.attacks:
        for seed in args.seeds:
            start = time.perf_counter()
            run = run_badllm_tg(attack, seed, defense_epochs=args.rounds, defense_kwargs=kwargs)
            runs.append({**run, "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps({k: run[k] for k in ("attack", "seed", "before", "after")}), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {**kwargs, "rounds": args.rounds, "runs": runs}
    if args.variant is not None:
        variants = json.loads(out.read_text())["variants"] if out.exists() else {}
        record = {"variants": {**variants, args.variant: record}}
    out.write_text(json.dumps(record, indent=1))
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
