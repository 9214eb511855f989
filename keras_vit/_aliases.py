"""One module object per file: a checkout's `training` and `serving` are `keras_vit.training` and `keras_vit.serving`.

The repository keeps `training/` and `serving/` at its top level; installed,
they are `keras_vit.training` and `keras_vit.serving` (setup.cfg's
package_dir). In a checkout both names reach the same files, and without
this each file would run twice, once under each name, giving two copies of
every class (an `isinstance` across them fails). The short name's package
replaces itself by the long one's, and a finder hands out the long name's
modules for the short names: `import training.trainer` is
`keras_vit.training.trainer`, and `python -m training.train` runs that
module's code.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


def alias_package(short: str, full: str) -> None:
    """Makes `short` and every `short.X` the module objects of `full` and `full.X`."""
    sys.modules[short] = importlib.import_module(full)
    if not any(isinstance(finder, _Alias) and finder.short == short for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias(short, full))


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `short.X` as the already imported (or now imported) `full.X`."""

    def __init__(self, short: str, full: str):
        self.short, self.full = short, full

    def _real(self, fullname: str) -> str:
        return self.full + fullname[len(self.short):]

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.short + "."):
            return None
        real = importlib.util.find_spec(self._real(fullname))
        if real is None:
            return None
        return importlib.util.spec_from_loader(
            fullname, self, origin=real.origin, is_package=real.submodule_search_locations is not None
        )

    def create_module(self, spec):
        return importlib.import_module(self._real(spec.name))

    def exec_module(self, module) -> None:
        """Nothing: the module ran once, under its full name."""

    def get_code(self, fullname):
        """The full module's code: `python -m short.X` runs it as `__main__`."""
        real = self._real(fullname)
        return importlib.util.find_spec(real).loader.get_code(real)
