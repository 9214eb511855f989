"""Small helpers shared across keras_vit."""

from __future__ import annotations

import inspect
from typing import Callable


def to_pair(value: int | tuple[int, int] | list[int], what: str = "value") -> tuple[int, int]:
    """Returns (h, w) from an int or a pair of ints."""
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"Expected {what} to be an int or a pair of ints, got {value!r}.")
    return pair


def config_with_dtype_policy(config: dict) -> dict:
    """A model's saved config with its serialised dtype policy turned back into a policy, for `from_config`."""
    config = dict(config)
    if isinstance(config.get("dtype"), dict):
        import keras

        config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
    return config


class ConstructorConfig:
    """Mixin of keras_vit's models: `get_config()` is exactly the constructor's arguments, kept as attributes of the
    same names (besides Keras' name, trainable and dtype), and `from_config` calls the constructor with them."""

    #: Constructor parameters that are not config entries of their own.
    _NOT_IN_CONFIG = ("self", "name", "dtype", "input_shape", "kwargs")

    def get_config(self) -> dict:
        import keras

        arguments = [n for n in inspect.signature(type(self).__init__).parameters if n not in self._NOT_IN_CONFIG]
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            **{argument: getattr(self, argument) for argument in arguments},
        }

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config_with_dtype_policy(config))

    def _keep_config(self, arguments: dict) -> None:
        """Keeps each constructor argument of `arguments` (the constructor's `locals()`, once normalised) as the
        attribute of its name; one that a read-only property of the class shows is kept as `_name`."""
        for name in inspect.signature(type(self).__init__).parameters:
            if name not in self._NOT_IN_CONFIG:
                shown = isinstance(getattr(type(self), name, None), property)
                setattr(self, f"_{name}" if shown else name, arguments[name])


class GraphViews:
    """Functional models over parts of a model's graph, by key, each built once on first use.

    A plain holder, neither a dict nor a Keras layer, so neither Keras'
    tracking and saving nor TF's object tracking walks into these views:
    they share every layer with the model that owns them.
    """

    def __init__(self):
        self._models: dict = {}

    def get(self, key, build: Callable):
        """The view under `key`, built by `build()` the first time."""
        if key not in self._models:
            self._models[key] = build()
        return self._models[key]
