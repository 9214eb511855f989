"""The standard Keras recipe trains: `compile` gives a loss that reads what the model outputs, or says why not."""

import numpy as np
import pytest
import keras

import keras_vit

CONFIG = dict(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=1, classes=4)


def quadrant_task(count: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is the quadrant that is bright: learnt to accuracy 1.0 in a few epochs."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 4
    images = rng.normal(0.0, 0.1, (count, 16, 16, 3)).astype("float32")
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 2)
        image[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] += 1.0
    return images, labels


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "auto"])
def test_the_standard_keras_recipe_learns_on_a_logits_model(loss):
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(**CONFIG)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    images, labels = quadrant_task()
    history = model.fit(images, labels, batch_size=16, epochs=30, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] >= 0.9  # flat at 1.3863 and 0.25 when logits are read as probabilities


def test_the_loss_reads_what_the_model_outputs():
    logits = keras_vit.ViT(**CONFIG)
    logits.compile(optimizer="adam")
    assert logits.loss.from_logits and logits.outputs_logits
    probabilities = keras_vit.ViT(**CONFIG, classifier_activation="softmax")
    probabilities.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert probabilities.loss == "sparse_categorical_crossentropy" and probabilities.outputs_logits is False
    headless = keras_vit.ViT(**CONFIG, include_top=False)
    headless.compile(optimizer="adam")
    assert headless.loss is None and headless.outputs_logits is None


def test_a_loss_object_that_reads_the_wrong_outputs_is_refused():
    with pytest.raises(ValueError, match=r"outputs logits \(classifier_activation=None\), but the loss "
                                         r"'sparse_categorical_crossentropy' has from_logits=False: pass from_logits=True"):
        keras_vit.ViT(**CONFIG).compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match=r"outputs probabilities .* has from_logits=True: pass from_logits=False"):
        keras_vit.ViT(**CONFIG, classifier_activation="softmax").compile(
            loss=keras.losses.CategoricalCrossentropy(from_logits=True))


def test_a_compiled_keras_file_keeps_its_loss(tmp_path):
    model = keras_vit.ViT(**CONFIG)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "model.keras")
    assert keras.saving.load_model(tmp_path / "model.keras").loss.from_logits
