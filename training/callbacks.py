"""The callbacks of a training run: backup and restore, best model, CSV history, TensorBoard."""

from __future__ import annotations

import csv
import os

import keras

BEST_MODEL = "best.keras"
HISTORY = "history.csv"


def run_callbacks(output_dir: str, chief: bool, worker_index: int = 0, backup_freq: str | int = "epoch") -> list:
    """Callbacks for `model.fit`; only the chief writes models and logs into `output_dir`.

    `BackupAndRestore` saves weights, optimizer state and the epoch; the same
    command started again after a crash or SIGKILL resumes at the epoch it
    was in (mid-epoch with an integer `backup_freq`: from the last backup's
    weights, at the start of that epoch's data). Each worker keeps its own
    backup. The best model's threshold survives restarts via the CSV history.
    """
    backup_dir = os.path.join(output_dir, "backup" if chief else f".backup-worker-{worker_index}")
    callbacks: list = [keras.callbacks.BackupAndRestore(backup_dir, save_freq=backup_freq)]
    if chief:
        history = os.path.join(output_dir, HISTORY)
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
    return callbacks


def best_so_far(history_csv: str, metric: str) -> float | None:
    """The best value of `metric` in a CSV history written before a restart, if any."""
    if not os.path.exists(history_csv):
        return None
    with open(history_csv, newline="") as f:
        values = [float(row[metric]) for row in csv.DictReader(f) if row.get(metric) not in (None, "")]
    return max(values) if values else None
