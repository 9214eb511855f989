"""Registering keras_vit's Keras classes as soon as Keras is imported, without importing Keras first.

`keras.saving.load_model` finds a custom class only when its module has
been imported (Keras imports modules itself only for its own packages).
keras_vit's public modules import Keras, and Keras imports TensorFlow, which
takes seconds: `import keras_vit` leaves them out until they are needed. To
keep `import keras_vit; keras.saving.load_model(path)` working, they are
imported once Keras has been: right after the outermost of the imports in
progress (of Keras, of TensorFlow, which imports Keras while it initialises,
and of keras_vit's own modules) completes, so that none is half-initialised.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import threading
from typing import Sequence


def register_with_keras(modules: Sequence[str]) -> None:
    """Imports `modules` now if Keras is already imported, else as soon as it has been."""
    if "keras" in sys.modules:
        _import(modules)
    else:
        sys.meta_path.insert(0, _AfterKerasImport(modules))


def _import(modules: Sequence[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def _watched(name: str) -> bool:
    """The imports whose completion is awaited: Keras, TensorFlow and keras_vit's modules."""
    return name in ("keras", "tensorflow") or name.startswith("keras_vit.")


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds the watched modules as the other finders do, and imports `modules` when the last of them completes."""

    def __init__(self, modules: Sequence[str]):
        self.modules = tuple(modules)
        self.in_progress = 0  # watched imports started and not completed
        self.searching = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if not _watched(fullname) or getattr(self.searching, "active", False):
            return None
        self.searching.active = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.searching.active = False
        if spec is not None and spec.loader is not None:
            spec.loader = _Watched(spec.loader, self)
        return spec

    def completed(self, succeeded: bool) -> None:
        self.in_progress -= 1
        if not self.in_progress and succeeded and "keras" in sys.modules and self in sys.meta_path:
            sys.meta_path.remove(self)
            _import(self.modules)


class _Watched(importlib.abc.Loader):
    """A watched module's loader, which tells the finder when the module has run; any other use goes to the loader."""

    def __init__(self, loader: importlib.abc.Loader, finder: _AfterKerasImport):
        self.loader = loader
        self.finder = finder

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        self.finder.in_progress += 1
        succeeded = False
        try:
            self.loader.exec_module(module)
            succeeded = True
        finally:
            self.finder.completed(succeeded)
