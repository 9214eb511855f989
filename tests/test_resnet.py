"""keras_vit.ResNet: the hybrids' units as a classifier (the data-scale study's CNN baseline)."""

import keras
import numpy as np
import pytest

import keras_vit
from harness import random_images, randomize, run_model_test


@pytest.mark.parametrize("layers,size", [((1, 1), 32), ((), (16, 24))])
def test_resnet_model_harness(layers, size, tmp_path):
    shape = (size, size, 3) if isinstance(size, int) else (*size, 3)
    run_model_test(lambda: keras_vit.ResNet(image_size=size, resnet_layers=layers, classes=4), shape, tmp_path, (4,))


def test_resnet_is_the_hybrid_stem_with_a_pooled_head():
    hybrid = keras_vit.ViT(image_size=32, resnet_layers=(1, 1), patch_size=1, hidden_size=32, mlp_dim=64, num_heads=4,
                           num_layers=1, classes=3)
    resnet = keras_vit.ResNet(image_size=32, resnet_layers=(1, 1), classes=3)
    randomize(hybrid)
    for name in ("conv_root", "gn_root", "block1_unit1", "block2_unit1"):
        source, target = hybrid.get_layer(name), resnet.get_layer(name)
        assert [tuple(w.shape) for w in source.weights] == [tuple(w.shape) for w in target.weights]
        for s, t in zip(source.weights, target.weights):
            t.assign(s)
    images = random_images((2, 32, 32, 3))
    stem = keras.Model(hybrid.input, hybrid.get_layer("block2_unit1").output)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(resnet.representation(images)),
        keras.ops.convert_to_numpy(stem(images)).mean(axis=(1, 2)),
        atol=1e-5,
    )
    assert resnet.representation(images).shape == (2, 512)
    assert not np.any(keras.ops.convert_to_numpy(resnet.head.weights[0]))  # a zero head, as the ViT's


def test_resnet_refuses_images_smaller_than_its_stride():
    with pytest.raises(ValueError, match="smaller than the ResNet's stride 8"):
        keras_vit.ResNet(image_size=4, resnet_layers=(1, 1))
