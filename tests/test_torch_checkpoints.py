"""HF transformers and timm checkpoints, in and out: each library's own forward pass is the reference.

HF: random tiny transformers models, saved with `save_pretrained` (the real layout), run by transformers itself.
timm: timm needs a torchvision built for the installed torch, which the CPU torch here lacks; its reference is
`tests/timm_fixtures` (tiny random timm models and timm's logits, made by `make.py` where timm runs). Where timm
does import, the files keras_vit writes are also loaded in timm itself.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import keras

import keras_vit
from harness import randomize
from support import REPO, env

transformers = pytest.importorskip("transformers")

TIMM_FIXTURES = pathlib.Path(__file__).parent / "timm_fixtures"
TIMM_OUTPUTS = np.load(TIMM_FIXTURES / "outputs.npz")
IMAGES = TIMM_OUTPUTS["images"]  # [2, 32, 32, 3] in [0, 1)
HF_TINY = dict(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
               intermediate_size=48)
TINY = dict(image_size=32, patch_size=8, hidden_size=24, mlp_dim=48, num_heads=3, num_layers=2, classes=5)


def predict(model, images=IMAGES) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(images))


def torch_images(images=IMAGES) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def hf_model(cls_name: str, seed: int = 0, **config):
    """A random transformers model (weights N(0, 0.1), so that every layer counts), in eval mode."""
    torch.manual_seed(seed)
    config_cls = transformers.DeiTConfig if cls_name.startswith("DeiT") else transformers.ViTConfig
    model = getattr(transformers, cls_name)(config_cls(**HF_TINY, **config)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.1)
    return model


def hf_outputs(model, images=IMAGES) -> np.ndarray:
    with torch.no_grad():
        out = model(torch_images(images))
    return (out.logits if hasattr(out, "logits") else out.pooler_output).numpy()


@pytest.mark.parametrize("cls_name, config", [
    ("ViTForImageClassification", dict(num_labels=5)),  # exact GELU, LayerNorm epsilon 1e-12
    ("ViTForImageClassification", dict(num_labels=5, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)),
    ("ViTModel", {}),  # the pooler: keras_vit's tanh representation layer, no head
    ("DeiTForImageClassificationWithTeacher", dict(num_labels=5)),  # two tokens, two heads, averaged
])
def test_an_hf_checkpoint_loads_with_its_architecture_and_computes_what_transformers_computes(cls_name, config, tmp_path):
    source = hf_model(cls_name, **config)
    source.save_pretrained(tmp_path)
    model = keras_vit.ViT(weights=tmp_path, include_top=cls_name != "ViTModel")
    np.testing.assert_allclose(predict(model), hf_outputs(source), atol=1e-4)
    assert model.layer_norm_epsilon == source.config.layer_norm_eps
    assert model.approximate_gelu == (source.config.hidden_act == "gelu_pytorch_tanh")
    assert model.distillation_token == cls_name.startswith("DeiT")
    # The weights file alone, its config.json beside it; and the torch pickle of the same state dict.
    np.testing.assert_array_equal(predict(keras_vit.ViT(weights=tmp_path / "model.safetensors",
                                                        include_top=model.include_top)), predict(model))
    torch.save(source.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    np.testing.assert_array_equal(predict(keras_vit.ViT(weights=tmp_path, include_top=model.include_top)),
                                  predict(model))


def test_deit_gives_both_heads_for_training_and_their_mean_as_its_output(tmp_path):
    source = hf_model("DeiTForImageClassificationWithTeacher", num_labels=5)
    source.save_pretrained(tmp_path)
    model = keras_vit.ViT(weights=tmp_path)
    with torch.no_grad():
        out = source(torch_images())
    class_logits, distillation_logits = (keras.ops.convert_to_numpy(x) for x in model.distillation_logits(IMAGES))
    np.testing.assert_allclose(class_logits, out.cls_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(distillation_logits, out.distillation_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(predict(model), (class_logits + distillation_logits) / 2, atol=1e-6)
    model.save(tmp_path / "deit.keras")  # the token and both heads survive Keras' own format
    np.testing.assert_array_equal(predict(keras_vit.load_model(tmp_path / "deit.keras")), predict(model))
    with pytest.raises(ValueError, match="has no distillation token"):
        keras_vit.ViT(**TINY).distillation_logits(IMAGES)


@pytest.mark.parametrize("options", [{}, dict(distillation_token=True), dict(approximate_gelu=False),
                                     dict(include_top=False, representation_size=24)])
def test_save_checkpoint_hf_writes_a_folder_transformers_loads_with_equal_outputs(options, tmp_path):
    model = keras_vit.ViT(**TINY, **options)
    randomize(model, 1)
    keras_vit.save_checkpoint(model, tmp_path / "hf", format="hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    loaded = getattr(transformers, config["architectures"][0]).from_pretrained(tmp_path / "hf").eval()
    np.testing.assert_allclose(hf_outputs(loaded), predict(model), atol=1e-4)
    np.testing.assert_array_equal(predict(keras_vit.ViT(weights=tmp_path / "hf", **options)), predict(model))


@pytest.mark.parametrize("options, says", [
    (dict(classifier="gap"), "average pooling"),
    (dict(resnet_layers=(), image_size=64), "a ResNet stem"),
    (dict(position_embedding="learned_2d"), "only learned 1-D tables"),
    (dict(representation_size=24), "a representation layer under a head"),
])
def test_a_format_that_cannot_hold_a_model_says_what_and_writes_nothing(options, says, tmp_path):
    model = keras_vit.ViT(**dict(TINY, **options))
    with pytest.raises(ValueError, match=f"HF transformers' ViT classes cannot hold model 'vit': .*{says}"):
        keras_vit.save_checkpoint(model, tmp_path / "hf", format="hf")
    assert not (tmp_path / "hf").exists()
    if "representation_size" in options:
        with pytest.raises(ValueError, match="timm's VisionTransformer cannot hold .*representation"):
            keras_vit.save_checkpoint(model, tmp_path / "model.safetensors", format="timm")
        assert not (tmp_path / "model.safetensors").exists()


TIMM_MODELS = {  # fixture: (classifier, fc_norm, distillation_token, resnet_layers)
    "token": ("token", False, False, None), "gap_fc_norm": ("gap", True, False, None), "gap": ("gap", False, False, None),
    "no_embed_class": ("token", False, False, None), "deit_distilled": ("token", False, True, None),
    "hybrid_stem": ("token", False, False, ()), "hybrid_r1": ("token", False, False, (1,)),
}


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_a_timm_state_dict_computes_what_timm_computed(name):
    model = keras_vit.ViT(weights=TIMM_FIXTURES / f"{name}.safetensors", num_heads=3)
    np.testing.assert_allclose(predict(model), TIMM_OUTPUTS[name], atol=1e-4)
    assert (model.classifier, model.fc_norm, model.distillation_token, model.resnet_layers) == TIMM_MODELS[name]
    assert not model.approximate_gelu and model.layer_norm_epsilon == 1e-6


@pytest.mark.parametrize("name", ["token", "gap_fc_norm", "deit_distilled", "hybrid_stem", "hybrid_r1"])
def test_save_checkpoint_timm_writes_timms_own_state_dict(name, tmp_path):
    """The file written from a loaded timm state dict is that state dict: every key, shape and value."""
    from safetensors.numpy import load_file

    model = keras_vit.ViT(weights=TIMM_FIXTURES / f"{name}.safetensors", num_heads=3)
    keras_vit.save_checkpoint(model, tmp_path / "model.safetensors", format="timm")
    written, original = load_file(tmp_path / "model.safetensors"), load_file(TIMM_FIXTURES / f"{name}.safetensors")
    assert sorted(written) == sorted(original)
    for key, value in original.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)
    arguments = keras_vit.weights.timm_arguments(model)
    assert (arguments["embed_dim"], arguments["num_heads"], arguments["class_token"], arguments["fc_norm"]) == (
        24, 3, name != "gap_fc_norm", name == "gap_fc_norm")


def test_timm_loads_what_keras_vit_writes_where_timm_runs(tmp_path):
    try:
        from timm.models.vision_transformer import VisionTransformer
    except Exception as error:  # ImportError, or torchvision's RuntimeError with a CPU torch it was not built for
        pytest.skip(f"timm does not import here ({type(error).__name__}); test_save_checkpoint_timm_* stand in")
    from safetensors.torch import load_file

    model = keras_vit.ViT(**TINY)  # the tanh GELU: timm_arguments asks timm for it
    randomize(model, 2)
    with pytest.warns(UserWarning, match="does not record the tanh GELU"):
        keras_vit.save_checkpoint(model, tmp_path / "model.safetensors", format="timm")
    timm_model = VisionTransformer(**keras_vit.weights.timm_arguments(model)).eval()
    timm_model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        np.testing.assert_allclose(timm_model(torch_images()).numpy(), predict(model), atol=1e-4)


def test_the_heads_of_a_timm_file_come_from_the_variant_of_its_width_or_must_be_given(tmp_path):
    with pytest.raises(ValueError, match=r"width 24, which does not record its number of attention heads.*num_heads="):
        keras_vit.ViT(weights=TIMM_FIXTURES / "token.safetensors")
    ti = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=192, mlp_dim=384, num_heads=3, num_layers=1, classes=5)
    randomize(ti, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tanh GELU, which the state dict cannot record
        keras_vit.save_checkpoint(ti, tmp_path / "ti.safetensors", format="timm")
    assert keras_vit.weights.architecture_of(tmp_path / "ti.safetensors")["num_heads"] == 3  # ViT-Ti's width


def test_conventions_differing_from_the_models_warn_and_the_final_norms_place_refuses():
    with pytest.warns(UserWarning, match="trained with approximate_gelu=False"):  # the model's tanh GELU, timm's exact
        keras_vit.load_weights(keras_vit.ViT(**TINY), TIMM_FIXTURES / "token.safetensors")
    with pytest.raises(ValueError, match=r"final LayerNorm is applied after pooling.*fc_norm=True"):
        keras_vit.load_weights(keras_vit.ViT(**TINY, classifier="gap", approximate_gelu=False),
                               TIMM_FIXTURES / "gap_fc_norm.safetensors")


def test_a_file_of_another_architecture_or_library_says_what_it_holds(tmp_path):
    hf_model("ViTForImageClassification", num_labels=5).save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match=r"does not fit model 'vit': .*hidden_size 24 vs 48"):
        keras_vit.ViT(**dict(TINY, hidden_size=48, mlp_dim=96), weights=tmp_path / "hf")
    from safetensors.numpy import save_file

    save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="holds neither an HF transformers ViT/DeiT nor a timm ViT state dict"):
        keras_vit.load_weights(keras_vit.ViT(**TINY), tmp_path / "other.safetensors")
    (tmp_path / "hf" / "config.json").unlink()  # its weights alone: the architecture is in config.json
    with pytest.raises(ValueError, match="without its config.json"):
        keras_vit.ViT(**TINY, weights=tmp_path / "hf" / "model.safetensors")


def test_a_torch_pickle_without_torch_says_it_needs_torch(tmp_path):
    torch.save(hf_model("ViTModel").state_dict(), tmp_path / "model.pth")
    code = ("import importlib.abc, sys\n"
            "class NoTorch(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ImportError('No module named torch')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from keras_vit.weights import torch_formats\n"
            f"torch_formats.read_tensors({str(tmp_path / 'model.pth')!r})")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "is a torch pickle, which needs torch to read" in done.stderr, done.stderr[-2000:]


def test_an_npz_written_from_another_librarys_checkpoint_keeps_its_conventions(tmp_path):
    model = keras_vit.ViT(weights=TIMM_FIXTURES / "gap_fc_norm.safetensors", num_heads=3)
    keras_vit.save_checkpoint(model, tmp_path / "model.npz")  # format="npz"
    again = keras_vit.ViT(weights=tmp_path / "model.npz")
    assert (again.fc_norm, again.approximate_gelu, again.layer_norm_epsilon) == (True, False, 1e-6)
    np.testing.assert_array_equal(predict(again), predict(model))


def test_known_hub_names_download_from_the_mirror_into_the_cache_and_load(tmp_path, monkeypatch):
    """`ViT(weights="google/vit-base-patch16-224")` and a timm name, from a file:// mirror of the hub's layout (tiny
    models under the real names: nothing can be downloaded here)."""
    mirror = tmp_path / "hub"
    hf = hf_model("ViTForImageClassification", num_labels=5)
    hf.save_pretrained(mirror / "google/vit-base-patch16-224/resolve/main")
    deit = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=192, mlp_dim=384, num_heads=3, num_layers=1,
                         classes=5, distillation_token=True, approximate_gelu=False)  # DeiT-Ti's width, 1 layer
    randomize(deit, 4)
    timm_folder = mirror / "timm/deit_tiny_distilled_patch16_224.fb_in1k/resolve/main"
    timm_folder.mkdir(parents=True)
    keras_vit.save_checkpoint(deit, timm_folder / "model.safetensors", format="timm")
    monkeypatch.setenv(keras_vit.weights.HUB_URL_ENV, mirror.as_uri())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    model = keras_vit.ViT(weights="google/vit-base-patch16-224")
    np.testing.assert_allclose(predict(model), hf_outputs(hf), atol=1e-4)
    cached = tmp_path / "home/keras_vit/hub/google--vit-base-patch16-224"
    assert sorted(p.name for p in cached.iterdir()) == ["config.json", "model.safetensors"]
    opened = keras_vit.open_model("timm/deit_tiny_distilled_patch16_224.fb_in1k")  # heads: ViT-Ti's, by the width
    assert (opened.num_heads, opened.distillation_token, opened.classes) == (3, True, 5)
    np.testing.assert_allclose(predict(opened), predict(deit), atol=1e-5)
    shutil.rmtree(mirror)  # the cache answers from now on
    np.testing.assert_array_equal(predict(keras_vit.ViT(weights="google/vit-base-patch16-224")), predict(model))
    with pytest.raises(OSError, match="Could not download .google/vit-large-patch16-224.: .*resolve/main/config.json"):
        keras_vit.ViT(weights="google/vit-large-patch16-224")


def test_the_pixel_statistics_a_checkpoint_states_feed_the_model_what_its_processor_feeds_it(tmp_path):
    """DeiT's files state ImageNet's mean and std (preprocessor_config.json): the model records them, and
    `model_inputs` (training, evaluation, serving) scales [0, 255] pixels as transformers' image processor does."""
    from keras_vit.preprocessing import IMAGENET_MEAN, IMAGENET_STD, model_inputs

    source = hf_model("DeiTForImageClassificationWithTeacher", num_labels=5)
    source.save_pretrained(tmp_path)
    processor = transformers.DeiTImageProcessor(do_resize=False, do_center_crop=False, image_mean=list(IMAGENET_MEAN),
                                                image_std=list(IMAGENET_STD))
    processor.save_pretrained(tmp_path)
    model = keras_vit.ViT(weights=tmp_path)
    assert (model.pixel_mean, model.pixel_std) == (IMAGENET_MEAN, IMAGENET_STD)
    pixels = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    with torch.no_grad():
        expected = source(**processor(list(pixels), return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(predict(model, model_inputs(model, pixels)), expected, atol=1e-4)
    keras_vit.save_checkpoint(model, tmp_path / "out", format="hf")  # and back out: the statistics go along
    assert keras_vit.ViT(weights=tmp_path / "out").pixel_mean == IMAGENET_MEAN
