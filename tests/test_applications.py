"""keras.applications' conventions: input_shape, pooling, preprocess_input's types, decode_predictions."""

import numpy as np
import pytest

import keras_vit
from harness import predict, random_images, randomize, run_model_test

TINY = dict(patch_size=8, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2)


def test_input_shape_is_image_size_and_channels():
    model = keras_vit.ViT(input_shape=(32, 48, 1), **TINY, classes=3)
    assert (model.image_size, model.channels, tuple(model.input.shape)) == ((32, 48), 1, (None, 32, 48, 1))
    assert keras_vit.ViT_Ti16(input_shape=(384, 384, 3)).grid_size == (24, 24)  # not the weights' default size
    with pytest.raises(ValueError, match=r"input_shape \(32, 32, 3\) and image_size 64 disagree"):
        keras_vit.ViT(input_shape=(32, 32, 3), image_size=64, **TINY)
    with pytest.raises(ValueError, match="must be \\(height, width, channels\\)"):
        keras_vit.ViT(input_shape=(32, 32), **TINY)


@pytest.mark.parametrize("pooling, reduce", [("avg", np.mean), ("max", np.max)])
@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_pooling_pools_the_patch_tokens(pooling, reduce, classifier, tmp_path):
    def build():
        return keras_vit.ViT(image_size=(32, 48), **TINY, classifier=classifier, include_top=False, pooling=pooling)

    run_model_test(build, (32, 48, 3), tmp_path, expected_output=(32,))  # config, .keras and mixed precision
    model = build()
    randomize(model, 3)
    images = random_images((2, 32, 48, 3))
    tokens = np.asarray(model.intermediates(images, blocks=[1], norm=True)[-1])
    patches = tokens[:, model.num_prefix_tokens :]
    assert patches.shape[1] == 24
    np.testing.assert_allclose(predict(model, images), reduce(patches, axis=1), atol=2e-6)


def test_pooling_needs_include_top_false():
    with pytest.raises(ValueError, match=r"^pooling='avg' applies only with include_top=False \(feature extraction\)"):
        keras_vit.ViT_S16(pooling="avg")
    with pytest.raises(ValueError, match=r"Unknown pooling 'mean'; expected None or one of \('avg', 'max'\)"):
        keras_vit.ViT(**TINY, image_size=32, include_top=False, pooling="mean")


@pytest.mark.parametrize("dynamic", [False, True])
def test_images_of_other_channels_are_refused_at_the_models_input(dynamic):
    model = keras_vit.ViT(**TINY, image_size=32, dynamic_image_size=dynamic)
    gray = np.zeros((1, 32, 32, 1), np.float32)
    for call in (lambda: model.predict(gray, verbose=0), lambda: model(gray)):
        with pytest.raises(ValueError) as raised:
            call()
        assert str(raised.value) == (
            "Model 'vit' takes images of 3 channel(s), [batch, height, width, 3]; got shape (1, 32, 32, 1). "
            "Repeat a grayscale image to 3 channels, or build the model with channels=1."
        )
    if dynamic:  # a size the patches do not tile: the same plain message, without Keras' call frame
        with pytest.raises(ValueError, match=r"^Image size \(30, 30\) \(height, width\) does not divide by the patch stride \(8, 8\)[^\x1b]*$"):
            model(np.zeros((1, 30, 30, 3), np.float32))


def test_preprocess_input_returns_the_inputs_kind():
    import tensorflow as tf

    pixels = np.array([[0, 127.5, 255]], np.float64)
    out = keras_vit.preprocess_input(pixels)
    assert type(out) is np.ndarray and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[-1.0, 0.0, 1.0]])
    assert tf.is_tensor(keras_vit.preprocess_input(tf.constant(pixels)))


def test_imagenet_classes_are_ilsvrc_order():
    classes = keras_vit.imagenet.imagenet_classes()
    wnids = [wnid for wnid, _ in classes]
    assert len(set(wnids)) == 1000 and wnids == sorted(wnids)  # the heads' order: sorted WordNet IDs
    assert classes[0] == ("n01440764", "tench") and classes[1] == ("n01443537", "goldfish")
    assert classes[999] == ("n15075141", "toilet tissue")


def test_decode_predictions_gives_the_top_classes_best_first():
    scores = np.zeros((2, 1000), np.float32)
    scores[0, [1, 2, 3]] = [0.7, 0.2, 0.1]
    scores[1, 999] = 5.0
    decoded = keras_vit.decode_predictions(scores, top=2)
    assert decoded[0] == [("n01443537", "goldfish", pytest.approx(0.7)), ("n01484850", "great white shark", pytest.approx(0.2))]
    assert decoded[1][0] == ("n15075141", "toilet tissue", 5.0)
    with pytest.raises(ValueError, match=r"expects \[batch, 1000\] ImageNet-1k scores, got shape \(2, 21843\)"):
        keras_vit.decode_predictions(np.zeros((2, 21843)))
