"""Jobs that tests/test_backends.py runs in processes of a chosen Keras backend: `python tests/backend_jobs.py JOB DIR`.

    exchange DIR   every other backend's .keras files found in DIR, loaded here (the largest output difference per
                   file); then, unless already there, models of several kinds saved as .keras files with their
                   outputs on fixed images in DIR/BACKEND/
    fit DIR        on JAX with TensorFlow installed: fit steps under keras.distribution.DataParallel over every
                   device and on one device, fit on a tf.data pipeline (the input stays TensorFlow's), and what
                   TensorFlow's alone refuses there (a tf.distribute strategy, a SavedModel export)

Each prints one JSON line, its result.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import keras

import keras_vit
from harness import predict, random_images, randomize_at_trained_scale

TINY = dict(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, classes=5)
#: What the exchange covers: 1-D, 2-D and relative positions, the class token and GAP, any size, remat, a hybrid.
MODELS = {
    "dynamic_remat": dict(TINY, num_layers=2, dynamic_image_size=True, remat=True),
    "learned_2d_gap": dict(TINY, num_layers=2, position_embedding="learned_2d", classifier="gap"),
    "relative": dict(TINY, num_layers=2, position_embedding="relative"),
    "hybrid": dict(image_size=32, patch_size=1, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=5,
                   resnet_layers=(1,), resnet_width=1),
}


def exchange(folder: pathlib.Path) -> dict:
    here, found = keras.backend.backend(), {}
    for saved in sorted(folder.glob("*/*.keras")):
        if saved.parent.name != here:
            model = keras_vit.load_model(saved)
            difference = np.abs(predict(model, images_for(model)) - np.load(saved.with_suffix(".npy"))).max()
            found[f"{saved.parent.name}/{saved.stem}"] = float(difference)
    out = folder / here
    if not out.exists():
        out.mkdir(parents=True)
        for name, config in MODELS.items():
            model = keras_vit.ViT(**config)
            randomize_at_trained_scale(model)
            model.save(out / f"{name}.keras")
            np.save(out / f"{name}.npy", predict(model, images_for(model)))
    return found


def images_for(model) -> np.ndarray:
    return random_images((2, *model.image_size, 3), seed=3)


def fit(folder: pathlib.Path) -> dict:
    return {**data_parallel(), "tf_data_accuracy": fit_tf_data(), "refused": refusals(folder)}


def refusals(folder: pathlib.Path) -> dict:
    """The messages of what needs TensorFlow's backend, asked for on this one."""
    from keras_vit.serving import saved_model
    from keras_vit.training import distribute

    found = {}
    for name, attempt in (("strategy", lambda: distribute.make_strategy("mirrored")),
                          ("export", lambda: saved_model.export(keras_vit.ViT(**TINY, num_layers=1), str(folder / "served")))):
        try:
            attempt()
        except ValueError as error:
            found[name] = str(error)
    return {**found, "exported": (folder / "served").exists()}


def data_parallel() -> dict:
    """Three SGD steps on one batch of 8, on every device and on the first, from the same weights: their losses."""
    images, labels = random_images((8, 16, 16, 3), seed=4), np.arange(8) % 5
    start = keras_vit.ViT(**dict(TINY, num_layers=2))
    randomize_at_trained_scale(start)
    losses = {}
    for name, devices in (("data_parallel", keras.distribution.list_devices()), ("one_device", keras.distribution.list_devices()[:1])):
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        model = keras_vit.ViT(**dict(TINY, num_layers=2))
        model.set_weights(start.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        losses[name] = model.fit(images, labels, batch_size=8, epochs=3, shuffle=False, verbose=0).history["loss"]
    keras.distribution.set_distribution(None)
    return {"devices": len(keras.distribution.list_devices()), **losses}


def fit_tf_data() -> float:
    """The accuracy a tiny model reaches on a toy task fed by tf.data."""
    import tensorflow as tf

    labels = np.arange(64) % 4
    images = random_images((64, 16, 16, 3), seed=1) * 0.1
    for i, label in enumerate(labels):  # the class is the bright quadrant
        images[i, 8 * (label // 2): 8 * (label // 2) + 8, 8 * (label % 2): 8 * (label % 2) + 8] += 1.0
    data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(64, seed=0).batch(16)
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(**dict(TINY, num_layers=1, classes=4))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    return model.fit(data, epochs=15, verbose=0).history["accuracy"][-1]


if __name__ == "__main__":
    job, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    print(json.dumps({"exchange": exchange, "fit": fit}[job](folder)))
