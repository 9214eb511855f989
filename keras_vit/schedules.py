"""Learning-rate schedules of the paper: linear warmup, then linear or cosine decay.

Part of keras_vit (not of training/) so that a `.keras` file saved with its
optimizer loads wherever `keras_vit` is imported.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then decay to `end` at `total_steps`.

    Args:
        peak: the learning rate reached at the end of warmup.
        warmup_steps: steps of linear warmup.
        total_steps: the step at which the decay reaches `end` (and stays).
        decay: "linear" (the paper's pre-training) or "cosine" (its fine-tuning).
        end: the final learning rate.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, decay: str = "linear", end: float = 0.0):
        if decay not in ("linear", "cosine"):
            raise ValueError(f"Unknown decay {decay!r}; expected 'linear' or 'cosine'.")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"Expected 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}).")
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.decay = decay
        self.end = end

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        progress = (step - self.warmup_steps) / float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip(progress, 0.0, 1.0)
        if self.decay == "linear":
            decayed = self.end + (self.peak - self.end) * (1.0 - progress)
        else:
            decayed = self.end + (self.peak - self.end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, self.peak * step / warmup, decayed)

    def get_config(self):
        return dict(
            peak=self.peak, warmup_steps=self.warmup_steps, total_steps=self.total_steps, decay=self.decay, end=self.end
        )


@keras.saving.register_keras_serializable(package="keras_vit")
class PerUpdate(keras.optimizers.schedules.LearningRateSchedule):
    """Evaluates `schedule` once per optimizer update under gradient accumulation.

    With `gradient_accumulation_steps=k`, Keras advances the counter it passes
    to a schedule on every micro-batch, while the weights (and the decoupled
    weight decay, which reads the same learning rate) change once every k. A
    schedule written in updates, as the paper's are, would then run k times
    too fast. This wrapper divides the micro-batch counter by k, so the update
    i (counted from 0) applies `schedule(i)`, as the reference's accumulation
    (`vit_jax/utils.py`, `accumulate_gradient`) does.

    Args:
        schedule: a schedule over optimizer updates.
        accumulation_steps: micro-batches per update (k >= 1).
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule, accumulation_steps: int):
        if accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps}.")
        self.schedule = schedule
        self.accumulation_steps = accumulation_steps

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.accumulation_steps))

    def get_config(self):
        return dict(
            schedule=keras.saving.serialize_keras_object(self.schedule), accumulation_steps=self.accumulation_steps
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
