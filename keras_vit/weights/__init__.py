"""Weights: every source read into one canonical layout, validated once, assigned once.

The pipeline, in the order a load runs it:

1. `sources`: an `.npz` checkpoint of any released layout (`formats`), an HF
   transformers or timm checkpoint (`torch_formats`), a `.keras` or
   `.weights.h5` file, or a known release (`releases`, downloaded) becomes a
   `Checkpoint` in the canonical layout (`layout`: the reference's checkpoint
   keys for a ViT).
2. `validation`: every key, shape, NaN/Inf, grid and the fine-tuning head
   policy (`HEAD_POLICIES`) are checked against the model; position
   embeddings are resized to its grid. One error names what does not fit.
3. `pipeline`: the values are assigned.

`saving.save_checkpoint` writes the other way: `.npz`, HF and timm files.
Nothing here imports the model classes: they call `load_weights`.
Importing this package starts no TensorFlow; its names are imported on first use.
"""

from keras_vit._lazy import lazy_attributes

_EXPORTS = {
    "load_weights": "keras_vit.weights.pipeline",
    "load_npz": "keras_vit.weights.pipeline",
    "save_npz": "keras_vit.weights.pipeline",
    "CHECKPOINT_FORMATS": "keras_vit.weights.saving",
    "save_checkpoint": "keras_vit.weights.saving",
    "hf_config": "keras_vit.weights.saving",
    "timm_arguments": "keras_vit.weights.saving",
    "HEAD_POLICIES": "keras_vit.options",
    "Checkpoint": "keras_vit.weights.sources",
    "architecture_of": "keras_vit.weights.sources",
    "model_arguments": "keras_vit.weights.sources",
    "npz_architecture": "keras_vit.weights.sources",
    "checkpoint_variables": "keras_vit.weights.layout",
    # Known releases: names, URLs, downloads.
    "BASE_URL_ENV": "keras_vit.weights.releases",
    "DEFAULT_BASE_URL": "keras_vit.weights.releases",
    "FILE_HASHES": "keras_vit.weights.releases",
    "Release": "keras_vit.weights.releases",
    "check_resolution": "keras_vit.weights.releases",
    "default_image_size": "keras_vit.weights.releases",
    "download_weights": "keras_vit.weights.releases",
    "known_weights": "keras_vit.weights.releases",
    # Known checkpoints of the Hugging Face hub.
    "HUB_URL_ENV": "keras_vit.weights.hub",
    "HF_CHECKPOINTS": "keras_vit.weights.hub",
    "TIMM_CHECKPOINTS": "keras_vit.weights.hub",
    "download_checkpoint": "keras_vit.weights.hub",
    "weights_url": "keras_vit.weights.releases",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(globals(), _EXPORTS)
