"""The model core on every Keras backend: reference parity, any size, remat, exact attention maps, fit, .keras files.

Nothing here imports TensorFlow. On TensorFlow these run in the unit tier;
tests/test_backends.py runs this file again on JAX and on PyTorch with
TensorFlow unimportable (`KERAS_VIT_TESTS_WITHOUT_TENSORFLOW`, conftest.py).
"""

import numpy as np
import pytest
import keras

import keras_vit
from harness import gradients, predict, random_images, randomize_at_trained_scale
from keras_vit import analysis
from keras_vit.layers import attention

FIXTURES = ["vit_tiny_token", "hybrid_tiny"]
REMAT_CONFIG = dict(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, classes=5,
                    dropout_rate=0.1, attention_dropout_rate=0.1, stochastic_depth_rate=0.2)


def fixture_model(fixtures_dir, name: str, **overrides) -> keras_vit.VisionTransformer:
    path = fixtures_dir / f"{name}.npz"
    return keras_vit.ViT(weights=str(path), **dict(keras_vit.weights.npz_architecture(path), **overrides))


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_fixture_logits_and_prelogits(name, fixtures_dir, fixture_specs):
    tolerance = fixture_specs[name]["tolerance"]
    model = fixture_model(fixtures_dir, name)
    images = np.load(fixtures_dir / f"{name}_inputs.npy")
    np.testing.assert_allclose(predict(model, images), np.load(fixtures_dir / f"{name}_logits.npy"),
                               atol=tolerance["logits_atol"], rtol=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.representation(images)),
                               np.load(fixtures_dir / f"{name}_prelogits.npy"), atol=tolerance["prelogits_atol"], rtol=0)


def test_hybrid_stem_matches_reference_intermediate(fixtures_dir):
    model = fixture_model(fixtures_dir, "hybrid_tiny")
    intermediates = np.load(fixtures_dir / "hybrid_tiny_intermediates.npz")
    images = np.load(fixtures_dir / "hybrid_tiny_inputs.npy")
    stages = model.resnet_stages
    for tensor, key in ((stages[0][0].input, "stem_output"), (stages[0][-1].output, "block1"), (stages[1][-1].output, "block2")):
        out = predict(keras.Model(model.input, tensor), images)
        np.testing.assert_allclose(out, intermediates[key], atol=1e-4, rtol=0, err_msg=key)


@pytest.mark.parametrize("name, size", [("vit_tiny_token", 48), ("hybrid_tiny", 128)])
def test_a_fixture_of_dynamic_size_equals_the_model_built_at_the_size_called(name, size, fixtures_dir):
    inputs = np.load(fixtures_dir / f"{name}_inputs.npy")
    dynamic = fixture_model(fixtures_dir, name, dynamic_image_size=True)
    np.testing.assert_allclose(predict(dynamic, inputs), np.load(fixtures_dir / f"{name}_logits.npy"), atol=1e-4)
    bigger = keras.ops.convert_to_numpy(keras.ops.image.resize(inputs, (size, size)))
    static = fixture_model(fixtures_dir, name, image_size=size)
    np.testing.assert_allclose(predict(dynamic, bigger), predict(static, bigger), atol=1e-5)


def test_remat_gradients_equal_the_plain_models():
    def build(remat: bool) -> keras_vit.VisionTransformer:
        keras.utils.set_random_seed(7)  # the same initial random states in both models
        return keras_vit.ViT(remat=remat, **REMAT_CONFIG)

    plain, remat = build(False), build(True)
    randomize_at_trained_scale(plain)  # the built model's zero head would make every encoder gradient 0
    remat.set_weights(plain.get_weights())
    images, labels = random_images((4, 16, 16, 3)), np.array([0, 1, 2, 3])
    found = []
    for model in (plain, remat):
        keras.utils.set_random_seed(11)  # PyTorch's unseeded dropout draws from its global generator
        found.append(gradients(model, images, labels))
    for variable, a, b in zip(plain.trainable_weights, *found):
        np.testing.assert_allclose(b, a, atol=1e-5, err_msg=variable.path)
    # Dropout was on (its draws were replayed, not skipped): without it the gradients differ.
    still = keras_vit.ViT(**dict(REMAT_CONFIG, dropout_rate=0.0, attention_dropout_rate=0.0, stochastic_depth_rate=0.0))
    still.set_weights(plain.get_weights())
    assert max(np.abs(a - b).max() for a, b in zip(found[0], gradients(still, images, labels))) > 1e-3
    assert all(block.remat for block in remat.encoder_blocks)


@pytest.mark.parametrize("options", [{}, dict(position_embedding="relative")], ids=["learned", "relative"])
def test_attention_maps_are_exact_with_fused_attention_on(options, monkeypatch):
    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2,
                          classes=5, **options)
    randomize_at_trained_scale(model)
    images = random_images((2, 16, 16, 3))
    maps = model.attention_maps(images)
    # Block 0's weights by hand: softmax(q k^T / sqrt(d)) of its layer-normalised input.
    block = model.encoder_blocks[0]
    x = keras.ops.convert_to_numpy(block.attention_norm(model._view("encoder_input")(images, training=False)))
    layer = block.attention
    q, k = (np.einsum("btd,dnh->btnh", x, keras.ops.convert_to_numpy(p.kernel)) + keras.ops.convert_to_numpy(p.bias)
            for p in (layer.query, layer.key))
    logits = np.einsum("bqnh,bknh->bnqk", q / np.sqrt(layer.head_dim), k)
    if options:
        logits += keras.ops.convert_to_numpy(layer._relative_logits(keras.ops.convert_to_tensor(q / np.sqrt(layer.head_dim))))
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(maps[0], expected / expected.sum(-1, keepdims=True), atol=1e-5)
    # The forward pass takes the fused kernel where the backend has one, and agrees with the explicit one.
    fused = predict(model, images)
    monkeypatch.setattr(attention, "FUSED_ATTENTION_BACKENDS", ())
    np.testing.assert_allclose(fused, predict(model, images), atol=1e-5)


def test_fit_learns_a_toy_task_from_numpy_arrays():
    keras.utils.set_random_seed(0)
    labels = np.arange(64) % 4
    images = random_images((64, 16, 16, 3), seed=1) * 0.1
    for i, label in enumerate(labels):  # the class is the bright quadrant
        images[i, 8 * (label // 2): 8 * (label // 2) + 8, 8 * (label % 2): 8 * (label % 2) + 8] += 1.0
    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=4)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    history = model.fit(images, labels, batch_size=16, epochs=15, verbose=0)
    assert history.history["accuracy"][-1] == 1.0, history.history


def test_keras_file_round_trip_and_the_analyses(tmp_path):
    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2,
                          classes=5, position_embedding="learned_2d", remat=True)
    randomize_at_trained_scale(model)
    images = random_images((2, 16, 16, 3))
    model.save(tmp_path / "model.keras")
    loaded = keras_vit.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(predict(loaded, images), predict(model, images), atol=1e-6)
    assert analysis.attention_rollout(loaded, images).shape == (2, 4, 4)
    assert analysis.mean_attention_distance(loaded, images).shape == (2, 4)
    assert analysis.position_embedding_similarity(loaded).shape == (4, 4, 4, 4)
    assert analysis.embedding_filters(loaded, count=3).shape == (3, 4, 4, 3)
    assert analysis.flops(loaded) > 0
