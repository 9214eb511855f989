"""Known checkpoints on the Hugging Face hub, by their hub names: HF transformers' and timm's, downloaded into Keras' cache.

`keras_vit.ViT(weights="google/vit-base-patch16-224")` downloads the
repository's `config.json` and `model.safetensors` (`pytorch_model.bin`
where it has no safetensors file, which then needs torch), and the pixel
statistics where the repository states them (HF's
`preprocessor_config.json`, timm's `config.json`), from
`$KERAS_VIT_HUB_URL` (default https://huggingface.co; a mirror, or a
`file://` folder laid out as `<repo>/resolve/main/<file>`), into
`$KERAS_HOME/keras_vit/hub/<org>--<name>/`, and reads them as any local
checkpoint (`keras_vit.weights.torch_formats`). A file already there is
used as it is.

Importable without TensorFlow: Keras is imported only to download.
"""

from __future__ import annotations

import os

from keras_vit.weights import releases

#: Where the hub's files are; override with a mirror (or a file:// folder of the same layout) via this variable.
HUB_URL_ENV = "KERAS_VIT_HUB_URL"
DEFAULT_HUB_URL = "https://huggingface.co"

#: HF transformers checkpoints (`config.json` and the weights): the paper's models as Google ported them, and DeiT.
HF_CHECKPOINTS = (
    "google/vit-base-patch16-224", "google/vit-base-patch16-224-in21k", "google/vit-base-patch16-384",
    "google/vit-base-patch32-224-in21k", "google/vit-base-patch32-384", "google/vit-large-patch16-224",
    "google/vit-large-patch16-224-in21k", "google/vit-large-patch16-384", "google/vit-large-patch32-224-in21k",
    "google/vit-large-patch32-384", "google/vit-huge-patch14-224-in21k",
    "facebook/deit-tiny-patch16-224", "facebook/deit-small-patch16-224", "facebook/deit-base-patch16-224",
    "facebook/deit-base-patch16-384", "facebook/deit-tiny-distilled-patch16-224",
    "facebook/deit-small-distilled-patch16-224", "facebook/deit-base-distilled-patch16-224",
    "facebook/deit-base-distilled-patch16-384",
)
#: timm's checkpoints (a state dict; its `config.json` is timm's own): AugReg, DeiT and the hybrids.
TIMM_CHECKPOINTS = (
    "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "timm/vit_base_patch16_224.augreg_in21k",
    "timm/vit_base_patch16_384.augreg_in21k_ft_in1k", "timm/vit_base_patch32_224.augreg_in21k_ft_in1k",
    "timm/vit_base_patch8_224.augreg2_in21k_ft_in1k", "timm/vit_large_patch16_224.augreg_in21k_ft_in1k",
    "timm/deit_tiny_patch16_224.fb_in1k", "timm/deit_small_patch16_224.fb_in1k", "timm/deit_base_patch16_224.fb_in1k",
    "timm/deit_tiny_distilled_patch16_224.fb_in1k", "timm/deit_base_distilled_patch16_224.fb_in1k",
    "timm/vit_tiny_r_s16_p8_224.augreg_in21k_ft_in1k", "timm/vit_base_r50_s16_384.orig_in21k_ft_in1k",
)
_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hub_name(name) -> bool:
    """Whether `name` is one of the known hub checkpoints."""
    return isinstance(name, str) and name in HF_CHECKPOINTS + TIMM_CHECKPOINTS


def hub_url(repo: str, file: str) -> str:
    """The URL of one file of a hub repository's main revision (under `$KERAS_VIT_HUB_URL`)."""
    base = os.environ.get(HUB_URL_ENV, DEFAULT_HUB_URL).rstrip("/")
    return f"{base}/{repo}/resolve/main/{file}"


def download_checkpoint(name: str) -> str:
    """Downloads (or finds in the cache) a known hub checkpoint; returns the path keras_vit reads: the folder of an
    HF checkpoint, the weights file of a timm one. OSError naming the URL when it cannot be fetched."""
    if not is_hub_name(name):
        raise ValueError(f"{name!r} is not a known hub checkpoint; known: {', '.join(HF_CHECKPOINTS + TIMM_CHECKPOINTS)}.")
    errors = []
    for optional in ("preprocessor_config.json",) if name in HF_CHECKPOINTS else ("config.json",):
        try:  # the pixel statistics: HF's image processor settings, timm's pretrained_cfg
            _fetch(name, optional)
        except OSError:
            pass
    try:
        if name in HF_CHECKPOINTS:
            _fetch(name, "config.json")
        for file in _WEIGHTS_FILES:
            try:
                path = _fetch(name, file)
            except OSError as error:
                errors.append(str(error))
                continue
            return os.path.dirname(path) if name in HF_CHECKPOINTS else path
    except OSError as error:
        errors.append(str(error))
    raise OSError(f"Could not download {name!r}: {'; '.join(errors)}")


def _fetch(repo: str, file: str) -> str:
    return releases.fetch(hub_url(repo, file), file, os.path.join("keras_vit", "hub", repo.replace("/", "--")))
