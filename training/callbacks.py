"""The callbacks of a training run: learning-rate log, best model, CSV history, TensorBoard, backups, few-shot accuracy."""

from __future__ import annotations

import os

import keras

from keras_vit.training import backup, outputs
from keras_vit.training.fewshot import L2_REG, SEEDS, SHOTS, features, fewshot_accuracies


def run_callbacks(output_dir: str, chief: bool, backup_dir: str, backup_freq: str | int = "epoch") -> list:
    """Callbacks for `model.fit`; only the chief writes models and logs into `output_dir`.

    `backup.AtomicBackup` comes last: a state claiming an epoch done is
    written only after that epoch is logged. The best model's threshold
    survives restarts via the CSV history.
    """
    callbacks: list = [LearningRateLog()]
    if chief:
        history = os.path.join(output_dir, outputs.HISTORY)
        callbacks += [
            BestModel(
                os.path.join(output_dir, outputs.BEST_MODEL), "val_accuracy", outputs.best_so_far(history, "val_accuracy")
            ),
            keras.callbacks.CSVLogger(history, append=True),
            keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")),
        ]
    callbacks.append(backup.AtomicBackup(backup_dir, save_freq=backup_freq))
    return callbacks


class BestModel(keras.callbacks.Callback):
    """Saves the model to `path` at each epoch end where `monitor` exceeds its best so far.

    The file is written under a temporary name and renamed into place, so a
    run killed while saving keeps its previous best whole (Keras'
    ModelCheckpoint overwrites the file in place).
    """

    def __init__(self, path: str, monitor: str, best: float | None = None):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and value <= self.best):
            return
        outputs.write_atomically(self.path, self.model.save)
        self.best = float(value)


class LearningRateLog(keras.callbacks.Callback):
    """Adds `updates` (optimizer updates so far) and `learning_rate` (the rate of the next update) to each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        logs["updates"] = int(keras.ops.convert_to_numpy(optimizer.iterations))
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class FewShotEvaluation(keras.callbacks.Callback):
    """Logs `fewshot_{k}shot` accuracies every `every` epochs (into the logs, so CSV and TensorBoard get them).

    Args:
        train_batches, test_batches: (images, one-hot labels) batches, not augmented.
        num_classes: K.
        shots, seeds, l2_reg: as `fewshot_accuracies` (big_vision's defaults).
        every: epochs between evaluations.
    """

    def __init__(
        self, train_batches, test_batches, num_classes: int, shots=SHOTS, seeds: int = SEEDS, l2_reg: float = L2_REG, every: int = 1
    ):
        super().__init__()
        self.train_batches, self.test_batches = train_batches, test_batches
        self.num_classes, self.shots, self.seeds, self.l2_reg, self.every = num_classes, tuple(shots), seeds, l2_reg, every

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every:
            # CSVLogger fixes its columns at the first epoch: keep them present, NaN when not evaluated.
            logs.update({f"fewshot_{k}shot": float("nan") for k in self.shots})
            return
        results = fewshot_accuracies(
            features(self.model, self.train_batches), features(self.model, self.test_batches),
            self.num_classes, self.shots, self.seeds, self.l2_reg,
        )
        for k, (mean, _) in results.items():
            logs[f"fewshot_{k}shot"] = mean
