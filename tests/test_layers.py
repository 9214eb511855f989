"""Each layer: config round trip, output shapes, reference semantics and input validation."""

import numpy as np
import pytest
import keras

from keras_vit import layers as vit_layers
from keras_vit.layers.attention import relative_position_index, relative_table_size
from harness import random_images

LAYERS = [
    (vit_layers.PatchEmbedding, dict(patch_size=(4, 2), hidden_size=8), (2, 8, 6, 3), (2, 6, 8)),
    (vit_layers.ClassToken, dict(), (2, 5, 8), (2, 6, 8)),
    (vit_layers.AddPositionEmbedding, dict(grid_size=(2, 3), num_prefix_tokens=1), (2, 7, 8), (2, 7, 8)),
    (vit_layers.AddPositionEmbedding, dict(grid_size=(2, 3), num_prefix_tokens=0, kind="learned_2d"), (2, 6, 8), (2, 6, 8)),
    (vit_layers.MultiHeadSelfAttention, dict(num_heads=2, relative_positions=True, grid_size=(2, 2), num_prefix_tokens=1), (2, 5, 8), (2, 5, 8)),
    (vit_layers.TransformerBlock, dict(num_heads=2, mlp_dim=16, dropout_rate=0.1, stochastic_depth_rate=0.2), (2, 5, 8), (2, 5, 8)),
    (vit_layers.StdConv2D, dict(filters=4, kernel_size=3, padding="same", use_bias=False), (2, 6, 6, 3), (2, 6, 6, 4)),
    (vit_layers.ResidualUnit, dict(features=32, strides=2), (2, 8, 8, 64), (2, 4, 4, 128)),
    (vit_layers.SequencePooling, dict(mode="gap"), (2, 5, 8), (2, 8)),
    (vit_layers.StochasticDepth, dict(rate=0.5, seed=1), (4, 3, 2), (4, 3, 2)),
    (vit_layers.ClassifierHead, dict(units=3), (2, 8), (2, 3)),
]


@pytest.mark.parametrize("cls, kwargs, input_shape, output_shape", LAYERS, ids=lambda v: getattr(v, "__name__", None))
def test_layer_config_round_trip_and_shapes(cls, kwargs, input_shape, output_shape):
    layer = cls(**kwargs)
    out = layer(random_images(input_shape))
    assert tuple(out.shape) == output_shape
    assert tuple(layer.compute_output_shape(input_shape)) == output_shape
    config = layer.get_config()
    for key in kwargs:
        assert key in config, f"{cls.__name__}.get_config() lacks {key}"
    clone = cls.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is cls


def test_patch_embedding_tokens_are_row_major():
    layer = vit_layers.PatchEmbedding(2, 1, kernel_initializer="ones", bias_initializer="zeros")
    image = np.zeros((1, 4, 6, 1), "float32")
    image[0, 2:4, 0:2] = 1.0  # patch (row 1, column 0)
    out = keras.ops.convert_to_numpy(layer(image))[0, :, 0]
    assert out.shape == (6,)
    assert out.argmax() == 3 and out[3] == 4.0


def test_patch_embedding_rejects_indivisible_input():
    with pytest.raises(ValueError, match="height 10 is not divisible by the patch size 4"):
        vit_layers.PatchEmbedding(4, 8)(random_images((1, 10, 8, 3)))


def test_class_token_is_prepended():
    layer = vit_layers.ClassToken(initializer="ones")
    out = keras.ops.convert_to_numpy(layer(np.zeros((2, 3, 4), "float32")))
    np.testing.assert_array_equal(out[:, 0], 1.0)
    np.testing.assert_array_equal(out[:, 1:], 0.0)


def test_learned_2d_embedding_concatenates_row_and_column():
    layer = vit_layers.AddPositionEmbedding((2, 3), num_prefix_tokens=1, kind="learned_2d")
    out = keras.ops.convert_to_numpy(layer(np.zeros((1, 7, 4), "float32")))[0]
    rows = keras.ops.convert_to_numpy(layer.row_embedding)
    cols = keras.ops.convert_to_numpy(layer.column_embedding)
    np.testing.assert_allclose(out[0], keras.ops.convert_to_numpy(layer.prefix_embedding)[0])
    np.testing.assert_allclose(out[1 + 1 * 3 + 2], np.concatenate([rows[1], cols[2]]))


