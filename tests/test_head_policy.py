"""The fine-tuning head policy: "new" always starts a zero head (the paper, the reference), "keep" requires the stored
one, "auto" keeps it when it fits; and what a new user met when a file does not fit."""

import numpy as np
import pytest
import keras

import keras_vit
from harness import random_images, randomize
from support import TINY_MODEL, fixture_model, run_module

TINY = dict(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, classes=10)


def head_values(model):
    return [keras.ops.convert_to_numpy(v) for v in model.head.weights]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 10-class model with a non-zero head, in every format."""
    folder = tmp_path_factory.mktemp("heads")
    model = keras_vit.ViT(**TINY)
    randomize(model, 3)
    model.save(folder / "model.keras")
    model.save_weights(folder / "model.weights.h5")
    keras_vit.save_npz(model, folder / "model.npz")
    return model, folder


@pytest.mark.parametrize("fmt", ["model.keras", "model.weights.h5", "model.npz"])
def test_new_head_is_zero_even_when_the_classes_match_and_keep_or_auto_load_it(fmt, trained):
    source, folder = trained
    new = keras_vit.ViT(weights=folder / fmt, head="new", **TINY)
    assert all(not np.any(v) for v in head_values(new))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(new.encoder_norm.gamma), keras.ops.convert_to_numpy(source.encoder_norm.gamma)
    )
    for policy in ("keep", "auto"):
        kept = keras_vit.ViT(weights=folder / fmt, head=policy, **TINY)
        for a, b in zip(head_values(kept), head_values(source)):
            np.testing.assert_array_equal(a, b)
    # Another number of classes: "auto" starts a new head, "keep" refuses and changes nothing.
    other = dict(TINY, classes=3)
    assert all(not np.any(v) for v in head_values(keras_vit.ViT(weights=folder / fmt, **other)))
    target = keras_vit.ViT(**other)
    randomize(target, 4)
    before = [keras.ops.convert_to_numpy(v).copy() for v in target.weights]
    with pytest.raises(ValueError, match=r"head='keep', but the file holds a head of shapes \[\(32, 10\), \(10,\)\] "
                                         r"and the model's head is \[\(32, 3\), \(3,\)\]"):
        keras_vit.load_weights(target, folder / fmt, head="keep")
    for value, variable in zip(before, target.weights):
        np.testing.assert_array_equal(value, keras.ops.convert_to_numpy(variable))


def test_unknown_head_policy_is_refused(trained):
    _, folder = trained
    with pytest.raises(ValueError, match=r"Unknown head policy 'old'; expected one of \('auto', 'new', 'keep'\)"):
        keras_vit.ViT(weights=folder / "model.npz", head="old", **TINY)


def test_a_headless_source_keeps_nothing(fixtures_dir, tmp_path):
    headless = fixture_model(fixtures_dir, "vit_tiny_token", include_top=False)
    keras_vit.save_npz(headless, tmp_path / "headless.npz")
    assert all(not np.any(v) for v in head_values(fixture_model(fixtures_dir, "vit_tiny_token", weights=str(tmp_path / "headless.npz"))))
    with pytest.raises(ValueError, match="head='keep', but the file holds no head"):
        fixture_model(fixtures_dir, "vit_tiny_token", weights=str(tmp_path / "headless.npz"), head="keep")


@pytest.mark.process
def test_finetune_recipe_starts_from_a_zero_head_of_the_same_classes(trained, tmp_path):
    """`--recipe finetune --init_from` on a task with the checkpoint's own class count: with a zero learning rate the
    trained model still has the zero head it started from, and the source's encoder."""
    source, folder = trained
    common = [*TINY_MODEL, "--epochs", "1", "--steps_per_epoch", "1", "--batch_size", "8", "--learning_rate", "0",
              "--init_from", str(folder / "model.keras"), "--recipe", "finetune", "--progress", "0"]
    result = run_module("keras_vit.training.train", *common, "--output_dir", str(tmp_path / "new"), timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    model = keras_vit.load_model(tmp_path / "new" / "model.keras")
    assert all(not np.any(v) for v in head_values(model))
    images = random_images((2, 16, 16, 3))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.features(images)),
                               keras.ops.convert_to_numpy(source.features(images)), atol=1e-5)
    kept = run_module("keras_vit.training.train", *common, "--head", "keep", "--output_dir", str(tmp_path / "keep"), timeout=240)
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert "head policy 'new': the finetune recipe's default" in result.stdout
    assert "with the stored head (head policy 'keep': --head)" in kept.stdout
    for a, b in zip(head_values(keras_vit.load_model(tmp_path / "keep" / "model.keras")), head_values(source)):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """A 1-block, hidden-32 model saved as .npz: not a ViT-S/16."""
    path = tmp_path_factory.mktemp("small") / "small.npz"
    keras_vit.save_npz(keras_vit.ViT(image_size=32, patch_size=16, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1), path)
    return path


def test_an_npz_of_another_architecture_is_one_short_line(small_npz):
    with pytest.raises(ValueError) as raised:
        keras_vit.ViT_S16(weights=str(small_npz), image_size=32)
    message = str(raised.value)
    assert len(message) < 400 and "\n" not in message
    assert "more problems" in message
    assert "The file holds another architecture: hidden_size 32 vs 384, mlp_dim 64 vs 1536, num_heads 4 vs 6, num_layers 1 vs 12" in message


@pytest.mark.process
def test_init_from_an_npz_of_another_architecture_is_one_short_line(small_npz, tmp_path):
    result = run_module("keras_vit.training.train", "--model", "ViT_S16", "--image_size", "32", "--init_from", str(small_npz),
                        "--epochs", "1", "--output_dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) < 400 and "hidden_size 32 vs 384, mlp_dim 64 vs 1536, num_heads 4 vs 6, num_layers 1 vs 12" in errors[0]


@pytest.mark.parametrize("name, content", [("weights.npz", b"not a zip"), ("train.py", b"import os\nprint('hello')\n")])
def test_a_file_that_is_not_an_npz_says_so(name, content, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"it is not an \.npz \(zip\) archive") as raised:
        keras_vit.ViT(weights=path, **TINY)
    assert "pickle" not in str(raised.value)
