"""Every command-line mistake is one clear `error:` line and a non-zero exit, never a traceback; help is instant."""

import re
import subprocess
import sys

import pytest

import keras_vit
from support import REPO, env, run_module
from keras_vit.training import datasets

#: Every command (with its sub-command, where it has them).
COMMANDS = ["training.train", "training.evaluate", "training.fewshot", "training.study", "serving.export",
            "serving.server", "serving.client predict", "serving.demo", "keras_vit.analysis report"]

#: Runs a command as `python -m` does, then says whether Keras or TensorFlow got imported.
HELP_PROBE = """
import runpy, sys
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    print("imported:", sorted(name for name in ("keras", "tensorflow") if name in sys.modules))
"""


@pytest.fixture(scope="module")
def two_class_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "two.keras"
    keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=2).save(path)
    return path


@pytest.mark.parametrize("module, args, message", [
    ("serving.export", ["--model", "{model}", "--model_base_path", "{tmp}/m", "--labels", "/nonexistent/labels.txt"],
     "--labels /nonexistent/labels.txt: no such file"),
    ("serving.export", ["--model", "{model}", "--model_base_path", "{tmp}/m", "--format", "tflite_int8", "--dtype_policy",
                        "mixed_bfloat16"], "--format tflite_int8 converts the float32 model"),
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
    assert not re.search(r"^[IWEF]\d{4} |absl::InitializeLog", result.stderr, re.M), result.stderr[-2000:]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_the_defaults_without_importing_tensorflow(command):
    result = subprocess.run([sys.executable, "-c", HELP_PROBE, *command.split(), "--help"],
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(default: " in result.stdout and "--verbose" in result.stdout
    assert result.stdout.rstrip().endswith("imported: []"), result.stdout[-300:]
    assert result.stderr == ""


@pytest.mark.parametrize("command, message", [
    ("serving.export --model {model} --model_base_path {tmp}/m --labels {tmp}/missing.txt", "--labels {tmp}/missing.txt: no such file"),
    ("serving.export --model {tmp}/missing.keras --model_base_path {tmp}/m", "--model {tmp}/missing.keras: no such file"),
    ("keras_vit.analysis attention --model {model} --out {tmp}/a.png --image {tmp}/nope.jpg", "--image {tmp}/nope.jpg: no such file"),
    ("training.train --init_from {tmp}/missing.npz --output_dir {tmp}/run", "--init_from {tmp}/missing.npz: no such file"),
    ("training.train --epochs 5 --output_dir {tmp}/finished", "holds a run of another configuration (--epochs 2 there, 5 now)"),
])
def test_mistakes_in_flags_and_files_are_answered_before_tensorflow_starts(command, message, two_class_model, tmp_path):
    from keras_vit.training import outputs, train
    from keras_vit.training.config import RunConfig

    finished = tmp_path / "finished"
    finished.mkdir()
    flags = train.parser().parse_args(["--epochs", "2", "--output_dir", str(finished)])
    outputs.record(str(finished), RunConfig.from_flags(flags).record())
    (finished / outputs.RESULTS).write_text('{"accuracy": 0.5}')
    words = command.format(model=two_class_model, tmp=tmp_path).split()
    result = subprocess.run([sys.executable, "-c", HELP_PROBE, *words], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-1000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message.format(tmp=tmp_path) in errors[0], result.stderr[-2000:]
    assert result.stdout.rstrip().endswith("imported: []"), result.stdout[-300:]
    again = subprocess.run([sys.executable, "-c", HELP_PROBE, "training.train", "--epochs", "2", "--output_dir", str(finished)],
                           cwd=REPO, env=env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "holds this run, finished: accuracy 50.00%" in again.stdout
    assert again.stdout.rstrip().endswith("imported: []")


def test_tensorflow_start_up_lines_only_with_verbose(tmp_path):
    quiet_env = {k: v for k, v in env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "training.evaluate", "--model", str(tmp_path / "missing.keras")]
    quiet = subprocess.run(command, cwd=REPO, env=quiet_env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2
    lines = quiet.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.keras' does not exist" in lines[0], quiet.stderr
    verbose = subprocess.run([*command, "--verbose"], cwd=REPO, env=quiet_env, capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 2
    assert re.search(r"^[IWE]\d{4} ", verbose.stderr, re.M), verbose.stderr  # TensorFlow's own log lines


def test_fewshot_uses_the_datasets_labels_whatever_the_head(two_class_model, tmp_path):
    result = run_module("training.fewshot", "--model", str(two_class_model), "--shots", "1", "5", "--seeds", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(10 classes, 1 seeds" in result.stdout and "5-shot" in result.stdout


def test_a_tfds_dataset_without_network_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "TFDS_HOST", "tfds.invalid")  # RFC 6761: never resolves
    with pytest.raises(ValueError, match=rf"'mnist' is not downloaded to {tmp_path}.*pass --data_dir where it is prepared"):
        datasets.describe("mnist", data_dir=str(tmp_path))
