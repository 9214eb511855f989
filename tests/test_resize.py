"""Resize on load: against an independent aligned-corners interpolation, and through .keras / .weights.h5 files."""

import numpy as np
import pytest
import keras

import keras_vit
from keras_vit.resize import infer_grid, resize_grid, resize_position_embedding
from harness import predict, random_images, randomize


def align_corners_linear(grid: np.ndarray, new_shape: tuple[int, int]) -> np.ndarray:
    """Independent reference: output i samples input i * (n_old - 1) / (n_new - 1), separably, in float64."""
    out = np.asarray(grid, np.float64)
    for axis, new in enumerate(new_shape):
        old = out.shape[axis]
        pos = np.arange(new) * (old - 1) / (new - 1) if new > 1 else np.zeros(1)
        lo = np.clip(np.floor(pos).astype(int), 0, old - 1)
        hi = np.clip(lo + 1, 0, old - 1)
        frac = (pos - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out


@pytest.mark.parametrize("old, new", [((4, 4), (6, 6)), ((7, 7), (3, 3)), ((4, 6), (6, 9)), ((5, 3), (10, 2))])
def test_reference_resize_is_aligned_corners_bilinear(old, new):
    grid = np.random.default_rng(0).normal(size=(*old, 8)).astype("float32")
    np.testing.assert_allclose(resize_grid(grid, new), align_corners_linear(grid, new), atol=1e-6)


def test_half_pixel_bilinear_differs_from_reference():
    grid = np.random.default_rng(1).normal(size=(4, 4, 8)).astype("float32")
    assert np.abs(resize_grid(grid, (6, 6), "bilinear") - resize_grid(grid, (6, 6))).max() > 1e-2


def test_position_embedding_keeps_class_token_row():
    posemb = np.random.default_rng(2).normal(size=(1, 1 + 16, 8)).astype("float32")
    out = resize_position_embedding(posemb, 1, (6, 6))
    assert out.shape == (1, 37, 8)
    np.testing.assert_array_equal(out[:, 0], posemb[:, 0])
    np.testing.assert_allclose(out[0, 1:].reshape(6, 6, 8), align_corners_linear(posemb[0, 1:].reshape(4, 4, 8), (6, 6)), atol=1e-6)


def test_infer_grid_reads_squares_and_the_models_own_grid_and_refuses_to_guess():
    assert infer_grid(16, (6, 6)) == (4, 4)
    assert infer_grid(16, (2, 8)) == (4, 4)  # the reference's files are square
    assert infer_grid(24, (4, 6)) == (4, 6)
    with pytest.raises(ValueError, match="Cannot tell the grid of 24 stored position embeddings"):
        infer_grid(24, (9, 6))


TINY = dict(patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, classes=3)


@pytest.mark.parametrize("fmt", ["model.keras", "model.weights.h5"])
@pytest.mark.parametrize("position_embedding", ["learned_1d", "learned_2d"])
def test_keras_files_load_at_another_image_size(fmt, position_embedding, tmp_path):
    small = keras_vit.ViT(**TINY, image_size=16, position_embedding=position_embedding)
    randomize(small)
    path = tmp_path / fmt
    small.save(path) if fmt.endswith(".keras") else small.save_weights(path)

    large = keras_vit.ViT(**TINY, image_size=(24, 32), position_embedding=position_embedding, weights=str(path))
    if position_embedding == "learned_1d":
        stored = keras.ops.convert_to_numpy(small.get_layer("posembed_input").pos_embedding)
        loaded = keras.ops.convert_to_numpy(large.get_layer("posembed_input").pos_embedding)
        np.testing.assert_allclose(loaded, resize_position_embedding(stored, 1, (6, 8), old_grid=(4, 4)), atol=1e-6)
    else:
        rows = keras.ops.convert_to_numpy(small.get_layer("posembed_input").row_embedding)
        loaded = keras.ops.convert_to_numpy(large.get_layer("posembed_input").row_embedding)
        np.testing.assert_allclose(loaded, align_corners_linear(rows[:, None], (6, 1))[:, 0], atol=1e-6)
    # Everything but the position embeddings is loaded as is.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(large.get_layer("encoderblock_1").mlp_dense_1.kernel),
        keras.ops.convert_to_numpy(small.get_layer("encoderblock_1").mlp_dense_1.kernel),
    )
    assert np.all(np.isfinite(predict(large, random_images((1, 24, 32, 3)))))


