"""Training keras_vit models with model.fit: the paper's recipes, tf.data input, tf.distribute, few-shot evaluation.

The names below are imported on first use, so that `python -m training.fewshot`
(and the other commands) run their module once, and `--help` needs no TensorFlow.
"""

import importlib

_EXPORTS = {
    "FewShotEvaluation": "training.fewshot",
    "fewshot_accuracies": "training.fewshot",
    "Preprocessing": "training.pipeline",
    "eval_dataset": "training.pipeline",
    "train_dataset": "training.pipeline",
    "RECIPES": "training.recipes",
    "Recipe": "training.recipes",
    "build_recipe": "training.recipes",
    "excluded_from_weight_decay": "training.recipes",
    "enable_multi_worker_fit": "training.distribute",
    "make_strategy": "training.distribute",
    "WarmupDecay": "keras_vit.schedules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
