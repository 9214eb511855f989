"""Loading weights into a keras_vit model, and loading saved models.

One fine-tuning head policy for every format, decided here when weights load:
the stored head is kept when its shapes fit the model's `classes`, and
otherwise the model keeps its new zero-initialised head (the reference's rule
for reusing a checkpoint on a new task). Every other weight loads strictly.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile

import keras

import numpy as np

from keras_vit import checkpoints, keras_files, weights as known_weights
from keras_vit.layers.attention import GRID_KEY
from keras_vit.models.variants import variant_name

logger = logging.getLogger(__name__)

KERAS_FORMATS = (".keras", ".weights.h5", ".h5")


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file of a keras_vit model for inference, evaluation or export.

    The training configuration is not restored (`compile=False`): inference
    needs no optimizer. Loads with `safe_mode=True`. `keras.models.load_model`
    works as well, after `import keras_vit`.
    """
    if not os.path.exists(path):
        raise ValueError(f"Model file {os.fspath(path)!r} does not exist.")
    return keras.models.load_model(path, compile=False, safe_mode=True)


def open_model(
    source: str | os.PathLike, variant: str | None = None, image_size: int | tuple[int, int] | None = None
) -> keras.Model:
    """A model from a `.keras` file, an original `.npz` checkpoint, or a known weights name of `variant`.

    A `.npz` gives its own architecture, image size and classes (with
    `variant`, the model is that variant); a known name ("imagenet21k", ...)
    needs `variant` and downloads the release. `image_size` overrides the
    file's resolution (position embeddings are resized).
    """
    from keras_vit.models.constructors import ViT, create_model

    path = os.fspath(source)
    if path.endswith(".keras"):
        if image_size is not None:
            raise ValueError(f"{path} is a whole model at its own image size; --image_size applies to .npz files.")
        return load_model(path)
    if not path.endswith(".npz"):
        if os.path.exists(path) or variant is None:
            raise ValueError(
                f"Cannot open {path!r}: expected a .keras file, an original .npz checkpoint, or a known weights "
                f"name with its variant (e.g. --model imagenet21k --variant ViT_B16)."
            )
        path = known_weights.download_weights(variant_name(variant), path)
    found = checkpoints.npz_architecture(path)
    if image_size is not None:
        found["image_size"] = image_size
    if variant is not None:
        options = {key: found[key] for key in ("image_size", "classes", "classifier", "representation_size") if key in found}
        return create_model(variant, weights=path, **options)
    return ViT(weights=path, **found)


#: The `VisionTransformer` arguments a weights file fixes (what `architecture_of` returns).
ARCHITECTURE = (
    "patch_size", "hidden_size", "mlp_dim", "num_heads", "num_layers", "resnet_layers", "resnet_width",
    "classifier", "representation_size", "position_embedding",
)


def architecture_of(path: str | os.PathLike) -> dict:
    """The architecture arguments of the model a `.keras` file or an `.npz` checkpoint holds.

    A `.keras` file gives them from its saved config; an `.npz` from its keys
    and shapes (`keras_vit.checkpoints.npz_architecture`). `.weights.h5`
    files hold no config: pass the architecture yourself.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path!r}.")
    if path.endswith(".npz"):
        found = checkpoints.npz_architecture(path)
    elif path.endswith(".keras"):
        saved = _saved_config(path)
        if saved.get("class_name") == "MaskedPatchPrediction":
            saved = saved["config"]["backbone"]
        if saved.get("class_name") != "VisionTransformer":
            raise ValueError(f"{path} holds a {saved.get('class_name')!r}, not a keras_vit VisionTransformer.")
        found = saved["config"]
    else:
        raise ValueError(f"{path}: only .keras files and .npz checkpoints record their architecture.")
    return {key: found[key] for key in ARCHITECTURE if key in found}


def _saved_config(path: str) -> dict:
    """The model config a `.keras` archive was saved with."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .keras archive ({error}).") from None


