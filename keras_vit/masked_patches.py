"""The data side of masked patch prediction (paper section 4.6, appendix B.1.2): which patches are corrupted and how,
and the 3-bit mean colour each corrupted patch predicts. Runs in the tf.data pipeline on batches of pixels; TensorFlow
is imported when it first runs, so that the model side imports on any backend."""

from __future__ import annotations

import dataclasses

from keras_vit._lazy import LazyModule

tf = LazyModule("tensorflow")

#: The paper's corruption: half of the patch embeddings; of those, 80% [mask], 10% another patch, 10% kept.
CORRUPTION_RATE = 0.5
MASK_SHARE = 0.8
RANDOM_SHARE = 0.1
#: Bits per colour channel of the target: 3 bits, 512 mean colours.
COLOR_BITS = 3

#: The model input names of a masked patch batch.
IMAGES, SOURCE, MASKED = "images", "source", "masked"


def color_classes(pixels, patch_stride: tuple[int, int], bits: int = COLOR_BITS):
    """The quantised mean colour of every patch: [batch, H, W, 3] pixels in [0, 255] -> int32 [batch, gh * gw].

    Each channel's mean over the patch's `patch_stride` pixels is cut into
    2^bits equal bins of [0, 256); the class is r * 4^bits + g * 2^bits + b.
    """
    pixels = tf.convert_to_tensor(pixels, tf.float32)
    means = tf.nn.avg_pool2d(pixels, patch_stride, patch_stride, "VALID")  # [batch, gh, gw, 3]
    levels = 2**bits
    quantised = tf.clip_by_value(tf.cast(tf.floor(means * (levels / 256.0)), tf.int32), 0, levels - 1)
    classes = quantised[..., 0] * levels * levels + quantised[..., 1] * levels + quantised[..., 2]
    return tf.reshape(classes, (tf.shape(pixels)[0], -1))


@dataclasses.dataclass(frozen=True)
class PatchCorruption:
    """Draws a batch's corruption and targets; `MaskedPatchPrediction.corruption()` makes one for a model.

    Per image, exactly `round(rate * G)` of the G patches are corrupted;
    each corrupted patch is replaced by the [mask] embedding with
    probability `mask_share`, by another patch of the same image with
    `random_share`, and kept as it is otherwise. Every corrupted patch, kept
    or not, predicts its mean colour; the loss weighs only those.
    """

    grid_size: tuple[int, int]
    patch_stride: tuple[int, int]
    rate: float = CORRUPTION_RATE
    mask_share: float = MASK_SHARE
    random_share: float = RANDOM_SHARE
    color_bits: int = COLOR_BITS

    def plan(self, batch_size, seed):
        """(source int32 [batch, G], masked bool [batch, G], corrupted bool [batch, G]) from a stateless `seed` [2]."""
        patches = self.grid_size[0] * self.grid_size[1]
        if patches < 2:
            raise ValueError("Masked patch prediction needs at least 2 patches.")
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        shape = (batch_size, patches)
        order = tf.argsort(tf.random.stateless_uniform(shape, seeds[0]), axis=-1)
        rank = tf.argsort(order, axis=-1)  # each patch's place in a random order
        corrupted = rank < int(round(self.rate * patches))
        kind = tf.random.stateless_uniform(shape, seeds[1])
        masked = corrupted & (kind < self.mask_share)
        replaced = corrupted & (kind >= self.mask_share) & (kind < self.mask_share + self.random_share)
        positions = tf.broadcast_to(tf.range(patches), shape)
        other = (positions + 1 + tf.random.stateless_uniform(shape, seeds[2], 0, patches - 1, tf.int32)) % patches
        return tf.where(replaced, other, positions), masked, corrupted

    def __call__(self, inputs, pixels, seed):
        """A batch of model inputs and its [0, 255] pixels -> ({images, source, masked 0/1}, colour classes, weights)."""
        source, masked, corrupted = self.plan(tf.shape(pixels)[0], seed)
        targets = color_classes(pixels, self.patch_stride, self.color_bits)
        features = {IMAGES: inputs, SOURCE: source, MASKED: tf.cast(masked, tf.int32)}  # no bool: strategies sum inputs
        return features, targets, tf.cast(corrupted, tf.float32)
