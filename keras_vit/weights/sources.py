"""Every source of weights, read into one `Checkpoint` in the canonical layout (`keras_vit.weights.layout`).

Sources: an original `.npz` checkpoint in any released layout
(`keras_vit.weights.formats`), an HF transformers or timm checkpoint
(`keras_vit.weights.torch_formats`), a `.keras` file (of a `VisionTransformer`, or
of a `MaskedPatchPrediction`, whose backbone is the source), a
`.weights.h5` file, or a known release name of the model's variant
(downloaded, `keras_vit.weights.releases`). Reading assigns nothing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile

import h5py
import numpy as np
import keras

from keras_vit.layers.attention import GRID_KEY as LAYER_GRID_KEY
from keras_vit.options import ARCHITECTURE, CONVENTIONS, MODEL_OPTIONS
from keras_vit.weights import formats, hub, keras_saving, layout, releases, torch_formats

KERAS_FORMATS = (".keras", ".weights.h5", ".h5")

#: The `VisionTransformer` arguments a weights file fixes (what `architecture_of` returns).
RECORDED = (*ARCHITECTURE, *MODEL_OPTIONS, *CONVENTIONS)
#: What a file may tell beside them: the inputs and the head it was saved for (`model_arguments`).
SAVED_FOR = ("image_size", "classes", "channels")


@dataclasses.dataclass
class Checkpoint:
    """Weights read from one source, in the canonical layout of the model they are read for.

    Attributes:
        path: the source, as messages name it.
        params: canonical key -> array.
        names: canonical key -> the key as the source spells it (also for keys the source lacks, where known).
        grid: the patch grid the position tables were stored for, when the source records it.
        unexpected: name in the source -> shape, of arrays that belong to no variable of the model.
        optimizer: the optimizer's variables stored beside the weights (a training backup), in order.
        architecture: the stored model's architecture arguments, when the source tells them.
    """

    path: str
    params: dict[str, np.ndarray]
    names: dict[str, str]
    grid: tuple[int, int] | None = None
    unexpected: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    optimizer: list[np.ndarray] = dataclasses.field(default_factory=list)
    architecture: dict | None = None

    def name(self, key: str) -> str:
        return self.names.get(key) or layout.released_name(key)


def read(source: str | os.PathLike, model) -> Checkpoint:
    """The weights `source` names, read for `model`: a file path, a known hub checkpoint, or a known release of
    `model.variant`."""
    path = os.fspath(source)
    if hub.is_hub_name(path) and not os.path.exists(path):
        path = hub.download_checkpoint(path)
    if not os.path.exists(path):
        if path.endswith((".npz", *KERAS_FORMATS)):
            raise FileNotFoundError(f"Weights file not found: {path!r}.")
        variant = getattr(model, "variant", None)
        name, path = path, releases.download_weights(variant, path)
        releases.check_resolution(variant, name, model.image_size)
    if torch_formats.is_torch_checkpoint(path):
        return read_torch(path, getattr(model, "num_heads", None))
    if path.endswith(".keras") and saved_config(path).get("class_name") == "MaskedPatchPrediction" and layout.is_vision_transformer(model):
        return read_backbone(path, model)
    if path.endswith(KERAS_FORMATS):
        return read_keras(path, model)
    return read_npz(path)


def read_npz(path: str | os.PathLike) -> Checkpoint:
    """An original `.npz` checkpoint of any released layout. FileNotFoundError or ValueError naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path!r}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Could not read checkpoint {path!r}: it is not an .npz (zip) archive. Weights load from .npz "
            f"checkpoints, .keras or .weights.h5 files."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"Could not read checkpoint {path!r} as an .npz archive: {error}") from None
    try:
        params, names = formats.normalize(stored)
    except ValueError as error:
        raise ValueError(f"Checkpoint {path!r}: {error}") from None
    grid = tuple(int(g) for g in params.pop(layout.NPZ_GRID_KEY)) if layout.NPZ_GRID_KEY in params else None
    options = {option: _option_value(params.pop(layout.npz_option_key(option))) for option in layout.NPZ_OPTIONS
               if layout.npz_option_key(option) in params}
    for key in (layout.NPZ_GRID_KEY, *map(layout.npz_option_key, layout.NPZ_OPTIONS)):
        names.pop(key, None)
    try:
        found = {**layout.architecture(params, grid), **options}
    except (KeyError, ValueError):
        found = None
    return Checkpoint(path, params, names, grid, architecture=found)


def _option_value(value: np.ndarray):
    """A model option stored in an `.npz`: a scalar's Python value, or a tuple."""
    return value.item() if value.ndim == 0 else tuple(value.tolist())


def read_torch(path: str, num_heads: int | None = None) -> Checkpoint:
    """An HF transformers folder or file, or a timm file (`num_heads`: of the model it is read for, as timm's state
    dicts do not record it)."""
    found = torch_formats.read(path, num_heads)
    return Checkpoint(path, found.params, found.names, found.grid, found.unexpected, architecture=found.architecture)


