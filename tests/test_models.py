"""Every variant: exact parameter counts, and the shared harness (build, predict, save, load, mixed precision)."""

import numpy as np
import pytest
import keras

import keras_vit
from harness import predict, random_images, randomize, run_model_test

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
    "R26_ViT_B32": 101_383_976,
    "R50_ViT_L32": 328_994_856,
    "R_ViT_Ti16": 6_337_704,
}
# The reference's gap / no-representation configs.
REFERENCE_GAP_COUNTS = {"ViT_B16": 86_566_120, "ViT_B32": 88_222_696, "ViT_S16": 22_049_896, "ViT_S32": 22_878_184}
# The smallest image each variant takes: one patch (hybrids: their downsampling times the patch).
SMALL_IMAGE = {"ViT_H14": 28, "R50_ViT_B16": 32, "R26_ViT_S32": 64, "R26_ViT_B32": 64, "R50_ViT_L32": 64, "R_ViT_Ti16": 32}


def test_every_variant_has_a_count():
    assert set(keras_vit.VARIANTS) == set(REFERENCE_PARAMETER_COUNTS)
    assert all(getattr(keras_vit, name) is keras_vit.CONSTRUCTORS[name] for name in keras_vit.VARIANTS)


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


#: The variant whose whole harness runs in the unit tier.
UNIT_TIER_VARIANT = "ViT_Ti16"
#: The hybrid whose whole harness runs too (`large`): the smallest, AugReg's R+Ti/16. The other variants share
#: these two's layers and code paths and differ in sizes alone, which the exact parameter counts above pin; they
#: build and predict (`test_variant_predicts`; the harness of a whole-size one took 30-35 s).
HARNESS_VARIANTS = (UNIT_TIER_VARIANT, "R_ViT_Ti16")


@pytest.mark.parametrize("name", [name if name == UNIT_TIER_VARIANT else pytest.param(name, marks=pytest.mark.large)
                                  for name in HARNESS_VARIANTS])
def test_variant_harness(name, tmp_path):
    size = SMALL_IMAGE.get(name, 2 * keras_vit.VARIANTS[name].patch_size)
    # The fit step runs without XLA here: compiling these backward graphs costs 2 to 30 s a variant (the hybrids'
    # most), and `test_tiny_configurations` fits the same layers, plain and hybrid, with XLA, the models' default.
    run_model_test(lambda: getattr(keras_vit, name)(image_size=size, classes=7), (size, size, 3), tmp_path, (7,),
                   jit_compile=False)
    keras.backend.clear_session()


@pytest.mark.large
@pytest.mark.parametrize("name", sorted(set(keras_vit.VARIANTS) - set(HARNESS_VARIANTS)))
def test_variant_predicts(name):
    size = SMALL_IMAGE.get(name, keras_vit.VARIANTS[name].patch_size)
    model = getattr(keras_vit, name)(image_size=size, classes=3)
    out = model(random_images((1, size, size, 3)), training=False)  # eager: no XLA compile of the large graphs
    assert tuple(out.shape) == (1, 3) and np.all(np.isfinite(keras.ops.convert_to_numpy(out)))
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
    assert model.head is None


def test_softmax_activation_gives_probabilities():
    model = keras_vit.ViT(**TINY, image_size=16, classes=3, classifier_activation="softmax")
    out = model.predict(random_images((2, 16, 16, 3)), verbose=0)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-6)


def test_preprocessing_inside_the_model_matches_preprocess_input():
    with_pre = keras_vit.ViT(**TINY, image_size=16, classes=3, include_preprocessing=True)
    without = keras_vit.ViT(**TINY, image_size=16, classes=3)
    without.set_weights(with_pre.get_weights())
    for v in with_pre.head.weights:
        v.assign(np.ones(v.shape, "float32"))
    without.head.set_weights(with_pre.head.get_weights())
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3)).astype("uint8")
    scaled = keras.ops.convert_to_numpy(keras_vit.preprocess_input(pixels))
    np.testing.assert_allclose(scaled, (pixels.astype("float32") - 127.5) / 127.5, atol=1e-6)
    assert scaled.min() >= -1.0 and scaled.max() <= 1.0
    np.testing.assert_allclose(
        with_pre.predict(pixels.astype("float32"), verbose=0), without.predict(scaled, verbose=0), atol=1e-5
    )


def test_new_head_is_zero_initialised():
    model = keras_vit.ViT(**TINY, image_size=16, classes=3)
    for v in model.head.weights:
        assert not np.any(keras.ops.convert_to_numpy(v))


def test_non_square_image_and_patch():
    model = keras_vit.ViT(image_size=(48, 32), patch_size=8, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=2, classes=10)
    assert model.grid_size == (6, 4) and model.posembed_input.grid_size == (6, 4)
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


