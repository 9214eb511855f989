"""Importing Keras (and, on its TensorFlow backend, TensorFlow) without TensorFlow's C++ start-up lines.

TensorFlow's shared libraries write informational lines (oneDNN, CUDA
drivers not found, CPU instructions) straight to file descriptor 2 as they
load, before its logging is set up, so `TF_CPP_MIN_LOG_LEVEL` cannot hide
them, and two libraries print them twice. `import keras_vit` imports Keras,
so every command would open with them. They are caught on descriptor 2 while
Keras loads; informational lines are dropped, anything else (a warning, an
error) is written back. `TF_CPP_MIN_LOG_LEVEL=0` in the environment keeps
them all, as does a process that imported TensorFlow itself first.
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


def import_keras() -> None:
    """Imports Keras with TensorFlow's informational start-up lines held back (see the module's docstring)."""
    if "keras" in sys.modules or "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        importlib.import_module("keras")
        return
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