def read_keras(path: str, model) -> Checkpoint:
    """A `.keras` or `.weights.h5` file, each array matched to the variable of `model` it was saved from."""
    stored = _h5_arrays(path)
    slots = keras_saving.file_slots(model)
    key_of = {id(variable): key for key, variable in layout.model_variables(model).items()}
    params, names, unexpected, optimizer, grid = {}, {}, {}, {}, None
    for (group, key), value in slots.items():
        if isinstance(value, keras.Variable) and id(value) in key_of:
            names[key_of[id(value)]] = f"{group}/{key}"
    for (group, key), value in stored.items():
        slot = slots.get((group, key))
        if group == keras_saving.OPTIMIZER:
            optimizer[int(key)] = value
        elif key == LAYER_GRID_KEY:
            grid = grid or tuple(int(g) for g in value)
        elif isinstance(slot, keras.Variable) and id(slot) in key_of:
            params[key_of[id(slot)]] = value
        elif group:  # the model's own top-level group ("vars") holds no weights of keras_vit's models
            unexpected[f"{group}/{key}"] = np.shape(value)
    found = None
    if path.endswith(".keras"):
        config = saved_config(path)
        if config.get("class_name") == "VisionTransformer":
            found = config["config"]
    return Checkpoint(path, params, names, grid, unexpected, [optimizer[i] for i in sorted(optimizer)], found)


def read_backbone(path: str, model) -> Checkpoint:
    """The encoder of a saved `keras_vit.MaskedPatchPrediction`: what self-supervised pre-training produced."""
    backbone = keras.models.load_model(path, compile=False, safe_mode=True).backbone
    params = {key: keras.ops.convert_to_numpy(v) for key, v in layout.model_variables(backbone).items()}
    names = {key: f"the backbone's {layout.released_name(key)}" for key in params}
    return Checkpoint(f"the backbone of {path}", params, names, backbone.grid_size, architecture=backbone.get_config())


def saved_config(path: str) -> dict:
    """The model config a `.keras` archive was saved with; ValueError naming the file when unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .keras archive ({error}).") from None


def architecture_of(path: str | os.PathLike, num_heads: int | None = None) -> dict:
    """The architecture arguments of the model a `.keras` file, an `.npz` checkpoint or an HF / timm one holds.

    A `.keras` file gives them from its saved config (a `MaskedPatchPrediction`'s
    backbone's); an `.npz` from its keys and shapes; an HF checkpoint from its
    `config.json`; a timm one from its keys and shapes, the heads from the
    variant of its width unless `num_heads` gives them. `.weights.h5` files
    hold no config: pass the architecture yourself.
    """
    return {key: value for key, value in model_arguments(path, num_heads).items() if key in RECORDED}


def records_architecture(path: str | os.PathLike) -> bool:
    """Whether `path` is a file of a kind that records its model's architecture (`architecture_of`)."""
    path = os.fspath(path)
    return os.path.exists(path) and (path.endswith((".npz", ".keras")) or torch_formats.is_torch_checkpoint(path))


def model_arguments(path: str | os.PathLike, num_heads: int | None = None) -> dict:
    """`architecture_of`, with the image size, classes and channels the file was saved for where it tells them:
    the arguments of a `VisionTransformer` that computes what the file's own model computes."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path!r}.")
    if torch_formats.is_torch_checkpoint(path):
        found = read_torch(path, num_heads).architecture
    elif path.endswith(".npz"):
        found = npz_architecture(path)
    elif path.endswith(".keras"):
        saved = saved_config(path)
        if saved.get("class_name") == "MaskedPatchPrediction":
            saved = saved["config"]["backbone"]
        if saved.get("class_name") != "VisionTransformer":
            raise ValueError(f"{path} holds a {saved.get('class_name')!r}, not a keras_vit VisionTransformer.")
        found = saved["config"]
    else:
        raise ValueError(f"{path}: only .keras files, .npz checkpoints and HF / timm checkpoints record their "
                         f"architecture.")
    return {key: found[key] for key in (*RECORDED, *SAVED_FOR) if key in found}


def npz_architecture(path: str | os.PathLike) -> dict:
    """The `VisionTransformer` arguments of an original checkpoint (`keras_vit.weights.layout.architecture`)."""
    checkpoint = read_npz(path)
    if checkpoint.architecture is not None:
        return checkpoint.architecture
    try:
        return layout.architecture(checkpoint.params, checkpoint.grid)
    except KeyError as error:
        raise ValueError(f"Checkpoint {checkpoint.path!r} lacks {error}, which every ViT checkpoint has.") from None
    except ValueError as error:
        raise ValueError(f"Checkpoint {checkpoint.path!r}: {error}.") from None


def _h5_arrays(path: str) -> dict[tuple[str, str], np.ndarray]:
    """{(group, key): array} of a `.keras` or `.weights.h5` file, read with h5py; ValueError naming the file."""
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                source = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
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
