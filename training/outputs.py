"""What a run writes into --output_dir, and the checks that keep two runs from mixing there.

`run.json` holds the command's configuration. A directory holding another
configuration's run is refused; the same command resumes (or, once
`results.json` exists, reports the finished run). Outputs are written under a
temporary name and renamed into place, so a kill never leaves half a file
under its real name. A run holds `.lock` in the directory for its whole life,
so a second run started there (a job restarted while the old one still runs)
refuses to start.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import shutil
from typing import Callable, Iterator

from keras_vit import labels
from keras_vit.labels import LABELS_FILE
from keras_vit.training.config import ADDED_FIELDS

RUN_CONFIG = "run.json"
MODEL = "model.keras"
BEST_MODEL = "best.keras"
HISTORY = "history.csv"
RESULTS = "results.json"
LABELS = LABELS_FILE
BACKUP = "backup"
LOCK = ".lock"


def finished_message(output_dir: str) -> str:
    """What a command says when `output_dir` holds this run, finished."""
    with open(os.path.join(output_dir, RESULTS)) as f:
        results = json.load(f)
    return f"{output_dir} holds this run, finished: accuracy {results['accuracy']:.2%}. Nothing to do."


def check(output_dir: str, config: dict) -> str:
    """"new", "resume" or "finished": what the command should do with `output_dir`. Writes nothing.

    Raises:
        ValueError: the directory holds a run of another configuration, or
            outputs of a run without its configuration.
    """
    path = os.path.join(output_dir, RUN_CONFIG)
    if not os.path.exists(path):
        leftovers = [n for n in (MODEL, BEST_MODEL, HISTORY, RESULTS, BACKUP) if os.path.exists(os.path.join(output_dir, n))]
        if leftovers:
            raise ValueError(
                f"--output_dir {output_dir} holds {', '.join(leftovers)} of a run whose configuration is unknown "
                f"(no {RUN_CONFIG}); use another --output_dir."
            )
        return "new"
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is unreadable ({error}); use another --output_dir.") from None
    stored = {**{k: v for k, v in ADDED_FIELDS.items() if k in config}, **stored}
    if stored != config:
        changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        details = ", ".join(f"--{k} {stored.get(k)!r} there, {config.get(k)!r} now" for k in changed)
        raise ValueError(
            f"--output_dir {output_dir} holds a run of another configuration ({details}); "
            f"resume it with its own command, or use another --output_dir."
        )
    return "finished" if os.path.exists(os.path.join(output_dir, RESULTS)) else "resume"


@contextlib.contextmanager
def locked(output_dir: str) -> Iterator[None]:
    """Holds an exclusive lock on `output_dir` (its `.lock`, holding this process' id) while the block runs.

    Raises a ValueError naming the process that holds it, having written
    nothing. The kernel releases the lock when its holder exits, however it
    exits, so a killed run never leaves a stale one behind.
    """
    os.makedirs(output_dir, exist_ok=True)
    descriptor = os.open(os.path.join(output_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise ValueError(
            f"--output_dir {output_dir} is in use by process {holder}, a run still going there: wait for it or stop "
            f"it (the same command then resumes), or pass another --output_dir."
        ) from None
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # and with it the lock


def record(output_dir: str, config: dict) -> None:
    """Writes `run.json`, once the run is about to start (a command that fails before leaves no trace)."""
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, RUN_CONFIG), config)


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Calls `write(temporary_path)` (same extension as `path`), then renames the result to `path`."""
    stem, extension = os.path.splitext(path)
    partial = f"{stem}.partial{extension}"
    with failed_writes_reported(path, partial):
        write(partial)
    os.replace(partial, path)


@contextlib.contextmanager
def failed_writes_reported(what: str, partial: str, kept: str = "") -> Iterator[None]:
    """Turns a failed write of `partial` (on its way to be `what`) into one OSError naming `what` and the reason,
    a full disk most often, having removed what it wrote; `kept` says what complete copy is left."""
    try:
        yield
    except OSError as error:
        if os.path.isdir(partial):
            shutil.rmtree(partial, ignore_errors=True)
        else:
            _remove(partial)
        reason = error.strerror or str(error).splitlines()[0]
        if error.errno == errno.ENOSPC or "No space left on device" in str(error):
            reason = reason if reason.startswith("the disk is full") else "the disk is full"  # check_room's says more
        raise OSError(f"Could not write {what}: {reason}.{kept} Free space and rerun the same command: it resumes "
                      "from the last complete backup.") from error


def check_room(directory: str, needed: int) -> None:
    """An OSError (ENOSPC) unless `directory`'s disk has `needed` bytes free.

    Checked before an HDF5 file is written: h5py, closing a file whose
    writes failed for want of space, can crash the process (a segmentation
    fault seen with h5py 3.x) before any error reaches Python.
    """
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"the disk is full (needs about {needed / 2**20:.1f} MB, {free / 2**20:.1f} MB free)")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_json(path: str, value) -> None:
    write_atomically(path, lambda tmp: _write_json(tmp, value))


def _write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def write_labels(output_dir: str, class_names) -> None:
    """The class names the model was trained on, beside it (`keras_vit.labels`)."""
    write_atomically(os.path.join(output_dir, LABELS), lambda tmp: labels.write_labels(tmp, class_names))


def trim_history(history_csv: str, resume_epoch: int) -> None:
    """Keeps the complete rows of epochs before `resume_epoch`: a resumed run trains (and logs) the others again."""
    if not os.path.exists(history_csv):
        return
    with open(history_csv, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = [
            row for row in reader
            if fields and None not in row.values() and None not in row and _epoch(row) is not None and _epoch(row) < resume_epoch
        ]
    if not fields or not rows:
        os.remove(history_csv)  # CSVLogger writes the header again
        return
    write_atomically(history_csv, lambda tmp: _write_rows(tmp, fields, rows))


def _epoch(row: dict) -> int | None:
    try:
        return int(row["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


def _write_rows(path: str, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def best_so_far(history_csv: str, metric: str) -> float | None:
    """The best value of `metric` in a CSV history written before a restart, if any."""
    if not os.path.exists(history_csv):
        return None
    values = []
    with open(history_csv, newline="") as f:
        for row in csv.DictReader(f):
            try:
                values.append(float(row[metric]))
            except (KeyError, TypeError, ValueError):
                continue
    return max(values) if values else None
