"""Masked patch prediction (paper section 4.6, appendix B.1.2): corruption, targets, training and fine-tuning."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit.masked_patches import IMAGES, MASKED, SOURCE, PatchCorruption, color_classes
from harness import random_images, randomize
from support import TINY_MODEL, run_module

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

TINY = dict(patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2)


def test_corruption_ratios_over_many_draws():
    corruption = PatchCorruption(grid_size=(4, 5), patch_stride=(4, 4))
    source, masked, corrupted = (t.numpy() for t in corruption.plan(4000, tf.constant([3, 7])))
    patches = 20
    np.testing.assert_array_equal(corrupted.sum(1), 10)  # exactly half of every image's patches
    replaced = source != np.arange(patches)
    assert not np.any(masked & ~corrupted) and not np.any(replaced & ~corrupted) and not np.any(masked & replaced)
    n = corrupted.sum()
    assert abs(masked.sum() / n - 0.8) < 0.01
    assert abs(replaced.sum() / n - 0.1) < 0.01
    assert abs((corrupted & ~masked & ~replaced).sum() / n - 0.1) < 0.01
    assert source.min() >= 0 and source.max() < patches  # another patch of the same image
    others = source[replaced]
    assert len(np.unique(others)) == patches
    # Every position is corrupted equally often; the same seed draws the same plan, another seed another.
    assert np.all(np.abs(corrupted.mean(0) - 0.5) < 0.04)
    again = corruption.plan(4000, tf.constant([3, 7]))[0].numpy()
    other = corruption.plan(4000, tf.constant([3, 8]))[0].numpy()
    np.testing.assert_array_equal(source, again)
    assert np.any(source != other)


@pytest.mark.parametrize("stride", [(4, 4), (2, 8)])
def test_targets_are_the_quantised_mean_colours(stride):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 16, 24, 3)).astype(np.float32)
    pixels[0, :stride[0], :stride[1]] = 255.0  # a white patch: class 511
    pixels[1, :stride[0], :stride[1]] = [31.9, 32.0, 224.0]  # bins 0, 1, 7
    classes = color_classes(pixels, stride).numpy()
    gh, gw = 16 // stride[0], 24 // stride[1]
    expected = np.empty((3, gh * gw), int)
    for b in range(3):
        for i in range(gh):
            for j in range(gw):
                mean = pixels[b, i * stride[0]:(i + 1) * stride[0], j * stride[1]:(j + 1) * stride[1]].mean((0, 1))
                r, g, bl = np.minimum((mean // 32).astype(int), 7)
                expected[b, i * gw + j] = r * 64 + g * 8 + bl
    np.testing.assert_array_equal(classes, expected)
    assert classes[0, 0] == 511 and classes[1, 0] == 0 * 64 + 1 * 8 + 7


def test_corrupt_patches_takes_sources_then_the_mask():
    layer = keras_vit.layers.CorruptPatches()
    embeddings = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    source = np.array([[0, 3, 2, 3], [1, 1, 2, 0]])
    masked = np.array([[False, False, True, False], [True, False, False, False]])
    out = keras.ops.convert_to_numpy(layer(embeddings, source, masked))
    mask = keras.ops.convert_to_numpy(layer.mask_embedding)
    np.testing.assert_array_equal(out[0, 1], embeddings[0, 3])
    np.testing.assert_array_equal(out[1, 3], embeddings[1, 0])
    np.testing.assert_array_equal(out[0, 2], mask)
    np.testing.assert_array_equal(out[1, 0], mask)
    np.testing.assert_array_equal(out[0, 0], embeddings[0, 0])


def test_model_saves_loads_and_its_backbone_fine_tunes(tmp_path):
    backbone = keras_vit.ViT(image_size=(16, 12), include_top=False, **TINY)
    model = keras_vit.MaskedPatchPrediction(backbone)
    randomize(model)
    pixels = random_images((2, 16, 12, 3)) * 127.5 + 127.5
    inputs, targets, weights = model.corruption()(keras_vit.preprocess_input(pixels), pixels, tf.constant([0, 0]))
    logits = keras.ops.convert_to_numpy(model(inputs))
    assert logits.shape == (2, 12, 512) and tuple(targets.shape) == (2, 12)
    # Uncorrupted tokens see the same encoder as the backbone's own forward pass.
    clean = {IMAGES: inputs[IMAGES], SOURCE: np.tile(np.arange(12), (2, 1)), MASKED: np.zeros((2, 12), bool)}
    tokens = keras.ops.convert_to_numpy(backbone.features(inputs[IMAGES]))[:, 1:]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(clean)), keras.ops.convert_to_numpy(model.color_head(tokens)), atol=1e-5
    )

    path = str(tmp_path / "masked.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, keras_vit.MaskedPatchPrediction) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(inputs)), logits, atol=1e-6)

    # Fine-tuning: a classifier of the same architecture takes the backbone; its head stays new.
    assert keras_vit.weights.architecture_of(path)["hidden_size"] == 32
    classifier = keras_vit.ViT(image_size=(16, 12), classes=3, **TINY)
    keras_vit.load_weights(classifier, path)
    for name in ("embedding", "posembed_input", "encoder_norm"):
        for a, b in zip(classifier.get_layer(name).weights, backbone.get_layer(name).weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert not np.any(keras.ops.convert_to_numpy(classifier.head.weights[0]))
    wider = keras_vit.ViT(image_size=(16, 12), classes=3, **dict(TINY, hidden_size=64))
    with pytest.raises(ValueError, match="the backbone of .*masked.keras"):
        keras_vit.load_weights(wider, path)


def test_mixed_precision_outputs_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = keras_vit.MaskedPatchPrediction(keras_vit.ViT(image_size=8, include_top=False, **TINY))
        pixels = random_images((1, 8, 8, 3)) * 127.5 + 127.5
        inputs, _, _ = model.corruption()(keras_vit.preprocess_input(pixels), pixels, tf.constant([1, 2]))
        assert model(inputs).dtype == "float32"
    finally:
        keras.config.set_dtype_policy("float32")


def test_a_short_masked_patch_run_lowers_its_loss_and_fine_tunes(tmp_path):
    pretrain, finetune = tmp_path / "mpp", tmp_path / "ft"
    result = run_module(
        "keras_vit.training.train", "--recipe", "masked_patch", *TINY_MODEL, "--dataset", "digits", "--batch_size", "64",
        "--learning_rate", "2e-3", "--warmup_steps", "10", "--epochs", "4", "--steps_per_epoch", "10",
        "--strategy", "mirrored", "--logical_cpus", "2",  # two replicas: the corruption inputs are distributed too
        "--output_dir", str(pretrain), "--progress", "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(pretrain / "history.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.75 * losses[0]
    results = json.loads((pretrain / "results.json").read_text())
    assert results["task"] == "masked_patch" and 0 < results["accuracy"] <= 1
    assert not (pretrain / "labels.txt").exists()
    result = run_module(
        "keras_vit.training.train", "--model", "ViT", "--init_from", str(pretrain / "model.keras"), "--image_size", "16",
        "--dataset", "digits", "--epochs", "1", "--steps_per_epoch", "5", "--batch_size", "64",
        "--output_dir", str(finetune), "--progress", "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((finetune / "run.json").read_text())  # a classification run of the pre-trained encoder
    assert (finetune / "labels.txt").read_text().split() == [str(i) for i in range(10)]
