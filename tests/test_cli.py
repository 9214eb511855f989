"""Every command-line mistake is one clear `error:` line and a non-zero exit, never a traceback; help shows defaults."""

import re
import subprocess
import sys

import pytest

import keras_vit
from support import REPO, env, run_commands
from keras_vit.training import datasets

#: Every command (with its sub-command, where it has them).
COMMANDS = ["keras_vit.demo", "keras_vit.training.train", "keras_vit.training.evaluate", "keras_vit.training.fewshot", "keras_vit.training.study", "keras_vit.serving.export",
            "keras_vit.serving.server", "keras_vit.serving.client predict", "keras_vit.serving.demo", "keras_vit.analysis report"]

@pytest.fixture(scope="module")
def two_class_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "two.keras"
    keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=2).save(path)
    return path


#: (command, what its one error line says): mistakes each command must answer in one line, exit status 2.
CLI_ERRORS = [
    ("keras_vit.serving.export --model {model} --model_base_path {tmp}/m --labels /nonexistent/labels.txt",
     "--labels /nonexistent/labels.txt: no such file"),
    ("keras_vit.serving.export --model {model} --model_base_path {tmp}/m --format tflite_int8 --dtype_policy "
     "mixed_bfloat16", "--format tflite_int8 converts the float32 model"),
    ("keras_vit.serving.client predict /nonexistent/cat.png", "/nonexistent/cat.png: No such file or directory"),
    ("keras_vit.training.fewshot --model /nonexistent/model.keras", "Model file '/nonexistent/model.keras' does not exist"),
    ("keras_vit.training.evaluate --model /nonexistent/model.keras", "Model file '/nonexistent/model.keras' does not exist"),
    ("keras_vit.training.evaluate --model {model} --dataset digits", "The model has 2 classes, digits has 10"),
]


@pytest.mark.process
def test_cli_errors_are_one_line(two_class_model, tmp_path):
    """Each mistake: exit status 2 and one `error:` line, no traceback; and no C++ log line (`run_commands` refuses
    any output of the process itself)."""
    expected = {command.format(model=two_class_model, tmp=tmp_path): message for command, message in CLI_ERRORS}
    answers = run_commands(*expected)
    for command, message in expected.items():
        status, stdout, stderr = answers[command]
        assert status == 2, (command, stdout[-1000:], stderr[-2000:])
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (command, stderr[-2000:])
        assert "Traceback" not in stderr and "RuntimeWarning" not in stderr, (command, stderr[-2000:])


@pytest.mark.process
def test_every_command_helps_with_its_defaults():
    answers = run_commands(*(f"{command} --help" for command in COMMANDS))
    assert len(answers) == len(COMMANDS)
    for command, (status, stdout, stderr) in answers.items():
        assert status == 0 and "(default: " in stdout and stderr == "", (command, stdout[-500:], stderr[-500:])
        module = command.split()[0]
        assert stdout.startswith(f"usage: python -m {module} "), (command, stdout[:200])


#: Mistakes in flags and files, each answered before any model or data is loaded.
MISTAKES = [
    ("keras_vit.serving.export --model {model} --model_base_path {tmp}/m --labels {tmp}/missing.txt", "--labels {tmp}/missing.txt: no such file"),
    ("keras_vit.serving.export --model {tmp}/missing.keras --model_base_path {tmp}/m", "--model {tmp}/missing.keras: no such file"),
    ("keras_vit.analysis attention --model {model} --out {tmp}/a.png --image {tmp}/nope.jpg", "--image {tmp}/nope.jpg: no such file"),
    ("keras_vit.training.train --init_from {tmp}/missing.npz --output_dir {tmp}/run", "--init_from {tmp}/missing.npz: no such file"),
    ("keras_vit.training.train --epochs 5 --output_dir {tmp}/finished", "holds a run of another configuration (--epochs 2 there, 5 now)"),
]


@pytest.mark.process
def test_mistakes_in_flags_and_files_are_one_line_before_any_work(two_class_model, tmp_path):
    from keras_vit.training import outputs, train
    from keras_vit.training.config import RunConfig

    finished = tmp_path / "finished"
    finished.mkdir()
    flags = train.parser().parse_args(["--epochs", "2", "--output_dir", str(finished)])
    outputs.record(str(finished), RunConfig.from_flags(flags).record())
    (finished / outputs.RESULTS).write_text('{"accuracy": 0.5}')
    commands = [command.format(model=two_class_model, tmp=tmp_path) for command, _ in MISTAKES]
    again = f"keras_vit.training.train --epochs 2 --output_dir {finished}"
    answers = run_commands(*commands, again)
    for command, (_, message) in zip(commands, MISTAKES):
        status, stdout, stderr = answers[command]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert status == 2 and len(errors) == 1 and message.format(tmp=tmp_path) in errors[0], (command, stderr[-2000:])
    status, stdout, _ = answers[again]
    assert status == 0 and "holds this run, finished: accuracy 50.00%" in stdout


@pytest.mark.process
def test_tensorflow_start_up_lines_are_held_back_and_verbose_is_deprecated(tmp_path):
    quiet_env = {k: v for k, v in env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "keras_vit.training.evaluate", "--model", str(tmp_path / "missing.keras")]
    quiet = subprocess.run(command, cwd=REPO, env=quiet_env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2
    lines = quiet.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.keras' does not exist" in lines[0], quiet.stderr
    verbose = subprocess.run([*command, "--verbose"], cwd=REPO, env=quiet_env, capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 2 and "FutureWarning: --verbose is deprecated and has no effect" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == lines[0]


def test_fewshot_uses_the_datasets_labels_whatever_the_head(two_class_model, capsys):
    from keras_vit.training import fewshot

    assert fewshot.main(["--model", str(two_class_model), "--shots", "1", "5", "--seeds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "(10 classes, 1 seeds" in printed and "5-shot" in printed


def test_a_tfds_dataset_without_network_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "TFDS_HOST", "tfds.invalid")  # RFC 6761: never resolves
    with pytest.raises(ValueError, match=rf"'mnist' is not downloaded to {tmp_path}.*pass --data_dir where it is prepared"):
        datasets.describe("mnist", data_dir=str(tmp_path))


@pytest.mark.process
def test_the_checkouts_short_module_names_still_run_and_warn():
    for module in ("training.train", "serving.export"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, env=env(), capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0 and "(default: " in result.stdout, result.stderr[-2000:]
        package = module.split(".")[0]
        assert f"FutureWarning: `python -m {package}.X` is deprecated and goes in 0.4: the module is " \
               f"keras_vit.{package}.X" in result.stderr, result.stderr[-2000:]
