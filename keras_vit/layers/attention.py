"""Multi-head self-attention with the reference's parameter layout and optional 1-D relative positions."""

from __future__ import annotations

import math

import numpy as np
import keras
from keras import ops

from keras_vit.utils import to_pair

#: The key under which a relative table's grid is saved beside it (`.keras`, `.weights.h5`).
GRID_KEY = "grid_size"

#: The backends whose attention runs through `keras.ops.dot_product_attention`: JAX's cuDNN / XLA kernel and
#: PyTorch's `scaled_dot_product_attention` (flash or memory-efficient kernels on a GPU, a fused kernel on a CPU).
#: TensorFlow has no fused kernel; there the op is the same einsums and softmax as the explicit path, which also
#: keeps the softmax in float32 under mixed precision, so TensorFlow stays on it. The weights are computed
#: explicitly whenever they are asked for (`return_attention_scores=True`: `attention_maps`, rollout, distances),
#: so the maps are exact on every backend.
FUSED_ATTENTION_BACKENDS = ("jax", "torch")
#: cuDNN's fused attention trains (forward and backward) only on sequences of a multiple of 64 tokens (JAX 0.11,
#: an H200: "Unsupported sequence length Q 197, KV 197"); inference takes any length.
JAX_TRAINING_TOKEN_MULTIPLE = 64


def relative_position_index(grid_size: tuple[int, int], num_prefix_tokens: int) -> np.ndarray:
    """[N, N] row of the relative table each (query, key) pair reads, N = prefix + gh * gw.

    Patch pairs read their raster offset p_q - p_k, shifted to 0 .. 2G - 2
    (G = gh * gw). With prefix tokens (the class token), three more rows
    follow: prefix -> patch (2G - 1), patch -> prefix (2G) and prefix ->
    prefix (2G + 1), so the class token is not mistaken for a patch at
    raster position -1.
    """
    patches = grid_size[0] * grid_size[1]
    offsets = np.arange(patches)
    index = np.empty((num_prefix_tokens + patches,) * 2, np.int32)
    index[num_prefix_tokens:, num_prefix_tokens:] = offsets[:, None] - offsets[None, :] + patches - 1
    if num_prefix_tokens:
        index[:num_prefix_tokens, num_prefix_tokens:] = 2 * patches - 1
        index[num_prefix_tokens:, :num_prefix_tokens] = 2 * patches
        index[:num_prefix_tokens, :num_prefix_tokens] = 2 * patches + 1
    return index


