"""`keras_vit.ResNet`: a BiT-style ResNet classifier built from the hybrids' own units, the CNN baseline of the paper's
data-scale study (Fig. 3, 4)."""

from __future__ import annotations

import keras
import numpy as np

from keras_vit.weights.pipeline import WeightsLoading
from keras_vit.layers import ClassifierHead
from keras_vit.layers.residual_unit import resnet_stride
from keras_vit.models.resnet_stem import ResNetLayers
from keras_vit.preprocessing import preprocessing_layer
from keras_vit.utils import ConstructorConfig, GraphViews, to_pair


@keras.saving.register_keras_serializable(package="keras_vit")
class ResNet(WeightsLoading, ConstructorConfig, keras.Model):
    """A ResNet of the ViT hybrids' units, with global average pooling and a linear head.

    Like BiT (Kolesnikov et al., 2020) it uses weight-standardised
    convolutions and GroupNorm; its units are the reference hybrid's
    post-activation bottlenecks (`keras_vit.layers.ResidualUnit`), so it is
    exactly the hybrids' stem with a classifier instead of a Transformer:
    the paper's convolutional baseline at the same data and recipe.

    Args:
        image_size: input height and width (int or (h, w)).
        resnet_layers: units per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        resnet_width: width factor (the root has 64 * width channels).
        include_top: with the head; else the model outputs the pooled features.
        classes: classes of the head (zero-initialised, as the ViT's).
        classifier_activation: activation of the head's output (None: logits).
        include_preprocessing: take [0, 255] pixels and scale them to [-1, 1].
        crop_fraction: the evaluation crop it expects (as `VisionTransformer`).
        channels: input channels.
        name, dtype: the model's name and dtype policy.

    Shapes:
        input: [batch, h, w, channels]; output: [batch, classes] (float32), or
        [batch, 256 * width * 2^(stages - 1)] with `include_top=False`.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 224,
        resnet_layers: tuple[int, ...] = (3, 4, 6, 3),
        resnet_width: int = 1,
        include_top: bool = True,
        classes: int = 1000,
        classifier_activation: str | None = None,
        include_preprocessing: bool = False,
        crop_fraction: float = 1.0,
        channels: int = 3,
        name: str = "resnet",
        dtype=None,
        **kwargs,
    ):
        image_size = to_pair(image_size, "image_size")
        resnet_layers = tuple(int(n) for n in resnet_layers)
        stride = resnet_stride(resnet_layers)
        if image_size[0] < stride or image_size[1] < stride:
            raise ValueError(f"image_size {image_size} is smaller than the ResNet's stride {stride}.")
        # === Layers ===
        self.preprocessing = preprocessing_layer(dtype=dtype) if include_preprocessing else None
        self.resnet = ResNetLayers.build(resnet_layers, resnet_width, dtype)
        self.pool = keras.layers.GlobalAveragePooling2D(dtype=dtype, name="pool")
        self._head = ClassifierHead(classes, dtype=dtype, name="head") if include_top else None

        # === Functional model ===
        inputs = keras.Input((*image_size, channels), name="images")
        x = self.preprocessing(inputs) if self.preprocessing is not None else inputs
        x = self.pool(self.resnet(x, dtype))
        if self._head is not None:
            x = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(self._head(x))
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)

        # === Config ===
        self.image_size = image_size
        self.resnet_layers = resnet_layers
        self.resnet_width = resnet_width
        self.include_top = include_top
        self.classes = classes
        self.classifier_activation = classifier_activation
        self.include_preprocessing = include_preprocessing
        self.crop_fraction = crop_fraction
        self.channels = channels
        self._views = GraphViews()
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

    @property
    def head(self) -> ClassifierHead | None:
        """The classification head, or None with `include_top=False`."""
        return self._head

    def representation(self, images, training: bool = False):
        """What the head sees: the globally pooled last stage, [batch, C]."""
        return self._representation_view()(images, training=training)

    def predict_representation(self, images) -> np.ndarray:
        """`representation` of one batch in inference, compiled as `predict_on_batch` compiles it: NumPy [batch, C]."""
        return self._representation_view().predict_on_batch(images)

    def _representation_view(self) -> keras.Model:
        def build() -> keras.Model:
            return keras.Model(self.input, self.pool.output, name=f"{self.name}_representation")

        return self._views.get("representation", build)
