"""SIA (Zhai et al., arXiv 2603.16137): Synthesize knowledge, Inject it by depth up-scaling, Align with adversarial training."""

from robust_lightning.lightning_modules.sia.datamodule import SIADataModule
from robust_lightning.lightning_modules.sia.lightning_module import SIAAlign, SIAInject
from robust_lightning.lightning_modules.sia.model import (
    build_causal_lm,
    build_word_tokenizer,
    depth_upscale,
    embedding_noise,
    embedding_pgd,
    freeze_for_injection,
    gathered_parameters,
    greedy_generate,
    shard_causal_lm,
    suffix_search,
)
from robust_lightning.lightning_modules.sia.synthesize import (
    generate_knowledge_graph,
    generate_query_log,
    load_dataset,
    synthesize,
    write_dataset,
)

__all__ = [
    "SIAAlign",
    "SIADataModule",
    "SIAInject",
    "build_causal_lm",
    "build_word_tokenizer",
    "depth_upscale",
    "embedding_noise",
    "embedding_pgd",
    "freeze_for_injection",
    "gathered_parameters",
    "generate_knowledge_graph",
    "generate_query_log",
    "greedy_generate",
    "load_dataset",
    "shard_causal_lm",
    "suffix_search",
    "synthesize",
    "write_dataset",
]
