"""Loading .keras and .weights.h5 files is all or nothing: every mismatch, NaN or damaged file is refused first."""

import numpy as np
import pytest
import keras

import keras_vit
from harness import randomize
from support import TINY_MODEL, run_module

TINY = dict(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, classes=3)
FORMATS = ["model.keras", "model.weights.h5"]


def save(model, path):
    model.save(path) if path.suffix == ".keras" else model.save_weights(path)


def values(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.weights]


def assert_unchanged(model, before):
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value, err_msg=variable.path)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("other, message", [
    (dict(num_layers=3), r"unexpected 'layers/transformer_block_2/\S+' \(shape .*\) that the model has no place for \(and 15 more"),
    (dict(num_layers=1), r"missing 'layers/transformer_block_1/attention_norm/0' \(the model's shape \(32,\)\) \(and 15 more"),
    (dict(hidden_size=48), r"'layers/patch_embedding/projection/0': the model's shape \(4, 4, 3, 32\), the file holds \(4, 4, 3, 48\)"),
    (dict(classifier="gap"), r"missing 'layers/class_token/0'"),
    (dict(mlp_dim=48), r"the model's shape \(32, 64\), the file holds \(32, 48\) \(and 5 more problems\)"),
])
@pytest.mark.parametrize("load", ["keras_vit.load_weights", "model.load_weights"])
def test_a_file_of_another_architecture_changes_nothing_and_names_the_weight(fmt, other, message, load, tmp_path):
    source = keras_vit.ViT(**dict(TINY, **other))
    randomize(source, 1)
    save(source, tmp_path / fmt)
    target = keras_vit.ViT(**TINY)
    randomize(target, 2)
    before = values(target)
    with pytest.raises(ValueError, match=message) as raised:
        keras_vit.load_weights(target, tmp_path / fmt) if load == "keras_vit.load_weights" else target.load_weights(tmp_path / fmt)
    assert str(tmp_path / fmt) in str(raised.value) and "array(" not in str(raised.value) and "[[" not in str(raised.value)
    if fmt.endswith(".keras"):  # its config tells the architecture it holds
        key, value = next(iter(other.items()))
        mine = target.get_config()[key]
        assert f"The file holds another architecture: {key} {value} vs {mine}" in str(raised.value)
    assert_unchanged(target, before)


@pytest.mark.parametrize("fmt", FORMATS + ["model.npz"])
def test_nan_or_inf_weights_are_refused_with_the_weight_named(fmt, tmp_path):
    source = keras_vit.ViT(**TINY)
    randomize(source, 1)
    kernel = source.encoder_blocks[1].mlp_dense_1.kernel
    kernel.assign(np.where(np.arange(kernel.shape[1]) == 3, np.nan, keras.ops.convert_to_numpy(kernel)).astype("float32"))
    keras_vit.save_npz(source, tmp_path / fmt) if fmt.endswith(".npz") else save(source, tmp_path / fmt)
    target = keras_vit.ViT(**TINY)
    before = values(target)
    named = "encoderblock_1/MlpBlock_3/Dense_0/kernel'" if fmt.endswith(".npz") else "layers/transformer_block_1/mlp_dense_1/0'"
    with pytest.raises(ValueError, match=rf"{named} holds NaN or Inf values"):
        keras_vit.load_weights(target, tmp_path / fmt)
    assert_unchanged(target, before)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0, 100, 3000])
def test_truncated_files_name_the_path(fmt, keep, tmp_path):
    source = keras_vit.ViT(**TINY)
    save(source, tmp_path / fmt)
    data = (tmp_path / fmt).read_bytes()
    (tmp_path / fmt).write_bytes(data[:keep])
    target = keras_vit.ViT(**TINY)
    before = values(target)
    with pytest.raises(ValueError, match=rf"{tmp_path / fmt} is not a readable"):
        keras_vit.load_weights(target, tmp_path / fmt)
    assert_unchanged(target, before)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_resnet_loads_only_a_file_that_fits_it(fmt, tmp_path):
    small = dict(image_size=16, resnet_layers=(1, 1), resnet_width=1, classes=3)
    source = keras_vit.ResNet(**dict(small, resnet_layers=(1, 2)))
    randomize(source, 1)
    save(source, tmp_path / fmt)
    target = keras_vit.ResNet(**small)
    randomize(target, 2)
    before = values(target)
    with pytest.raises(ValueError, match=rf"{tmp_path / fmt} does not fit model .* no place for"):
        target.load_weights(tmp_path / fmt)
    assert_unchanged(target, before)
    same = keras_vit.ResNet(**dict(small, resnet_layers=(1, 2)))
    same.load_weights(tmp_path / fmt)
    for a, b in zip(values(same), values(source)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.process
def test_training_from_a_deeper_file_is_one_clear_line(tmp_path):
    deeper = keras_vit.ViT(**dict(TINY, num_layers=3, classes=10))
    deeper.save(tmp_path / "deep.keras")
    result = run_module("keras_vit.training.train", *TINY_MODEL, "--epochs", "1", "--init_from", str(tmp_path / "deep.keras"),
                        "--output_dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "deep.keras does not fit model" in errors[0] and "no place for" in errors[0]
    assert "Traceback" not in result.stderr
