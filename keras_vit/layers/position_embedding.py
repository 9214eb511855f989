"""Learned position embeddings that resize themselves when loaded from another image size."""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from keras_vit import position_embeddings
from keras_vit.layers.attention import GRID_KEY
from keras_vit.resize import (
    RESIZE_METHODS, resize_grid_op, resize_position_embedding, resize_table, resize_table_op,
)
from keras_vit.utils import to_pair


@keras.saving.register_keras_serializable(package="keras_vit")
class AddPositionEmbedding(keras.layers.Layer):
    """Adds learned position embeddings to a sequence of prefix + grid tokens.

    `kind="learned_1d"` (the paper's default, the reference's `posembed_input`)
    learns one [1, prefix + gh * gw, D] table. `kind="learned_2d"` learns a row
    table [gh, D/2] and a column table [gw, D/2]; the embedding of patch (i, j)
    is `concat(row[i], col[j])`, and prefix tokens get a [prefix, D] table of
    their own.

    Resize on load: when weights stored for another grid are loaded (from an
    original .npz checkpoint, a `.keras` file or a `.weights.h5` file), the
    prefix rows are kept and the grid part is resized to this layer's grid with
    `resize_method` (default: the reference's aligned-corners linear zoom, in
    float64). The grid is saved beside the tables, so a (4, 8) grid loaded
    into an (8, 4) model is resized, not reshaped; a stored 1-D table whose
    grid is unknown follows `keras_vit.resize.infer_grid`.

    Resize at call time: called with the patch grid of the call (`patches`,
    for a model whose image size varies), the tables are resized in the
    graph to that grid with the same `resize_method` (`keras_vit.resize`'s
    tensor-op twins), so a call at another size agrees with a model built at
    that size and loaded from the same weights. At the stored grid the
    tables are used as stored.

    Args:
        grid_size: (gh, gw), the patch grid of the model.
        num_prefix_tokens: tokens before the grid (1 with a class token, else 0).
        kind: "learned_1d" or "learned_2d".
        resize_method: see `keras_vit.resize.RESIZE_METHODS`.
        initializer: initializer of the tables (the reference: normal, stddev 0.02).

    Shapes:
        input: [batch, prefix + gh * gw, D]; `patches` (optional): any
        [batch, gh', gw', ...] tensor whose axes 1 and 2 are the call's grid
        (the patch embeddings before flattening); the input then holds
        prefix + gh' * gw' tokens.
        output: the same as the input.
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int],
        num_prefix_tokens: int = 1,
        kind: str = "learned_1d",
        resize_method: str = "reference",
        initializer: str | keras.initializers.Initializer | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        tables = tuple(name for name, spec in position_embeddings.KINDS.items() if spec.has_table)
        if kind not in tables:
            raise ValueError(f"AddPositionEmbedding kind must be one of {tables} (kinds with a table), got {kind!r}.")
        if resize_method not in RESIZE_METHODS:
            raise ValueError(f"Unknown resize_method {resize_method!r}; expected one of {RESIZE_METHODS}.")
        self.grid_size = to_pair(grid_size, "grid_size")
        self.num_prefix_tokens = num_prefix_tokens
        self.kind = kind
        self.resize_method = resize_method
        self.initializer = keras.initializers.get(initializer or keras.initializers.RandomNormal(stddev=0.02))

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    def build(self, inputs_shape, patches_shape=None):
        if len(inputs_shape) != 3 or (patches_shape is None and inputs_shape[1] not in (None, self.num_tokens)):
            raise ValueError(
                f"AddPositionEmbedding for grid {self.grid_size} with {self.num_prefix_tokens} prefix token(s) "
                f"expects [batch, {self.num_tokens}, hidden] inputs, got shape {inputs_shape}."
            )
        hidden = inputs_shape[-1]
        if self.kind == "learned_1d":
            self.pos_embedding = self.add_weight(
                name="pos_embedding", shape=(1, self.num_tokens, hidden), initializer=self.initializer
            )
            return
        if hidden % 2:
            raise ValueError(f"learned_2d position embeddings need an even hidden size, got {hidden}.")
        self.row_embedding = self.add_weight(
            name="row_embedding", shape=(self.grid_size[0], hidden // 2), initializer=self.initializer
        )
        self.column_embedding = self.add_weight(
            name="column_embedding", shape=(self.grid_size[1], hidden // 2), initializer=self.initializer
        )
        if self.num_prefix_tokens:
            self.prefix_embedding = self.add_weight(
                name="prefix_embedding", shape=(self.num_prefix_tokens, hidden), initializer=self.initializer
            )

    def embedding(self, grid_size=None) -> keras.KerasTensor:
        """The full [1, prefix + gh * gw, D] table, in float32 (the variables' dtype).

        `grid_size`: (gh, gw) of the call, ints or scalar tensors; the stored
        tables are resized to it in the graph. None: the layer's `grid_size`.
        """
        resize = grid_size is not None and not (
            all(isinstance(g, int) for g in grid_size) and tuple(grid_size) == self.grid_size
        )
        gh, gw = grid_size if resize else self.grid_size
        if self.kind == "learned_1d":
            if not resize:
                return self.pos_embedding
            prefix, grid = self.pos_embedding[:, : self.num_prefix_tokens], self.pos_embedding[0, self.num_prefix_tokens :]
            grid = ops.reshape(grid, (*self.grid_size, -1))
            grid = ops.reshape(resize_grid_op(grid, (gh, gw), self.resize_method), (1, gh * gw, -1))
            return ops.concatenate([ops.cast(prefix, grid.dtype), grid], axis=1)
        rows, cols = self.row_embedding, self.column_embedding
        if resize:
            rows, cols = (ops.cast(t, "float32") for t in (rows, cols))
            rows, cols = resize_table_op(rows, gh, self.resize_method), resize_table_op(cols, gw, self.resize_method)
        half = self.row_embedding.shape[-1]
        rows = ops.broadcast_to(rows[:, None, :], (gh, gw, half))
        cols = ops.broadcast_to(cols[None, :, :], (gh, gw, half))
        grid = ops.reshape(ops.concatenate([rows, cols], axis=-1), (gh * gw, 2 * half))
        if self.num_prefix_tokens:
            grid = ops.concatenate([ops.cast(self.prefix_embedding, grid.dtype), grid], axis=0)
        return grid[None]

    def call(self, inputs, patches=None):
        grid = None
        if patches is not None:
            static, dynamic = patches.shape[1:3], ops.shape(patches)[1:3]
            grid = tuple(s if s is not None else d for s, d in zip(static, dynamic))
        return inputs + ops.cast(self.embedding(grid), inputs.dtype)

    def compute_output_shape(self, inputs_shape, patches_shape=None):
        return inputs_shape

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[GRID_KEY] = np.asarray(self.grid_size, np.int64)

    def load_own_variables(self, store):
        """Loads stored tables, resizing those saved for another grid (`.keras`, `.weights.h5`)."""
        keys = set(store.keys())
        grid = tuple(int(g) for g in np.asarray(store[GRID_KEY])) if GRID_KEY in keys else None
        if len(keys - {GRID_KEY}) != len(self.weights):
            raise ValueError(
                f"Layer {self.name!r} expects {len(self.weights)} position embedding variable(s), "
                f"the file holds {len(keys - {GRID_KEY})}."
            )
        self.assign_embeddings([np.asarray(store[str(i)]) for i in range(len(self.weights))], grid)

    def assign_embeddings(self, values: list[np.ndarray], stored_grid: tuple[int, int] | None = None) -> None:
        """Assigns tables in `self.weights` order, resizing each from `stored_grid` (None: inferred) to this layer's.

        Every table is checked and resized before any is assigned.
        """
        for variable, value in zip(self.weights, self.fitted(values, stored_grid)):
            variable.assign(value)

    def fitted(self, values: list[np.ndarray], stored_grid: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Stored tables (in `self.weights` order) resized to this layer's grid; ValueError if one cannot be."""
        if len(values) != len(self.weights):
            raise ValueError(f"Layer {self.name!r} expects {len(self.weights)} position embedding table(s), got {len(values)}.")
        return [self._fit(variable, np.asarray(value), stored_grid) for variable, value in zip(self.weights, values)]

    def _fit(self, variable, value: np.ndarray, stored_grid: tuple[int, int] | None) -> np.ndarray:
        name = variable.path
        expected = tuple(variable.shape)
        is_1d = variable is getattr(self, "pos_embedding", None)
        if value.shape == expected and (not is_1d or stored_grid in (None, self.grid_size)):
            return value
        if value.ndim != len(expected) or value.shape[-1] != expected[-1]:
            raise ValueError(f"Cannot load {name}: expected shape {expected}, found {value.shape}.")
        if is_1d:
            if value.shape[1] <= self.num_prefix_tokens:
                raise ValueError(f"Cannot load {name}: expected shape {expected}, found {value.shape}.")
            return resize_position_embedding(
                value, self.num_prefix_tokens, self.grid_size, old_grid=stored_grid, method=self.resize_method
            )
        if variable is getattr(self, "prefix_embedding", None):
            raise ValueError(f"Cannot load {name}: expected shape {expected}, found {value.shape}.")
        return resize_table(value, expected[0], self.resize_method)  # a row or column table of the 2-D kind

    def get_config(self):
        config = super().get_config()
        config.update(
            grid_size=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            kind=self.kind,
            resize_method=self.resize_method,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config
