"""Backups of a training run that a kill at any instant cannot corrupt.

A backup is a directory `state-NNNNNNNN/` in the run's backup folder holding
`model.weights.h5` (the model's and the optimizer's variables) and
`training_metadata.json` (`{"epoch": E, "batch": B}`: resume at batch B of
epoch E, both counted from 0; with `"callbacks": {name: state}` for callbacks
whose state must survive a kill, as early stopping's patience does; with
`"metrics"`, the running values of the epoch's metrics at batch B > 0, so the
epoch's log equals an uninterrupted one's; `"random_states"`, the states of
the model's random generators (dropout's), which are variables but not
weights; `"seconds"`, the training time spent up to then, by every process of
the run). It is written under a `.tmp` name and renamed into place only when
whole; the previous state is removed only after that. `restore` loads the
newest state that reads back, falling back to older ones, and says which
files it skipped and why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time

import keras
import numpy as np

from keras_vit import lora
from keras_vit.training import outputs

WEIGHTS = "model.weights.h5"
METADATA = "training_metadata.json"
#: A LoRA run's frozen kernels and factors apart (`keras_vit.lora.lora_state`): the weights file holds them merged.
LORA = "lora.npz"
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


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a run resumes: batch `batch` of epoch `epoch` (both from 0; (0, 0): the start)."""

    epoch: int = 0
    batch: int = 0
    metrics: list | None = None  # the values of `model.metrics_variables` at that batch (None at an epoch's start)
    seconds: float = 0.0  # training time spent before it

    def step(self, steps_per_epoch: int) -> int:
        """The batches trained before this position."""
        return self.epoch * steps_per_epoch + self.batch


def restore(model: keras.Model, backup_dir: str, callbacks: dict | None = None) -> Position:
    """Loads the newest usable state into `model` (and its optimizer); returns where to resume (`Position()`: none).

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
            if lora.lora_layers(model):
                with np.load(os.path.join(state, LORA)) as stored:
                    lora.restore_lora_state(model, dict(stored))
            for variable, value in zip(random_states(model), metadata.get("random_states", []), strict=False):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        except (OSError, ValueError) as error:
            problem = _one_line(error)
            problems.append(problem if weights in problem else f"{weights}: {problem}")
            continue
        for problem in problems:
            print(f"warning: skipped a damaged backup: {problem}", file=sys.stderr)
        for name, callback in (callbacks or {}).items():
            if name in metadata.get("callbacks", {}):
                callback.set_state(metadata["callbacks"][name])
        return Position(metadata["epoch"], metadata["batch"], metadata.get("metrics"), metadata.get("seconds", 0.0))
    if problems:
        raise ValueError(
            f"No usable backup in {backup_dir}: {'; '.join(problems)}. Remove {backup_dir} to start the run over."
        )
    return Position()


def random_states(model: keras.Model) -> list:
    """The variables of the model's random generators (dropout, stochastic depth): `model.save_weights` leaves them out."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


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
    """Writes a state at the end of every epoch and, with an integer `save_freq`, every `save_freq` batches
    (but the epoch's last, whose state is the epoch's own).

    Place it after the callbacks that log an epoch (`CSVLogger`): a state
    claiming epoch E + 1 then exists only once epoch E is logged. After a
    resume inside an epoch, `resume(position)` before fitting the rest of it
    numbers its batches from `position.batch` and carries the metrics' running
    values on. It also keeps the run's training time (`seconds`).
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
        self._offset = 0  # batches of this epoch trained before this fit
        self._pending_metrics: list | None = None  # the killed epoch's metric sums, added after the first step
        self._resumed = Position()
        self._seconds_before = 0.0
        self._started: float | None = None  # while fitting: when this fit began

    def resume(self, position: Position) -> None:
        """Continues from `position`: its epoch's batches numbered from there, its metrics and training time kept."""
        self._resumed, self._seconds_before = position, position.seconds

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()

    def on_train_end(self, logs=None):
        self._seconds_before, self._started = self.seconds(), None

    def seconds(self) -> float:
        """Training time of the run so far (in `model.fit`), across the processes that resumed it."""
        return self._seconds_before + (0.0 if self._started is None else time.perf_counter() - self._started)

    def on_epoch_begin(self, epoch, logs=None):
        offset = self._resumed.batch if epoch == self._resumed.epoch else 0
        self._epoch, self._saved_at_batch, self._offset = epoch, offset, offset
        self._pending_metrics = self._resumed.metrics if offset else None

    def on_train_batch_end(self, batch, logs=None):
        if self._pending_metrics is not None:  # the first step (or steps_per_execution steps) after the resume
            self._continue_metrics(self._pending_metrics)
            self._pending_metrics = None
        last = batch + 1 == (self.params or {}).get("steps")  # the epoch's own state follows, once it is logged
        batch += self._offset
        if self.save_freq != "epoch" and not last and batch + 1 - self._saved_at_batch >= self.save_freq:
            self._saved_at_batch = batch + 1
            self.save(epoch=self._epoch, batch=batch + 1)

    def _continue_metrics(self, saved: list) -> None:
        """Adds the killed epoch's running sums to the first resumed batch's: the epoch's means then cover every batch.

        Keras builds the compiled metrics in the first step, so they can only
        be set after it; every metric keras_vit compiles is a mean (a total
        and a count), whose states add up.
        """
        variables = self.model.metrics_variables
        if len(variables) != len(saved) or any(v.name not in ("total", "count") for v in variables):
            print("warning: the resumed epoch's metrics cover its batches since the resume", file=sys.stderr)
            return
        for variable, value in zip(variables, saved):
            variable.assign(keras.ops.convert_to_numpy(variable) + np.asarray(value, dtype=variable.dtype))

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
            if lora.lora_layers(self.model):
                np.savez(os.path.join(partial, LORA), **lora.lora_state(self.model))
            with open(os.path.join(partial, METADATA), "w") as f:
                metadata = {"epoch": epoch, "batch": batch, "seconds": round(self.seconds(), 3),
                            "random_states": [keras.ops.convert_to_numpy(v).tolist() for v in random_states(self.model)]}
                if batch:
                    metadata["metrics"] = [keras.ops.convert_to_numpy(v).tolist() for v in self.model.metrics_variables]
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
