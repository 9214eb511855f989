"""The four parts `VisionTransformer` is built from: stem, positions, encoder and head, each with its layers.

Each part is built from the model's arguments (`build`) and then wires its
layers into the functional graph (`__call__`); the model keeps the layers
under the attribute names the weights layout reads.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_vit import position_embeddings
from keras_vit.layers import (
    AddPositionEmbedding,
    ClassifierHead,
    ClassToken,
    PatchEmbedding,
    SequencePooling,
    StrideAlignment,
    TransformerBlock,
)
from keras_vit.layers.residual_unit import resnet_stride
from keras_vit.models.resnet_stem import ResNetLayers
from keras_vit.preprocessing import preprocessing_layer


@dataclasses.dataclass(frozen=True)
class Stem:
    """Pixels to patch tokens: preprocessing, stride alignment (any size), the hybrid's ResNet, the patch embedding,
    the class token and DeiT's distillation token."""

    preprocessing: keras.layers.Layer | None
    stride_alignment: StrideAlignment | None
    resnet: ResNetLayers | None
    embedding: PatchEmbedding
    patch_tokens: keras.layers.Reshape | None  # a dynamic model keeps the patch grid for its position tables
    class_token: ClassToken | None
    distillation_token: ClassToken | None  # DeiT's: the second token, after the class token

    @classmethod
    def build(cls, image_size, patch_size, hidden_size, resnet_layers, resnet_width, classifier, distillation_token,
              dynamic_image_size, dynamic_image_pad, include_preprocessing, pixel_statistics, dtype) -> "Stem":
        """`pixel_statistics`: (mean, std) the preprocessing scales with (None, None: the reference's)."""
        stride = 1 if resnet_layers is None else resnet_stride(resnet_layers)
        return cls(
            preprocessing=preprocessing_layer(dtype=dtype, mean=pixel_statistics[0], std=pixel_statistics[1])
            if include_preprocessing else None,
            stride_alignment=StrideAlignment(
                (stride * patch_size[0], stride * patch_size[1]), pad=dynamic_image_pad, dtype=dtype,
                name="stride_alignment",
            ) if dynamic_image_size else None,
            resnet=ResNetLayers.build(resnet_layers, resnet_width, dtype) if resnet_layers is not None else None,
            embedding=PatchEmbedding(patch_size, hidden_size, flatten=not dynamic_image_size, dtype=dtype,
                                     name="embedding"),
            patch_tokens=keras.layers.Reshape((-1, hidden_size), dtype=dtype, name="flatten_patches")
            if dynamic_image_size else None,
            class_token=ClassToken(dtype=dtype, name="cls") if classifier == "token" else None,
            distillation_token=ClassToken(dtype=dtype, name="dist") if distillation_token else None,
        )

    def __call__(self, images, image_size: tuple[int, int], dtype):
        """[batch, h, w, c] -> (tokens [batch, prefix + gh * gw, D] with the prefix [class, distillation], patches [batch, gh, gw, D] or the flat
        [batch, gh * gw, D] of a static model, the stored grid (gh, gw) at `image_size`)."""
        x = self.preprocessing(images) if self.preprocessing is not None else images
        if self.stride_alignment is not None:
            x = self.stride_alignment(x)
        if self.resnet is not None:
            x = self.resnet(x, dtype)
        stride = 1 if self.resnet is None else resnet_stride(tuple(len(stage) for stage in self.resnet.stages))
        dynamic = self.stride_alignment is not None
        grid = stored_grid(image_size, self.embedding.patch_size, stride, None if dynamic else tuple(x.shape[1:3]))
        x = patches = self.embedding(x)
        if self.patch_tokens is not None:
            x = self.patch_tokens(patches)
        if self.distillation_token is not None:  # prepended first, so that it follows the class token
            x = self.distillation_token(x)
        if self.class_token is not None:
            x = self.class_token(x)
        return x, patches, grid


@dataclasses.dataclass(frozen=True)
class Positions:
    """The learned position tables of `kind` at `placement` (the paper's appendix D.4): `posembed_input`, added once
    before the encoder or (shared) before every block, or a table of its own before every block."""

    input_table: AddPositionEmbedding | None
    block_tables: tuple[AddPositionEmbedding, ...]
    dynamic: bool

    @classmethod
    def build(cls, kind: str, placement: str, grid: tuple[int, int], num_prefix_tokens: int, num_layers: int,
              resize_method: str, dynamic: bool, dtype) -> "Positions":
        spec = position_embeddings.get(kind)
        if not spec.has_table:
            return cls(None, (), dynamic)

        def table(name: str) -> AddPositionEmbedding:
            return AddPositionEmbedding(grid, num_prefix_tokens=num_prefix_tokens, kind=kind,
                                        resize_method=resize_method, dtype=dtype, name=name)

        if placement == "every_layer":
            return cls(None, tuple(table(f"posembed_{i}") for i in range(num_layers)), dynamic)
        shared = table("posembed_input")
        return cls(shared, (shared,) * num_layers if placement == "every_layer_shared" else (), dynamic)

    def add(self, table: AddPositionEmbedding, tokens, patches):
        """`tokens` with `table` added (resized in the graph to the call's grid in a dynamic model)."""
        return table(tokens, patches) if self.dynamic else table(tokens)

    def before_encoder(self, tokens, patches):
        """The input placement: the table added once, before the first block."""
        if self.input_table is not None and not self.block_tables:
            return self.add(self.input_table, tokens, patches)
        return tokens


