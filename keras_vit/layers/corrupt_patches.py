"""The corruption step of masked patch prediction: patch embeddings replaced by a learned [mask] or another patch's."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class CorruptPatches(keras.layers.Layer):
    """Replaces chosen patch embeddings by a learned [mask] embedding or by another patch's embedding.

    The choice is an input (drawn by `keras_vit.masked_patches.PatchCorruption`
    in the data pipeline): token i takes the embedding of token `source[i]`
    (itself, unless it is replaced by another patch), and then the [mask]
    embedding where `masked[i]` is set.

    Args:
        initializer: of the [mask] embedding (BERT's: normal, stddev 0.02).

    Shapes:
        inputs: embeddings [batch, G, D], source int [batch, G], masked bool or 0/1 [batch, G].
        output: [batch, G, D].
    """

    def __init__(self, initializer: str | keras.initializers.Initializer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer or keras.initializers.RandomNormal(stddev=0.02))

    def build(self, embeddings_shape, source_shape=None, masked_shape=None):
        if len(embeddings_shape) != 3 or embeddings_shape[-1] is None:
            raise ValueError(f"CorruptPatches expects [batch, patches, hidden] embeddings, got shape {embeddings_shape}.")
        self.mask_embedding = self.add_weight(
            name="mask_embedding", shape=(embeddings_shape[-1],), initializer=self.initializer
        )

    def call(self, embeddings, source, masked):
        taken = ops.take_along_axis(embeddings, ops.cast(source, "int32")[..., None], axis=1)
        mask = ops.cast(self.mask_embedding, embeddings.dtype)
        return ops.where(ops.cast(masked, "bool")[..., None], mask[None, None], taken)

    def compute_output_shape(self, embeddings_shape, source_shape=None, masked_shape=None):
        return embeddings_shape

    def get_config(self):
        config = super().get_config()
        config.update(initializer=keras.initializers.serialize(self.initializer))
        return config
