"""`keras_vit.analysis.flops` against counts written out by hand, layer by layer."""

import pytest

import keras_vit
from keras_vit import analysis
from support import fixture_model


def block(tokens: int, hidden: int, mlp: int) -> int:
    """Multiply-adds of one encoder block: q, k, v, out; the two attention products; the MLP."""
    return 4 * tokens * hidden * hidden + 2 * tokens * tokens * hidden + 2 * tokens * hidden * mlp


def test_the_tiny_fixture_is_counted_by_hand(fixtures_dir):
    model = fixture_model(fixtures_dir, "vit_tiny_token", weights=None)  # 32x32, patch 4, hidden 64, MLP 128, 2 blocks
    embedding = 8 * 8 * (4 * 4 * 3) * 64
    blocks = 2 * (4 * 65 * 64 * 64 + 2 * 65 * 65 * 64 + 2 * 65 * 64 * 128)
    head = 64 * 10
    assert analysis.flops(model) == 2 * (embedding + blocks + head) == 11_077_376


@pytest.mark.parametrize("size", [224, 384])
def test_vit_b16_is_counted_by_hand_at_any_size(size):
    model = keras_vit.ViT_B16(dynamic_image_size=True)
    grid = size // 16
    tokens = 1 + grid * grid
    expected = 2 * (grid * grid * 16 * 16 * 3 * 768 + 12 * block(tokens, 768, 3072) + 768 * 1000)
    assert analysis.flops(model, size) == expected
    if size == 224:
        assert round(expected / 1e9, 2) == 35.13  # timm and the literature: 17.6 GMACs
    assert analysis.training_flops(model, 10, size) == 3 * 10 * expected


def test_the_hybrid_fixture_is_counted_by_hand(fixtures_dir):
    model = fixture_model(fixtures_dir, "hybrid_tiny", weights=None)  # 64x64, ResNet (1, 2), width 1, patch 1
    root = 32 * 32 * (7 * 7 * 3) * 64  # 7x7 stride 2; then a stride-2 max pool: 16x16
    stage1 = 16 * 16 * (64 * 64 + 9 * 64 * 64 + 64 * 256 + 64 * 256)  # conv1, conv2, conv3, conv_proj
    stage2_unit1 = 16 * 16 * 256 * 128 + 8 * 8 * (9 * 128 * 128 + 128 * 512 + 256 * 512)  # conv2 and conv_proj stride 2
    stage2_unit2 = 8 * 8 * (512 * 128 + 9 * 128 * 128 + 128 * 512)
    embedding = 8 * 8 * 512 * 64
    blocks = 2 * block(65, 64, 128)
    head = 64 * 5
    expected = 2 * (root + stage1 + stage2_unit1 + stage2_unit2 + embedding + blocks + head)
    assert analysis.flops(model) == expected == 168_363_136


def test_a_size_the_patches_do_not_tile_is_refused():
    with pytest.raises(ValueError, match=r"An image of 230 gives a 230x230 map, which 16x16 patches do not tile"):
        analysis.flops(keras_vit.ViT_S16(), 230)