def load_weights(model, weights: str | os.PathLike) -> None:
    """Loads `.npz`, `.keras` or `.weights.h5` weights, or a known name of `model.variant`, into `model`.

    Position embeddings stored for another grid are resized to the model's;
    the head follows the module's policy (kept when it fits, else new). A
    known fine-tuned release used at another resolution than its own warns.
    A `.keras` file of a `MaskedPatchPrediction` gives its backbone, the
    self-supervised encoder.
    """
    path = os.fspath(weights)
    if not os.path.exists(path):
        if path.endswith((".npz", *KERAS_FORMATS)):
            raise FileNotFoundError(f"Weights file not found: {path!r}.")
        name, path = path, known_weights.download_weights(model.variant, path)
        known_weights.check_resolution(model.variant, name, model.image_size)
    if path.endswith(".keras") and _saved_config(path).get("class_name") == "MaskedPatchPrediction":
        _load_backbone_weights(model, path)
    elif path.endswith(KERAS_FORMATS):
        _load_keras_weights(model, path)
    else:
        checkpoints.load_npz(model, path)


def keep_head(model, stored_shapes: list[tuple[int, ...]]) -> bool:
    """The head policy: True when the stored head's shapes fit the model's head (logged when not)."""
    if model.head is None:
        return False
    expected = [tuple(v.shape) for v in model.head.weights]
    if [tuple(s) for s in stored_shapes] == expected:
        return True
    logger.info(
        "The stored head %s does not fit %d classes: keeping a new zero-initialised head.",
        [tuple(s) for s in stored_shapes],
        model.classes,
    )
    return False


def _load_keras_weights(model, path: str) -> None:
    """Validates the whole file first (`keras_vit.keras_files`), then loads it with the head policy; all or nothing."""
    stored, names = _validated_weights(model, path)
    head = model.head
    keep = False
    if head is not None:
        group = next((g for g, name in names.items() if name == head.name), None)
        keep = keep_head(model, [np.shape(v) for v in keras_files.variables_of(stored, group)])

    def load() -> None:  # Keras' own method: the model's `load_weights` comes back here
        if head is None or keep:
            keras.Model.load_weights(model, path)
        else:
            with head.skipping_load():
                keras.Model.load_weights(model, path)

    keras_files.assign_or_restore(model, load)


def _load_backbone_weights(model, path: str) -> None:
    """Loads the backbone of a saved `MaskedPatchPrediction` as `.weights.h5`, with every check of that path."""
    pretrained = load_model(path)
    with tempfile.TemporaryDirectory() as folder:
        backbone = os.path.join(folder, "backbone.weights.h5")
        pretrained.backbone.save_weights(backbone)
        try:
            _load_keras_weights(model, backbone)
        except ValueError as error:
            raise ValueError(str(error).replace(backbone, f"the backbone of {path}")) from None


def _validated_weights(model, path: str) -> tuple[dict, dict[str, str]]:
    """The file's arrays and layer names, once every weight fits the model, position and relative tables included."""
    posemb, head = model.posembed_input, model.head
    relative = model.encoder_blocks[0].attention if model.position_embedding == "relative" else None
    stored, names = keras_files.check_weights_file(
        model,
        path,
        resizable={layer.name for layer in (posemb, relative) if layer is not None},
        optional={head.name} if head is not None else set(),
    )
    try:
        for group, name in names.items():
            tables = keras_files.variables_of(stored, group)
            grid = stored.get((group, GRID_KEY))
            grid = tuple(int(g) for g in grid) if grid is not None else None
            if posemb is not None and name == posemb.name:
                posemb.fitted(tables, grid)
            elif relative is not None and name == relative.name and tables:  # every block's table has one shape
                relative.check_relative_embedding(np.shape(tables[0]), grid)
    except ValueError as error:
        raise ValueError(f"{path} does not fit model {model.name!r}: {error}") from None
    return stored, names