@dataclasses.dataclass(frozen=True)
class Encoder:
    """`num_layers` pre-LN Transformer blocks (stochastic depth rising linearly to its rate) and `encoder_norm`
    (which, with `fc_norm`, the head applies after pooling instead)."""

    dropout: keras.layers.Dropout
    blocks: tuple[TransformerBlock, ...]
    norm: keras.layers.LayerNormalization
    fc_norm: bool

    @classmethod
    def build(cls, num_heads, mlp_dim, num_layers, dropout_rate, attention_dropout_rate, stochastic_depth_rate,
              kind: str, grid, num_prefix_tokens, layer_norm_epsilon, approximate_gelu, fc_norm, remat,
              dtype) -> "Encoder":
        relative = position_embeddings.get(kind).in_attention
        return cls(
            dropout=keras.layers.Dropout(dropout_rate, dtype=dtype, name="posembed_dropout"),
            blocks=tuple(
                TransformerBlock(
                    num_heads,
                    mlp_dim,
                    dropout_rate=dropout_rate,
                    attention_dropout_rate=attention_dropout_rate,
                    stochastic_depth_rate=float(rate),
                    relative_positions=relative,
                    grid_size=grid if relative else None,
                    num_prefix_tokens=num_prefix_tokens,
                    layer_norm_epsilon=layer_norm_epsilon,
                    approximate_gelu=approximate_gelu,
                    remat=remat,
                    dtype=dtype,
                    name=f"encoderblock_{i}",
                )
                for i, rate in enumerate(np.linspace(0.0, stochastic_depth_rate, num_layers))
            ),
            norm=keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="encoder_norm"),
            fc_norm=fc_norm,
        )

    def __call__(self, tokens, positions: Positions, patches):
        """[batch, N, D] tokens (the input table added) -> [batch, N, D] after `encoder_norm` (before it, with
        `fc_norm`)."""
        x = self.dropout(tokens)
        for i, block in enumerate(self.blocks):
            if positions.block_tables:
                x = positions.add(positions.block_tables[i], x, patches)
            x = block(x)
        return x if self.fc_norm else self.norm(x)


@dataclasses.dataclass(frozen=True)
class Head:
    """Pooling (class token, mean, or keras.applications' avg/max), timm's `fc_norm`, the optional tanh `pre_logits`,
    the classifier; with DeiT's distillation token, its own classifier too, the two averaged (DeiT's inference)."""

    pool: SequencePooling
    fc_norm: keras.layers.LayerNormalization | None  # the encoder's `encoder_norm`, applied after pooling
    pre_logits: keras.layers.Dense | None
    classifier: ClassifierHead | None
    activation: keras.layers.Activation | None
    distillation_pool: SequencePooling | None
    distillation_classifier: ClassifierHead | None
    average: keras.layers.Average | None

    @classmethod
    def build(cls, classifier, pooling, representation_size, include_top, classes, head_bias_init,
              classifier_activation, num_prefix_tokens, distillation_token, fc_norm, dtype) -> "Head":
        def head(name: str) -> ClassifierHead:
            return ClassifierHead(classes, bias_initializer=keras.initializers.Constant(head_bias_init), dtype=dtype,
                                  name=name)

        distilled = distillation_token and pooling is None
        return cls(
            pool=SequencePooling(pooling or classifier, num_prefix_tokens=num_prefix_tokens, dtype=dtype, name="pool"),
            fc_norm=fc_norm,
            pre_logits=keras.layers.Dense(representation_size, activation="tanh", dtype=dtype, name="pre_logits")
            if representation_size is not None else None,
            classifier=head("head") if include_top else None,
            activation=keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")
            if include_top else None,
            distillation_pool=SequencePooling("token", token_index=1, dtype=dtype, name="distillation_pool")
            if distilled else None,
            distillation_classifier=head("head_dist") if distilled and include_top else None,
            average=keras.layers.Average(dtype=dtype, name="average_heads") if distilled else None,
        )

    def __call__(self, features):
        """[batch, N, D] -> [batch, classes] (float32), or the representation without a classifier."""
        x = self.pool(features)
        if self.fc_norm is not None:
            x = self.fc_norm(x)
        if self.pre_logits is not None:
            x = self.pre_logits(x)
        if self.distillation_pool is None:
            return self.activation(self.classifier(x)) if self.classifier is not None else x
        distilled = self.distillation_pool(features)
        if self.classifier is None:  # timm's pre-logits of a distilled model: the two tokens' mean
            return self.average([x, distilled])
        return self.activation(self.average([self.classifier(x), self.distillation_classifier(distilled)]))


def stored_grid(image_size, patch_size, stride: int, feature_size: tuple[int, int] | None) -> tuple[int, int]:
    """The patch grid at `image_size`; `feature_size` is the map the patch embedding sees (None: image_size / stride).

    Raises a ValueError when the image size does not give whole patches.
    """
    if feature_size is None:
        if image_size[0] % (stride * patch_size[0]) or image_size[1] % (stride * patch_size[1]):
            raise ValueError(
                f"The image size {image_size} is not divisible by the patch stride "
                f"{(stride * patch_size[0], stride * patch_size[1])} (patch size {patch_size} x ResNet stride {stride})."
            )
        feature_size = (image_size[0] // stride, image_size[1] // stride)
    if feature_size[0] % patch_size[0] or feature_size[1] % patch_size[1]:
        source = "image size" if stride == 1 else f"ResNet feature map {feature_size} of the image size"
        raise ValueError(f"The {source} {image_size} is not divisible by the patch size {patch_size}.")
    return feature_size[0] // patch_size[0], feature_size[1] // patch_size[1]
