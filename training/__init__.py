"""Training keras_vit models with model.fit: the paper's recipes, tf.data input, tf.distribute, few-shot evaluation.

The names below are imported on first use, so that `python -m keras_vit.training.fewshot`
(and the other commands) run their module once, and `--help` needs no TensorFlow.
"""

if __name__ == "training":  # `python -m training.X` in a checkout: the module runs as a script, once
    from keras_vit.cli import warn_checkout_name

    warn_checkout_name(__name__)

from keras_vit._lazy import lazy_attributes

_EXPORTS = {
    "FewShotEvaluation": "keras_vit.training.callbacks",
    "fewshot_accuracies": "keras_vit.training.fewshot",
    "Preprocessing": "keras_vit.training.pipeline",
    "eval_dataset": "keras_vit.training.pipeline",
    "train_dataset": "keras_vit.training.pipeline",
    "RunConfig": "keras_vit.training.config",
    "RECIPES": "keras_vit.training.recipes",
    "Recipe": "keras_vit.training.recipes",
    "build_recipe": "keras_vit.training.recipes",
    "excluded_from_weight_decay": "keras_vit.training.recipes",
    "enable_multi_worker_fit": "keras_vit.training.distribute",
    "make_strategy": "keras_vit.training.distribute",
    "WarmupDecay": "keras_vit.schedules",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(globals(), _EXPORTS)
