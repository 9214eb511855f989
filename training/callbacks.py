"""The callbacks of a training run: backup and restore, best model, CSV history, TensorBoard."""

from __future__ import annotations

import csv
import json
import os

import keras

BEST_MODEL = "best.keras"
HISTORY = "history.csv"


def run_callbacks(output_dir: str, chief: bool, worker_index: int = 0, backup_freq: str | int = "epoch") -> list:
    """Callbacks for `model.fit`; only the chief writes models and logs into `output_dir`.

    `BackupAndRestore` (last, after the epoch is logged) saves weights,
    optimizer state and the epoch; the same
    command started again after a crash or SIGKILL resumes at the epoch it
    was in (mid-epoch with an integer `backup_freq`: from the last backup's
    weights, at the start of that epoch's data). Each worker keeps its own
    backup. The best model's threshold survives restarts via the CSV history.
    """
    backup_dir = os.path.join(output_dir, "backup" if chief else f".backup-worker-{worker_index}")
    callbacks: list = [LearningRateLog()]
    if chief:
        history = os.path.join(output_dir, HISTORY)
        trim_history(history, backup_dir)
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                os.path.join(output_dir, BEST_MODEL),
                monitor="val_accuracy",
                mode="max",
                save_best_only=True,
                initial_value_threshold=best_so_far(history, "val_accuracy"),
            ),
            keras.callbacks.CSVLogger(history, append=True),
            keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")),
        ]
    # Last: an epoch counts as done (and is not redone) only once it has been logged.
    callbacks.append(keras.callbacks.BackupAndRestore(backup_dir, save_freq=backup_freq))
    return callbacks


class LearningRateLog(keras.callbacks.Callback):
    """Adds `updates` (optimizer updates so far) and `learning_rate` (the rate of the next update) to each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        logs["updates"] = int(keras.ops.convert_to_numpy(optimizer.iterations))
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def trim_history(history_csv: str, backup_dir: str) -> None:
    """Drops history rows of epochs after the backup's, which a resumed run trains (and logs) again."""
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if not (os.path.exists(history_csv) and os.path.exists(metadata)):
        return
    with open(metadata) as f:
        resume_epoch = json.load(f)["epoch"]
    with open(history_csv, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [row for row in reader if int(row["epoch"]) < resume_epoch]
    with open(history_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def best_so_far(history_csv: str, metric: str) -> float | None:
    """The best value of `metric` in a CSV history written before a restart, if any."""
    if not os.path.exists(history_csv):
        return None
    with open(history_csv, newline="") as f:
        values = [float(row[metric]) for row in csv.DictReader(f) if row.get(metric) not in (None, "")]
    return max(values) if values else None
