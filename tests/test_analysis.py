"""The paper's analyses (section 4.5, appendix D.7) against their definitions, computed independently."""

import keras
import numpy as np
import pytest
from PIL import Image

import keras_vit
from keras_vit import analysis
from keras_vit.analysis.__main__ import main as analysis_main
from harness import random_images, randomize
from support import run_module

TINY = dict(patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=3, classes=5)


def brute_force_distances(grid, stride, level="pixel"):
    """[G, G] distances by enumerating every pixel of every patch (the definition, no closed form)."""
    (gh, gw), (sh, sw) = grid, stride
    if level == "patch":
        centres = [((r + 0.5) * sh, (c + 0.5) * sw) for r in range(gh) for c in range(gw)]
        return np.array([[np.hypot(a[0] - b[0], a[1] - b[1]) for b in centres] for a in centres])
    pixels = [
        np.array([(r * sh + y, c * sw + x) for y in range(sh) for x in range(sw)], float)
        for r in range(gh)
        for c in range(gw)
    ]
    return np.array([[np.linalg.norm(p[:, None] - q[None], axis=-1).mean() for q in pixels] for p in pixels])


def make_identity_attention(model, strength=60.0):
    """Sets every block so that each token attends only to itself: constant queries, zero keys, and a relative
    table that gives the offset-0 relation (and class token -> class token) a large logit."""
    grid = model.grid_size
    patches = grid[0] * grid[1]
    for block in model.encoder_blocks:
        attention = block.attention
        direction = np.ones(attention.query.kernel.shape[1:], np.float32)
        attention.query.kernel.assign(np.zeros(attention.query.kernel.shape, np.float32))
        attention.query.bias.assign(direction)
        attention.key.kernel.assign(np.zeros(attention.key.kernel.shape, np.float32))
        attention.key.bias.assign(np.zeros(attention.key.bias.shape, np.float32))
        table = np.zeros(attention.relative_embedding.shape, np.float32)
        scale = strength * np.sqrt(direction.shape[-1]) / direction.size * direction.shape[0]
        table[patches - 1] = scale  # offset 0 between patches
        if model.num_prefix_tokens:
            table[2 * patches + 1] = scale  # class token -> class token
        attention.relative_embedding.assign(table)


# --- Attention rollout -------------------------------------------------------------------------------

def test_rollout_rows_sum_to_one_and_the_selection_is_the_class_row():
    model = keras_vit.ViT(image_size=(16, 24), **TINY)
    randomize(model)
    images = random_images((3, 16, 24, 3))
    maps = model.attention_maps(images)
    joint = analysis.rollout_matrix(maps)
    assert joint.shape == (3, 25, 25)
    np.testing.assert_allclose(joint.sum(-1), 1.0, atol=1e-9)
    # Independently: heads averaged, 0.5 A + 0.5 I, renormalised, multiplied last block on the left.
    expected = np.eye(25)[None]
    for m in maps:
        a = 0.5 * m.astype(np.float64).mean(1) + 0.5 * np.eye(25)
        expected = np.einsum("bij,bjk->bik", a / a.sum(-1, keepdims=True), expected)
    np.testing.assert_allclose(joint, expected, atol=1e-12)
    rollout = analysis.attention_rollout(model, images, batch_size=2)  # batched the same as whole
    assert rollout.shape == (3, 4, 6)
    np.testing.assert_allclose(rollout, joint[:, 0, 1:].reshape(3, 4, 6), atol=1e-6)


def test_gap_rollout_is_the_mean_of_the_patch_rows():
    model = keras_vit.ViT(image_size=(8, 12), classifier="gap", **TINY)
    randomize(model)
    images = random_images((2, 8, 12, 3))
    joint = analysis.rollout_matrix(model.attention_maps(images))
    assert joint.shape == (2, 6, 6)
    np.testing.assert_allclose(analysis.attention_rollout(model, images), joint.mean(1).reshape(2, 2, 3), atol=1e-6)


def test_identity_attention_model_concentrates_each_rollout_row_on_its_query():
    model = keras_vit.ViT(image_size=(12, 16), position_embedding="relative", **TINY)
    randomize(model)
    make_identity_attention(model)
    images = random_images((2, 12, 16, 3))
    maps = model.attention_maps(images)
    np.testing.assert_allclose(maps[0].mean(1), np.broadcast_to(np.eye(13), (2, 13, 13)), atol=1e-6)
    joint = analysis.rollout_matrix(maps)
    np.testing.assert_allclose(joint, np.broadcast_to(np.eye(13), joint.shape), atol=1e-5)


