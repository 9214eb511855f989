"""FlexiViT's patch-embedding resampling (Beyer et al., CVPR 2023): a kernel trained at one patch size, used at another.

Let B be the linear map that resizes a patch from the stored size p to the
new size p'. The resampled kernel w' is the one whose token on the resized
patch equals the stored kernel's token on the patch itself, <B x, w'> =
<x, w> for every x; that is B^T w' = w, solved in the least-norm sense:
w' = pinv(B^T) w (big_vision's `resample_patchemb`,
`models/proj/flexi/vit.py`). Upsampling (p' > p) inverts exactly; a smaller
patch loses what it cannot represent.

B is built here in NumPy, one separable axis at a time, so that the model core
needs no TensorFlow:

- "bilinear" (default): big_vision's, whose B is `tf.image.resize(...,
  method="bilinear")` (half-pixel centres, no antialiasing; the test checks
  the two agree).
- "bicubic": timm's `resample_patch_embed`, whose B is torch's
  `F.interpolate(..., mode="bicubic", antialias=True)` (Keys' cubic with
  a = -0.5, widened when downsampling, weights normalised).
"""

from __future__ import annotations

import numpy as np

#: The resize behind B: "bilinear" (big_vision's FlexiViT) or "bicubic" (timm's).
PATCH_RESAMPLE_METHODS = ("bilinear", "bicubic")


def resample_patch_embedding(kernel: np.ndarray, new_size: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """A patch-embedding kernel [ph, pw, channels, D] resampled to [new_ph, new_pw, channels, D]."""
    if method not in PATCH_RESAMPLE_METHODS:
        raise ValueError(f"Unknown patch resampling {method!r}; expected one of {PATCH_RESAMPLE_METHODS}.")
    kernel = np.asarray(kernel)
    old_size = tuple(kernel.shape[:2])
    if old_size == tuple(new_size):
        return kernel
    resize = np.kron(resize_matrix(old_size[0], new_size[0], method), resize_matrix(old_size[1], new_size[1], method))
    flat = np.asarray(kernel, np.float64).reshape(old_size[0] * old_size[1], -1)
    resampled = np.linalg.pinv(resize.T) @ flat  # [new_ph * new_pw, channels * D]
    return resampled.reshape(*new_size, *kernel.shape[2:]).astype(kernel.dtype)


def resize_matrix(old: int, new: int, method: str = "bilinear") -> np.ndarray:
    """[new, old]: the 1-D resize of `method` from `old` to `new` samples, as a matrix (half-pixel centres)."""
    scale = new / old
    widen = max(1.0, 1.0 / scale) if method == "bicubic" else 1.0  # antialiasing: the kernel spans more samples
    centres = (np.arange(new) + 0.5) / scale - 0.5  # each output sample's position among the inputs
    distance = (np.arange(old)[None, :] - centres[:, None]) / widen
    weights = _triangle(distance) if method == "bilinear" else _keys_cubic(distance)
    return weights / weights.sum(axis=1, keepdims=True)  # at the borders: the samples that exist (clamping)


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))
