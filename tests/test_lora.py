"""LoRA through Keras' enable_lora: only the factors and the head train, saved files hold them merged, runs resume exactly."""

import json
import signal
import time

import numpy as np
import pytest
import keras

import keras_vit
from harness import randomize
from keras_vit.training import backup
from support import TINY_MODEL, run_module, start_module

TINY = dict(image_size=16, patch_size=4, hidden_size=24, mlp_dim=48, num_heads=3, num_layers=2, classes=5)
IMAGES = np.random.default_rng(0).random((16, 16, 16, 3), dtype=np.float32)
LABELS = np.arange(16) % 5


def lora_model(rank=4, **options):
    model = keras_vit.ViT(**TINY)
    randomize(model, 0)
    model.enable_lora(rank, **options)
    return model


def values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def test_only_the_factors_and_the_head_train_and_the_output_starts_unchanged():
    plain = keras_vit.ViT(**TINY)
    randomize(plain, 0)
    model = lora_model(targets=("query", "key", "value", "out"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(IMAGES)), keras.ops.convert_to_numpy(plain(IMAGES)))
    assert model.lora_rank == 4
    names = sorted(v.path for v in model.trainable_variables)
    factors = [f"encoderblock_{i}/attention/{p}/lora_kernel_{ab}" for i in range(2) for p in ("key", "out", "query", "value")
               for ab in "ab"]
    assert names == sorted([*factors, "head/kernel", "head/bias"])
    frozen = [v for v in model.weights if not v.trainable]
    before = values(frozen)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(IMAGES, LABELS, epochs=2, batch_size=8, verbose=0)
    for variable, value in zip(frozen, before):  # the base model, query/key/value/out biases included, unchanged
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value, err_msg=variable.path)
    assert not np.array_equal(keras.ops.convert_to_numpy(model(IMAGES)), keras.ops.convert_to_numpy(plain(IMAGES)))


def test_every_saved_form_holds_the_factors_merged_in_a_plain_model(tmp_path):
    model = lora_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(IMAGES, LABELS, epochs=2, batch_size=8, verbose=0)
    expected = keras.ops.convert_to_numpy(model(IMAGES))
    plain_count = len(keras_vit.ViT(**TINY).weights)
    model.save(tmp_path / "model.keras")
    loaded = keras_vit.load_model(tmp_path / "model.keras")
    assert loaded.lora_rank is None and len(loaded.weights) == plain_count  # nothing extra to export or serve
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(IMAGES)), expected, atol=1e-5)
    keras_vit.save_checkpoint(model, tmp_path / "model.npz")
    again = keras_vit.ViT(weights=tmp_path / "model.npz")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(IMAGES)), expected, atol=1e-5)
    with pytest.warns(UserWarning, match="does not record the tanh GELU"):  # timm's state dict: merged weights alone
        keras_vit.save_checkpoint(model, tmp_path / "model.safetensors", format="timm")
    with pytest.warns(UserWarning, match="trained with approximate_gelu=False"):  # the file says timm's exact GELU
        again = keras_vit.ViT(weights=tmp_path / "model.safetensors", approximate_gelu=True, num_heads=3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(IMAGES)), expected, atol=1e-5)
    # A LoRA model loads a merged file too (the weights pipeline maps each projection's slot to its frozen kernel).
    model.save_weights(tmp_path / "model.weights.h5")
    other = lora_model()
    other.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(other(IMAGES)), expected, atol=1e-5)


def test_a_backup_gives_back_the_frozen_kernels_and_the_factors_apart(tmp_path):
    """Merged weights alone would restart LoRA from zero factors: A = B = 0 have no gradient."""
    model = lora_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(IMAGES, LABELS, epochs=1, batch_size=8, verbose=0)
    saver = backup.AtomicBackup(str(tmp_path))
    saver.set_model(model)
    saver.save(epoch=1, batch=0)
    restored = lora_model()
    restored.compile(optimizer=keras.optimizers.Adam(1e-2))
    assert backup.restore(restored, str(tmp_path)).epoch == 1
    for mine, theirs in zip(keras_vit.lora.lora_layers(restored), keras_vit.lora.lora_layers(model)):
        for name in ("_kernel", "lora_kernel_a", "lora_kernel_b", "bias"):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(getattr(mine, name)),
                                          keras.ops.convert_to_numpy(getattr(theirs, name)))


def test_bad_lora_arguments_are_refused():
    with pytest.raises(ValueError, match=r"LoRA targets \['mlp'\]: expected some of"):
        lora_model(targets=("mlp",))
    with pytest.raises(ValueError, match="positive integer"):
        lora_model(rank=0)
    with pytest.raises(ValueError, match="has LoRA already"):
        lora_model().enable_lora(2)


@pytest.mark.process
def test_a_lora_run_killed_mid_epoch_resumes_to_the_uninterrupted_runs_weights(tmp_path):
    base = keras_vit.ViT(**dict(TINY, classes=10, image_size=16))
    randomize(base, 5)
    base.save(tmp_path / "base.keras")
    command = ["--model", "ViT", "--init_from", str(tmp_path / "base.keras"), "--recipe", "finetune",
               "--lora_rank", "4", "--image_size", "16", "--dataset", "digits", "--epochs", "2",
               "--steps_per_epoch", "12", "--batch_size", "16", "--backup_freq", "5", "--warmup_steps", "5",
               "--progress", "0"]
    whole = run_module("keras_vit.training.train", *command, "--output_dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-2000:]
    assert "LoRA of rank 4 on query, value" in whole.stdout
    out = tmp_path / "killed"
    process = start_module("keras_vit.training.train", *command, "--output_dir", str(out))
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline and not backup.states(str(out / "backup")):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_module("keras_vit.training.train", *command, "--output_dir", str(out))
    assert resumed.returncode == 0 and "resuming at epoch 1, batch 6 of 12" in resumed.stdout, resumed.stdout[-2000:]
    results, expected = (json.loads((folder / "results.json").read_text()) for folder in (out, tmp_path / "whole"))
    assert results["weights_sha256"] == expected["weights_sha256"]
    assert keras_vit.load_model(out / "model.keras").lora_rank is None  # merged
