"""Attention maps for rollout and attention distance, off the default forward pass."""

import numpy as np

import keras_vit
from harness import predict, random_images, randomize


def test_attention_maps_rollout_and_distance():
    model = keras_vit.ViT(image_size=(16, 24), patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=3, classes=5, include_preprocessing=True)
    randomize(model)
    images = random_images((2, 16, 24, 3)) * 127.5 + 127.5
    maps = keras_vit.attention_maps(model, images)
    assert len(maps) == 3
    assert all(m.shape == (2, 4, 25, 25) for m in maps)
    for m in maps:
        np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)

    rollout = keras_vit.attention_rollout(maps)
    assert rollout.shape == (2, 25, 25)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-5)

    grid, patch = keras_vit.patch_grid(model)
    assert grid == (4, 6) and patch == (4, 4)
    distance = keras_vit.mean_attention_distance(maps, grid, patch)
    assert distance.shape == (3, 4)
    max_distance = np.hypot(3 * 4, 5 * 4)
    assert np.all(distance > 0) and np.all(distance < max_distance)

    # The maps come from the same computation as the ordinary forward pass.
    assert np.all(np.isfinite(predict(model, images)))


def test_uniform_attention_distance():
    grid = (2, 2)
    maps = [np.full((1, 1, 4, 4), 0.25)]
    expected = np.mean([np.mean([np.hypot(a // 2 - b // 2, a % 2 - b % 2) for b in range(4)]) for a in range(4)])
    np.testing.assert_allclose(keras_vit.mean_attention_distance(maps, grid, 1)[0, 0], expected)
