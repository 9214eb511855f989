"""`keras_vit.VisionTransformer`: the Vision Transformer and its ResNet hybrids as one `keras.Model` class."""

from __future__ import annotations

import numpy as np
import keras

from keras_vit import position_embeddings
from keras_vit.layers import AddPositionEmbedding, ClassifierHead, ResidualUnit, TransformerBlock
from keras_vit.layers.residual_unit import resnet_stride
from keras_vit.lora import DEFAULT_LORA_TARGETS, enable_lora, lora_layers
from keras_vit.losses import loss_for_outputs
from keras_vit.models.variants import check_variant, variant_name
from keras_vit.models.vit_parts import Encoder, Head, Positions, Stem
from keras_vit.options import ARCHITECTURE, CLASSIFIERS, POOLINGS, POSITION_EMBEDDING_PLACEMENTS
from keras_vit.patch_resampling import PATCH_RESAMPLE_METHODS
from keras_vit.utils import ConstructorConfig, GraphViews, to_pair
from keras_vit.weights.pipeline import WeightsLoading


@keras.saving.register_keras_serializable(package="keras_vit")
class VisionTransformer(WeightsLoading, ConstructorConfig, keras.Model):
    """The Vision Transformer of Dosovitskiy et al. (ICLR 2021), and its ResNet hybrids.

    The image (for hybrids: the ResNet's feature map) is cut into
    `patch_size` patches, each projected to `hidden_size`; a class token is
    prepended (`classifier="token"`), position embeddings are added,
    `num_layers` pre-LN Transformer blocks and a final LayerNorm
    (`encoder_norm`) run, and the class token's output (or the mean of all
    tokens, `classifier="gap"`) goes through the optional tanh
    `representation_size` layer and the classification head.

    The model is built functionally in `__init__`; `get_config()` returns
    exactly these arguments, so a `.keras` file rebuilds it with
    `keras.models.load_model` (after `import keras_vit`) and `from_config`.
    Weights are loaded by the constructors (`keras_vit.ViT`, `ViT_B16`, ...)
    or `keras_vit.load_weights`.

    Args:
        image_size: input height and width (int or (h, w); default 224); each
            must divide by the patch size (hybrids: the ResNet's feature map must).
            With `dynamic_image_size`, the size the position embeddings are
            stored for (what weights files hold and load-time resizing targets).
        patch_size, hidden_size, mlp_dim, num_heads, num_layers: the encoder.
        resnet_layers: hybrids only: units per ResNet stage, e.g. (3, 4, 9);
            `()` is the stem alone; None (default) is a plain ViT.
        resnet_width: hybrids only: ResNet width factor (the stem has 64 * width).
        include_top: with the head; else the model outputs the pooled
            representation [batch, representation_size or hidden_size].
        pooling: with `include_top=False` (keras.applications' argument):
            None pools as `classifier` does; "avg" or "max" pool the patch
            tokens' outputs (the class token left out).
        classes: number of classes of the head.
        head_bias_init: initial bias of every class logit; the head's kernel
            starts at zero. 0 (default) for softmax training and fine-tuning;
            -10 for pre-training with the sigmoid loss, as the released
            ImageNet-21k models were (big_vision's `init_head_bias`), so that
            each of many classes starts near probability 0.
        classifier: "token" or "gap".
        representation_size: width of the tanh "pre-logits" layer, or None.
        dropout_rate, attention_dropout_rate, stochastic_depth_rate:
            regularisation; stochastic depth grows linearly from 0 in the first
            block to this rate in the last.
        position_embedding: "learned_1d" (default), "learned_2d", "relative" or
            "none" (the paper's appendix D.4 ablation).
        position_embedding_resize: how position embeddings stored for another
            grid are resized, on load and (`dynamic_image_size`) at call time:
            "reference" (the reference's aligned-corners linear zoom) or
            "bilinear", "bicubic", "nearest" (half-pixel, `tf.image.resize`).
        patch_embedding_resize: how a patch-embedding kernel stored for
            another patch size is resampled on load (FlexiViT, Beyer et al.,
            2023; `keras_vit.patch_resampling`): "bilinear" (default,
            big_vision's pseudo-inverse of the bilinear resize) or "bicubic"
            (timm's `resample_patch_embed`). The position embeddings are
            resized to the new grid as for any other grid.
        position_embedding_placement: where learned position embeddings are
            added (the paper's appendix D.4, Table 8): "input" (default: once,
            before the encoder), "every_layer" (a table of its own before each
            block) or "every_layer_shared" (one table added before each block).
            "none" and "relative" have no table to place: input only.
        dynamic_image_size: take images of any height and width (input
            [batch, None, None, channels]); each call resizes the position
            embeddings in the graph to its own grid, as loading weights at
            that size would. `input_shape=(None, None, channels)` means the
            same. Not with `position_embedding="relative"`.
        dynamic_image_pad: with `dynamic_image_size`: pad images whose height
            or width does not divide by `patch_stride` with zeros at the
            bottom and right (timm's `dynamic_img_pad`) instead of refusing them.
        remat: rematerialisation (gradient checkpointing, as timm's
            `set_grad_checkpointing` and big_vision's `remat_policy`): in
            training each encoder block keeps only its input and computes its
            activations again in the backward pass, for less memory at the cost
            of a second forward pass through the blocks. Gradients are
            unchanged (dropout and stochastic depth replay their draws).
        classifier_activation: activation of the head's output; None gives
            logits, like the reference.
        include_preprocessing: take [0, 255] images and scale them inside the
            model as `keras_vit.preprocess_input` does.
        pixel_mean, pixel_std: the per-channel statistics of [0, 1] pixels the
            weights were trained with (DeiT's and many timm checkpoints':
            `keras_vit.preprocessing.IMAGENET_MEAN` and `IMAGENET_STD`); every
            place that feeds the model images scales them with these
            (`keras_vit.preprocessing.model_inputs`). None (default): the
            reference's [-1, 1].
        channels: input channels.
        input_shape: keras.applications' spelling of `image_size` and
            `channels`: (h, w, channels); not stored apart from them.
        layer_norm_epsilon: epsilon of every LayerNorm: 1e-6 (default), the
            reference's and timm's; HF's ViT checkpoints use 1e-12.
        approximate_gelu: the MLP's GELU in the tanh approximation (default,
            the reference's flax `nn.gelu`), or False for the exact erf form
            of timm, HF and DeiT.
        fc_norm: apply the final LayerNorm (`encoder_norm`) to the pooled
            representation instead of to every token (timm's `fc_norm`, with
            which its average-pooling models are trained).
        distillation_token: DeiT's (Touvron et al., 2021): a second learned
            token after the class token, with a head of its own (`head_dist`);
            the output averages the two heads' logits as DeiT does at
            inference, and `distillation_logits` gives both for training
            against a teacher. Needs `classifier="token"`.
        crop_fraction: the evaluation crop this model expects (timm's
            `crop_pct`): images are resized to `image_size / crop_fraction` and
            center-cropped. It does not change the forward pass; evaluation and
            `keras_vit.serving.export` read it through `keras_vit.preprocessing`.
        variant: the row of `keras_vit.VARIANTS` this model is ("ViT_B16"), or
            None for a custom architecture; checked against the architecture,
            and used to resolve named weights.
        name: the model's name.
        dtype: dtype policy of every layer (None: the global policy).

    Shapes:
        input: [batch, h, w, channels] (any h and w that divide by
        `patch_stride` with `dynamic_image_size`; a batch shares one size).
        output: [batch, classes] (float32, also under mixed precision), or the
        representation [batch, D'] with `include_top=False` (in the policy's
        compute dtype).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] | None = None,
        patch_size: int | tuple[int, int] = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        num_layers: int = 12,
        resnet_layers: tuple[int, ...] | None = None,
        resnet_width: int = 1,
        include_top: bool = True,
        pooling: str | None = None,
        classes: int = 1000,
        head_bias_init: float = 0.0,
        classifier: str = "token",
        representation_size: int | None = None,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        stochastic_depth_rate: float = 0.0,
        position_embedding: str = "learned_1d",
        position_embedding_resize: str = "reference",
        patch_embedding_resize: str = "bilinear",
        position_embedding_placement: str = "input",
        dynamic_image_size: bool = False,
        dynamic_image_pad: bool = False,
        remat: bool = False,
        classifier_activation: str | None = None,
        include_preprocessing: bool = False,
        channels: int = 3,
        crop_fraction: float = 1.0,
        layer_norm_epsilon: float = 1e-6,
        approximate_gelu: bool = True,
        fc_norm: bool = False,
        distillation_token: bool = False,
        pixel_mean: tuple[float, ...] | None = None,
        pixel_std: tuple[float, ...] | None = None,
        variant: str | None = None,
        name: str = "vit",
        dtype=None,
        input_shape: tuple[int, int, int] | None = None,
        **kwargs,
    ):
        if input_shape is not None:
            image_size, channels, any_size = _from_input_shape(input_shape, image_size, channels)
            dynamic_image_size = dynamic_image_size or any_size
        image_size = to_pair(224 if image_size is None else image_size, "image_size")
        patch_size = to_pair(patch_size, "patch_size")
        resnet_layers = None if resnet_layers is None else tuple(int(n) for n in resnet_layers)
        pixel_mean, pixel_std = (None if v is None else tuple(float(x) for x in v) for v in (pixel_mean, pixel_std))
        _validate(arguments := locals())
        if variant is not None:
            variant = variant_name(variant)
            check_variant(variant, **{key: arguments[key] for key in ARCHITECTURE})

        # === Parts: stem, positions, encoder, head (keras_vit.models.vit_parts) ===
        inputs = keras.Input((None, None, channels) if dynamic_image_size else (*image_size, channels), name="images")
        stem = Stem.build(image_size, patch_size, hidden_size, resnet_layers, resnet_width, classifier,
                          distillation_token, dynamic_image_size, dynamic_image_pad, include_preprocessing,
                          (pixel_mean, pixel_std), dtype)
        tokens, patches, grid = stem(inputs, image_size, dtype)
        num_prefix_tokens = int(classifier == "token") + int(distillation_token)
        positions = Positions.build(position_embedding, position_embedding_placement, grid, num_prefix_tokens,
                                    num_layers, position_embedding_resize, dynamic_image_size, dtype)
        encoder = Encoder.build(num_heads, mlp_dim, num_layers, dropout_rate, attention_dropout_rate,
                                stochastic_depth_rate, position_embedding, grid, num_prefix_tokens, layer_norm_epsilon,
                                approximate_gelu, fc_norm, remat, dtype)
        head = Head.build(classifier, pooling, representation_size, include_top, classes, head_bias_init,
                          classifier_activation, num_prefix_tokens, distillation_token,
                          encoder.norm if fc_norm else None, dtype)
        outputs = head(encoder(positions.before_encoder(tokens, patches), positions, patches))
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._attach(stem, positions, encoder, head)

        self._keep_config(locals())  # get_config() returns exactly the arguments
        self._grid_size = grid
        self._views = GraphViews()
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)
        if self._xla_by_default():  # `predict` before any `compile` too (Keras' setter still checks every layer)
            self.jit_compile = True

    def _attach(self, stem: Stem, positions: Positions, encoder: Encoder, head: Head) -> None:
        """Keeps the parts' layers under the names the weights layout and the views read (after Keras' own
        `__init__`, as every backend's module tracking wants)."""
        resnet = stem.resnet
        self.preprocessing = stem.preprocessing
        self.stride_alignment = stem.stride_alignment
        self.conv_root = resnet.conv_root if resnet else None
        self.gn_root = resnet.gn_root if resnet else None
        self.resnet_stages: tuple[tuple[ResidualUnit, ...], ...] = resnet.stages if resnet else ()
        self.embedding = stem.embedding
        self.patch_tokens = stem.patch_tokens
        self.class_token = stem.class_token
        self.dist_token = stem.distillation_token
        self.posembed_input = positions.input_table
        self._block_position_embeddings = positions.block_tables
        self._encoder_blocks = encoder.blocks
        self.encoder_norm = encoder.norm
        self.pool = head.pool
        self.pre_logits = head.pre_logits
        self._head = head.classifier
        self.head_dist = head.distillation_classifier
        self._representation = head.average if head.average is not None and head.classifier is None else (
            head.pre_logits or head.fc_norm or head.pool)

    def __call__(self, inputs, *args, **kwargs):
        """Calls the model, once the input's channels are the model's.

        Keras' functional input check lets a single channel through (it may be
        a squeezed axis), which then fails deep inside the patch embedding;
        this says what is wrong before Keras wraps the call, as it does for an
        image size a dynamic model's patches do not tile.
        """
        shape = tuple(getattr(inputs, "shape", ()))
        channels = shape[-1] if len(shape) == 4 else None
        if self.dynamic_image_size and len(shape) == 4 and None not in shape[1:3]:
            self.grid_for(shape[1:3])  # a size the patches do not tile: the StrideAlignment message, without Keras' frame
        if channels is not None and channels != self.channels:
            raise ValueError(
                f"Model {self.name!r} takes images of {self.channels} channel(s), [batch, height, width, {self.channels}]; "
                f"got shape {tuple(inputs.shape)}. Repeat a grayscale image to {self.channels} channels, or build the "
                f"model with channels={channels}."
            )
        return super().__call__(inputs, *args, **kwargs)

    # --- What the model knows about itself -------------------------------------------------------

    @property
    def variant(self) -> str | None:
        """The name of this model's row of `keras_vit.VARIANTS` ("ViT_B16"), or None for a custom one."""
        return self._variant

    @property
    def grid_size(self) -> tuple[int, int]:
        """(gh, gw): patch tokens along height and width at `image_size` (the grid the position embeddings are stored for)."""
        return self._grid_size

    def grid_for(self, image_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """(gh, gw) of a call on images of `image_size` (h, w); None: `grid_size`.

        A static model takes its own size only; a dynamic one any size that
        divides by `patch_stride`, or any size at all with `dynamic_image_pad`
        (the padded grid). A size that does not fit raises a ValueError naming it.
        """
        if image_size is None:
            return self.grid_size
        size = to_pair(image_size, "image_size")
        if not self.dynamic_image_size:
            if size != self.image_size:
                raise ValueError(
                    f"Model {self.name!r} takes {self.image_size[0]}x{self.image_size[1]} images, got {size[0]}x{size[1]}: "
                    "build it with dynamic_image_size=True to run at any size."
                )
            return self.grid_size
        if self.dynamic_image_pad:
            return tuple(-(-n // s) for n, s in zip(size, self.patch_stride))
        if size[0] % self.patch_stride[0] or size[1] % self.patch_stride[1]:
            raise ValueError(self.stride_alignment._message(size))
        return size[0] // self.patch_stride[0], size[1] // self.patch_stride[1]

    @property
    def patch_stride(self) -> tuple[int, int]:
        """Input pixels per token along height and width: the patch size, times the ResNet's stride for hybrids."""
        return self.resnet_stride * self.patch_size[0], self.resnet_stride * self.patch_size[1]

    @property
    def resnet_stride(self) -> int:
        """How much the hybrid's ResNet downsamples (1 for a plain ViT)."""
        return 1 if self.resnet_layers is None else resnet_stride(self.resnet_layers)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the class token for `classifier="token"`, and DeiT's distillation token."""
        return int(self.class_token is not None) + int(self.dist_token is not None)

    @property
    def encoder_blocks(self) -> tuple[TransformerBlock, ...]:
        """The `num_layers` Transformer blocks, in depth order."""
        return self._encoder_blocks

    @property
    def head(self) -> ClassifierHead | None:
        """The classification head (a Dense to `classes` logits), or None with `include_top=False`."""
        return self._head

    @property
    def position_embeddings(self) -> tuple[AddPositionEmbedding, ...]:
        """The learned position-embedding layers, each once: `posembed_input` (input or shared placement), or
        one per block (`position_embedding_placement="every_layer"`); empty for "none" and "relative"."""
        if self.posembed_input is not None:
            return (self.posembed_input,)
        return self._block_position_embeddings

    @property
    def block_position_embeddings(self) -> tuple[AddPositionEmbedding, ...]:
        """The table added before each block, in depth order (the same layer for every block when shared); empty
        with `position_embedding_placement="input"`."""
        return self._block_position_embeddings

    # --- Parameter-efficient fine-tuning ----------------------------------------------------------

    def enable_lora(self, rank: int, targets: tuple[str, ...] = DEFAULT_LORA_TARGETS, alpha: float | None = None) -> None:
        """LoRA on the attention projections (`keras_vit.lora`): `targets` of "query", "key", "value", "out" in every
        block get rank-`rank` factors (Keras' `EinsumDense.enable_lora`); all else is frozen but the head(s).
        Saving merges the factors: the files and exports of a LoRA model are a plain model's."""
        enable_lora(self, rank, tuple(targets), alpha)

    @property
    def lora_rank(self) -> int | None:
        """The rank of the LoRA factors, or None without LoRA."""
        layers = lora_layers(self)
        return layers[0].lora_rank if layers else None

    # --- Compiling --------------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss="auto", *args, jit_compile="auto", **kwargs) -> None:
        """`keras.Model.compile`, with a loss that fits the outputs and XLA on CPU-only machines too.

        `loss="auto"` (the default) is the sparse categorical cross-entropy on
        the head's logits or probabilities; a probabilistic loss named by its
        string gets `from_logits=True` on a logits model, and a loss object
        whose `from_logits` disagrees with the outputs is refused
        (`keras_vit.losses.loss_for_outputs`). Without a head, "auto" is no loss.

        Keras leaves XLA off where TensorFlow sees no accelerator. Every layer
        of a VisionTransformer compiles with XLA, and on a CPU XLA fuses the
        LayerNorms, GELUs, attention transposes and softmax that TensorFlow's
        graph otherwise runs as separate kernels (benchmarks/inference.py
        compares the two). In bfloat16 and float16 the graph's oneDNN kernels
        are faster than XLA's on a CPU, so those policies keep Keras' choice,
        as do tf.distribute strategies and a dynamic model that resizes
        bicubically (XLA has no such kernel); op determinism turns XLA off.
        Pass `jit_compile=False` for graph mode.
        """
        if self.outputs_logits is not None:
            loss = loss_for_outputs(loss, logits=self.outputs_logits)
        elif isinstance(loss, str) and loss == "auto":
            loss = None
        if jit_compile == "auto" and not kwargs.get("run_eagerly") and self._xla_by_default():
            jit_compile = True
        super().compile(optimizer, loss, *args, jit_compile=jit_compile, **kwargs)

    @property
    def outputs_logits(self) -> bool | None:
        """True when the head outputs logits, False for softmax probabilities, None without a head or with another
        activation (the outputs `compile`'s "auto" loss reads)."""
        if not self.include_top or self.classifier_activation not in (None, "linear", "softmax"):
            return None
        return self.classifier_activation != "softmax"

    def compile_from_config(self, config: dict) -> None:
        """Compiles a loaded model as it was saved (what Keras does itself for a model whose `compile` is its own)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # the optimizer's variables, for its saved state

    def _xla_by_default(self) -> bool:
        """Whether `jit_compile="auto"` means XLA for this model here (see `compile`)."""
        if keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf

        return (
            not tf.distribute.has_strategy()
            and self.dtype_policy.compute_dtype == "float32"
            and not (self.dynamic_image_size and self.position_embedding_resize == "bicubic")  # XLA has no ResizeBicubic
        )

    # --- Looking inside -------------------------------------------------------------------------

    def distillation_logits(self, images, training: bool = False) -> tuple:
        """DeiT's two heads apart, as its training uses them: (the class token's logits, the distillation token's),
        each [batch, classes]. The class head learns the labels, the distillation head the teacher's predictions;
        the model's own output is their mean."""
        if self.head_dist is None:
            raise ValueError(f"Model {self.name!r} has no distillation token: build it with distillation_token=True.")
        return tuple(self._view("distillation_logits")(images, training=training))

    def features(self, images, training: bool = False):
        """The dense tokens after `encoder_norm` (with `fc_norm`, the last block's, which it normalises only after
        pooling): [batch, num_prefix_tokens + gh * gw, D].

        Works on arrays (eager) and on symbolic tensors, so a detection or
        segmentation model can be built on top of it.
        """
        return self._view("features")(images, training=training)

    def embed_patches(self, images, training: bool = False):
        """The patch embeddings, before the class token and position embeddings: [batch, gh * gw, D].

        With `encode`, this splits the forward pass where masked patch
        prediction corrupts the patches (`keras_vit.MaskedPatchPrediction`).
        """
        return self._view("embed_patches")(images, training=training)

    def encode(self, patch_embeddings, training: bool = False):
        """The rest of the encoder on `embed_patches`' output: [batch, gh * gw, D] -> `features`' tokens."""
        return self._view("encode")(patch_embeddings, training=training)

    def representation(self, images, training: bool = False):
        """What the head sees: the pooled tokens after `pre_logits`, [batch, representation_size or D]."""
        return self._view("representation")(images, training=training)

    def predict_representation(self, images) -> np.ndarray:
        """`representation` of one batch in inference, compiled as `predict_on_batch` compiles it (a graph on
        TensorFlow, XLA on JAX, where an eager call runs op by op): NumPy [batch, representation_size or D]."""
        return self._view("representation").predict_on_batch(images)

    def intermediates(self, images, blocks=None, norm: bool = False, training: bool = False) -> list:
        """Each chosen block's output tokens, [batch, N, D] each (timm's `forward_intermediates`).

        Args:
            images: [batch, h, w, channels].
            blocks: indices of blocks (negative counts from the last), or None for all.
            norm: apply `encoder_norm` to each, as to the final tokens.
            training: run dropout and stochastic depth.
        """
        indices = self._block_indices(blocks)
        outputs = self._view("intermediates", tuple(indices), norm)(images, training=training)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    def attention_maps(self, images, blocks=None) -> list[np.ndarray]:
        """The attention weights of the chosen blocks (default all), each [batch, heads, N, N] float32.

        The ordinary forward pass never materialises these; this runs the
        encoder again, asking each block for its weights, and stops after the
        last block asked for.
        """
        indices = self._block_indices(blocks)
        x = self._view("encoder_input")(images, training=False)  # block 0's input: its position table added
        patches = self._view("patches")(images, training=False) if self.dynamic_image_size else None
        maps = {}
        for i, block in enumerate(self._encoder_blocks[: max(indices) + 1]):
            if i and self._block_position_embeddings:
                table = self._block_position_embeddings[i]
                x = table(x, patches) if patches is not None else table(x)
            x, weights = block(x, training=False, return_attention_scores=True)
            if i in indices:
                maps[i] = keras.ops.convert_to_numpy(keras.ops.cast(weights, "float32"))
        return [maps[i] for i in indices]

    def _block_indices(self, blocks) -> list[int]:
        count = len(self._encoder_blocks)
        if blocks is None:
            return list(range(count))
        if isinstance(blocks, int):
            blocks = [blocks]
        indices = []
        for index in blocks:
            if not -count <= index < count:
                raise ValueError(f"Block index {index} is out of range for a model of {count} blocks.")
            indices.append(index % count)
        return indices

    def _view(self, kind: str, *options) -> keras.Model:
        return self._views.get((kind, *options), lambda: self._build_view(kind, *options))

    def _build_view(self, kind: str, *options) -> keras.Model:
        inputs = self.input
        tokens = self._encoder_blocks[-1].output if self.fc_norm else self.encoder_norm.output
        if kind == "features":
            outputs = tokens
        elif kind == "embed_patches":
            outputs = (self.patch_tokens or self.embedding).output
        elif kind == "encode":
            if self.dynamic_image_size:
                raise ValueError(
                    f"Model {self.name!r} has dynamic_image_size=True: `encode` takes flat patch embeddings, which do "
                    "not say their grid. Run the whole model (or `features`) on images instead."
                )
            inputs, outputs = self.embedding.output, tokens
        elif kind == "representation":
            outputs = self._representation.output
        elif kind == "distillation_logits":
            outputs = [self._head.output, self.head_dist.output]
        elif kind == "encoder_input":
            outputs = self._encoder_blocks[0].input
        elif kind == "patches":
            outputs = self.embedding.output
        else:
            indices, norm = options
            outputs = [self._encoder_blocks[i].output for i in indices]
            if norm and not self.fc_norm:  # with fc_norm, as timm's, the tokens have no norm of their own
                outputs = [self.encoder_norm(x) for x in outputs]
        return keras.Model(inputs, outputs, name=f"{self.name}_{kind}")


def _validate(args: dict) -> None:
    if args["classifier"] not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {args['classifier']!r}; expected one of {CLASSIFIERS}.")
    kind = position_embeddings.get(args["position_embedding"])
    if args["position_embedding_placement"] not in POSITION_EMBEDDING_PLACEMENTS:
        raise ValueError(f"Unknown position_embedding_placement {args['position_embedding_placement']!r}; expected one "
                         f"of {POSITION_EMBEDDING_PLACEMENTS}.")
    if args["position_embedding_placement"] != "input" and not kind.has_table:
        raise ValueError(
            f"position_embedding_placement={args['position_embedding_placement']!r} places learned tables; "
            f"position_embedding={kind.name!r} has none ({kind.no_table}): use 'input'."
        )
    if args["hidden_size"] % args["num_heads"]:
        raise ValueError(f"hidden_size {args['hidden_size']} is not divisible by num_heads {args['num_heads']}.")
    if args["pooling"] is not None and args["include_top"]:
        raise ValueError(
            f"pooling={args['pooling']!r} applies only with include_top=False (feature extraction): the head takes "
            f"the classifier's representation. Pass include_top=False, or leave pooling out."
        )
    if args["pooling"] is not None and args["pooling"] not in POOLINGS:
        raise ValueError(f"Unknown pooling {args['pooling']!r}; expected None or one of {POOLINGS}.")
    if args["include_top"] and args["classes"] < 1:
        raise ValueError(f"classes must be positive with include_top=True, got {args['classes']}.")
    for key in ("patch_size", "image_size"):
        if min(args[key]) < 1:
            raise ValueError(f"{key} must be positive, got {args[key]}.")
    if not 0.0 < args["crop_fraction"] <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {args['crop_fraction']}.")
    if args["patch_embedding_resize"] not in PATCH_RESAMPLE_METHODS:
        raise ValueError(f"Unknown patch_embedding_resize {args['patch_embedding_resize']!r}; expected one of "
                         f"{PATCH_RESAMPLE_METHODS}.")
    if args["distillation_token"] and args["classifier"] != "token":
        raise ValueError("distillation_token=True adds DeiT's second token beside the class token: it needs "
                         f"classifier='token', got {args['classifier']!r}.")
    for key in ("pixel_mean", "pixel_std"):
        if args[key] is not None and len(args[key]) != args["channels"]:
            raise ValueError(f"{key} {args[key]} has {len(args[key])} values for {args['channels']} channels.")
    if args["pixel_std"] is not None and min(args["pixel_std"]) <= 0:
        raise ValueError(f"pixel_std must be positive, got {args['pixel_std']}.")
    if args["dynamic_image_pad"] and not args["dynamic_image_size"]:
        raise ValueError("dynamic_image_pad=True pads images of any size: it needs dynamic_image_size=True.")
    if args["dynamic_image_size"] and kind.fixed_grid:
        raise ValueError(f"position_embedding={kind.name!r} cannot take dynamic_image_size=True: {kind.fixed_grid}.")


def _from_input_shape(input_shape, image_size, channels) -> tuple[tuple[int, int] | None, int, bool]:
    """(image_size, channels, any size) of keras.applications' `input_shape` (h, w, channels).

    `(None, None, channels)` is a model of any image size (its `image_size`
    stays the one given, or the default); a conflicting image_size is refused.
    """
    if (
        len(input_shape) != 3
        or not isinstance(input_shape[2], int)
        or input_shape[2] < 1
        or any(not isinstance(n, int) or n < 1 for n in input_shape[:2] if n is not None)
        or (input_shape[0] is None) != (input_shape[1] is None)
    ):
        raise ValueError(
            f"input_shape must be (height, width, channels) of positive ints, or (None, None, channels) for any "
            f"image size, got {input_shape!r}."
        )
    if channels not in (3, input_shape[2]):
        raise ValueError(f"input_shape {tuple(input_shape)} and channels {channels} disagree; give one of them.")
    if input_shape[0] is None:
        return image_size, input_shape[2], True
    if image_size is not None and to_pair(image_size, "image_size") != tuple(input_shape[:2]):
        raise ValueError(f"input_shape {tuple(input_shape)} and image_size {image_size!r} disagree; give one of them.")
    return tuple(input_shape[:2]), input_shape[2], False
