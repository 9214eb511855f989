"""Backups of a training run that a kill at any instant cannot corrupt.

A backup is a directory `state-NNNNNNNN/` in the run's backup folder holding
`model.weights.h5` (the model's and the optimizer's variables) and
`training_metadata.json` (`{"epoch": E, "batch": B}`: resume at the start of
epoch E; with `"callbacks": {name: state}` for callbacks whose state must
survive a kill, as early stopping's patience does). It is written under a `.tmp` name and renamed into place only when
whole; the previous state is removed only after that. `restore` loads the
newest state that reads back, falling back to older ones, and says which
files it skipped and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time

import keras
import numpy as np

from keras_vit.training import outputs

WEIGHTS = "model.weights.h5"
METADATA = "training_metadata.json"
#: Seconds to sleep inside each backup write, between the files and the rename: a hook for the kill tests.
PAUSE_ENV = "KERAS_VIT_BACKUP_PAUSE_SECONDS"
_STATE = re.compile(r"^state-(\d+)$")


def directory(output_dir: str, chief: bool, worker_index: int = 0) -> str:
    """Where a worker keeps its backups: `backup/` for the chief, a hidden folder of its own for the others."""
    return os.path.join(output_dir, outputs.BACKUP if chief else f".backup-worker-{worker_index}")


def states(backup_dir: str) -> list[str]:
    """The complete state directories of `backup_dir`, newest first."""
    if not os.path.isdir(backup_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(backup_dir) if (m := _STATE.match(name))]
    return [os.path.join(backup_dir, name) for _, name in sorted(found, reverse=True)]


def read_metadata(state: str) -> dict:
    """{"epoch": int, "batch": int} of a state; ValueError naming the file and what is wrong with it."""
    path = os.path.join(state, METADATA)
    try:
        with open(path) as f:
            metadata = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable ({error})") from None
    if not isinstance(metadata, dict) or not all(isinstance(metadata.get(k), int) and metadata[k] >= 0 for k in ("epoch", "batch")):
        raise ValueError(f"{path}: expected {{\"epoch\": int, \"batch\": int}}, found {metadata!r}")
    return metadata


def restore(model: keras.Model, backup_dir: str, callbacks: dict | None = None) -> int:
    """Loads the newest usable state into `model` (and its optimizer); returns the epoch to resume at (0: none).

    `callbacks`: name -> callback whose state (`set_state`) that backup holds, as `AtomicBackup(stateful=)` saved it.

    Raises:
        ValueError: states exist but none loads; the message names each file and its problem.
    """
    problems = []
    for state in states(backup_dir):
        try:
            metadata = read_metadata(state)
        except ValueError as error:
            problems.append(str(error))
            continue
        weights = os.path.join(state, WEIGHTS)
        try:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(weights)
        except (OSError, ValueError) as error:
            problem = _one_line(error)
            problems.append(problem if weights in problem else f"{weights}: {problem}")
            continue
        for problem in problems:
            print(f"warning: skipped a damaged backup: {problem}", file=sys.stderr)
        for name, callback in (callbacks or {}).items():
            if name in metadata.get("callbacks", {}):
                callback.set_state(metadata["callbacks"][name])
        return metadata["epoch"]
    if problems:
        raise ValueError(
            f"No usable backup in {backup_dir}: {'; '.join(problems)}. Remove {backup_dir} to start the run over."
        )
    return 0


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def state_bytes(model: keras.Model) -> int:
    """About what a state of `model` takes on disk: its variables and its optimizer's, and HDF5's overhead."""
    variables = list(model.weights) + (list(model.optimizer.variables) if getattr(model, "optimizer", None) else [])
    data = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    return int(data * 1.1) + 2**16


def clear(backup_dir: str) -> None:
    """Removes the backups of a finished run."""
    shutil.rmtree(backup_dir, ignore_errors=True)


class AtomicBackup(keras.callbacks.Callback):
    """Writes a state at the end of every epoch and, with an integer `save_freq`, every `save_freq` batches.

    Place it after the callbacks that log an epoch (`CSVLogger`): a state
    claiming epoch E + 1 then exists only once epoch E is logged.
    """

    def __init__(self, backup_dir: str, save_freq: str | int = "epoch", stateful: dict | None = None):
        """`stateful`: name -> a callback with `get_state()` (a JSON dict) and `set_state(dict)`, saved in each state."""
        super().__init__()
        self.stateful = dict(stateful or {})
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"save_freq must be 'epoch' or a positive number of batches, got {save_freq!r}.")
        self.backup_dir = backup_dir
        self.save_freq = save_freq
        existing = states(backup_dir)
        self._sequence = int(_STATE.match(os.path.basename(existing[0])).group(1)) if existing else 0
        self._epoch = 0
        self._saved_at_batch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._saved_at_batch = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch" and batch + 1 - self._saved_at_batch >= self.save_freq:
            self._saved_at_batch = batch + 1
            self.save(epoch=self._epoch, batch=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch=epoch + 1, batch=0)

    def save(self, epoch: int, batch: int) -> None:
        """Writes one state under a temporary name, renames it into place, then drops the older ones."""
        os.makedirs(self.backup_dir, exist_ok=True)
        self._sequence += 1
        final = os.path.join(self.backup_dir, f"state-{self._sequence:08d}")
        partial = final + ".tmp"
        shutil.rmtree(partial, ignore_errors=True)
        previous = states(self.backup_dir)
        kept = f" The last complete backup, {previous[0]}, is kept." if previous else ""
        with outputs.failed_writes_reported(f"the backup {final}", partial, kept):
            outputs.check_room(self.backup_dir, state_bytes(self.model))
            os.makedirs(partial)
            self.model.save_weights(os.path.join(partial, WEIGHTS))
            with open(os.path.join(partial, METADATA), "w") as f:
                metadata = {"epoch": epoch, "batch": batch}
                if self.stateful:
                    metadata["callbacks"] = {name: callback.get_state() for name, callback in self.stateful.items()}
                json.dump(metadata, f)
                f.flush()
                os.fsync(f.fileno())
        time.sleep(float(os.environ.get(PAUSE_ENV, "0")))
        os.rename(partial, final)
        for name in os.listdir(self.backup_dir):
            path = os.path.join(self.backup_dir, name)
            if path != final and (_STATE.match(name) or name.endswith(".tmp")):
                shutil.rmtree(path, ignore_errors=True)
