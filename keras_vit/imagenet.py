"""ImageNet-1k class names for the fine-tuned checkpoints' 1,000-way heads, and `decode_predictions`.

The heads of the `...+imagenet2012` releases follow ILSVRC-2012's class order
(the sorted WordNet IDs, tensorflow-datasets' `imagenet2012` labels). The
names are read from the files tensorflow-datasets installs: the WordNet IDs of
`imagenet2012/labels.txt` and the human-readable synsets of its `siscore`
dataset (the same order). Nothing is downloaded.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import pathlib

import numpy as np

NUM_CLASSES = 1000


@functools.cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1,000 ImageNet-1k classes in head order, as (WordNet ID, name): ("n01440764", "tench"), ...

    The name is the synset's first lemma ("great white shark", which
    keras.applications' class index writes "great_white_shark").
    """
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or spec.origin is None:
        raise ImportError(
            "keras_vit reads ImageNet's class names from tensorflow-datasets: pip install tensorflow-datasets "
            "(or keras_vit[training])."
        )
    root = pathlib.Path(spec.origin).parent / "datasets"
    wnids = (root / "imagenet2012" / "labels.txt").read_text().split()
    synsets = _assigned_list(root / "siscore" / "labels.py", "IMAGENET_LABELS_LIST")
    if len(wnids) != NUM_CLASSES or len(synsets) != NUM_CLASSES:
        raise ValueError(
            f"tensorflow-datasets at {root} holds {len(wnids)} ImageNet IDs and {len(synsets)} names, not {NUM_CLASSES}."
        )
    return tuple((wnid, synset.split(",")[0].strip()) for wnid, synset in zip(wnids, synsets))


def _assigned_list(path: pathlib.Path, name: str) -> list[str]:
    """The literal list assigned to `name` in a Python source file, read without importing it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path} assigns no {name}.")


def decode_predictions(predictions, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """The `top` classes of each row of a 1,000-way ImageNet head's output, as keras.applications gives them.

    Args:
        predictions: [batch, 1000] probabilities or logits (NumPy or a tensor),
            e.g. `keras_vit.ViT_B16(weights="imagenet21k+imagenet2012").predict(x)`.
        top: classes per image.

    Returns:
        For each image, `top` tuples (WordNet ID, class name, score), best first.
    """
    scores = np.asarray(predictions)
    if scores.ndim != 2 or scores.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"decode_predictions expects [batch, {NUM_CLASSES}] ImageNet-1k scores, got shape {scores.shape}."
        )
    classes = imagenet_classes()
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    return [[(*classes[i], float(row[i])) for i in best] for row, best in zip(scores, order)]
