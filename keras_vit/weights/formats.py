"""The layouts in which ViT checkpoints were released, normalised to one before weights are mapped.

Layouts read (each a flat dict of '/'-joined parameter paths):

- google-research/vision_transformer's released files (pre-Linen flax names:
  `LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2`,
  `MlpBlock_3` in each encoder block, numbered across module types) and the
  AugReg files;
- the same model saved from flax Linen (`LayerNorm_0`,
  `MultiHeadDotProductAttention_0`, `LayerNorm_1`, `MlpBlock_0`: numbered per
  module type), as vit_jax's own fine-tuning writes them;
- flax optimizer checkpoints, whose parameters sit under `opt/target/`;
- big_vision's files: parameters under `params/` (in training checkpoints),
  the position embedding at the top level (`pos_embedding`, or in older
  files `Transformer/pos_embedding`) and added before the class token is
  prepended, so without a class-token row; optionally the encoder blocks
  stacked on a leading axis (`Transformer/encoderblock/...`, `scan=True`).

The canonical layout is the Linen one with the position embedding at
`Transformer/posembed_input/pos_embedding`, class-token row included: flax's
`convert_pre_linen` renumbering, which big_vision's `fix_old_checkpoints`
applies too. A big_vision class token gets a zero position-embedding row,
which computes exactly what big_vision computes.
"""

from __future__ import annotations

import collections
import math
import re

import numpy as np

POSITION_EMBEDDING = "Transformer/posembed_input/pos_embedding"
#: Inside an encoder block: Linen name -> the released files' pre-Linen name (what `save_npz` writes).
PRE_LINEN_BLOCK_NAMES = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
_NUMBERED = re.compile(r"^(.*)_(\d+)$")
_PREFIXES = ("params/", "opt/target/")


def normalize(params: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(the canonical-layout copy of a checkpoint in any of the module's layouts, canonical key -> key in the file)."""
    entries = {key: (key, value) for key, value in params.items()}
    entries = _strip_prefix(entries)
    if any(key.startswith("MAPHead_0/") or key == "probe" for key in entries):
        raise ValueError("it pools with big_vision's MAP head, which keras_vit does not implement.")
    entries = _unstack_scanned_blocks(entries)
    entries = _linen_names(entries)
    entries = _position_embedding_with_class_row(entries)
    return {key: value for key, (_, value) in entries.items()}, {key: source for key, (source, _) in entries.items()}


Entries = dict[str, tuple[str, np.ndarray]]  # key -> (key in the file, value)


def _strip_prefix(entries: Entries) -> Entries:
    """The parameters of a training checkpoint: those under `params/` or `opt/target/`, prefix removed."""
    for prefix in _PREFIXES:
        if any(key.startswith(prefix) for key in entries):
            return {key[len(prefix):]: entry for key, entry in entries.items() if key.startswith(prefix)}
    return dict(entries)


def _unstack_scanned_blocks(entries: Entries) -> Entries:
    """`Transformer/encoderblock/X` [depth, ...] -> `Transformer/encoderblock_{i}/X` (big_vision's scan layout)."""
    stacked = "Transformer/encoderblock/"
    out = {}
    for key, (source, value) in entries.items():
        if key.startswith(stacked):
            for depth, layer_value in enumerate(value):
                out[f"Transformer/encoderblock_{depth}/{key[len(stacked):]}"] = (f"{source}[{depth}]", layer_value)
        else:
            out[key] = (source, value)
    return out


def _linen_names(entries: Entries) -> Entries:
    """Renumbers `Name_N` path parts per module type among their siblings, as flax's `convert_pre_linen`."""
    siblings: dict[str, set[str]] = collections.defaultdict(set)
    for key in entries:
        parts = key.split("/")
        for depth in range(len(parts) - 1):
            siblings["/".join(parts[:depth])].add(parts[depth])
    renames: dict[str, dict[str, str]] = {}
    for parent, names in siblings.items():
        by_type: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
        for name in names:
            match = _NUMBERED.match(name)
            if match:
                by_type[match.group(1)].append((int(match.group(2)), name))
        renames[parent] = {
            name: f"{module}_{index}"
            for module, numbered in by_type.items()
            for index, (_, name) in enumerate(sorted(numbered))
        }
    out = {}
    for key, entry in entries.items():
        original = key.split("/")
        parts = [renames["/".join(original[:depth])].get(part, part) for depth, part in enumerate(original[:-1])]
        out["/".join(parts + original[-1:])] = entry
    return out


def _position_embedding_with_class_row(entries: Entries) -> Entries:
    """Moves big_vision's position embedding to the vit_jax key, with a zero row for the class token."""
    for key in ("pos_embedding", "Transformer/pos_embedding"):
        if key not in entries:
            continue
        source, posemb = entries.pop(key)
        rows = posemb.shape[1]
        has_class_row = math.isqrt(rows - 1) ** 2 == rows - 1 and math.isqrt(rows) ** 2 != rows
        if "cls" in entries and not has_class_row:
            posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
        entries[POSITION_EMBEDDING] = (source, posemb)
    return entries
