"""Which variable of a model each array of a `.keras` / `.weights.h5` file belongs to: keras_vit's one private Keras API.

A Keras 3 weights file stores each layer's variables under a group named by
Keras' saving traversal (`layers/transformer_block_1/mlp_dense_1/vars/0`:
attribute names, class names made unique, numbered variables). Keras has no
public API that maps those groups to a model's variables: `load_weights`
assigns the whole file in place and offers no by-name or partial load for
this format (keras-team/keras#21404: `by_name` is refused for `.keras`).
Validating a whole file before assigning anything, resizing position
embeddings and replacing a head need that map, so this module runs Keras'
own traversal (`keras.src.saving.saving_lib._save_state`) over a store that
records, instead of writing, what each layer would save.

`tests/test_weights_pipeline.py` checks the traversal against a file that
`model.save_weights` writes, so a Keras release that changes it fails there,
by name, rather than in a user's load.
"""

from __future__ import annotations

import keras
from keras.src.saving import saving_lib  # private: see the module docstring

from keras_vit.lora import without_merging

#: The group a compiled model's optimizer variables are saved under (numbered in `optimizer.variables` order).
OPTIMIZER = "optimizer"


class _Recorder(saving_lib.H5IOStore):
    """A weights store that records {(group, key): what the layer stores} and writes nothing."""

    def __init__(self):  # no file: only `make` and `__setitem__` are used by the traversal
        self.slots: dict[tuple[str, str], object] = {}
        self._group = ""

    def __bool__(self):
        return True

    def make(self, path, metadata=None):
        self._group = path
        return self

    def __setitem__(self, key, value):
        self.slots[(self._group, key)] = value


def file_slots(model: keras.Model) -> dict[tuple[str, str], object]:
    """{(group, key): variable} as `model.save_weights` would write them, the optimizer's left out.

    A value that is not a `keras.Variable` is metadata a layer saves beside
    its variables (the position embedding's grid, for one).
    """
    recorder = _Recorder()
    skipped = {id(model.optimizer)} if getattr(model, "optimizer", None) is not None else set()
    with without_merging(model):  # a LoRA projection's slot is its frozen kernel (the file holds it merged)
        saving_lib._save_state(model, weights_store=recorder, assets_store=None, inner_path="",
                               visited_saveables=skipped)
    return recorder.slots
