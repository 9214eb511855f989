"""The paper's training recipes and the optimizer, loss and metrics they compile into a model.

The table imports without TensorFlow (the command line lists its names);
Keras is imported where a recipe builds something.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Recipe:
    """Every hyper-parameter of a training run that is not the model or the data.

    `weight_decay` is decoupled and coupled to the learning rate (Keras'
    AdamW subtracts `lr * weight_decay * w` per update, as the paper's Adam
    with "weight decay 0.1" did) and touches kernels only, never biases,
    norms, the class token or position embeddings. `steps` count optimizer
    updates; with `grad_accum_steps` > 1 each update averages that many
    micro-batches of `batch_size / grad_accum_steps` examples, and the
    schedule, the weight decay and the moving average advance per update.

    `loss` is "softmax" (categorical cross-entropy, optionally smoothed) or
    "sigmoid" (`keras_vit.losses.SigmoidCrossEntropy`, the loss of the
    released ImageNet-21k models), which goes with `head_bias_init=-10`.
    `dropout_rate=None` keeps the model's own (the reference configs'
    per-variant value). `ema_momentum` turns on Polyak averaging (Keras'
    `use_ema`); the averaged weights replace the trained ones at the end of
    `fit`.

    Adam's epsilon is optax's 1e-8 (Keras' default is 1e-7); Keras adds it to
    the square root of the uncorrected second moment, optax to the corrected
    one: the two differ by a factor sqrt(1 - beta_2^t) on epsilon alone.
    """

    optimizer: str  # "adam" or "sgd"
    learning_rate: float
    schedule: str  # "linear" or "cosine" decay after warmup
    warmup_steps: int
    weight_decay: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    momentum: float = 0.9
    global_clipnorm: float | None = None
    label_smoothing: float = 0.0
    loss: str = "softmax"
    head_bias_init: float = 0.0
    dropout_rate: float | None = None
    batch_size: int = 512
    grad_accum_steps: int = 1
    ema_momentum: float | None = None
    task: str = "classification"  # or "masked_patch": self-supervised, `keras_vit.MaskedPatchPrediction`
    source: str = ""  # where the values come from

    def warmup_for(self, total_steps: int) -> int:
        """The warm-up steps of a run of `total_steps` updates: the recipe's, or a tenth of a run shorter than them."""
        return self.warmup_steps if self.warmup_steps < total_steps else total_steps // 10

    def build_optimizer(self, model: keras.Model, total_steps: int, layer_decay: float | None = None
                        ) -> keras.optimizers.Optimizer:
        """The optimizer with its schedule; kernels alone are decayed. `layer_decay`: each layer's learning rate
        scaled as `keras_vit.layer_decay` says (a VisionTransformer's)."""
        import keras

        from keras_vit.layer_decay import WITH_LAYER_DECAY, layer_multipliers

        from keras_vit.schedules import PerUpdate, WarmupDecay

        warmup = self.warmup_for(total_steps)
        if warmup != self.warmup_steps:
            logger.warning("warmup_steps %d >= total steps %d: warming up for %d steps.", self.warmup_steps, total_steps, warmup)
        schedule = WarmupDecay(self.learning_rate, warmup, total_steps, decay=self.schedule)
        accumulate = self.grad_accum_steps > 1
        if accumulate:
            schedule = PerUpdate(schedule, self.grad_accum_steps)  # Keras counts micro-batches
        common = dict(
            learning_rate=schedule,
            global_clipnorm=self.global_clipnorm or None,  # 0 turns clipping off
            gradient_accumulation_steps=self.grad_accum_steps if accumulate else None,
        )
        if self.ema_momentum is not None:
            # Keras updates the average on every micro-batch, and the weights change once every k of them:
            # momentum ** (1 / k), applied k times, is momentum once per update. (Until k - 1 micro-batches
            # have followed it, the newest update weighs 1 - momentum ** (1 / k) instead of 1 - momentum.)
            common.update(use_ema=True, ema_momentum=self.ema_momentum ** (1.0 / self.grad_accum_steps))
        if self.optimizer == "adam":
            cls = keras.optimizers.AdamW if self.weight_decay else keras.optimizers.Adam
            common.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
            if self.weight_decay:
                common["weight_decay"] = self.weight_decay
        elif self.optimizer == "sgd":
            if self.weight_decay:
                raise ValueError("The sgd recipe has no weight decay; use --optimizer adam for weight decay.")
            cls = keras.optimizers.SGD
            common["momentum"] = self.momentum
        else:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; expected 'adam' or 'sgd'.")
        if layer_decay is not None:
            cls, common["lr_multipliers"] = WITH_LAYER_DECAY[cls], layer_multipliers(model, layer_decay)
        optimizer = cls(**common)
        if self.weight_decay:
            optimizer.exclude_from_weight_decay(var_list=excluded_from_weight_decay(model))
        return optimizer

    def compile(
        self, model: keras.Model, total_steps: int, jit_compile: bool | str = "auto", steps_per_execution: int = 1,
        layer_decay: float | None = None,
    ) -> None:
        """Compiles `model` with this recipe's optimizer, loss and top-1 accuracy.

        For the masked patch task: the cross-entropy of the colour classes and
        their accuracy, both over the corrupted patches only (the batches'
        sample weights).

        `jit_compile` is TensorFlow's choice between XLA and a graph; JAX has
        no graph mode (uncompiled, it runs op by op, 15x slower on the tiny
        models), so there the step is always compiled.
        """
        import keras

        if keras.backend.backend() == "jax":
            jit_compile = True
        if self.task == "masked_patch":
            if self.loss != "softmax" or self.label_smoothing:
                raise ValueError("Masked patch prediction trains with the plain softmax loss (no sigmoid, no smoothing).")
            losses = dict(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
                weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            )
        elif self.task == "classification":
            losses = dict(
                loss=classification_loss(model, self.loss, self.label_smoothing),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            )
        else:
            raise ValueError(f"Unknown task {self.task!r}; expected 'classification' or 'masked_patch'.")
        model.compile(
            optimizer=self.build_optimizer(model, total_steps, layer_decay),
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
            **losses,
        )


#: The named recipes. Values marked "paper" are its Table 3 / appendix B.1; "reference" are
#: google-research/vision_transformer's or big_vision's published configs; "ours" are keras_vit's choices.
RECIPES: dict[str, Recipe] = {
    # Paper Table 3, ViT-B/{16,32} on JFT-300M: Adam, lr 8e-4, linear decay, weight decay 0.1, no dropout,
    # batch 4096, 10k warmup steps, 7 epochs (pass --epochs/--steps). Reference: the sigmoid loss with the head
    # bias at -10 (as the released ImageNet-21k models were trained); add --representation_size 768 for their
    # pre-logits layer. No clipping: the paper clips on ImageNet only.
    "jft": Recipe(
        optimizer="adam", learning_rate=8e-4, schedule="linear", warmup_steps=10_000, weight_decay=0.1,
        dropout_rate=0.0, batch_size=4096, loss="sigmoid", head_bias_init=-10.0,
        source="paper Table 3 (JFT-300M, B/16); loss and head bias: reference",
    ),
    # Paper Table 3, ViT-B/{16,32} and L on ImageNet-21k: Adam, lr 1e-3, linear decay, weight decay 0.03,
    # dropout 0.1, batch 4096, 10k warmup, 90 epochs; sigmoid loss and head bias -10 as above.
    "imagenet21k": Recipe(
        optimizer="adam", learning_rate=1e-3, schedule="linear", warmup_steps=10_000, weight_decay=0.03,
        dropout_rate=0.1, batch_size=4096, loss="sigmoid", head_bias_init=-10.0,
        source="paper Table 3 (ImageNet-21k); loss and head bias: reference",
    ),
    # Paper Table 3, ViT-* on ImageNet from scratch: Adam, lr 3e-3, cosine decay, weight decay 0.3, dropout 0.1,
    # batch 4096, 10k warmup, 300 epochs, gradient clipping at global norm 1 (Table 3's caption).
    "imagenet1k": Recipe(
        optimizer="adam", learning_rate=3e-3, schedule="cosine", warmup_steps=10_000, weight_decay=0.3,
        dropout_rate=0.1, batch_size=4096, global_clipnorm=1.0,
        source="paper Table 3 (ImageNet)",
    ),
    # Fine-tuning, paper appendix B.1.1 and vit_jax/configs/common.py: SGD momentum 0.9, no weight decay, cosine
    # decay after 500 warmup steps, lr 0.03 (the paper sweeps 0.001-0.03), clipping at global norm 1, batch 512,
    # the head zero-initialised (keras_vit's heads are), the model's own dropout. Polyak averaging
    # (paper Table 2: factor 0.9999) with --ema_momentum 0.9999.
    "finetune": Recipe(
        optimizer="sgd", learning_rate=0.03, schedule="cosine", warmup_steps=500, global_clipnorm=1.0, batch_size=512,
        source="paper appendix B.1.1; reference vit_jax/configs/common.py",
    ),
    # Self-supervised masked patch prediction, paper section 4.6 and appendix B.1.2: Adam, lr 2e-4, 10k warmup steps,
    # cosine decay; batch 4096 as the paper's JFT runs (B.1.2 gives no weight decay: none); 50% of patches corrupted
    # (80% [mask], 10% another patch, 10% kept), 3-bit mean colour targets (`keras_vit.MaskedPatchPrediction`).
    # Fine-tune the result with --init_from and the finetune recipe.
    "masked_patch": Recipe(
        optimizer="adam", learning_rate=2e-4, schedule="cosine", warmup_steps=10_000, dropout_rate=0.0,
        batch_size=4096, task="masked_patch",
        source="paper section 4.6, appendix B.1.2",
    ),
    # Ours: training a small ViT from scratch on a small dataset (the demo): the ImageNet-21k optimizer settings
    # with weight decay 0.1, clipping at 1, dropout 0.1 and label smoothing 0.1, which small data needs.
    "pretrain": Recipe(
        optimizer="adam", learning_rate=1e-3, schedule="linear", warmup_steps=10_000, weight_decay=0.1,
        global_clipnorm=1.0, label_smoothing=0.1, dropout_rate=0.1, batch_size=4096,
        source="ours (small data from scratch)",
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


def classification_loss(model, loss: str = "softmax", label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The recipe's loss on the model's outputs.

    "softmax": categorical cross-entropy on logits (or on probabilities when
    the head ends in a softmax), smoothed by `label_smoothing`. "sigmoid":
    `SigmoidCrossEntropy` on logits.
    """
    import keras

    from keras_vit.losses import SigmoidCrossEntropy

    from_logits = model.classifier_activation in (None, "linear")
    if loss == "sigmoid":
        if not from_logits:
            raise ValueError(f"The sigmoid loss needs logits; this head ends in {model.classifier_activation!r}.")
        if label_smoothing:
            raise ValueError("Label smoothing applies to the softmax loss; the sigmoid recipes train without it.")
        return SigmoidCrossEntropy()
    if loss != "softmax":
        raise ValueError(f"Unknown loss {loss!r}; expected 'softmax' or 'sigmoid'.")
    if not from_logits and model.classifier_activation != "softmax":
        raise ValueError(f"Cannot train a classifier whose head ends in {model.classifier_activation!r}.")
    return keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)


def excluded_from_weight_decay(model: keras.Model) -> list[keras.Variable]:
    """Every trainable variable but the kernels: biases, norm scales, class token, position embeddings."""
    return [v for v in model.trainable_variables if v.name != "kernel"]
