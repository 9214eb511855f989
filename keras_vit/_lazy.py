"""Packages whose public names are imported on first use (PEP 562), so that importing them starts no TensorFlow."""

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
