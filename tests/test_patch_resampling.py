"""FlexiViT's patch-embedding resampling: exact against big_vision's formula and timm's, and a checkpoint at any patch size."""

import numpy as np
import pytest
import tensorflow as tf
import torch

import keras_vit
from keras_vit.patch_resampling import resample_patch_embedding, resize_matrix
from harness import randomize

SIZES = [(8, 16), (16, 8), (16, 14), (16, 32), (5, 7), (7, 3)]


def basis_resize_matrix(old: tuple[int, int], new: tuple[int, int], resize) -> np.ndarray:
    """big_vision's `get_resize_mat`: each basis patch of `old` resized to `new`, as the columns of a matrix."""
    columns = []
    for i in range(old[0] * old[1]):
        basis = np.zeros(old, np.float32)
        basis[np.unravel_index(i, old)] = 1.0
        columns.append(resize(basis, new).reshape(-1))
    return np.stack(columns).T


def tf_bilinear(patch, new):
    return tf.image.resize(tf.constant(patch)[None, ..., None], new, method="bilinear")[0, ..., 0].numpy()


def torch_bicubic_antialiased(patch, new):
    return torch.nn.functional.interpolate(torch.from_numpy(patch)[None, None], size=new, mode="bicubic",
                                           antialias=True)[0, 0].numpy()


@pytest.mark.parametrize("old, new", SIZES)
def test_the_resize_matrices_are_tf_bilinear_and_torch_bicubic_antialiased(old, new):
    # TensorFlow and torch compute the sample positions in float32: at 16 -> 14 their weights differ from exact ones
    # by up to 1.3e-6.
    ours = np.kron(resize_matrix(old, new, "bilinear"), resize_matrix(old, new, "bilinear"))
    np.testing.assert_allclose(ours, basis_resize_matrix((old, old), (new, new), tf_bilinear), atol=3e-6)
    ours = np.kron(resize_matrix(old, new, "bicubic"), resize_matrix(old, new, "bicubic"))
    np.testing.assert_allclose(ours, basis_resize_matrix((old, old), (new, new), torch_bicubic_antialiased), atol=3e-6)


@pytest.mark.parametrize("old, new", SIZES)
def test_resampling_is_big_vision_resample_patchemb(old, new):
    """big_vision's formula, written out as it is there: pinv(B^T) @ kernel, B from tf.image.resize's basis patches."""
    kernel = np.random.default_rng(0).normal(size=(old, old, 3, 4)).astype(np.float32)
    pinv = np.linalg.pinv(basis_resize_matrix((old, old), (new, new), tf_bilinear).T)
    expected = np.einsum("nk,kcd->ncd", pinv, kernel.reshape(old * old, 3, 4)).reshape(new, new, 3, 4)
    resampled = resample_patch_embedding(kernel, (new, new))
    assert resampled.dtype == np.float32
    np.testing.assert_allclose(resampled, expected, atol=3e-5)  # the pseudo-inverse of a downsampling amplifies
    # TensorFlow's float32 sample positions (above): at 16 -> 14 to 1e-5 on values of order 1


def test_a_non_square_patch_resamples_each_axis():
    kernel = np.random.default_rng(1).normal(size=(4, 6, 3, 2))
    pinv = np.linalg.pinv(basis_resize_matrix((4, 6), (8, 9), tf_bilinear).T)
    expected = (pinv @ kernel.reshape(24, 6)).reshape(8, 9, 3, 2)
    np.testing.assert_allclose(resample_patch_embedding(kernel, (8, 9)), expected, atol=1e-6)


@pytest.mark.parametrize("new", [16, 13])
def test_a_checkpoint_loaded_at_a_larger_patch_gives_the_same_tokens_on_the_upsampled_patch(new, tmp_path):
    """FlexiViT's promise: a /8 kernel at /new on a patch resized from 8 to new computes the stored kernel's token."""
    small = keras_vit.ViT(image_size=8, patch_size=8, hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1, classes=3)
    randomize(small, 0)
    keras_vit.save_npz(small, tmp_path / "p8.npz")
    large = keras_vit.ViT(weights=tmp_path / "p8.npz", patch_size=new, image_size=new)
    assert tuple(large.embedding.projection.kernel.shape[:2]) == (new, new)
    patch = np.random.default_rng(2).random((2, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(large.embed_patches(tf.image.resize(patch, (new, new)).numpy())),
                               np.asarray(small.embed_patches(patch)), atol=1e-5)


@pytest.mark.parametrize("patch_size", [4, 14, 32])
def test_a_file_of_one_patch_size_loads_at_another_with_its_position_embeddings_resized(patch_size, tmp_path):
    """A /16 file at /4, /14 and /32: the kernel resampled, the grid's table resized with it, the rest as stored."""
    source = keras_vit.ViT(image_size=224, patch_size=16, hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1,
                           classes=3)
    randomize(source, 3)
    keras_vit.save_npz(source, tmp_path / "p16.npz")
    for method in ("bilinear", "bicubic"):
        model = keras_vit.ViT(weights=tmp_path / "p16.npz", patch_size=patch_size, patch_embedding_resize=method)
        grid = 224 // patch_size
        assert model.grid_size == (grid, grid)
        assert tuple(model.posembed_input.pos_embedding.shape) == (1, 1 + grid * grid, 16)
        stored = np.asarray(source.embedding.projection.kernel)
        np.testing.assert_allclose(np.asarray(model.embedding.projection.kernel),
                                   resample_patch_embedding(stored, (patch_size, patch_size), method), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(model.head.kernel), np.asarray(source.head.kernel))
        assert np.isfinite(np.asarray(model(np.zeros((1, 224, 224, 3), np.float32)))).all()


def test_an_unknown_resampling_is_refused():
    with pytest.raises(ValueError, match="Unknown patch_embedding_resize 'nearest'; expected one of"):
        keras_vit.ViT(image_size=32, patch_size=8, hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1,
                      patch_embedding_resize="nearest")


@pytest.mark.parametrize("fmt", ["model.keras", "model.weights.h5"])
def test_keras_files_load_at_another_patch_size_too(fmt, tmp_path):
    source = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1, classes=3)
    randomize(source, 4)
    source.save(tmp_path / fmt) if fmt.endswith(".keras") else source.save_weights(tmp_path / fmt)
    model = keras_vit.ViT(image_size=32, patch_size=4, hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1, classes=3,
                          weights=tmp_path / fmt)
    np.testing.assert_allclose(np.asarray(model.embedding.projection.kernel),
                               resample_patch_embedding(np.asarray(source.embedding.projection.kernel), (4, 4)), atol=1e-6)
    assert model.grid_size == (8, 8)
