"""Training keras_vit models with model.fit: the paper's recipes, tf.data input, tf.distribute, few-shot evaluation."""

from training.distribute import enable_multi_worker_fit, make_strategy
from training.fewshot import FewShotEvaluation, fewshot_accuracies
from training.pipeline import Preprocessing, eval_dataset, train_dataset
from training.recipes import RECIPES, Recipe, build_recipe, excluded_from_weight_decay
from keras_vit.schedules import WarmupDecay

__all__ = [
    "FewShotEvaluation",
    "Preprocessing",
    "RECIPES",
    "Recipe",
    "WarmupDecay",
    "build_recipe",
    "enable_multi_worker_fit",
    "eval_dataset",
    "excluded_from_weight_decay",
    "fewshot_accuracies",
    "make_strategy",
    "train_dataset",
]
