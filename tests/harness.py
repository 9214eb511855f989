"""A shared model test harness: build, predict, JSON config, saving, a fit step, mixed precision.

In the spirit of keras-hub's `run_backbone_test`: every model variant goes
through the same checks, so a new variant gets them all by being listed.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import keras


def random_images(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape).astype("float32")


def predict(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """An eager forward pass: as `model.predict`, without tracing a tf.function per model."""
    return keras.ops.convert_to_numpy(model(images, training=False))


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer inside `layer`, at any depth: the functional graph's layers and the layers held in attributes."""
    found: dict[int, keras.layers.Layer] = {}

    def visit(value) -> None:
        if isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, keras.layers.Layer) and id(value) not in found:
            found[id(value)] = value
            for child in [*getattr(value, "layers", []), *vars(value).values()]:
                visit(child)

    for child in [*getattr(layer, "layers", []), *vars(layer).values()]:
        visit(child)
    found.pop(id(layer), None)
    return list(found.values())


def randomize(model: keras.Model, seed: int = 0) -> None:
    """Gives every variable non-trivial values (zero heads and tokens would hide layout bugs)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.05, size=v.shape).astype(v.dtype))


def randomize_at_trained_scale(model: keras.Model, seed: int = 0) -> None:
    """Random weights at the scale a trained network has, so that a wrong layer moves the outputs by far more than
    rounding does: kernels N(0, 1/fan_in), normalisation scales 1 + N(0, 0.1), other vectors N(0, 0.05).

    (`randomize`'s N(0, 0.05) everywhere shrinks the signal block by block: a patch kernel with its colour channels
    reversed then moves the logits by 1%, no more than bfloat16 rounding.)
    """
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.path.rsplit("/", 1)[-1] in ("gamma", "scale"):
            value = 1.0 + rng.normal(0.0, 0.1, size=v.shape)
        elif len(v.shape) >= 2:
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(v.shape[:-1])), size=v.shape)
        else:
            value = rng.normal(0.0, 0.05, size=v.shape)
        v.assign(value.astype(v.dtype))


#: The largest error of each mixed policy against float32, relative to max|float32 output|, at trained scale: measured
#: up to 7.6% (bfloat16) and 1.0% (float16, R50+ViT-B/16) over every variant's harness, 1.9% and 0.13% on the tiny
#: models, where a patch kernel with its colour channels reversed under mixed precision alone reads 11.6% (bfloat16).
MIXED_PRECISION_RELATIVE_ERROR = {"mixed_bfloat16": 0.1, "mixed_float16": 0.02}


def run_model_test(
    build, image_shape: tuple[int, int, int], tmp_path: pathlib.Path, expected_output: tuple, jit_compile="auto"
) -> None:
    """Checks one model builder end to end.

    Args:
        build: zero-argument callable returning a fresh model.
        image_shape: (H, W, C) of its input.
        tmp_path: a writable directory.
        expected_output: the output shape without the batch dimension.
        jit_compile: of the `fit` step ("auto": the model's default, XLA on CPU).
    """
    model = build()
    randomize_at_trained_scale(model)
    images = random_images((2, *image_shape))
    out = predict(model, images)
    assert out.shape == (2, *expected_output)
    assert np.all(np.isfinite(out))
    assert out.dtype == np.float32

    # JSON config round trip of the whole model: the same class, config and outputs.
    document = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    clone = keras.saving.deserialize_keras_object(document)
    assert type(clone) is type(model)
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(predict(clone, images), out, atol=1e-5)

    # .keras round trip with Keras' own loader and safe_mode (no Lambda layers, everything registered).
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(predict(loaded, images), out)

    # .weights.h5 round trip into a freshly built model.
    weights = tmp_path / "model.weights.h5"
    model.save_weights(weights)
    fresh = build()
    fresh.load_weights(weights)
    np.testing.assert_array_equal(predict(fresh, images), out)

    fit_one_step(build, images, expected_output, jit_compile)

    # Mixed precision: every sublayer computes in the policy's dtype, the output in float32.
    for policy in ("mixed_bfloat16", "mixed_float16"):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            mixed = build()
        finally:
            keras.config.set_dtype_policy(previous)
        other = {
            layer.name
            for layer in sublayers(mixed)
            if layer.dtype_policy.compute_dtype != policy.split("_")[1] and not isinstance(layer, keras.layers.InputLayer)
        }
        assert other == {"predictions"} if mixed.include_top else not other, (policy, other)
        mixed.set_weights(model.get_weights())
        mixed_out = predict(mixed, images)
        if mixed.include_top:  # the head's output is float32; a representation stays in the compute dtype
            assert mixed_out.dtype == np.float32, policy
        mixed_out = mixed_out.astype(np.float32)
        assert np.all(np.isfinite(mixed_out)), policy
        error = np.abs(mixed_out - out).max() / np.abs(out).max()
        assert error < MIXED_PRECISION_RELATIVE_ERROR[policy], (policy, error)


def fit_one_step(build, images: np.ndarray, expected_output: tuple, jit_compile="auto") -> None:
    """One `model.fit` step on random targets changes every trainable weight that gets a gradient, finitely."""
    model = build()
    randomize(model, seed=1)
    targets = np.random.default_rng(2).normal(size=(len(images), *expected_output)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=jit_compile)
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_weights]
    history = model.fit(images, targets, batch_size=len(images), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, keras.ops.convert_to_numpy(v)) for b, v in zip(before, model.trainable_weights)]
    assert sum(changed) >= len(changed) // 2, f"only {sum(changed)} of {len(changed)} weights changed"


def gradients(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """d(mean cross-entropy)/d(trainable weights) of one training-mode forward pass, on whichever backend runs."""

    def loss_of(logits):
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_of(model(images, training=True))
        found = tape.gradient(loss, model.trainable_weights)
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss_of_weights(trainable):
            return loss_of(model.stateless_call(trainable, non_trainable, images, training=True)[0])

        found = jax.jit(jax.grad(loss_of_weights))([v.value for v in model.trainable_variables])
    else:
        loss_of(model(images, training=True)).backward()
        found = [v.value.grad for v in model.trainable_variables]
    return [keras.ops.convert_to_numpy(g) for g in found]