def test_keras_file_of_another_task_gets_a_new_head(tmp_path):
    source = keras_vit.ViT(**dict(TINY, classes=5), image_size=16)
    randomize(source)
    source.save(tmp_path / "five.keras")
    target = keras_vit.ViT(**TINY, image_size=16, weights=str(tmp_path / "five.keras"))
    for v in target.get_layer("head").weights:
        assert not np.any(keras.ops.convert_to_numpy(v))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(target.get_layer("embedding").projection.kernel),
        keras.ops.convert_to_numpy(source.get_layer("embedding").projection.kernel),
    )


@pytest.mark.parametrize("fmt", ["same.keras", "same.weights.h5"])
def test_keras_file_of_the_same_task_keeps_its_head(fmt, tmp_path):
    source = keras_vit.ViT(**TINY, image_size=16)
    randomize(source)
    save(source, tmp_path / fmt)
    target = keras_vit.ViT(**TINY, image_size=16, weights=str(tmp_path / fmt))
    x = random_images((2, 16, 16, 3))
    np.testing.assert_allclose(predict(target, x), predict(source, x), atol=1e-6)


def test_keras_file_of_another_width_is_refused(tmp_path):
    source = keras_vit.ViT(**dict(TINY, hidden_size=16), image_size=16)
    source.save(tmp_path / "narrow.keras")
    with pytest.raises(ValueError):
        keras_vit.ViT(**TINY, image_size=16, weights=str(tmp_path / "narrow.keras"))


def save(model, path):
    if path.suffix == ".npz":
        keras_vit.save_npz(model, path)
    elif path.name.endswith(".weights.h5"):
        model.save_weights(path)
    else:
        model.save(path)


FORMATS = ["model.keras", "model.weights.h5", "model.npz"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_non_square_grid_travels_with_its_weights_and_is_resized_not_reshaped(fmt, tmp_path):
    wide = keras_vit.ViT(**TINY, image_size=(16, 32))  # grid (4, 8)
    randomize(wide)
    save(wide, tmp_path / fmt)
    tall = keras_vit.ViT(**TINY, image_size=(32, 16), weights=str(tmp_path / fmt))  # grid (8, 4), also 32 patches
    stored = keras.ops.convert_to_numpy(wide.posembed_input.pos_embedding)
    loaded = keras.ops.convert_to_numpy(tall.posembed_input.pos_embedding)
    np.testing.assert_allclose(loaded, resize_position_embedding(stored, 1, (8, 4), old_grid=(4, 8)), atol=1e-6)
    assert not np.allclose(loaded, stored)  # a reshape would have kept the values in raster order


def test_a_reference_file_of_an_ambiguous_grid_is_refused(tmp_path):
    wide = keras_vit.ViT(**TINY, image_size=(16, 24))  # grid (4, 6): 24 patches
    params = {k: keras.ops.convert_to_numpy(v) for k, v in keras_vit.weights.checkpoint_variables(wide).items()}
    np.savez(tmp_path / "reference.npz", **params)  # the reference's layout: no grid saved
    with pytest.raises(ValueError, match="Cannot tell the grid of 24 stored position embeddings"):
        keras_vit.ViT(**TINY, image_size=(36, 24), weights=str(tmp_path / "reference.npz"))  # grid (9, 6)
    same = keras_vit.ViT(**TINY, image_size=(16, 24), weights=str(tmp_path / "reference.npz"))  # its own grid: as is
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(same.posembed_input.pos_embedding), params["Transformer/posembed_input/pos_embedding"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_relative_table_is_refused_on_another_grid_in_every_format(fmt, tmp_path):
    wide = keras_vit.ViT(**TINY, image_size=(16, 32), position_embedding="relative")  # grid (4, 8)
    randomize(wide)
    save(wide, tmp_path / fmt)
    for image_size in ((32, 16), (16, 16)):  # the same number of patches on another grid; another number
        with pytest.raises(ValueError, match="Raster offsets do not carry over between grids"):
            keras_vit.ViT(**TINY, image_size=image_size, position_embedding="relative", weights=str(tmp_path / fmt))
    same = keras_vit.ViT(**TINY, image_size=(16, 32), position_embedding="relative", weights=str(tmp_path / fmt))
    x = random_images((2, 16, 32, 3))
    np.testing.assert_allclose(predict(same, x), predict(wide, x), atol=1e-5)
