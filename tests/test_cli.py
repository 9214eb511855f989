"""Every command-line mistake is one clear `error:` line and a non-zero exit, never a traceback."""

import pytest

import keras_vit
from support import run_module
from keras_vit.training import datasets


@pytest.fixture(scope="module")
def two_class_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "two.keras"
    keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=2).save(path)
    return path


@pytest.mark.parametrize("module, args, message", [
    ("serving.export", ["--model", "{model}", "--model_base_path", "{tmp}/m", "--labels", "/nonexistent/labels.txt"],
     "/nonexistent/labels.txt: No such file or directory"),
    ("serving.client", ["predict", "/nonexistent/cat.png"], "/nonexistent/cat.png: No such file or directory"),
    ("training.fewshot", ["--model", "/nonexistent/model.keras"], "Model file '/nonexistent/model.keras' does not exist"),
    ("training.evaluate", ["--model", "/nonexistent/model.keras"], "Model file '/nonexistent/model.keras' does not exist"),
    ("training.evaluate", ["--model", "{model}", "--dataset", "digits"], "The model has 2 classes, digits has 10"),
])
def test_cli_errors_are_one_line(module, args, message, two_class_model, tmp_path):
    args = [a.format(model=two_class_model, tmp=tmp_path) for a in args]
    result = run_module(module, *args, timeout=120)
    assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "RuntimeWarning" not in result.stderr


def test_fewshot_uses_the_datasets_labels_whatever_the_head(two_class_model, tmp_path):
    result = run_module("training.fewshot", "--model", str(two_class_model), "--shots", "1", "5", "--seeds", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(10 classes, 1 seeds" in result.stdout and "5-shot" in result.stdout


def test_a_tfds_dataset_without_network_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "TFDS_HOST", "tfds.invalid")  # RFC 6761: never resolves
    with pytest.raises(ValueError, match=rf"'mnist' is not downloaded to {tmp_path}.*pass --data_dir where it is prepared"):
        datasets.describe("mnist", data_dir=str(tmp_path))
