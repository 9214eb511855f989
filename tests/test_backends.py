"""The model core on JAX and PyTorch with TensorFlow unimportable, and .keras files moved between all three backends.
Each backend runs in its own processes (training on JAX: test_backends_training.py)."""

import subprocess
import sys

import pytest

from backend_jobs import MODELS, exchange
from support import REPO, backend_env, backend_job

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

OTHER_BACKENDS = ["jax", "torch"]
#: JAX last: its processes are the slowest to start, and so it loads the others' files in the first pass.
BACKENDS = ["tensorflow", "torch", "jax"]
#: The test files of the model core that import no TensorFlow, run again on each other backend.
CORE_TESTS = ["tests/test_backend_core.py", "tests/test_placement.py"]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_model_core_without_tensorflow(backend):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CORE_TESTS], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env=backend_env(backend))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout and "error" not in done.stdout.lower()


def test_keras_files_load_on_every_other_backend_with_equal_outputs(tmp_path):
    """Each backend loads what the ones before it saved, then saves its own; a second pass closes the circle.
    (TensorFlow's turns run here, in the test's own process.)"""
    found = {}
    for backend in [*BACKENDS, *BACKENDS[:-1]]:
        loaded = exchange(tmp_path) if backend == "tensorflow" else backend_job("exchange", backend, tmp_path)
        assert all(other.split("/")[0] != backend for other in loaded), loaded
        found.update({f"{name} on {backend}": difference for name, difference in loaded.items()})
    assert len(found) == len(MODELS) * len(BACKENDS) * (len(BACKENDS) - 1), sorted(found)
    assert max(found.values()) < 1e-5, found
