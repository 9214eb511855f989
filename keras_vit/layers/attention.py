"""Multi-head self-attention with the reference's parameter layout and optional 1-D relative positions."""

from __future__ import annotations

import math

import numpy as np
import keras
from keras import ops

from keras_vit.resize import RESIZE_METHODS, resize_table


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head dot-product self-attention, no mask.

    Parameters follow the reference (flax `MultiHeadDotProductAttention`):
    query/key/value kernels [D, heads, head_dim] with biases [heads, head_dim],
    output kernel [heads, head_dim, D] with bias [D]; queries are scaled by
    1 / sqrt(head_dim) and the softmax runs in float32.

    With `relative_positions=True` (the paper's appendix D.4 "relative"
    ablation) the layer learns one embedding per offset p_q - p_k, per head,
    [2N - 1, heads, head_dim]. The scaled queries attend to those embeddings as
    keys, and the resulting logits are added to the content logits before the
    softmax. The table is resized (linearly) when weights for another sequence
    length are loaded.

    Args:
        num_heads: number of heads; must divide D.
        attention_dropout_rate: dropout on the attention weights.
        relative_positions: add learned 1-D relative position logits.
        resize_method: how a stored relative table of another length is resized.
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
        resize_method: str = "reference",
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if resize_method not in RESIZE_METHODS:
            raise ValueError(f"Unknown resize_method {resize_method!r}; expected one of {RESIZE_METHODS}.")
        self.num_heads = num_heads
        self.attention_dropout_rate = attention_dropout_rate
        self.relative_positions = relative_positions
        self.resize_method = resize_method
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
            if input_shape[1] is None:
                raise ValueError("Relative position attention needs a known sequence length.")
            self.sequence_length = input_shape[1]
            self.relative_embedding = self.add_weight(
                name="relative_embedding",
                shape=(2 * self.sequence_length - 1,) + heads,
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )

    def call(self, inputs, training=None, return_attention_scores: bool = False):
        query = self.query(inputs) * ops.cast(1.0 / math.sqrt(self.head_dim), inputs.dtype)
        key, value = self.key(inputs), self.value(inputs)
        logits = ops.einsum("bqnh,bknh->bnqk", query, key)
        if self.relative_positions:
            logits = logits + self._relative_logits(query)
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), inputs.dtype)
        outputs = ops.einsum("bnqk,bknh->bqnh", self.attention_dropout(weights, training=training), value)
        outputs = self.out(outputs)
        return (outputs, weights) if return_attention_scores else outputs

    def _relative_logits(self, query):
        """[batch, heads, N, N] logits of each query against the embedding of offset q - k."""
        n = self.sequence_length
        offsets = np.arange(n)[:, None] - np.arange(n)[None, :] + (n - 1)
        table = ops.take(ops.cast(self.relative_embedding, query.dtype), offsets, axis=0)  # [N, N, heads, head_dim]
        return ops.einsum("bqnh,qknh->bnqk", query, table)

    def compute_output_shape(self, input_shape):
        return input_shape

    def load_own_variables(self, store):
        """Loads the relative table, resizing one stored for another sequence length."""
        if not self.relative_positions:
            return super().load_own_variables(store)
        if len(store.keys()) != 1:
            raise ValueError(f"Layer {self.name!r} expects 1 relative embedding table, the file holds {len(store.keys())}.")
        self.assign_relative_embedding(np.asarray(store["0"]))

    def assign_relative_embedding(self, table: np.ndarray) -> None:
        expected = tuple(self.relative_embedding.shape)
        if table.shape[1:] != expected[1:]:
            raise ValueError(f"Cannot load {self.relative_embedding.path}: expected shape {expected}, found {table.shape}.")
        self.relative_embedding.assign(resize_table(table, expected[0], self.resize_method))

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            attention_dropout_rate=self.attention_dropout_rate,
            relative_positions=self.relative_positions,
            resize_method=self.resize_method,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