def test_rollout_of_a_class_token_looking_at_one_patch_peaks_there():
    grid, patch = (3, 4), 7  # patch 7 is row 1, column 3
    n = 1 + 12
    a = np.full((1, 2, n, n), 1.0 / n)
    a[:, :, 0] = 0.0
    a[:, :, 0, 1 + patch] = 1.0
    rollout = analysis.select_rollout(analysis.rollout_matrix([a, a]), grid, 1)
    assert rollout.shape == (1, 3, 4)
    assert np.unravel_index(rollout[0].argmax(), grid) == (1, 3)


# --- Mean attention distance ---------------------------------------------------------------------------

@pytest.mark.parametrize("grid,stride", [((2, 3), (2, 3)), ((3, 3), (4, 4)), ((1, 4), (3, 1))])
@pytest.mark.parametrize("level", ["pixel", "patch"])
def test_patch_distances_equal_the_pixel_enumeration(grid, stride, level):
    np.testing.assert_allclose(
        analysis.patch_distances(grid, stride, level), brute_force_distances(grid, stride, level), atol=1e-12
    )


def test_uniform_attention_distance_is_the_closed_form_and_ignores_the_class_token():
    grid, stride = (3, 2), (4, 4)
    n = 1 + 6
    a = np.random.default_rng(0).random((2, 3, n, n))
    a[:, :, :, 1:] = 1.0  # uniform over patch keys; the class token's column and row must not count
    a /= a.sum(-1, keepdims=True)
    d = analysis.attention_distance([a], analysis.patch_distances(grid, stride)) / (2 * 6)
    expected = brute_force_distances(grid, stride).mean()
    np.testing.assert_allclose(d, np.full((1, 3), expected), atol=1e-12)


def test_identity_attention_distance_is_the_mean_intra_patch_pixel_distance():
    model = keras_vit.ViT(image_size=(8, 12), position_embedding="relative", **TINY)
    randomize(model)
    make_identity_attention(model)
    distance = analysis.mean_attention_distance(model, random_images((3, 8, 12, 3)))
    within = brute_force_distances((1, 1), (4, 4))[0, 0]
    assert distance.shape == (3, 4)
    np.testing.assert_allclose(distance, within, atol=1e-4)
    np.testing.assert_allclose(analysis.mean_attention_distance(model, random_images((1, 8, 12, 3)), level="patch"), 0, atol=1e-4)


def test_a_hybrid_reports_input_pixels():
    model = keras_vit.ViT(image_size=(32, 16), resnet_layers=(1,), position_embedding="relative", **dict(TINY, patch_size=2))
    assert model.patch_stride == (8, 8) and model.grid_size == (4, 2)
    randomize(model)
    make_identity_attention(model)
    distance = analysis.mean_attention_distance(model, random_images((2, 32, 16, 3)))
    np.testing.assert_allclose(distance, brute_force_distances((1, 1), (8, 8))[0, 0], atol=1e-4)


def test_distance_of_a_trained_like_model_over_batches_equals_whole():
    model = keras_vit.ViT(image_size=(16, 24), **TINY)
    randomize(model)
    images = random_images((5, 16, 24, 3))
    whole = analysis.mean_attention_distance(model, images, batch_size=5)
    batched = analysis.mean_attention_distance(model, [(images[:2], None), (images[2:], None)])
    np.testing.assert_allclose(whole, batched, rtol=1e-6)
    assert np.all(whole > 0) and np.all(whole < np.hypot(16, 24))


# --- Embeddings ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,classifier", [("learned_1d", "token"), ("learned_2d", "token"), ("learned_1d", "gap")])
def test_position_embedding_similarity(kind, classifier):
    model = keras_vit.ViT(image_size=(12, 20), position_embedding=kind, classifier=classifier, **TINY)
    randomize(model)
    similarity = analysis.position_embedding_similarity(model)
    assert similarity.shape == (3, 5, 3, 5)
    flat = similarity.reshape(15, 15)
    np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-12)
    np.testing.assert_allclose(flat, flat.T, atol=1e-12)
    layer = model.posembed_input
    table = keras.ops.convert_to_numpy(layer.embedding())[0, layer.num_prefix_tokens:]
    i, j = 4, 11  # (0, 4) and (2, 1): cosine of the composed embeddings
    cosine = table[i] @ table[j] / np.linalg.norm(table[i]) / np.linalg.norm(table[j])
    np.testing.assert_allclose(similarity[0, 4, 2, 1], cosine, atol=1e-6)


