"""The paper's training recipes and the optimizer, loss and metrics they compile into a model."""

from __future__ import annotations

import dataclasses
import logging

import keras

from keras_vit.schedules import PerUpdate, WarmupDecay

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Recipe:
    """Every hyper-parameter of a training run that is not the model or the data.

    `weight_decay` is decoupled (AdamW; Keras applies `lr * weight_decay * w`
    per step) and touches kernels only, never biases, norms, the class token
    or position embeddings. `steps` count optimizer updates; with
    `grad_accum_steps` > 1 each update averages that many micro-batches of
    `batch_size / grad_accum_steps` examples.
    """

    optimizer: str  # "adam" or "sgd"
    learning_rate: float
    schedule: str  # "linear" or "cosine" decay after warmup
    warmup_steps: int
    weight_decay: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    momentum: float = 0.9
    global_clipnorm: float | None = 1.0
    label_smoothing: float = 0.0
    dropout_rate: float = 0.0
    batch_size: int = 512
    grad_accum_steps: int = 1

    def build_optimizer(self, model: keras.Model, total_steps: int) -> keras.optimizers.Optimizer:
        """The optimizer with its schedule; kernels alone are decayed."""
        warmup = self.warmup_steps
        if warmup >= total_steps:
            warmup = total_steps // 10
            logger.warning("warmup_steps %d >= total steps %d: warming up for %d steps.", self.warmup_steps, total_steps, warmup)
        schedule = WarmupDecay(self.learning_rate, warmup, total_steps, decay=self.schedule)
        if self.grad_accum_steps > 1:
            schedule = PerUpdate(schedule, self.grad_accum_steps)  # Keras counts micro-batches
        common = dict(
            learning_rate=schedule,
            global_clipnorm=self.global_clipnorm or None,  # 0 turns clipping off
            gradient_accumulation_steps=self.grad_accum_steps if self.grad_accum_steps > 1 else None,
        )
        if self.optimizer == "adam":
            if self.weight_decay:
                optimizer = keras.optimizers.AdamW(
                    weight_decay=self.weight_decay, beta_1=self.beta_1, beta_2=self.beta_2, **common
                )
                optimizer.exclude_from_weight_decay(var_list=excluded_from_weight_decay(model))
                return optimizer
            return keras.optimizers.Adam(beta_1=self.beta_1, beta_2=self.beta_2, **common)
        if self.optimizer == "sgd":
            if self.weight_decay:
                raise ValueError("The sgd recipe has no weight decay; use --optimizer adam for weight decay.")
            return keras.optimizers.SGD(momentum=self.momentum, **common)
        raise ValueError(f"Unknown optimizer {self.optimizer!r}; expected 'adam' or 'sgd'.")

    def compile(
        self, model: keras.Model, total_steps: int, jit_compile: bool | str = "auto", steps_per_execution: int = 1
    ) -> None:
        """Compiles `model` with this recipe's optimizer, smoothed cross-entropy and accuracy."""
        model.compile(
            optimizer=self.build_optimizer(model, total_steps),
            loss=cross_entropy(model, self.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )


RECIPES: dict[str, Recipe] = {
    # Pre-training (paper section 4.1 / appendix B.1): Adam, batch 4096, decoupled weight decay 0.1,
    # 10k linear warmup steps then linear decay, dropout 0.1; gradient clipping at global norm 1.
    "pretrain": Recipe(
        optimizer="adam",
        learning_rate=1e-3,
        schedule="linear",
        warmup_steps=10_000,
        weight_decay=0.1,
        label_smoothing=0.1,
        dropout_rate=0.1,
        batch_size=4096,
    ),
    # Fine-tuning (appendix B.1.1): SGD momentum 0.9, no weight decay, cosine decay with warmup,
    # gradient clipping at global norm 1, batch 512. The head follows keras_vit.load_weights' policy:
    # kept when the checkpoint's fits the task, else a new zero-initialised head.
    "finetune": Recipe(
        optimizer="sgd",
        learning_rate=0.03,
        schedule="cosine",
        warmup_steps=500,
        batch_size=512,
    ),
}


def build_recipe(name: str = "pretrain", **overrides) -> Recipe:
    """A copy of a named recipe with some values overridden (None values are ignored)."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; expected one of {', '.join(RECIPES)}.")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"Unknown recipe fields {sorted(unknown)}; fields are {sorted(fields)}.")
    return dataclasses.replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})


def cross_entropy(model, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Categorical cross-entropy on the model's outputs: logits, unless its head ends in a softmax."""
    from_logits = model.classifier_activation in (None, "linear")
    if not from_logits and model.classifier_activation != "softmax":
        raise ValueError(f"Cannot train a classifier whose head ends in {model.classifier_activation!r}.")
    return keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)


def excluded_from_weight_decay(model: keras.Model) -> list[keras.Variable]:
    """Every trainable variable but the kernels: biases, norm scales, class token, position embeddings."""
    return [v for v in model.trainable_variables if v.name != "kernel"]
