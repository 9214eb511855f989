"""keras_vit on JAX and PyTorch: the model core with TensorFlow unimportable, .keras files moved between all three
backends, data parallelism on JAX, tf.data input on JAX. Each backend runs in its own processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from backend_jobs import MODELS
from support import REPO, env

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

OTHER_BACKENDS = ["jax", "torch"]
BACKENDS = ["tensorflow", *OTHER_BACKENDS]
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
