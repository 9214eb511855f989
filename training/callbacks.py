"""The callbacks of a training run: learning-rate log, best model, CSV history, TensorBoard, backups."""

from __future__ import annotations

import os

import keras

from keras_vit.training import backup, outputs


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
            keras.callbacks.ModelCheckpoint(
                os.path.join(output_dir, outputs.BEST_MODEL),
                monitor="val_accuracy",
                mode="max",
                save_best_only=True,
                initial_value_threshold=outputs.best_so_far(history, "val_accuracy"),
            ),
            keras.callbacks.CSVLogger(history, append=True),
            keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")),
        ]
    callbacks.append(backup.AtomicBackup(backup_dir, save_freq=backup_freq))
    return callbacks


class LearningRateLog(keras.callbacks.Callback):
    """Adds `updates` (optimizer updates so far) and `learning_rate` (the rate of the next update) to each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        logs["updates"] = int(keras.ops.convert_to_numpy(optimizer.iterations))
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
