"""Every variant: exact parameter counts, and the shared harness (build, predict, save, load, mixed precision)."""

import numpy as np
import pytest
import keras

import keras_vit
from harness import random_images, run_model_test

# vit_jax/models_test.py: classes=1000 at 224x224.
REFERENCE_PARAMETER_COUNTS = {
    "ViT_Ti16": 5_717_416,
    "ViT_S16": 22_050_664,
    "ViT_S32": 22_878_952,
    "ViT_B8": 86_576_872,
    "ViT_B16": 86_567_656,
    "ViT_B32": 88_224_232,
    "ViT_L16": 304_326_632,
    "ViT_L32": 306_535_400,
    "ViT_H14": 632_045_800,
    "R50_ViT_B16": 98_659_112,
    "R26_ViT_S32": 36_431_912,
    "R50_ViT_L32": 328_994_856,
    "R_ViT_Ti16": 6_337_704,
}
# The reference's gap / no-representation configs.
REFERENCE_GAP_COUNTS = {"ViT_B16": 86_566_120, "ViT_B32": 88_222_696, "ViT_S16": 22_049_896, "ViT_S32": 22_878_184}
# Variants of 300M+ parameters only build and predict: saving 4 copies of them would dominate CI time.
LARGE = {"ViT_L16", "ViT_L32", "ViT_H14", "R50_ViT_L32"}
# The smallest image each variant takes: one patch (hybrids: their downsampling times the patch).
SMALL_IMAGE = {"ViT_H14": 28, "R50_ViT_B16": 32, "R26_ViT_S32": 64, "R50_ViT_L32": 64, "R_ViT_Ti16": 32}


def test_every_variant_has_a_count():
    assert set(keras_vit.VARIANTS) == set(REFERENCE_PARAMETER_COUNTS)


@pytest.mark.parametrize("name", list(REFERENCE_PARAMETER_COUNTS))
def test_parameter_count_equals_reference(name):
    model = getattr(keras_vit, name)()
    assert model.count_params() == REFERENCE_PARAMETER_COUNTS[name]
    keras.backend.clear_session()


@pytest.mark.parametrize("name", list(REFERENCE_GAP_COUNTS))
def test_gap_parameter_count_equals_reference(name):
    model = getattr(keras_vit, name)(classifier="gap")
    assert model.count_params() == REFERENCE_GAP_COUNTS[name]
    keras.backend.clear_session()


@pytest.mark.parametrize("name", sorted(set(keras_vit.VARIANTS) - LARGE))
def test_variant_harness(name, tmp_path):
    size = SMALL_IMAGE.get(name, 2 * keras_vit.VARIANTS[name].patch_size)
    run_model_test(lambda: getattr(keras_vit, name)(image_size=size, classes=7), (size, size, 3), tmp_path, (7,))
    keras.backend.clear_session()


@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_variant_predicts(name):
    size = SMALL_IMAGE.get(name, keras_vit.VARIANTS[name].patch_size)
    model = getattr(keras_vit, name)(image_size=size, classes=3)
    out = model.predict(random_images((1, size, size, 3)), verbose=0)
    assert out.shape == (1, 3)
    keras.backend.clear_session()


TINY = dict(patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2)


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(classifier="gap"),
        dict(representation_size=16),
        dict(position_embedding="none"),
        dict(position_embedding="learned_2d"),
        dict(position_embedding="relative"),
        dict(include_preprocessing=True, classifier_activation="softmax"),
        dict(dropout_rate=0.1, attention_dropout_rate=0.1, stochastic_depth_rate=0.1),
        dict(resnet_layers=(1,), patch_size=1, image_size=(16, 32)),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_tiny_configurations(options, tmp_path):
    config = dict(TINY, image_size=(16, 24), classes=5)
    config.update(options)
    shape = keras_vit.utils.to_pair(config["image_size"]) + (3,)
    run_model_test(lambda: keras_vit.ViT(**config), shape, tmp_path, (5,))


def test_include_top_false_outputs_the_representation():
    model = keras_vit.ViT(**TINY, image_size=16, include_top=False, representation_size=24)
    assert model.output_shape == (None, 24)
    assert "head" not in [layer.name for layer in model.layers]


def test_softmax_activation_gives_probabilities():
    model = keras_vit.ViT(**TINY, image_size=16, classes=3, classifier_activation="softmax")
    out = model.predict(random_images((2, 16, 16, 3)), verbose=0)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-6)


def test_preprocessing_inside_the_model_matches_preprocess_input():
    with_pre = keras_vit.ViT(**TINY, image_size=16, classes=3, include_preprocessing=True)
    without = keras_vit.ViT(**TINY, image_size=16, classes=3)
    without.set_weights(with_pre.get_weights())
    for v in with_pre.get_layer("head").weights:
        v.assign(np.ones(v.shape, "float32"))
    without.get_layer("head").set_weights(with_pre.get_layer("head").get_weights())
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3)).astype("uint8")
    scaled = keras.ops.convert_to_numpy(keras_vit.preprocess_input(pixels))
    np.testing.assert_allclose(scaled, (pixels.astype("float32") - 127.5) / 127.5, atol=1e-6)
    assert scaled.min() >= -1.0 and scaled.max() <= 1.0
    np.testing.assert_allclose(
        with_pre.predict(pixels.astype("float32"), verbose=0), without.predict(scaled, verbose=0), atol=1e-5
    )


def test_new_head_is_zero_initialised():
    model = keras_vit.ViT(**TINY, image_size=16, classes=3)
    for v in model.get_layer("head").weights:
        assert not np.any(keras.ops.convert_to_numpy(v))


def test_non_square_image_and_patch():
    model = keras_vit.ViT(image_size=(48, 32), patch_size=8, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=2, classes=10)
    assert model.get_layer("posembed_input").grid_size == (6, 4)
    assert model.predict(random_images((1, 48, 32, 3)), verbose=0).shape == (1, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=30), "not divisible by the patch size"),
        (dict(classifier="pool"), "Unknown classifier"),
        (dict(position_embedding="sinusoidal"), "Unknown position_embedding"),
        (dict(num_heads=5), "not divisible by num_heads"),
        (dict(resnet_layers=(1,), patch_size=3, image_size=32), "ResNet feature map"),
    ],
)
def test_bad_configurations_raise_clear_errors(kwargs, message):
    config = dict(TINY, image_size=16)
    config.update(kwargs)
    with pytest.raises(ValueError, match=message):
        keras_vit.ViT(**config)


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match="ViT_B16"):
        keras_vit.get_variant("ViT_X99")
