"""The callbacks of a training run: learning-rate log, best model, CSV history, TensorBoard, backups, few-shot accuracy."""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_vit.training import backup, outputs
from keras_vit.training.fewshot import L2_REG, SEEDS, SHOTS, features, fewshot_accuracies


def run_callbacks(
    output_dir: str, chief: bool, backup_dir: str, backup_freq: str | int = "epoch",
    early_stopping: "EarlyStopping | None" = None,
) -> list:
    """Callbacks for `model.fit`; only the chief writes models and logs into `output_dir`.

    `backup.AtomicBackup` comes last: a state claiming an epoch done is
    written only after that epoch is logged, with the early stopping state of
    that epoch. The best model's threshold survives restarts via the CSV
    history; with early stopping, `early_stopping` keeps the best model.
    """
    callbacks: list = [LearningRateLog()]
    if early_stopping is not None:
        callbacks.append(early_stopping)
    if chief:
        history = os.path.join(output_dir, outputs.HISTORY)
        if early_stopping is None:
            best = outputs.best_so_far(history, "val_accuracy")
            callbacks.append(BestModel(os.path.join(output_dir, outputs.BEST_MODEL), "val_accuracy", best))
        callbacks += [
            keras.callbacks.CSVLogger(history, append=True),
            keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")),
        ]
    stateful = {EarlyStopping.NAME: early_stopping} if early_stopping is not None else None
    callbacks.append(backup.AtomicBackup(backup_dir, save_freq=backup_freq, stateful=stateful))
    return callbacks


class EarlyStopping(keras.callbacks.Callback):
    """Stops training when `monitor` has not improved by more than `min_delta` for `patience` evaluations.

    The paper pre-trains with "early-stopping based on validation accuracy".
    Each improvement is the new best: its weights are kept in memory and, on
    the chief, written to `path` (best.keras). An epoch where `monitor` is
    absent or NaN (few-shot accuracy between `--fewshot_every` epochs) is not
    an evaluation. Its state (best value and epoch, evaluations since, the
    epoch it stopped at) goes into every backup (`get_state`/`set_state`), so
    a run killed and resumed stops where an uninterrupted one does.
    Evaluations in epochs before `start_epoch` (the learning-rate warm-up,
    as Keras' `start_from_epoch`) keep the best, but do not count toward
    the patience: a few-shot accuracy of random features can exceed that of
    the first epochs of training.
    """

    NAME = "early_stopping"

    def __init__(self, monitor: str, patience: int, min_delta: float = 0.0, path: str | None = None,
                 start_epoch: int = 0):
        super().__init__()
        if patience < 1:
            raise ValueError(f"Early stopping needs a patience of at least 1 evaluation, got {patience}.")
        self.monitor, self.patience, self.min_delta, self.path = monitor, patience, min_delta, path
        self.start_epoch = start_epoch
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: list | None = None  # this process's copy; after a resume, `path` holds them

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or value != value:  # absent, or NaN: not evaluated this epoch
            return
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
            self.best_weights = self.model.get_weights()
            if self.path is not None:
                outputs.write_atomically(self.path, self.model.save)
            return
        if epoch < self.start_epoch:
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def set_state(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]


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

    Shots the training split cannot supply (a tenth of a small dataset has no 25 examples of every class) are
    logged as NaN, and said once before training; a `required` one (the early-stopping monitor's) stops the run
    before its first step instead.

    Args:
        train_batches, test_batches: (images, one-hot labels) batches, not augmented.
        num_classes: K.
        shots, seeds, l2_reg: as `fewshot_accuracies` (big_vision's defaults).
        every: epochs between evaluations.
        required: shots the run cannot do without.
    """

    def __init__(
        self, train_batches, test_batches, num_classes: int, shots=SHOTS, seeds: int = SEEDS, l2_reg: float = L2_REG,
        every: int = 1, required: tuple[int, ...] = (),
    ):
        super().__init__()
        self.train_batches, self.test_batches = train_batches, test_batches
        self.num_classes, self.shots, self.seeds, self.l2_reg, self.every = num_classes, tuple(shots), seeds, l2_reg, every
        self.required = tuple(required)
        self.held: tuple[int, ...] | None = None  # the shots the training split holds, once counted

    def on_train_begin(self, logs=None):
        self.held = self._shots_the_split_holds()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every:
            # CSVLogger fixes its columns at the first epoch: keep them present, NaN when not evaluated.
            logs.update({f"fewshot_{k}shot": float("nan") for k in self.shots})
            return
        if self.held is None:
            self.held = self._shots_the_split_holds()
        results = fewshot_accuracies(
            features(self.model, self.train_batches), features(self.model, self.test_batches),
            self.num_classes, self.held, self.seeds, self.l2_reg,
        ) if self.held else {}
        for k in self.shots:
            logs[f"fewshot_{k}shot"] = results[k][0] if k in results else float("nan")

    def _shots_the_split_holds(self) -> tuple[int, ...]:
        labels = np.concatenate([np.argmax(keras.ops.convert_to_numpy(y), axis=-1) for _, y in self.train_batches])
        smallest = int(np.bincount(labels, minlength=self.num_classes).min())
        missing = [k for k in self.shots if k > smallest]
        if missing_required := [k for k in self.required if k > smallest]:
            raise ValueError(f"fewshot_{missing_required[0]}shot cannot be computed: the smallest class of the "
                             f"training split has {smallest} examples.")
        if missing:
            print(f"Few-shot evaluation: {', '.join(f'{k}-shot' for k in missing)} left out (logged as NaN): the "
                  f"smallest class of the training split has {smallest} examples.", flush=True)
        return tuple(k for k in self.shots if k <= smallest)
