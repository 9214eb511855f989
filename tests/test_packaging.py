"""`pip install .` (not editable) gives a working package with no generic top-level names, run outside the tree."""

import os
import shutil
import subprocess
import sys

import pytest

from support import REPO

SOURCES = ("keras_vit", "training", "serving", "setup.cfg", "pyproject.toml", "README.md")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built from a copy of the sources and installed into its own folder (no dependencies: the test's)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    shutil.rmtree(source)  # nothing may refer back to the sources
    return target


def run(installed, *args, cwd):
    env = dict(os.environ, PYTHONPATH=str(installed), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_installs_only_the_keras_vit_namespace(installed):
    assert sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "keras_vit"]
    scripts = {p.name for p in (installed / "bin").iterdir()}
    assert {"keras-vit-train", "keras-vit-export", "keras-vit-serve", "keras-vit-analysis", "keras-vit-study"} <= scripts


def test_the_installed_package_trains_and_loads_outside_the_tree(installed, tmp_path, fixtures_dir):
    result = run(installed, "-c", "import keras_vit, keras_vit.training.train, keras_vit.serving.server; "
                 "print(keras_vit.__file__); import training", cwd=tmp_path)
    assert str(installed) in result.stdout and "No module named 'training'" in result.stderr
    result = run(installed, "-m", "keras_vit.demo", "--fixtures", str(fixtures_dir), cwd=tmp_path)
    assert result.returncode == 0 and "OK: outputs match" in result.stdout, result.stderr[-2000:]
    result = run(
        installed, "-m", "keras_vit.training.train", "--model", "ViT", "--image_size", "8", "--patch_size", "4",
        "--hidden_size", "16", "--mlp_dim", "32", "--num_heads", "2", "--num_layers", "1", "--dataset", "digits",
        "--epochs", "1", "--steps_per_epoch", "2", "--batch_size", "16", "--output_dir", "run", "--progress", "0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "model.keras").is_file() and (tmp_path / "run" / "labels.txt").is_file()


def test_the_console_scripts_answer_help_under_their_own_name(installed, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(installed))
    for script in ("keras-vit-train", "keras-vit-serve", "keras-vit-export"):
        result = subprocess.run([str(installed / "bin" / script), "--help"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith(f"usage: {script} "), result.stderr[-2000:]
        assert "(default: " in result.stdout and result.stderr == ""
