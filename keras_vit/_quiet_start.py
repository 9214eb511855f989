"""Importing Keras (and, on its TensorFlow backend, TensorFlow) without TensorFlow's informational C++ log lines.

TensorFlow's shared libraries write informational lines (oneDNN, CUDA
drivers not found, CPU instructions) straight to file descriptor 2 as they
load, before its logging is set up, so `TF_CPP_MIN_LOG_LEVEL` cannot hide
them, and two libraries print them twice; later INFO lines (XLA compiling a
cluster) follow the level TensorFlow read while loading. `import keras_vit`
imports Keras, so every command and script would show them. While Keras
loads, the level is 1 (warnings and errors) and descriptor 2 is caught:
informational lines are dropped, anything else (a warning, an error) is
written back; the environment is then left as it was. A level the user set
is kept (`TF_CPP_MIN_LOG_LEVEL=0` shows every line), and so is a process
that imported TensorFlow itself first.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import re
import sys
import tempfile

#: Lines TensorFlow writes while loading that inform and warn of nothing: absl's info lines
#: (`I0000 00:00:...`), absl's note that they go to stderr, and the CPU-instructions note's second line.
START_UP_LINE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*|WARNING: All log messages before absl::InitializeLog\(\) is called are written "
    r"to STDERR|To enable the following instructions: .*, in other operations, rebuild TensorFlow with the "
    r"appropriate compiler flags\.)$"
)

#: The variable TensorFlow's C++ logging reads, and the level set while it loads: INFO lines off.
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
WARNINGS_AND_ERRORS = "1"


def import_keras() -> None:
    """Imports Keras with TensorFlow's informational lines held back (see the module's docstring)."""
    if "keras" in sys.modules or "tensorflow" in sys.modules or os.environ.get(LOG_LEVEL_ENV) == "0":
        importlib.import_module("keras")
        return
    ours = LOG_LEVEL_ENV not in os.environ  # else the user's level holds for the lines after the start
    if ours:
        os.environ[LOG_LEVEL_ENV] = WARNINGS_AND_ERRORS
    try:
        _import_catching_start_up_lines()
    finally:
        if ours:
            del os.environ[LOG_LEVEL_ENV]


def _import_catching_start_up_lines() -> None:
    """Imports Keras with descriptor 2 caught, and writes back every line but `START_UP_LINE`s."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module("keras")
        finally:
            ctypes.CDLL(None).fflush(None)  # C stdio holds some of them in its buffer until exit
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not START_UP_LINE.match(line.rstrip("\n"))]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
