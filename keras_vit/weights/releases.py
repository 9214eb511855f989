"""Known pre-trained weights: names, public URLs and the download into Keras' cache.

Importable without TensorFlow: Keras is imported only to download.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

#: Where the released checkpoints live; override (e.g. with a file:// mirror) via this variable.
BASE_URL_ENV = "KERAS_VIT_WEIGHTS_URL"
DEFAULT_BASE_URL = "https://storage.googleapis.com/vit_models"


@dataclasses.dataclass(frozen=True)
class Release:
    """A released checkpoint: its path below the base URL, the image size it was trained at, and whether it
    is fine-tuned (its head classifies ImageNet at that resolution) or pre-trained (a head to replace)."""

    path: str
    resolution: int
    fine_tuned: bool


# The original paper's releases (gs://vit_models/imagenet21k, .../imagenet21k+imagenet2012): <reference name>.npz.
_IMAGENET21K = ("ViT_B8", "ViT_B16", "ViT_B32", "ViT_L16", "ViT_L32", "ViT_H14", "R50_ViT_B16", "R26_ViT_B32", "R50_ViT_L32")
_IMAGENET21K_IMAGENET2012 = ("ViT_B8", "ViT_B16", "ViT_B32", "ViT_L16", "ViT_L32", "R50_ViT_B16")
# Fine-tuned on ImageNet at 224 instead of 384: <reference name>-224.npz.
_IMAGENET21K_IMAGENET2012_224 = ("ViT_B16", "ViT_L16")

# AugReg ("How to train your ViT?"): the recommended i21k checkpoint of each model;
# the fine-tuned ImageNet file adds `_AUGREG_IMAGENET_SUFFIX` with its learning rate.
_AUGREG = {
    "ViT_L16": ("L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0", "0.01"),
    "ViT_B16": ("B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0", "0.03"),
    "ViT_S16": ("S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03"),
    "R50_ViT_L32": ("R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1", "0.01"),
    "R26_ViT_S32": ("R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0", "0.01"),
    "ViT_Ti16": ("Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "0.03"),
    "ViT_B32": ("B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0", "0.01"),
    "ViT_S32": ("S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0", "0.01"),
    "R_ViT_Ti16": ("R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "0.03"),
}
_AUGREG_IMAGENET_SUFFIX = "--imagenet2012-steps_20k-lr_{lr}-res_384"


def releases(model_name: str) -> dict[str, Release]:
    """Weight name -> release, for one variant ("ViT_B16")."""
    from keras_vit.models.variants import VARIANTS

    reference = VARIANTS[model_name].reference_name
    out = {}
    if model_name in _IMAGENET21K:
        out["imagenet21k"] = Release(f"imagenet21k/{reference}.npz", 224, fine_tuned=False)
    if model_name in _IMAGENET21K_IMAGENET2012:
        out["imagenet21k+imagenet2012"] = Release(f"imagenet21k+imagenet2012/{reference}.npz", 384, fine_tuned=True)
    if model_name in _IMAGENET21K_IMAGENET2012_224:
        out["imagenet21k+imagenet2012-224"] = Release(f"imagenet21k+imagenet2012/{reference}-224.npz", 224, fine_tuned=True)
    if model_name in _AUGREG:
        stem, lr = _AUGREG[model_name]
        out["augreg-i21k"] = Release(f"augreg/{stem}.npz", 224, fine_tuned=False)
        out["augreg-i21k+imagenet2012"] = Release(f"augreg/{stem}{_AUGREG_IMAGENET_SUFFIX.format(lr=lr)}.npz", 384, fine_tuned=True)
    return out


def known_weights(model_name: str) -> dict[str, str]:
    """Weight name -> path below the base URL, for one variant ("ViT_B16")."""
    return {name: release.path for name, release in releases(model_name).items()}


def default_image_size(model_name: str | None, weights) -> int:
    """The resolution a known weights name was trained at; 224 for anything else."""
    release = releases(model_name).get(weights) if model_name and isinstance(weights, str) else None
    return release.resolution if release else 224


def check_resolution(model_name: str, weights: str, image_size: tuple[int, int]) -> None:
    """Warns when a fine-tuned release is used at another resolution than its own."""
    release = releases(model_name)[weights]
    if release.fine_tuned and tuple(image_size) != (release.resolution, release.resolution):
        warnings.warn(
            f"{weights!r} for {model_name} was fine-tuned at {release.resolution}x{release.resolution}; at "
            f"{image_size[0]}x{image_size[1]} its position embeddings are interpolated and its accuracy drops. "
            f"Fine-tune it at this resolution, or build the model at image_size={release.resolution}.",
            stacklevel=3,
        )


#: sha256 of a cached file name -> hex digest; `download_weights` has Keras' `get_file` check a file listed here.
#: Neither google-research/vision_transformer nor AugReg publish checksums of their files, so the table is empty:
#: downloads are checked only by loading (every key and shape). Add digests here to pin a mirror's files.
FILE_HASHES: dict[str, str] = {}


def weights_url(model_name: str | None, weights: str) -> str:
    """The URL of a known weight name for a variant; ValueError listing the known names otherwise."""
    files = known_weights(model_name) if model_name else {}
    if weights not in files:
        if model_name is None:
            raise ValueError(
                f"Unknown weights {weights!r}: not a file, and this architecture matches no released variant, "
                f"so no weight names are known for it. Pass a path to a .npz, .keras or .weights.h5 file."
            )
        known = ", ".join(sorted(files)) or "none"
        raise ValueError(
            f"Unknown weights {weights!r} for {model_name}: not a file, and not a known name. "
            f"Known names for {model_name}: {known}; or pass a path to a .npz, .keras or .weights.h5 file."
        )
    base = os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL).rstrip("/")
    return f"{base}/{files[weights]}"


def download_weights(model_name: str | None, weights: str) -> str:
    """Downloads (or finds in $KERAS_HOME/keras_vit, default ~/.keras) a known checkpoint; returns its path."""
    url = weights_url(model_name, weights)
    relative = url.rsplit("/", 2)
    fname = f"{relative[-2]}--{relative[-1]}".replace("+", "_")
    try:
        return fetch(url, fname, "keras_vit", FILE_HASHES.get(fname))
    except OSError as error:
        raise OSError(f"Could not download weights {weights!r} for {model_name} from {error}") from error


def fetch(url: str, fname: str, cache_subdir: str, file_hash: str | None = None) -> str:
    """`url` downloaded (or found) as `fname` in $KERAS_HOME/`cache_subdir` (default ~/.keras) with Keras'
    `get_file`; OSError "<url>: <why>" when it cannot be fetched, ValueError (Keras') on a sha256 mismatch."""
    import keras

    cache_dir = os.environ.get("KERAS_HOME")
    if cache_dir:  # get_file falls back to /tmp when the directory does not exist yet
        os.makedirs(cache_dir, exist_ok=True)
    try:
        return keras.utils.get_file(fname=fname, origin=url, file_hash=file_hash, hash_algorithm="sha256",
                                    cache_dir=cache_dir, cache_subdir=cache_subdir)
    except ValueError:  # a hash mismatch: keep Keras' message
        raise
    except Exception as error:  # get_file raises a bare Exception for network failures
        raise OSError(f"{url}: {error}") from error
