"""Validation of `.keras` and `.weights.h5` files against a model, before any weight is assigned.

Keras' own `load_weights` assigns layer by layer and stops at the first
layer that fails, leaving the ones before it changed; a file with more
blocks than the model loads "successfully", its extra blocks ignored.
`check_weights_file` reads every array the file holds and compares it with
what the model would write (Keras' own saving traversal, recorded without
copying any data), so that `keras_vit.load_weights` and every keras_vit
model's `load_weights` load all or nothing.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Callable

import h5py
import keras
import numpy as np
from keras.src.saving import saving_lib  # private: the traversal that names each layer's group in the file

from keras_vit.layers.attention import GRID_KEY

#: Top-level groups of the file that are not model weights.
_NOT_MODEL = ("optimizer", "vars")


class _ShapeRecorder(saving_lib.H5IOStore):
    """A weights store that records (group, key) -> shape of what would be saved, and stores nothing."""

    def __init__(self):  # no file: only `make` and `__setitem__` are used by the traversal
        self.shapes: dict[tuple[str, str], tuple[int, ...]] = {}
        self.names: dict[str, str] = {}
        self._path = ""

    def __bool__(self):
        return True

    def make(self, path, metadata=None):
        self._path = path
        if metadata and "name" in metadata:
            self.names[path] = metadata["name"]
        return self

    def __setitem__(self, key, value):
        self.shapes[(self._path, key)] = tuple(np.shape(value))


def expected_weights(model) -> tuple[dict[tuple[str, str], tuple[int, ...]], dict[str, str]]:
    """({(group, key): shape} the model writes to a weights file, {group: layer name})."""
    recorder = _ShapeRecorder()
    saving_lib._save_state(model, weights_store=recorder, assets_store=None, inner_path="", visited_saveables=set())
    return recorder.shapes, recorder.names


def stored_weights(path: str) -> dict[tuple[str, str], np.ndarray]:
    """{(group, key): array} of a `.keras` or `.weights.h5` file; ValueError naming the file when unreadable."""
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                data = io.BytesIO(archive.read("model.weights.h5"))
            source = h5py.File(data, "r")
        else:
            source = h5py.File(path, "r")
    except (OSError, KeyError, zipfile.BadZipFile, EOFError) as error:
        kind = ".keras archive" if path.endswith(".keras") else "HDF5 weights file"
        raise ValueError(f"{path} is not a readable {kind} ({error}); it may be truncated or not a Keras file") from None
    out = {}
    with source:
        def visit(name, item):  # datasets sit at "<group>/vars/<key>" ("vars/<key>" for the model itself)
            parent, _, key = name.rpartition("/")
            if isinstance(item, h5py.Dataset) and (parent == "vars" or parent.endswith("/vars")):
                out[(parent[: -len("vars")].rstrip("/"), key)] = item[()]
        try:
            source.visititems(visit)
        except (OSError, RuntimeError) as error:
            raise ValueError(f"{path} is damaged: {error}") from None
    return out


def check_weights_file(model, path: str, resizable: set[str], optional: set[str]) -> tuple[dict, dict[str, str]]:
    """Validates every weight of `path` for `model`; returns ({(group, key): stored array}, {group: layer name}).

    Args:
        resizable: layer names whose tables may differ in shape (their layer resizes or refuses them).
        optional: layer names the file may lack or hold in another shape (the head, by the head policy).

    Raises:
        ValueError: naming the file and the first problems: a missing or unexpected weight, another shape
            (both given, never the values), or NaN/Inf values.
    """
    expected, names = expected_weights(model)
    stored = stored_weights(path)
    problems = []
    for (group, key), shape in expected.items():
        if group.split("/")[0] in _NOT_MODEL:
            continue
        layer = names.get(group, group)
        if (group, key) not in stored:
            if key != GRID_KEY and layer not in optional:
                problems.append(f"missing weight {group}/{key} (the model's shape {shape})")
            continue
        found = np.shape(stored[(group, key)])
        if found != shape and key != GRID_KEY and layer not in resizable | optional:
            problems.append(f"weight {group}/{key}: the file holds shape {found}, the model needs {shape}")
    extra = sorted(
        f"{group}/{key}" for group, key in stored
        if (group, key) not in expected and group.split("/")[0] not in _NOT_MODEL and group
    )
    if extra:
        problems.append(f"{len(extra)} weight(s) the model has no place for, first {extra[0]}")
    for (group, key), value in stored.items():
        if (group, key) in expected and np.issubdtype(np.asarray(value).dtype, np.floating) and not np.all(np.isfinite(value)):
            problems.append(f"weight {group}/{key} holds NaN or Inf values")
    if problems:
        raise ValueError(f"{os.fspath(path)} does not fit model {model.name!r}: " + "; ".join(problems[:5]))
    return stored, names


def variables_of(stored: dict, group: str) -> list[np.ndarray]:
    """The numbered variables ("0", "1", ...) stored for one group, in order."""
    keys = sorted((int(key) for g, key in stored if g == group and key.isdigit()))
    return [stored[(group, str(key))] for key in keys]


def assign_or_restore(model, load: Callable[[], None]) -> None:
    """Runs `load`; if it raises, every variable of `model` gets its value from before, and the error propagates."""
    snapshot = [keras.ops.convert_to_numpy(v) for v in model.weights]
    try:
        load()
    except Exception:
        for variable, value in zip(model.weights, snapshot):
            variable.assign(value)
        raise


def load_checked(model, path: str | os.PathLike) -> None:
    """Keras' own load of a `.keras`/`.weights.h5` file into `model`, once every weight of the file fits it exactly.

    For models without keras_vit's head policy and position resizing (`keras_vit.ResNet`,
    `keras_vit.MaskedPatchPrediction`); the ValueError names the file and the first mismatching weights.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path!r}.")
    check_weights_file(model, path, resizable=set(), optional=set())
    assign_or_restore(model, lambda: keras.Model.load_weights(model, path))
