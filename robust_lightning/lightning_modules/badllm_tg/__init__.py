"""BadLLM-TG (Zhang et al.): RL-trained LLM trigger generation to defend text classifiers."""

from robust_lightning.lightning_modules.badllm_tg.lightning_module import (
    BackdoorDefense,
    TextClassifier,
)
from robust_lightning.lightning_modules.badllm_tg.model import (
    ReplayPool,
    TriggerGenerator,
    build_hf_model,
    insert_trigger,
    trigger_reward,
)

__all__ = [
    "BackdoorDefense",
    "ReplayPool",
    "TextClassifier",
    "TriggerGenerator",
    "build_hf_model",
    "insert_trigger",
    "trigger_reward",
]
