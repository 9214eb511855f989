"""`keras_vit.training.train --backend jax`, and `model.fit` on JAX: data parallel over two host devices, tf.data input,
what JAX refuses. Each backend runs in its own processes (tests/backend_jobs.py; the model core: test_backends.py)."""

import csv
import json
import signal
import time

import numpy as np
import pytest

import keras_vit
from harness import random_images
from keras_vit.training import backup
from support import TINY_MODEL, backend_job, run_module, start_module

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers


def test_fit_on_jax_data_parallel_over_two_host_devices_from_tf_data_and_what_jax_refuses(tmp_path):
    found = backend_job("fit", "jax", tmp_path, tensorflow=True, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert found["devices"] == 2
    np.testing.assert_allclose(found["data_parallel"], found["one_device"], rtol=1e-5)
    assert found["one_device"][-1] < found["one_device"][0]  # the steps moved the weights
    assert found["tf_data_accuracy"] == 1.0
    # What is TensorFlow's alone is refused on JAX in one line (`training.train` and `serving.export` print it).
    assert found["refused"]["strategy"].startswith(
        "--strategy mirrored is a tf.distribute strategy, which needs Keras' TensorFlow backend; this run is on jax")
    assert found["refused"]["export"].startswith("A SavedModel is a TensorFlow graph: export with Keras' TensorFlow backend")
    assert found["refused"]["exported"] is False


TRAIN_ON_JAX = [*TINY_MODEL, "--backend", "jax", "--epochs", "2", "--steps_per_epoch", "12", "--batch_size", "16",
                "--backup_freq", "epoch", "--warmup_steps", "5", "--fewshot_every", "1", "--early_stopping_patience", "2",
                "--progress", "2"]


def test_training_train_on_jax_with_few_shot_and_early_stopping_resumes_after_a_kill(tmp_path):
    """Killed after epoch 1's backup, the run resumes at epoch 2 (a mid-epoch resume is issue 35's, on every backend).
    (Two devices, and the refusals: tests/backend_jobs.py's fit job.)"""
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
    assert [int(row["epoch"]) for row in history] == [0, 1]
    assert [int(float(row["updates"])) for row in history] == [12, 24]
    assert all(float(row["fewshot_10shot"]) > 0 for row in history)
    assert float(history[1]["learning_rate"]) < float(history[0]["learning_rate"])  # the schedule went on decaying
    assert 0 <= json.loads((tmp_path / "results.json").read_text())["accuracy"] <= 1 and (tmp_path / "best.keras").exists()
    # The model trained on JAX loads here, on TensorFlow.
    images = random_images((2, 16, 16, 3))
    assert keras_vit.load_model(tmp_path / "model.keras").predict(images, verbose=0).shape == (2, 10)