def test_attention_matches_a_plain_numpy_computation():
    layer = vit_layers.MultiHeadSelfAttention(num_heads=2, bias_initializer="random_normal")
    x = random_images((2, 5, 8))
    out, weights = layer(x, return_attention_scores=True)
    q = np.einsum("btd,dnh->btnh", x, layer.query.kernel.numpy()) + layer.query.bias.numpy()
    k = np.einsum("btd,dnh->btnh", x, layer.key.kernel.numpy()) + layer.key.bias.numpy()
    v = np.einsum("btd,dnh->btnh", x, layer.value.kernel.numpy()) + layer.value.bias.numpy()
    logits = np.einsum("bqnh,bknh->bnqk", q / np.sqrt(4), k)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = np.einsum("bnqk,bknh->bqnh", probs, v)
    expected = np.einsum("btnh,nhd->btd", expected, layer.out.kernel.numpy()) + layer.out.bias.numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), probs, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-5)


def test_relative_index_gives_class_token_pairs_their_own_rows():
    index = relative_position_index((2, 3), num_prefix_tokens=1)
    assert index.shape == (7, 7) and relative_table_size((2, 3), 1) == 14
    assert index[0, 0] == 13 and set(index[0, 1:]) == {11} and set(index[1:, 0]) == {12}
    patches = np.arange(6)
    np.testing.assert_array_equal(index[1:, 1:], patches[:, None] - patches[None, :] + 5)
    assert relative_table_size((2, 3), 0) == 11 and relative_position_index((2, 3), 0).max() == 10


def test_relative_attention_adds_the_logit_of_each_pairs_embedding():
    layer = vit_layers.MultiHeadSelfAttention(num_heads=2, relative_positions=True, grid_size=(2, 3), num_prefix_tokens=1)
    plain = vit_layers.MultiHeadSelfAttention(num_heads=2)
    x = random_images((2, 7, 8))
    layer(x), plain(x)
    for name in ("query", "key", "value", "out"):
        getattr(layer, name).set_weights(getattr(plain, name).get_weights())
    table = np.random.default_rng(0).normal(size=(14, 2, 4)).astype("float32")
    layer.relative_embedding.assign(table)
    _, with_rel = layer(x, return_attention_scores=True)
    _, without = plain(x, return_attention_scores=True)
    q = (np.einsum("btd,dnh->btnh", x, plain.query.kernel.numpy()) + plain.query.bias.numpy()) / 2.0
    index = relative_position_index((2, 3), 1)
    logits = np.log(keras.ops.convert_to_numpy(without)).astype("float64")
    for i in range(7):
        for j in range(7):  # the naive [N, N, heads, head_dim] computation the layer avoids
            logits[:, :, i, j] += np.einsum("bnh,nh->bn", q[:, i], table[index[i, j]])
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(with_rel), expected, atol=1e-5)


def test_weight_standardisation():
    conv = vit_layers.StdConv2D(2, 3, use_bias=False)
    x = random_images((1, 5, 5, 3))
    conv(x)
    w = conv.kernel.numpy()
    standardised = (w - w.mean((0, 1, 2))) / (w.std((0, 1, 2)) + 1e-5)
    expected = keras.ops.convert_to_numpy(keras.ops.conv(x, standardised, padding="valid"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(conv(x)), expected, atol=1e-5)


def test_stochastic_depth_drops_whole_examples_only_in_training():
    layer = vit_layers.StochasticDepth(0.5, seed=3)
    x = np.ones((64, 4, 4), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    per_example = out.reshape(64, -1)
    assert set(np.unique(per_example)) <= {0.0, 2.0}
    assert np.all(per_example.min(1) == per_example.max(1))
    assert 10 < (per_example[:, 0] == 0).sum() < 54


def test_transformer_block_is_pre_layer_norm_with_tanh_gelu():
    block = vit_layers.TransformerBlock(num_heads=2, mlp_dim=16)
    x = random_images((2, 5, 8))
    block(x)
    assert block.attention_norm.epsilon == 1e-6 and block.mlp_norm.epsilon == 1e-6

    def layer_norm(v, ln):
        mean, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + 1e-6) * ln.gamma.numpy() + ln.beta.numpy()

    h = x + keras.ops.convert_to_numpy(block.attention(layer_norm(x, block.attention_norm)))
    y = layer_norm(h, block.mlp_norm) @ block.mlp_dense_1.kernel.numpy() + block.mlp_dense_1.bias.numpy()
    y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y**3)))
    y = y @ block.mlp_dense_2.kernel.numpy() + block.mlp_dense_2.bias.numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), h + y, atol=1e-5)
