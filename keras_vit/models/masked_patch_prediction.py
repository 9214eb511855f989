"""`keras_vit.MaskedPatchPrediction`: the paper's self-supervised pre-training task around a VisionTransformer."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.weights.pipeline import WeightsLoading
from keras_vit.layers.corrupt_patches import CorruptPatches
from keras_vit.masked_patches import (
    COLOR_BITS, CORRUPTION_RATE, IMAGES, MASK_SHARE, MASKED, RANDOM_SHARE, SOURCE, PatchCorruption,
)
from keras_vit.models.vision_transformer import VisionTransformer


@keras.saving.register_keras_serializable(package="keras_vit")
class MaskedPatchPrediction(WeightsLoading, keras.Model):
    """Masked patch prediction (paper section 4.6, appendix B.1.2) on a `VisionTransformer` backbone.

    The backbone's patch embeddings are corrupted (`CorruptPatches`: a
    learned [mask] embedding, another patch's embedding, or left as they
    are), the rest of the encoder runs, and each patch token's output
    predicts its patch's mean colour, 3 bits per channel (512 classes), with
    a linear `color_head`. Which patches are corrupted, and their targets,
    come with each batch from `self.corruption()` in the data pipeline; the
    loss weighs only the corrupted patches (sample weights).

    After pre-training, `backbone` is the encoder to fine-tune:
    `keras_vit.load_weights(model, "masked_patch.keras")` and
    `keras_vit.training.train --init_from` take it from a saved MaskedPatchPrediction.

    Args:
        backbone: the VisionTransformer (or its config) whose encoder is trained.
        rate, mask_share, random_share: the corruption (the paper's 0.5, 0.8, 0.1).
        color_bits: bits per channel of the target colours.

    Shapes:
        inputs: {"images": [batch, h, w, c], "source": int [batch, G], "masked": 0/1 int [batch, G]}.
        output: colour logits [batch, G, 2 ** (3 * color_bits)], float32.
    """

    def __init__(
        self,
        backbone: VisionTransformer | dict,
        rate: float = CORRUPTION_RATE,
        mask_share: float = MASK_SHARE,
        random_share: float = RANDOM_SHARE,
        color_bits: int = COLOR_BITS,
        **kwargs,
    ):
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, VisionTransformer):
            raise ValueError(f"MaskedPatchPrediction needs a keras_vit.VisionTransformer backbone, got {type(backbone).__name__}.")
        if not (0 < rate <= 1 and mask_share >= 0 and random_share >= 0 and mask_share + random_share <= 1):
            raise ValueError(f"Invalid corruption: rate {rate}, mask_share {mask_share}, random_share {random_share}.")
        kwargs.setdefault("name", "masked_patch_prediction")
        super().__init__(**kwargs)
        policy = backbone.dtype_policy
        # === Layers ===
        self.backbone = backbone
        self.corrupt_patches = CorruptPatches(dtype=policy, name="corrupt_patches")
        self.color_head = keras.layers.Dense(2 ** (3 * color_bits), dtype=policy, name="color_head")
        # === Config ===
        self.rate = rate
        self.mask_share = mask_share
        self.random_share = random_share
        self.color_bits = color_bits
        self.build()

    def build(self, input_shape=None):
        patches = self.backbone.grid_size[0] * self.backbone.grid_size[1]
        self.corrupt_patches.build((None, patches, self.backbone.hidden_size))
        self.color_head.build((None, patches, self.backbone.hidden_size))
        self.built = True

    def call(self, inputs, training=None):
        x = self.backbone.embed_patches(inputs[IMAGES], training=training)
        x = self.corrupt_patches(x, inputs[SOURCE], inputs[MASKED])
        tokens = self.backbone.encode(x, training=training)[:, self.backbone.num_prefix_tokens :]
        return ops.cast(self.color_head(tokens), "float32")

    def corruption(self) -> PatchCorruption:
        """The data pipeline's half of the task: draws each batch's corruption and its colour targets."""
        return PatchCorruption(
            self.backbone.grid_size, self.backbone.patch_stride, self.rate, self.mask_share, self.random_share,
            self.color_bits,
        )

    def representation(self, images, training: bool = False):
        """The backbone's representation of uncorrupted images (for few-shot evaluation during pre-training)."""
        return self.backbone.representation(images, training=training)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "rate": self.rate,
            "mask_share": self.mask_share,
            "random_share": self.random_share,
            "color_bits": self.color_bits,
        }
