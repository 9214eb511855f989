"""Running the training command lines as real processes, as a user would."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent

# A tiny custom ViT that trains on digits in seconds.
TINY_MODEL = ["--model", "ViT", "--image_size", "16", "--patch_size", "4", "--hidden_size", "32", "--mlp_dim", "64",
              "--num_heads", "4", "--num_layers", "2"]


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), out.get("PYTHONPATH", "")])
    out.update(extra)
    return out


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
