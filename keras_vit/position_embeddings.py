"""The kinds of position embedding (the paper's appendix D.4, Table 8): one spec each, read by every other module.

A kind says what it learns and where: learned tables added to the tokens
(`AddPositionEmbedding`, which a placement may put before every block), or
logits inside every block's attention. The model's validation, its builder,
the checkpoint layout, `.npz` writing, the analyses, the run configuration
and the studies all ask the spec, as big_vision's `get_posemb` is the one
place that knows its kinds. Adding a kind is a spec here (and its layer).
Importable without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Collection


@dataclasses.dataclass(frozen=True)
class PositionEmbeddingKind:
    """One kind of position embedding.

    Attributes:
        name: the `position_embedding` value.
        table_variables: the variables of its learned table (an
            `AddPositionEmbedding` of this kind), as checkpoints name them;
            empty for a kind with no table to add to the tokens.
        in_attention: learned logits inside each block's attention
            (`MultiHeadSelfAttention(relative_positions=True)`).
        no_table: for a kind without tables, what it has instead (the reason
            a placement or the similarity analysis does not apply).
        fixed_grid: why it cannot run at another grid (any image size),
            or None when its tables resize.
    """

    name: str
    table_variables: tuple[str, ...] = ()
    in_attention: bool = False
    no_table: str | None = None
    fixed_grid: str | None = None

    @property
    def has_table(self) -> bool:
        """Whether it adds a learned table to the tokens (and a placement may move that table)."""
        return bool(self.table_variables)

    @property
    def table_tells_grid(self) -> bool:
        """Whether its stored table alone says a square grid's size (a 1-D table's length, a 2-D table's rows)."""
        return self.has_table


KINDS: dict[str, PositionEmbeddingKind] = {
    kind.name: kind
    for kind in (
        PositionEmbeddingKind("none", no_table="no position information at all"),
        PositionEmbeddingKind("learned_1d", table_variables=("pos_embedding",)),
        PositionEmbeddingKind("learned_2d", table_variables=("row_embedding", "column_embedding", "prefix_embedding")),
        PositionEmbeddingKind(
            "relative",
            in_attention=True,
            no_table="its relative positions are in every block's attention already",
            fixed_grid="its table holds one embedding per raster offset of the stored grid, and the same offset is "
                       "another pair of patches on another grid",
        ),
    )
}


def get(name: str) -> PositionEmbeddingKind:
    """The spec of `name`; a ValueError listing the kinds for an unknown one."""
    if name not in KINDS:
        raise ValueError(f"Unknown position_embedding {name!r}; expected one of {tuple(KINDS)}.")
    return KINDS[name]


def detect(table_variables: Collection[str], attention_variables: Collection[str]) -> str:
    """The kind whose variables a checkpoint holds: its position tables' variable names, and those of block 0's
    attention (where an in-attention kind keeps its table)."""
    if "relative_embedding" in attention_variables:
        return next(kind.name for kind in KINDS.values() if kind.in_attention)
    if not table_variables:
        return "none"
    for kind in KINDS.values():
        if kind.has_table and kind.table_variables[0] in table_variables \
                and set(table_variables) <= set(kind.table_variables):
            return kind.name
    raise ValueError(f"position embedding variables {sorted(table_variables)} are of no known kind ({tuple(KINDS)})")
