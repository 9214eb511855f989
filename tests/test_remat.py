"""Rematerialisation (gradient checkpointing): the same gradients as the plain model, dropout and XLA included."""

import json

import numpy as np
import pytest
import keras
import tensorflow as tf

import keras_vit
from harness import random_images, randomize_at_trained_scale
from support import TINY_MODEL, run_module

CONFIG = dict(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=3, classes=5,
              dropout_rate=0.1, attention_dropout_rate=0.1, stochastic_depth_rate=0.2)


def build(remat: bool) -> keras_vit.VisionTransformer:
    keras.utils.set_random_seed(7)  # the same initial random states in both models
    return keras_vit.ViT(remat=remat, **CONFIG)


def gradients(model, images, labels, mode: str) -> list[np.ndarray]:
    def step():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return tape.gradient(loss, model.trainable_weights)

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    return [keras.ops.convert_to_numpy(g) for g in step()]


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_remat_gradients_equal_the_plain_models(mode):
    plain, remat = build(False), build(True)
    randomize_at_trained_scale(plain)  # the built model's zero head would make every encoder gradient 0
    remat.set_weights(plain.get_weights())
    images = random_images((4, 16, 16, 3))
    labels = np.array([0, 1, 2, 3])
    expected, found = gradients(plain, images, labels, mode), gradients(remat, images, labels, mode)
    assert len(expected) == len(found) == len(plain.trainable_weights)
    for variable, a, b in zip(plain.trainable_weights, expected, found):
        np.testing.assert_allclose(b, a, atol=1e-5, err_msg=variable.path)
    # Every gradient is non-zero, so no zeros are compared, but the key biases': softmax ignores a shift per query.
    zero = {variable.path for variable, a in zip(plain.trainable_weights, expected) if np.abs(a).max() < 1e-6}
    assert zero == {f"encoderblock_{i}/attention/key/bias" for i in range(CONFIG["num_layers"])}
    # Inference is untouched, and the option travels with the model.
    np.testing.assert_allclose(remat.predict(images, verbose=0), plain.predict(images, verbose=0), atol=1e-6)
    assert all(block.remat for block in remat.encoder_blocks)


def test_remat_survives_a_keras_file(tmp_path):
    build(True).save(tmp_path / "remat.keras")
    loaded = keras_vit.load_model(tmp_path / "remat.keras")
    assert loaded.remat and all(block.remat for block in loaded.encoder_blocks)


@pytest.mark.process
def test_training_train_remat_writes_a_remat_model(tmp_path):
    """(Two runs' weights are not compared: training on CPU threads is not bit-deterministic, and three Adam steps
    already move two plain runs apart by 3e-3; the gradient tests above are the exact check.)"""
    result = run_module("keras_vit.training.train", *TINY_MODEL, "--epochs", "1", "--steps_per_epoch", "3", "--batch_size", "16",
                        "--dropout_rate", "0.1", "--remat", "--progress", "0", "--output_dir", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    model = keras_vit.load_model(tmp_path / "model.keras")
    assert model.remat and all(block.remat for block in model.encoder_blocks)
    assert json.loads((tmp_path / "run.json").read_text())["remat"] is True
