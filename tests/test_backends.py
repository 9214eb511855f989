"""keras_vit on JAX and PyTorch: the model core with TensorFlow unimportable, .keras files moved between all three
backends, data parallelism and tf.data input on JAX, and `keras_vit.training.train --backend jax`. Each backend
runs in its own processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keras_vit
from backend_jobs import MODELS
from harness import random_images
from keras_vit.training import backup
from support import REPO, TINY_MODEL, env, run_module, start_module

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

OTHER_BACKENDS = ["jax", "torch"]
#: JAX last: its processes are the slowest to start, and so it loads the others' files in the first pass.
BACKENDS = ["tensorflow", "torch", "jax"]
#: The test files of the model core that import no TensorFlow, run again on each other backend.
CORE_TESTS = ["tests/test_backend_core.py", "tests/test_placement.py"]
#: On PYTHONPATH, makes TensorFlow unimportable in a process (tests/without_tensorflow/sitecustomize.py).
WITHOUT_TENSORFLOW = str(REPO / "tests" / "without_tensorflow")


def backend_env(backend: str, tensorflow: bool = False, **extra: str) -> dict[str, str]:
    out = env(KERAS_BACKEND=backend, **extra)
    path = [str(REPO / "tests"), out["PYTHONPATH"]]
    out["PYTHONPATH"] = os.pathsep.join(path if tensorflow or backend == "tensorflow" else [WITHOUT_TENSORFLOW, *path])
    return out


def job(name: str, backend: str, folder, tensorflow: bool = False, **extra: str) -> dict:
    done = subprocess.run([sys.executable, "tests/backend_jobs.py", name, str(folder)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=backend_env(backend, tensorflow, **extra))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_model_core_without_tensorflow(backend):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CORE_TESTS], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env=backend_env(backend))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout and "error" not in done.stdout.lower()


def test_keras_files_load_on_every_other_backend_with_equal_outputs(tmp_path):
    """Each backend loads what the ones before it saved, then saves its own; a second pass closes the circle."""
    found = {}
    for backend in [*BACKENDS, *BACKENDS[:-1]]:
        loaded = job("exchange", backend, tmp_path)
        assert all(other.split("/")[0] != backend for other in loaded), loaded
        found.update({f"{name} on {backend}": difference for name, difference in loaded.items()})
    assert len(found) == len(MODELS) * len(BACKENDS) * (len(BACKENDS) - 1), sorted(found)
    assert max(found.values()) < 1e-5, found


def test_fit_on_jax_data_parallel_over_two_host_devices_and_from_tf_data(tmp_path):
    found = job("fit", "jax", tmp_path, tensorflow=True, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert found["devices"] == 2
    np.testing.assert_allclose(found["data_parallel"], found["one_device"], rtol=1e-5)
    assert found["one_device"][-1] < found["one_device"][0]  # the steps moved the weights
    assert found["tf_data_accuracy"] == 1.0


TRAIN_ON_JAX = [*TINY_MODEL, "--backend", "jax", "--epochs", "3", "--steps_per_epoch", "12", "--batch_size", "16",
                "--backup_freq", "epoch", "--warmup_steps", "5", "--fewshot_every", "1", "--early_stopping_patience", "2",
                "--progress", "2"]


def test_training_train_on_jax_with_few_shot_and_early_stopping_resumes_after_a_kill(tmp_path):
    """Killed after epoch 1's backup, the run resumes at epoch 2 (a mid-epoch resume is issue 35's, on every backend).
    (Two devices: tests/backend_jobs.py's fit job.)"""
    command = [*TRAIN_ON_JAX, "--output_dir", str(tmp_path)]
    process = start_module("keras_vit.training.train", *command)
    history_path, deadline = tmp_path / "history.csv", time.monotonic() + 240

    def epoch_one_logged_and_backed_up() -> bool:
        return history_path.exists() and len(history_path.read_text().splitlines()) > 1 and bool(
            backup.states(str(tmp_path / "backup")))

    while process.poll() is None and time.monotonic() < deadline and not epoch_one_logged_and_backed_up():
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before epoch 1 was logged and backed up"
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = run_module("keras_vit.training.train", *command)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "resuming at epoch 2" in result.stdout
    history = list(csv.DictReader(history_path.open()))
    assert [int(row["epoch"]) for row in history] == [0, 1, 2]
    assert [int(float(row["updates"])) for row in history] == [12, 24, 36]
    assert all(float(row["fewshot_10shot"]) > 0 for row in history)
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] > 0.1 and (tmp_path / "best.keras").exists()
    # The model trained on JAX loads here, on TensorFlow.
    images = random_images((2, 16, 16, 3))
    assert keras_vit.load_model(tmp_path / "model.keras").predict(images, verbose=0).shape == (2, 10)

    # What is TensorFlow's alone is refused on JAX in one line.
    refused = run_module("keras_vit.training.train", *TRAIN_ON_JAX, "--strategy", "mirrored",
                         "--output_dir", str(tmp_path / "mirrored"), timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
        "error: --strategy mirrored is a tf.distribute strategy, which needs Keras' TensorFlow backend")
    refused = run_module("keras_vit.serving.export", "--model", str(tmp_path / "model.keras"), "--model_base_path",
                         str(tmp_path / "served"), timeout=120, KERAS_BACKEND="jax")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
        "error: A SavedModel is a TensorFlow graph: export with Keras' TensorFlow backend")
    assert not (tmp_path / "served").exists()
