"""Small helpers shared across keras_vit."""

from __future__ import annotations


def to_pair(value: int | tuple[int, int] | list[int], what: str = "value") -> tuple[int, int]:
    """Returns (h, w) from an int or a pair of ints."""
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"Expected {what} to be an int or a pair of ints, got {value!r}.")
    return pair
