"""On PYTHONPATH, this folder makes TensorFlow unimportable in every Python process started with it, as on a machine
without TensorFlow (the GPU machines keras_vit reaches through JAX and PyTorch). tests/test_backends.py uses it.

`import tensorflow` (or a sub-module) raises ModuleNotFoundError and leaves `tensorflow` out of sys.modules, which
Keras reads; `importlib.util.find_spec` answers with a spec without origin, so that libraries that look before
they import (torch._dynamo) find nothing to import.
"""

import importlib.abc
import importlib.machinery
import sys


class NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name.partition(".")[0] == "tensorflow" else None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (tests/without_tensorflow is on PYTHONPATH)",
                                  name=spec.name)

    def exec_module(self, module):  # never reached: create_module raises
        raise ModuleNotFoundError(module.__name__)


sys.meta_path.insert(0, NoTensorFlow())
