"""The pre-LayerNorm Transformer encoder block of ViT."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.stochastic_depth import StochasticDepth

#: LayerNorm epsilon of the reference (flax default); Keras' default is 1e-3.
LAYER_NORM_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerBlock(keras.layers.Layer):
    """One encoder block: `x + MHSA(LN(x))`, then `x + MLP(LN(x))`.

    The MLP is Dense(mlp_dim) -> GELU (the tanh approximation, as flax's
    `nn.gelu`, or the exact erf form of timm and HF) -> dropout -> Dense(D)
    -> dropout. Dropout also follows the
    attention; stochastic depth, when set, drops each residual branch.

    Args:
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        dropout_rate: dropout after attention and in the MLP.
        attention_dropout_rate: dropout on the attention weights.
        stochastic_depth_rate: probability of dropping a residual branch.
        relative_positions: 1-D relative position logits in the attention.
        grid_size, num_prefix_tokens: the token layout, for relative positions.
        layer_norm_epsilon: of both LayerNorms (the reference's 1e-6; HF's
            ViT uses 1e-12).
        approximate_gelu: the tanh approximation of GELU (the reference's);
            False: the exact erf form (timm, HF, DeiT).
        remat: in training, keep only the block's input for the backward pass
            and compute its activations again there (gradient checkpointing,
            `keras.remat`: `tf.recompute_grad`, `jax.checkpoint` or
            `torch.utils.checkpoint`). The random draws of dropout and stochastic
            depth are replayed, so gradients are the plain block's.

    Shapes:
        input: [batch, N, D]; output: [batch, N, D]. With
        `return_attention_scores=True` also [batch, heads, N, N].
    """

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        stochastic_depth_rate: float = 0.0,
        relative_positions: bool = False,
        grid_size: tuple[int, int] | None = None,
        num_prefix_tokens: int = 0,
        layer_norm_epsilon: float = LAYER_NORM_EPSILON,
        approximate_gelu: bool = True,
        remat: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.remat = remat
        self.layer_norm_epsilon = layer_norm_epsilon
        self.approximate_gelu = approximate_gelu
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.stochastic_depth_rate = stochastic_depth_rate
        self.relative_positions = relative_positions
        self.grid_size = grid_size
        self.num_prefix_tokens = num_prefix_tokens
        policy = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.attention = MultiHeadSelfAttention(
            num_heads,
            attention_dropout_rate=attention_dropout_rate,
            relative_positions=relative_positions,
            grid_size=grid_size,
            num_prefix_tokens=num_prefix_tokens,
            dtype=policy,
            name="attention",
        )
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="mlp_norm")
        self.mlp_dense_1 = self._mlp_dense(mlp_dim, "mlp_dense_1")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=policy)
        self.drop_path = StochasticDepth(stochastic_depth_rate, dtype=policy)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"TransformerBlock expects [batch, tokens, hidden] inputs, got shape {input_shape}.")
        hidden = input_shape[-1]
        self.mlp_dense_2 = self._mlp_dense(hidden, "mlp_dense_2")  # back to D, known only now
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_dense_1.build(input_shape)
        self.mlp_dense_2.build(tuple(input_shape[:2]) + (self.mlp_dim,))

    def _mlp_dense(self, units: int, name: str) -> keras.layers.Dense:
        """An MLP layer initialised as the reference's MlpBlock (Xavier kernel, tiny normal bias)."""
        return keras.layers.Dense(
            units,
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            dtype=self.dtype_policy,
            name=name,
        )

    def call(self, inputs, training=None, return_attention_scores: bool = False):
        if not (self.remat and training) or return_attention_scores:
            return self._forward(inputs, training, return_attention_scores)
        random_layers = (self.dropout, self.drop_path, self.attention.attention_dropout)
        generators = [layer.seed_generator for layer in random_layers if hasattr(layer, "seed_generator")]  # rate > 0
        start = [ops.copy(generator.state.value) for generator in generators]  # where this call's draws begin

        def forward(x):
            for generator, state in zip(generators, start):  # recomputed in the backward pass: the same draws again
                generator.state.assign(state)
            return self._forward(x, training)

        return keras.remat(forward)(inputs)

    def _forward(self, inputs, training=None, return_attention_scores: bool = False):
        attended = self.attention(self.attention_norm(inputs), training=training,
                                  return_attention_scores=return_attention_scores)
        y, scores = attended if return_attention_scores else (attended, None)
        x = inputs + self.drop_path(self.dropout(y, training=training), training=training)
        y = self.mlp_dense_1(self.mlp_norm(x))
        y = keras.activations.gelu(y, approximate=self.approximate_gelu)
        y = self.mlp_dense_2(self.dropout(y, training=training))
        x = x + self.drop_path(self.dropout(y, training=training), training=training)
        return (x, scores) if return_attention_scores else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            stochastic_depth_rate=self.stochastic_depth_rate,
            relative_positions=self.relative_positions,
            grid_size=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            layer_norm_epsilon=self.layer_norm_epsilon,
            approximate_gelu=self.approximate_gelu,
            remat=self.remat,
        )
        return config
