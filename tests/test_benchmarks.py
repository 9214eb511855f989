"""The benchmarks that need hardware the suite does not have still run here, with tiny shapes, so they cannot rot."""

import subprocess
import sys

import pytest

from support import REPO, backend_env

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers


def test_the_gpu_benchmark_runs_on_the_cpu_with_tiny_shapes_on_jax_without_tensorflow():
    """As on the GPU machines: Keras on JAX, no TensorFlow (timm's rows need timm, which CI does not install)."""
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--variants", "ViT_Ti16", "--image_size", "32", "--batch", "2",
         "--train_batch", "2", "--seconds", "0.1", "--rounds", "1", "--peak_tflops", "1", "--no_torch_compile",
         "--modes", "infer_bfloat16", "train"],
        cwd=REPO, env=backend_env("jax"), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Keras backend jax" in result.stdout and "keras_vit: jax (Keras" in result.stdout
    table = [line for line in result.stdout.splitlines() if line.startswith("| ViT_Ti16")]
    assert [row.split(" | ")[1] for row in table] == ["infer bfloat16", "train"]
    for row in table:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[3]) > 0 and float(cells[4]) > 0 and cells[5].endswith("%")  # keras_vit: images/s, MFU
    assert "AMD" in result.stdout or "Intel" in result.stdout or "cores" in result.stdout  # the CPU line