def test_position_embedding_similarity_needs_learned_embeddings():
    model = keras_vit.ViT(image_size=8, position_embedding="none", **TINY)
    with pytest.raises(ValueError, match="position_embedding='none': no learned absolute position embeddings"):
        analysis.position_embedding_similarity(model)


def test_embedding_filters_are_orthonormal_principal_components(fixtures_dir):
    model = keras_vit.ViT(weights=str(fixtures_dir / "vit_tiny_token.npz"),
                          **keras_vit.weights.npz_architecture(fixtures_dir / "vit_tiny_token.npz"))
    filters, ratios = analysis.embedding_filters(model, count=10, explained_variance=True)
    assert filters.shape == (10, 4, 4, 3)
    flat = filters.reshape(10, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(10), atol=1e-10)
    assert np.all(np.diff(ratios) <= 0) and 0 < ratios.sum() <= 1
    # The first component is the direction of largest variance of the centred filters.
    kernel = keras.ops.convert_to_numpy(model.embedding.projection.kernel).reshape(-1, 64).T.astype(np.float64)
    centred = kernel - kernel.mean(0)
    variance = np.linalg.eigvalsh(centred.T @ centred)[::-1]
    np.testing.assert_allclose(ratios, variance[:10] / variance.sum(), rtol=1e-8)
    with pytest.raises(ValueError, match="count must be in 1..48"):
        analysis.embedding_filters(model, count=49)


# --- Command line --------------------------------------------------------------------------------------

def assert_png(path, min_size=(300, 200)):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        image.verify()


def test_each_command_writes_a_png(fixtures_dir, tmp_path):
    checkpoint = str(fixtures_dir / "vit_tiny_token.npz")
    digit = tmp_path / "digit.png"
    Image.fromarray((random_images((1, 20, 28, 3))[0] * 127 + 128).astype(np.uint8)).save(digit)
    for command, extra in [
        ("attention", ["--image", str(digit)]),
        ("distance", ["--dataset", "digits", "--examples", "16"]),
        ("posemb", []),
        ("filters", ["--components", "12"]),
    ]:
        out = tmp_path / f"{command}.png"
        assert analysis_main([command, "--model", checkpoint, "--out", str(out), *extra]) == 0
        assert_png(out)


@pytest.mark.process
def test_report_in_a_process_on_the_hybrid_reference(fixtures_dir, tmp_path):
    out = tmp_path / "report"
    result = run_module(
        "keras_vit.analysis", "report", "--model", str(fixtures_dir / "hybrid_tiny.npz"), "--dataset", "digits",
        "--examples", "8", "--out", str(out),
    )
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text()
    for name in ("attention", "distance", "posemb"):
        assert f'src="{name}.png"' in page
        assert_png(out / f"{name}.png")
    assert "act on 512 channels" in page and not (out / "filters.png").exists()


def test_command_errors_are_one_line(fixtures_dir, tmp_path, capsys):
    checkpoint = str(fixtures_dir / "vit_tiny_token.npz")
    assert analysis_main(["attention", "--model", checkpoint, "--out", str(tmp_path / "a.png")]) == 2
    assert "Give images to draw the rollout of" in capsys.readouterr().err
    assert analysis_main(["posemb", "--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "p.png")]) == 2
    assert f"--model {tmp_path / 'missing.keras'}: no such file" in capsys.readouterr().err
    assert analysis_main(["attention", "--model", checkpoint, "--image", str(tmp_path / "x.jpg"), "--out", "a.png"]) == 2
    assert f"--image {tmp_path / 'x.jpg'}: no such file" in capsys.readouterr().err


def test_a_resnet_is_refused_in_one_line(tmp_path, capsys):
    path = str(tmp_path / "resnet.keras")
    keras_vit.ResNet(image_size=16, resnet_layers=(1,), classes=3).save(path)
    assert analysis_main(["posemb", "--model", path, "--out", str(tmp_path / "p.png")]) == 2
    assert "holds a ResNet; the analyses read a VisionTransformer's attention" in capsys.readouterr().err
