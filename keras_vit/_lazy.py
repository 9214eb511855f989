"""Imports on first use: packages' public names (PEP 562), and TensorFlow in the modules that use it only for tf.data.

Both keep `import keras_vit` free of TensorFlow where Keras runs on JAX or
PyTorch (and TensorFlow may be absent): TensorFlow is imported when a
tf.data-side function first runs.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(namespace: dict[str, Any], exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of the package whose `globals()` is `namespace`, given its public names and the
    modules defining them.

    A name that is the last part of its module's name (`"layers":
    "keras_vit.layers"`) is that module; any other is the module's attribute
    of that name. Each is imported once, then cached in the package.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        value = module if exports[name].rpartition(".")[2] == name else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


class LazyModule:
    """A module imported on its first attribute access: `tf = LazyModule("tensorflow")`, then `tf.image.resize`."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"LazyModule({self._name!r})"
