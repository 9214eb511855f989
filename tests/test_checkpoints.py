"""Original .npz checkpoints: fine-tuning rules, round trips and error messages (the fixtures' parity on every
backend: test_backend_core.py)."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import keras_vit
from harness import predict, random_images, randomize
from support import fixture_model


def test_fixture_round_trips_through_save_npz(fixtures_dir, fixture_specs, tmp_path):
    model = fixture_model(fixtures_dir, "vit_tiny_token")
    keras_vit.save_npz(model, tmp_path / "copy.npz")
    original = np.load(fixtures_dir / "vit_tiny_token.npz")
    written = np.load(tmp_path / "copy.npz")
    assert set(written.files) == set(original.files)
    for key in original.files:
        np.testing.assert_array_equal(written[key], original[key], err_msg=key)


def test_head_of_another_task_is_replaced_and_pre_logits_dropped(fixtures_dir, fixture_specs, tmp_path):
    # A checkpoint with a representation layer, as the released imagenet21k files have.
    source = fixture_model(fixtures_dir, "vit_tiny_token", weights=None, representation_size=64)
    randomize(source)
    keras_vit.save_npz(source, tmp_path / "with_pre_logits.npz")

    same_task = fixture_model(fixtures_dir, "vit_tiny_token", representation_size=64, weights=str(tmp_path / "with_pre_logits.npz"))
    images = random_images((2, 32, 32, 3))
    np.testing.assert_allclose(predict(same_task, images), predict(source, images), atol=1e-5)

    new_task = fixture_model(fixtures_dir, "vit_tiny_token", classes=3, weights=str(tmp_path / "with_pre_logits.npz"))
    assert new_task.pre_logits is None
    for v in new_task.head.weights:
        assert not np.any(keras.ops.convert_to_numpy(v))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(new_task.encoder_norm.gamma),
        keras.ops.convert_to_numpy(source.encoder_norm.gamma),
    )

    headless = fixture_model(fixtures_dir, "vit_tiny_token", include_top=False, weights=str(tmp_path / "with_pre_logits.npz"))
    assert headless.output_shape == (None, 64)


def test_loading_at_higher_resolution_resizes_position_embeddings(fixtures_dir, fixture_specs):
    from keras_vit.resize import resize_position_embedding

    model = fixture_model(fixtures_dir, "vit_tiny_token", image_size=48, weights=str(fixtures_dir / "vit_tiny_token.npz"))
    stored = np.load(fixtures_dir / "vit_tiny_token.npz")["Transformer/posembed_input/pos_embedding"]
    loaded = keras.ops.convert_to_numpy(model.posembed_input.pos_embedding)
    assert loaded.shape == (1, 1 + 12 * 12, 64)
    np.testing.assert_allclose(loaded, resize_position_embedding(stored, 1, (12, 12)), atol=1e-7)
    np.testing.assert_array_equal(loaded[:, 0], stored[:, 0])  # the class token's row is kept
    assert np.all(np.isfinite(predict(model, random_images((1, 48, 48, 3)))))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=32, num_heads=4, mlp_dim=128),
         r"'embedding/kernel': the model's shape \(4, 4, 3, 32\), the file holds \(4, 4, 3, 64\) \(and 34 more problems\)\. "
         r"The file holds another architecture: hidden_size 64 vs 32 \(the file's vs the model's\)\.$"),
        (dict(channels=1), r"'embedding/kernel': the model's shape \(4, 4, 1, 64\), the file holds \(4, 4, 3, 64\)\.$"),
        (dict(num_layers=3), r"missing 'Transformer/encoderblock_2/LayerNorm_0/scale' \(the model's shape \(64,\)\) "
                             r"\(and 15 more problems\)\. The file holds another architecture: num_layers 2 vs 3"),
        (dict(num_layers=1), r"unexpected 'Transformer/encoderblock_1/\S+' \(shape \(\d+,.*\) that the model has no place for "
                             r"\(and 15 more problems\)"),
        (dict(mlp_dim=96), r"'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel': the model's shape \(64, 96\), the file holds \(64, 128\)"),
        (dict(representation_size=64), r"missing 'pre_logits/kernel'"),
    ],
)
def test_checkpoint_that_does_not_fit_names_the_key(overrides, message, fixtures_dir, fixture_specs):
    with pytest.raises(ValueError, match=message):
        fixture_model(fixtures_dir, "vit_tiny_token", **overrides)


def test_missing_key_and_corrupt_file(fixtures_dir, fixture_specs, tmp_path):
    params = dict(np.load(fixtures_dir / "vit_tiny_token.npz"))
    del params["Transformer/encoder_norm/scale"]
    np.savez(tmp_path / "partial.npz", **params)
    with pytest.raises(ValueError, match=r"missing 'Transformer/encoder_norm/scale' \(the model's shape \(64,\)\)"):
        fixture_model(fixtures_dir, "vit_tiny_token", weights=str(tmp_path / "partial.npz"))

    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match="Could not read checkpoint"):
        fixture_model(fixtures_dir, "vit_tiny_token", weights=str(tmp_path / "corrupt.npz"))

    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        fixture_model(fixtures_dir, "vit_tiny_token", weights=str(tmp_path / "nowhere.npz"))


def test_failed_load_leaves_the_model_untouched(fixtures_dir, fixture_specs, tmp_path):
    model = fixture_model(fixtures_dir, "vit_tiny_token", weights=None)
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    params = dict(np.load(fixtures_dir / "vit_tiny_token.npz"))
    params["Transformer/encoder_norm/bias"] = np.zeros(65, "float32")
    np.savez(tmp_path / "bad.npz", **params)
    with pytest.raises(ValueError, match="encoder_norm/bias"):
        keras_vit.load_npz(model, tmp_path / "bad.npz")
    for old, v in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(v))


def test_groupnorm_accepts_squeezed_scales(fixtures_dir, fixture_specs, tmp_path):
    params = {k: (v.reshape(-1) if "/gn" in k else v) for k, v in np.load(fixtures_dir / "hybrid_tiny.npz").items()}
    np.savez(tmp_path / "squeezed.npz", **params)
    model = fixture_model(fixtures_dir, "hybrid_tiny", weights=str(tmp_path / "squeezed.npz"))
    np.testing.assert_allclose(
        predict(model, np.load(fixtures_dir / "hybrid_tiny_inputs.npy")),
        np.load(fixtures_dir / "hybrid_tiny_logits.npy"),
        atol=1e-4,
    )


@pytest.mark.parametrize("name", ["vit_tiny_token", "hybrid_tiny"])
def test_architecture_is_read_from_the_checkpoint(name, fixtures_dir, fixture_specs):
    config = fixture_specs[name]["config"]
    architecture = keras_vit.weights.npz_architecture(fixtures_dir / f"{name}.npz")
    expected = dict(
        image_size=tuple(config["image_size"]) if isinstance(config["image_size"], list) else (config["image_size"],) * 2,
        patch_size=tuple(config["patches"]) if isinstance(config["patches"], list) else (config["patches"],) * 2,
        hidden_size=config["hidden_size"],
        mlp_dim=config["mlp_dim"],
        num_heads=config["num_heads"],
        num_layers=config["num_layers"],
        classes=config["num_classes"],
        classifier=config["classifier"],
        representation_size=config["representation_size"],
        position_embedding="learned_1d",  # the reference's only kind, added once at the input
        position_embedding_placement="input",
    )
    if config["resnet"] is not None:
        expected.update(resnet_layers=tuple(config["resnet"]["num_layers"]), resnet_width=config["resnet"]["width_factor"])
    assert architecture == expected


def test_auto_jit_compile_is_xla_on_cpu_and_keeps_the_reference_logits(fixtures_dir, fixture_specs):
    """Keras leaves XLA off on CPU-only machines; a float32 VisionTransformer turns it on, outputs unchanged."""
    model = fixture_model(fixtures_dir, "vit_tiny_token")
    images = np.load(fixtures_dir / "vit_tiny_token_inputs.npy")
    reference = np.load(fixtures_dir / "vit_tiny_token_logits.npy")
    atol = fixture_specs["vit_tiny_token"]["tolerance"]["logits_atol"]
    assert model.jit_compile is True  # uncompiled: predict's default
    model.compile()
    assert model.jit_compile is True
    np.testing.assert_allclose(model.predict_on_batch(images), reference, atol=atol, rtol=0)
    model.compile(jit_compile=False)
    assert model.jit_compile is False
    np.testing.assert_allclose(model.predict_on_batch(images), reference, atol=atol, rtol=0)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():  # Keras' own exception stays
        distributed = fixture_model(fixtures_dir, "vit_tiny_token")
    assert distributed.jit_compile is False
    assert fixture_model(fixtures_dir, "vit_tiny_token", dtype="mixed_bfloat16").jit_compile is False  # oneDNN's bf16
