"""The class names of a model: `labels.txt` beside its `.keras` file, one name per line.

`keras_vit.training.train` writes it; `keras_vit.serving.export` reads it by default and carries
the names into the SavedModel, so served answers name classes, not indices.
"""

from __future__ import annotations

import os

LABELS_FILE = "labels.txt"


def labels_beside(model_path: str | os.PathLike) -> str | None:
    """The labels file next to a model file, if there is one."""
    path = os.path.join(os.path.dirname(os.fspath(model_path)), LABELS_FILE)
    return path if os.path.exists(path) else None


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names, one per non-empty line; OSError naming the file when it cannot be read."""
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def write_labels(path: str | os.PathLike, class_names) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{name}\n" for name in class_names))
