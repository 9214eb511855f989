"""What the tests share: the reference fixtures' models, free ports on 127.0.0.1, real CLI processes."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import keras_vit
from keras_vit.training.config import DEMO_MODEL, as_flags

REPO = pathlib.Path(__file__).resolve().parent.parent

# A tiny custom ViT that trains on digits in seconds.
TINY_MODEL = as_flags(**dict(DEMO_MODEL, hidden_size=32, mlp_dim=64, num_layers=2))


def fixture_model(fixtures_dir: pathlib.Path, name: str, weights="fixture", **overrides) -> keras_vit.VisionTransformer:
    """The model of a reference fixture, its architecture read from its checkpoint, with optional overrides.

    `weights`: "fixture" loads the fixture's checkpoint, None leaves the model random, a path loads that.
    """
    path = fixtures_dir / f"{name}.npz"
    config = dict(keras_vit.weights.npz_architecture(path), **overrides)
    return keras_vit.ViT(weights=str(path) if weights == "fixture" else weights, **config)


def env(**extra: str) -> dict[str, str]:
    """This process's environment for a child, with `extra`; XLA_FLAGS given there are added to the session's."""
    out = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), out.get("PYTHONPATH", "")])
    if "XLA_FLAGS" in extra:
        extra = dict(extra, XLA_FLAGS=" ".join(filter(None, [out.get("XLA_FLAGS", ""), extra["XLA_FLAGS"]])))
    out.update(extra)
    return out


#: On PYTHONPATH, makes TensorFlow unimportable in a process (tests/without_tensorflow/sitecustomize.py).
WITHOUT_TENSORFLOW = REPO / "tests" / "without_tensorflow"


def backend_env(backend: str, tensorflow: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a process on Keras' `backend`: on JAX or PyTorch without TensorFlow unless `tensorflow`."""
    out = env(KERAS_BACKEND=backend, **extra)
    path = [str(REPO / "tests"), out["PYTHONPATH"]]
    out["PYTHONPATH"] = os.pathsep.join(path if tensorflow or backend == "tensorflow" else [str(WITHOUT_TENSORFLOW), *path])
    return out


def backend_job(name: str, backend: str, folder: pathlib.Path, tensorflow: bool = False, **extra: str) -> dict:
    """The JSON result of `python tests/backend_jobs.py name folder` run on `backend` (see `backend_env`)."""
    done = subprocess.run([sys.executable, "tests/backend_jobs.py", name, str(folder)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=backend_env(backend, tensorflow, **extra))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_module(module: str, *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env(**extra_env), capture_output=True, text=True, timeout=timeout
    )


def start_module(module: str, *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env(**extra_env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Runs each command given (`module arg ...`, one per argument) as `python -m` does, in one process (TensorFlow
#: starts once), and prints what each wrote and its exit status between markers.
COMMANDS_PROBE = r"""
import contextlib, io, runpy, sys, warnings
# A command module imported by an earlier one is run again as __main__: runpy's warning says so, harmlessly here.
warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package", category=RuntimeWarning)
for command in sys.argv[1:]:
    module, *args = command.split()
    sys.argv = [module, *args]
    out, err, status = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            status = exit.code or 0
    print(f"=== {command}\n{status}\n{out.getvalue()}\n--- stderr\n{err.getvalue()}")
"""


def run_commands(*commands: str) -> dict[str, tuple[int, str, str]]:
    """{command: (exit status, stdout, stderr)} of `commands` run in one process (COMMANDS_PROBE)."""
    result = subprocess.run([sys.executable, "-c", COMMANDS_PROBE, *commands], cwd=REPO, env=env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
    answers = {}
    for block in result.stdout.split("=== ")[1:]:
        command, status, rest = block.split("\n", 2)
        stdout, _, stderr = rest.rpartition("\n--- stderr\n")
        answers[command] = (int(status), stdout, stderr.rstrip("\n"))
    return answers