def relative_table_size(grid_size: tuple[int, int], num_prefix_tokens: int) -> int:
    """Rows of the relative table: 2G - 1 patch offsets, plus 3 prefix rows when there are prefix tokens."""
    return 2 * grid_size[0] * grid_size[1] - 1 + (3 if num_prefix_tokens else 0)


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head dot-product self-attention, no mask.

    Parameters follow the reference (flax `MultiHeadDotProductAttention`):
    query/key/value kernels [D, heads, head_dim] with biases [heads, head_dim],
    output kernel [heads, head_dim, D] with bias [D]; queries are scaled by
    1 / sqrt(head_dim) and the softmax runs in float32.

    With `relative_positions=True` (the paper's appendix D.4 "relative"
    ablation) the layer learns a table E [R, heads, head_dim]: one embedding per
    raster offset p_q - p_k between patches and three for pairs with the class
    token (`relative_position_index`). The scaled queries are multiplied with
    the whole table, q.E [batch, heads, N, R], and each (query, key) pair then
    gathers its row: memory grows as N * R, never N * N * D. The resulting
    logits are added to the content logits before the softmax (a bias of the
    fused kernel, `FUSED_ATTENTION_BACKENDS`). Raster offsets
    mean different things on different grids, so a table stored for another
    grid is refused on load; the grid is saved beside the table.

    Args:
        num_heads: number of heads; must divide D.
        attention_dropout_rate: dropout on the attention weights.
        relative_positions: add learned 1-D relative position logits.
        grid_size: (gh, gw) patch grid; needed with relative positions.
        num_prefix_tokens: tokens before the grid (1 with a class token).
        kernel_initializer, bias_initializer: of the four projections.

    Shapes:
        input: [batch, N, D].
        output: [batch, N, D]; with `return_attention_scores=True` also the
        attention weights [batch, heads, N, N].
    """

    def __init__(
        self,
        num_heads: int,
        attention_dropout_rate: float = 0.0,
        relative_positions: bool = False,
        grid_size: int | tuple[int, int] | None = None,
        num_prefix_tokens: int = 0,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if relative_positions and grid_size is None:
            raise ValueError("Relative position attention needs the patch grid_size.")
        self.num_heads = num_heads
        self.attention_dropout_rate = attention_dropout_rate
        self.relative_positions = relative_positions
        self.grid_size = None if grid_size is None else to_pair(grid_size, "grid_size")
        self.num_prefix_tokens = num_prefix_tokens
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.attention_dropout = keras.layers.Dropout(attention_dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"MultiHeadSelfAttention expects [batch, tokens, hidden] inputs, got {input_shape}.")
        hidden = input_shape[-1]
        if hidden % self.num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads {self.num_heads}.")
        self.head_dim = hidden // self.num_heads
        projection = dict(
            kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer, dtype=self.dtype_policy
        )
        heads = (self.num_heads, self.head_dim)
        self.query = keras.layers.EinsumDense("btd,dnh->btnh", (None,) + heads, bias_axes="nh", name="query", **projection)
        self.key = keras.layers.EinsumDense("btd,dnh->btnh", (None,) + heads, bias_axes="nh", name="key", **projection)
        self.value = keras.layers.EinsumDense("btd,dnh->btnh", (None,) + heads, bias_axes="nh", name="value", **projection)
        self.out = keras.layers.EinsumDense("btnh,nhd->btd", (None, hidden), bias_axes="d", name="out", **projection)
        for layer in (self.query, self.key, self.value):
            layer.build(input_shape)
        self.out.build(tuple(input_shape[:2]) + heads)
        if self.relative_positions:
            self._relative_index = relative_position_index(self.grid_size, self.num_prefix_tokens)
            if input_shape[1] not in (None, len(self._relative_index)):
                raise ValueError(
                    f"Relative position attention for grid {self.grid_size} with {self.num_prefix_tokens} prefix "
                    f"token(s) expects {len(self._relative_index)} tokens, got shape {input_shape}."
                )
            self.relative_embedding = self.add_weight(
                name="relative_embedding",
                shape=(relative_table_size(self.grid_size, self.num_prefix_tokens),) + heads,
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )

    def call(self, inputs, training=None, return_attention_scores: bool = False):
        query = self.query(inputs) * ops.cast(1.0 / math.sqrt(self.head_dim), inputs.dtype)
        key, value = self.key(inputs), self.value(inputs)
        bias = self._relative_logits(query) if self.relative_positions else None
        if not return_attention_scores and self._fused(inputs.shape[1], training):
            # scale=1: the queries are scaled above, as in the explicit path.
            return self.out(ops.dot_product_attention(query, key, value, bias=bias, scale=1.0))
        logits = ops.einsum("bqnh,bknh->bnqk", query, key)
        if bias is not None:
            logits = logits + bias
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), inputs.dtype)
        outputs = ops.einsum("bnqk,bknh->bqnh", self.attention_dropout(weights, training=training), value)
        outputs = self.out(outputs)
        return (outputs, weights) if return_attention_scores else outputs

    def _fused(self, tokens: int | None, training) -> bool:
        """Whether this call runs `keras.ops.dot_product_attention` (see `FUSED_ATTENTION_BACKENDS`): never when the
        weights are asked for (the caller checks), nor when dropout on them is active (the fused kernels have none).

        On JAX, training takes the fused op only at token counts cuDNN's training kernel takes
        (`JAX_TRAINING_TOKEN_MULTIPLE`): at others (197 tokens: ViT-B/16 at 224) JAX refuses it in the backward
        pass, Keras logs an error at every trace and falls back to the same einsums as the explicit path.
        """
        backend = keras.backend.backend()
        if backend not in FUSED_ATTENTION_BACKENDS or (training and self.attention_dropout_rate > 0):
            return False
        return not (backend == "jax" and training) or (tokens is not None and tokens % JAX_TRAINING_TOKEN_MULTIPLE == 0)

    def _relative_logits(self, query):
        """[batch, heads, N, N] logits of each query against the embedding of its (query, key) relation."""
        table = ops.cast(self.relative_embedding, query.dtype)
        per_row = ops.einsum("bqnh,rnh->bnqr", query, table)  # [batch, heads, N, R]
        return ops.take_along_axis(per_row, self._relative_index[None, None], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.relative_positions:
            store[GRID_KEY] = np.asarray(self.grid_size, np.int64)

    def load_own_variables(self, store):
        """Loads the relative table; refuses one stored for another grid."""
        if not self.relative_positions:
            return super().load_own_variables(store)
        keys = set(store.keys())
        if keys - {GRID_KEY} != {"0"}:
            raise ValueError(f"Layer {self.name!r} expects 1 relative embedding table, the file holds {sorted(keys)}.")
        grid = tuple(int(g) for g in np.asarray(store[GRID_KEY])) if GRID_KEY in keys else None
        self.check_relative_embedding(np.shape(store["0"]), grid)
        self.relative_embedding.assign(np.asarray(store["0"]))

    def check_relative_embedding(self, shape: tuple[int, ...], grid: tuple[int, int] | None = None) -> None:
        """ValueError unless a stored table of `shape` (saved for `grid`, when known) is this layer's."""
        expected = tuple(self.relative_embedding.shape)
        if tuple(shape) == expected and grid in (None, self.grid_size):
            return
        stored = f"grid {grid}" if grid else f"{shape[0]} relations"
        raise ValueError(
            f"Cannot load {self.relative_embedding.path}: its relative position table {tuple(shape)} was trained "
            f"for {stored}, this model's grid {self.grid_size} needs {expected}. Raster offsets do not carry over "
            f"between grids: use the image size it was trained at, or learned position embeddings to change resolution."
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            attention_dropout_rate=self.attention_dropout_rate,
            relative_positions=self.relative_positions,
            grid_size=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