@pytest.mark.parametrize(
    "build, grid, stride, prefix, blocks",
    [
        (lambda: keras_vit.ViT_B16(image_size=384), (24, 24), (16, 16), 1, 12),
        (lambda: keras_vit.ViT(**TINY, image_size=(48, 32), classifier="gap"), (12, 8), (4, 4), 0, 2),
        # R50: stem /4, then stages 2 and 3 halve twice: /16 per token with patch 1.
        (lambda: keras_vit.R50_ViT_B16(image_size=(64, 96)), (4, 6), (16, 16), 1, 12),
        # R26 has four stages: /32.
        (lambda: keras_vit.R26_ViT_S32(image_size=64), (2, 2), (32, 32), 1, 12),
        # Stem only (/4) and 8x8 patches: 32 input pixels per token.
        (lambda: keras_vit.R_ViT_Ti16(image_size=64), (2, 2), (32, 32), 1, 12),
    ],
    ids=["B16@384", "tiny-gap-nonsquare", "R50", "R26", "R+Ti"],
)
def test_the_model_knows_its_grid_stride_and_blocks(build, grid, stride, prefix, blocks):
    model = build()
    assert isinstance(model, keras_vit.VisionTransformer)
    assert model.grid_size == grid
    assert model.patch_stride == stride
    assert model.num_prefix_tokens == prefix
    assert len(model.encoder_blocks) == blocks
    assert all(isinstance(b, keras_vit.TransformerBlock) for b in model.encoder_blocks)
    assert model.head.units == model.classes
    keras.backend.clear_session()


def test_variant_identity_and_create_model():
    model = keras_vit.create_model("ViT-Ti_16", image_size=32, classes=4)
    assert model.variant == "ViT_Ti16" and model.name == "vit_ti16" and model.grid_size == (2, 2)
    for spelling in ("ViT-Ti/16", "ViT-Ti_16", "ViT_Ti16", "vit_ti16"):
        assert keras_vit.get_variant(spelling) is keras_vit.VARIANTS["ViT_Ti16"]
    assert keras_vit.create_model("R50+ViT-B/16", image_size=32, classes=2).variant == "R50_ViT_B16"
    assert keras_vit.ViT(**TINY, image_size=16).variant is None
    custom = keras_vit.create_model("ViT", **TINY, image_size=16, classes=3)
    assert custom.variant is None and custom.classes == 3


def test_a_variant_constructor_refuses_architecture_arguments():
    with pytest.raises(TypeError, match=r"ViT_Ti16\(\) builds ViT-Ti_16 and takes no patch_size"):
        keras_vit.ViT_Ti16(patch_size=8)


def test_a_widened_hybrid_is_not_r50_and_gets_no_r50_weights():
    r50 = keras_vit.get_variant("R50_ViT_B16").config
    with pytest.raises(ValueError, match=r"resnet_width=2 \(the variant has 1\)"):
        keras_vit.ViT(image_size=32, **dict(r50, resnet_width=2), variant="R50_ViT_B16")
    with pytest.raises(ValueError, match="matches no released variant"):
        keras_vit.ViT(image_size=32, **dict(r50, resnet_width=2), weights="imagenet21k")


def test_features_intermediates_and_attention_maps():
    model = keras_vit.ViT(**dict(TINY, num_layers=3), image_size=(16, 24), classes=5)
    randomize(model)
    images = random_images((2, 16, 24, 3))
    tokens = keras.ops.convert_to_numpy(model.features(images))
    assert tokens.shape == (2, 1 + 4 * 6, 32)
    blocks = model.intermediates(images)
    assert len(blocks) == 3 and all(tuple(b.shape) == (2, 25, 32) for b in blocks)
    last_normed = model.intermediates(images, blocks=[-1], norm=True)[0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(last_normed), tokens, atol=1e-6)
    # The pooled representation is the class token of the features; the head maps it to the outputs.
    representation = keras.ops.convert_to_numpy(model.representation(images))
    np.testing.assert_allclose(representation, tokens[:, 0], atol=1e-6)
    head = keras.ops.convert_to_numpy(model.head(representation))
    np.testing.assert_allclose(head, predict(model, images), atol=1e-5)
    maps = model.attention_maps(images, blocks=[0, 2])
    assert [m.shape for m in maps] == [(2, 4, 25, 25)] * 2
    np.testing.assert_allclose(maps[1].sum(-1), 1.0, atol=1e-5)
    # Symbolic use: a new functional model on top of the dense tokens.
    inputs = keras.Input((16, 24, 3))
    dense = keras.Model(inputs, keras.layers.Dense(2)(model.features(inputs)))
    assert dense.output_shape == (None, 25, 2)
    with pytest.raises(ValueError, match="Block index 3 is out of range for a model of 3 blocks"):
        model.intermediates(images, blocks=[3])
