"""Known weight names: URLs, the download through keras.utils.get_file (file:// URLs), and errors."""

import pathlib

import numpy as np
import pytest
import keras

import keras_vit
from keras_vit.weights import releases as known
from harness import predict, random_images, randomize


def test_known_names_map_to_the_public_files():
    assert known.weights_url("ViT_B16", "imagenet21k") == "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz"
    assert known.weights_url("R50_ViT_B16", "imagenet21k+imagenet2012").endswith("imagenet21k+imagenet2012/R50+ViT-B_16.npz")
    assert known.weights_url("ViT_Ti16", "augreg-i21k+imagenet2012").endswith(
        "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz"
    )
    assert known.weights_url("ViT_B16", "imagenet21k+imagenet2012-224").endswith("imagenet21k+imagenet2012/ViT-B_16-224.npz")
    assert known.weights_url("ViT_L16", "imagenet21k+imagenet2012-224").endswith("imagenet21k+imagenet2012/ViT-L_16-224.npz")
    assert known.weights_url("ViT_B8", "imagenet21k+imagenet2012").endswith("imagenet21k+imagenet2012/ViT-B_8.npz")
    for name, file in (("ViT_B8", "ViT-B_8"), ("R26_ViT_B32", "R26+ViT-B_32"), ("R50_ViT_L32", "R50+ViT-L_32")):
        assert known.weights_url(name, "imagenet21k").endswith(f"imagenet21k/{file}.npz")
    for name in keras_vit.VARIANTS:
        assert known.known_weights(name), name
    assert [known.default_image_size("ViT_B16", w) for w in ("imagenet21k", "imagenet21k+imagenet2012", "imagenet21k+imagenet2012-224", "augreg-i21k+imagenet2012", None)] == [224, 384, 224, 384, 224]


def test_constructors_default_to_the_reference_configs_dropout():
    assert {n for n, v in keras_vit.VARIANTS.items() if v.dropout_rate} == {"ViT_L16", "ViT_H14", "R50_ViT_B16", "R50_ViT_L32"}
    assert keras_vit.R50_ViT_B16(image_size=32).dropout_rate == 0.1
    assert keras_vit.ViT_B16(image_size=32).dropout_rate == 0.0
    assert keras_vit.R50_ViT_B16(image_size=32, dropout_rate=0.0).dropout_rate == 0.0


def test_unknown_weight_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Known names for ViT_B16: augreg-i21k, .*imagenet21k\+imagenet2012"):
        keras_vit.ViT_B16(image_size=32, weights="jft300m")


def test_known_name_downloads_from_base_url_and_is_cached(tmp_path, monkeypatch):
    # A tiny "release": a Ti/16-shaped checkpoint would be 23 MB; the download path is the same for any
    # variant, so publish a real Ti/16 checkpoint at 32x32 (its position table differs only in length).
    source = keras_vit.ViT_Ti16(image_size=32, classes=1000)
    randomize(source)
    bucket = tmp_path / "bucket" / "augreg"
    bucket.mkdir(parents=True)
    filename = pathlib.Path(known.known_weights("ViT_Ti16")["augreg-i21k+imagenet2012"]).name
    keras_vit.save_npz(source, bucket / filename)
    monkeypatch.setenv(known.BASE_URL_ENV, (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    with pytest.warns(UserWarning, match="fine-tuned at 384x384; at 32x32 its position embeddings are interpolated"):
        model = keras_vit.ViT_Ti16(image_size=32, weights="augreg-i21k+imagenet2012")
    images = random_images((1, 32, 32, 3))
    np.testing.assert_allclose(predict(model, images), predict(source, images), atol=1e-5)
    cached = list((tmp_path / "keras_home").rglob("*.npz"))
    assert len(cached) == 1

    (bucket / filename).unlink()  # the second build is served from the cache, at the release's own resolution
    again = keras_vit.ViT_Ti16(weights="augreg-i21k+imagenet2012", classes=10)
    assert again.image_size == (384, 384) and again.posembed_input.pos_embedding.shape == (1, 1 + 24 * 24, 192)


def test_unreachable_weights_raise_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(known.BASE_URL_ENV, (tmp_path / "empty-bucket").as_uri())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(OSError, match=r"Could not download weights 'imagenet21k' for ViT_B32 from file://"):
        keras_vit.ViT_B32(image_size=32, weights="imagenet21k")


def test_hash_mismatch_is_refused(tmp_path, monkeypatch):
    bucket = tmp_path / "bucket" / "imagenet21k"
    bucket.mkdir(parents=True)
    (bucket / "ViT-B_16.npz").write_bytes(b"not the released file")  # the hash is checked before the file is read
    monkeypatch.setenv(known.BASE_URL_ENV, (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setitem(known.FILE_HASHES, "imagenet21k--ViT-B_16.npz", "0" * 64)
    with pytest.raises(ValueError, match="hash"):
        keras_vit.ViT_B16(image_size=16, weights="imagenet21k")
    keras.backend.clear_session()
