"""Compute, counted: the floating-point operations of a forward pass, as the paper's Table 6 and Fig. 5 report them.

Counted: every matrix product and convolution at 2 operations per
multiply-add: the patch embedding, each block's query/key/value and output
projections, the attention's two products (queries x keys, weights x
values), the relative-position logits where the model has them, the MLP, the
`pre_logits` layer, the head and, for hybrids, every convolution of the
ResNet. Left out (each at most a few percent of the total, and left out by
the paper's counts too): biases, LayerNorm and GroupNorm, softmax, GELU,
residual additions, weight standardisation, pooling and the position
embeddings' addition and resizing.
"""

from __future__ import annotations

import math

from keras_vit.utils import to_pair

#: Forward + backward of one training example, in forward passes (the backward pass costs twice the forward).
TRAINING_PASSES = 3


def flops(model, image_size: int | tuple[int, int] | None = None) -> int:
    """The floating-point operations of one image's forward pass through a `VisionTransformer` (or `ResNet`).

    Args:
        model: a `keras_vit.VisionTransformer`, hybrids included, or a `keras_vit.ResNet`.
        image_size: (h, w) or int; default the model's `image_size`. Any size
            that divides by the model's patch stride, also for a model built at
            one size (what it would cost there).

    Returns:
        An int: 2 x the multiply-adds (see the module docstring for what is counted).
    """
    h, w = to_pair(image_size if image_size is not None else model.image_size, "image_size")
    macs = 0
    if not hasattr(model, "encoder_blocks"):  # a ResNet: its convolutions, global pooling and the head
        _, macs = _resnet_macs(model.resnet.conv_root, model.resnet.stages, h, w)
        head = model.head
        return 2 * (macs + (head.kernel.shape[0] * head.kernel.shape[1] if head is not None else 0))
    if model.conv_root is not None:
        (h, w), macs = _resnet_macs(model.conv_root, model.resnet_stages, h, w)
    kernel = model.embedding.projection.kernel.shape  # (ph, pw, c_in, D)
    ph, pw, c_in, hidden = kernel
    if h % ph or w % pw:
        raise ValueError(f"An image of {image_size} gives a {h}x{w} map, which {ph}x{pw} patches do not tile.")
    patches = (h // ph) * (w // pw)
    macs += patches * ph * pw * c_in * hidden
    tokens = model.num_prefix_tokens + patches
    for block in model.encoder_blocks:
        mlp = block.mlp_dense_1.kernel.shape[1]
        macs += 4 * tokens * hidden * hidden  # query, key, value, out
        macs += 2 * tokens * tokens * hidden  # logits and the weighted sum, all heads together
        macs += 2 * tokens * hidden * mlp
        if block.attention.relative_positions:
            macs += tokens * block.attention.relative_embedding.shape[0] * hidden
    width = hidden
    if model.pre_logits is not None:
        macs += hidden * model.pre_logits.kernel.shape[1]
        width = model.pre_logits.kernel.shape[1]
    if model.head is not None:
        macs += width * model.head.kernel.shape[1]
    return 2 * macs


def _resnet_macs(conv_root, stages, h: int, w: int) -> tuple[tuple[int, int], int]:
    """((h, w) of the ResNet's output map, multiply-adds of its convolutions)."""
    h, w, macs = _conv(conv_root, h, w)
    h, w = math.ceil(h / 2), math.ceil(w / 2)  # the root's 3x3 max pool, stride 2, SAME
    for units in stages:
        for unit in units:
            unit_h, unit_w = h, w
            for conv in (unit.conv1, unit.conv2, unit.conv3):
                unit_h, unit_w, cost = _conv(conv, unit_h, unit_w)
                macs += cost
            if unit.conv_proj is not None:
                macs += _conv(unit.conv_proj, h, w)[2]
            h, w = unit_h, unit_w
    return (h, w), macs


def _conv(layer, h: int, w: int) -> tuple[int, int, int]:
    """(h, w, multiply-adds) after a SAME convolution of `layer` on an h x w map."""
    kh, kw, c_in, c_out = layer.kernel.shape
    sh, sw = to_pair(layer.strides, "strides")
    h, w = math.ceil(h / sh), math.ceil(w / sw)
    return h, w, h * w * kh * kw * c_in * c_out


def training_flops(model, examples: int, image_size: int | tuple[int, int] | None = None) -> int:
    """The compute of training on `examples` images: forward and backward, `TRAINING_PASSES` x `flops` each."""
    return TRAINING_PASSES * flops(model, image_size) * examples
