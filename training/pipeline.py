"""tf.data input pipelines with the paper's preprocessing, and keras-cv augmentation behind flags."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from keras_vit.preprocessing import eval_resize, preprocess_input
from keras_vit.training.choices import TRAIN_CROPS

AUTOTUNE = tf.data.AUTOTUNE
#: About how many examples of the stream one shuffled chunk of passes holds: a resume reads past at most that many.
_CHUNK_POSITIONS = 100_000
_CHUNK_SEEDS = 1_000_003  # chunk c of seed s shuffles with the op seed s * _CHUNK_SEEDS + c (mod 2**31)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How images become model inputs.

    Training: an Inception crop (random area 5%-100%, aspect 3/4-4/3), or a
    resize to `image_size`, zero padding by 1/8 of it and a random crop back
    ("random": a translation at the evaluation's scale, for small images such
    as digits), or a plain resize ("resize": VTAB, as task_adaptation trains,
    where a crop can change the label: counts, distances, positions), then a
    horizontal flip where the dataset allows it.
    Evaluation: a resize to `image_size / crop_fraction` and a center crop
    (`crop_fraction=1`: a plain resize, as the reference evaluates;
    `keras_vit.preprocessing` owns it, and the serving signature uses it too).
    Pixels end in [-1, 1], or stay in [0, 255] for a model that scales them
    itself (`scale=False`). `Preprocessing.for_model` reads all of this from
    the model.
    """

    image_size: tuple[int, int]
    num_classes: int
    scale: bool = True
    mean: tuple[float, ...] | None = None  # the model's pixel statistics (None: the reference's [-1, 1])
    std: tuple[float, ...] | None = None
    train_crop: str = "inception"  # or "random", or "resize" (TRAIN_CROPS)
    crop_fraction: float = 1.0
    flip: bool = True
    randaugment: tuple[int, float] | None = None  # (augmentations per image, magnitude in [0, 1])
    mixup_alpha: float = 0.0

    def __post_init__(self):
        if self.train_crop not in TRAIN_CROPS:
            raise ValueError(f"train_crop {self.train_crop!r}: expected one of {TRAIN_CROPS}.")

    @classmethod
    def for_model(cls, model, **options) -> "Preprocessing":
        """The preprocessing a keras_vit model expects: its size, classes, evaluation crop and scaling."""
        return cls(
            **{
                "image_size": model.image_size,
                "num_classes": model.classes,
                "scale": not model.include_preprocessing,
                "mean": getattr(model, "pixel_mean", None),
                "std": getattr(model, "pixel_std", None),
                "crop_fraction": model.crop_fraction,
                **options,
            }
        )

    def to_model_inputs(self, pixels):
        """[0, 255] pixels -> what the model takes."""
        return preprocess_input(pixels, self.mean, self.std) if self.scale else tf.cast(pixels, tf.float32)

    def train_example(self, image, label, seed):
        """[0, 255] pixels augmented as a function of the stateless `seed` [2] alone, one-hot label."""
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = tf.convert_to_tensor(image)
        if self.train_crop == "resize":
            image = tf.image.resize(image, self.image_size)
        elif self.train_crop == "inception":
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image),
                bounding_boxes=tf.zeros([1, 0, 4]),
                seed=crop_seed,
                area_range=(0.05, 1.0),
                aspect_ratio_range=(3 / 4, 4 / 3),
                min_object_covered=0.0,
                use_image_if_no_bounding_boxes=True,
            )
            image = tf.image.resize(tf.slice(image, begin, size), self.image_size)
        else:  # "random"
            height, width = self.image_size
            image = tf.image.resize(image, self.image_size)
            image = tf.image.pad_to_bounding_box(image, height // 8, width // 8, height * 5 // 4, width * 5 // 4)
            image = tf.image.stateless_random_crop(image, (height, width, 3), seed=crop_seed)
        if self.flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return tf.clip_by_value(image, 0.0, 255.0), tf.one_hot(label, self.num_classes)

    def eval_example(self, image, label):
        """[0, 255] pixels at the model's size (resized and cropped as `keras_vit.preprocessing` evaluates), one-hot label."""
        return eval_resize(image, self.image_size, self.crop_fraction), tf.one_hot(label, self.num_classes)


#: What a batch trains: `task(model inputs, [0, 255] pixels, stateless seed [2]) -> (inputs, targets, weights)`,
#: e.g. `keras_vit.MaskedPatchPrediction.corruption()`; None: classification, (inputs, one-hot labels).
Task = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple] | None


def train_dataset(
    examples: tf.data.Dataset,
    preprocessing: Preprocessing,
    batch_size: int,
    steps: int,
    seed: int = 0,
    cache: bool = True,
    shuffle_buffer: int = 10_000,
    task: Task = None,
    start_step: int = 0,
) -> tf.data.Dataset:
    """`steps` shuffled, augmented batches of (model inputs, one-hot labels), or of what `task` makes of them.

    The stream is a function of `seed` and the examples' order alone, so two
    runs see the same batches: the passes over the examples come in chunks of
    about `_CHUNK_POSITIONS` examples (one pass for a larger dataset), chunk c
    shuffled from a seed of (seed, c), each of its passes in an order of its
    own; the example at position i of the stream is augmented with the
    stateless seed (seed, i), and batch k holds positions [k * batch_size,
    (k + 1) * batch_size). `start_step` begins at batch `start_step`, where a
    resumed run left off, without augmenting the batches before it (it reads
    past at most a chunk). RandAugment and MixUp (keras-cv layers with a
    random state of their own) run in order, so an uninterrupted run repeats;
    after a resume they draw afresh.
    """
    count = int(examples.cardinality())
    if count <= 0:
        raise ValueError(f"train_dataset needs a finite dataset of known length; this one's cardinality is {count}.")
    if cache:
        examples = examples.cache()
    buffer = min(shuffle_buffer, count)
    start, stop = start_step * batch_size, (start_step + steps) * batch_size

    passes = max(1, _CHUNK_POSITIONS // count)  # per chunk
    positions = passes * count

    def chunk(c: int) -> tf.data.Dataset:  # stream positions c * positions ... (c + 1) * positions - 1
        order = examples.shuffle(buffer, seed=(seed * _CHUNK_SEEDS + c) % 2**31, reshuffle_each_iteration=True)
        return order.repeat(passes).enumerate(start=c * positions)

    first = start // positions
    ds = _concatenate([chunk(c) for c in range(first, -(-stop // positions))]).skip(start - first * positions)
    ds = ds.map(lambda i, example: preprocessing.train_example(*example, tf.stack([tf.constant(seed, tf.int64), i])),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).take(steps)
    if preprocessing.randaugment or preprocessing.mixup_alpha:
        ds = ds.map(_batch_augmentation(preprocessing, seed))  # in order: the layers draw from a state of their own
    return _with_sharding(_to_model_inputs(ds, preprocessing, task, seed, start_step)).prefetch(AUTOTUNE)


def _concatenate(datasets: list[tf.data.Dataset]) -> tf.data.Dataset:
    """One after the other, as a balanced tree (an element passes log2(n) concatenations, not n)."""
    while len(datasets) > 1:
        datasets = [a.concatenate(b) for a, b in zip(datasets[::2], datasets[1::2])] + datasets[len(datasets) // 2 * 2:]
    return datasets[0]


def eval_dataset(
    examples: tf.data.Dataset, preprocessing: Preprocessing, batch_size: int, cache: bool = True, task: Task = None
) -> tf.data.Dataset:
    """Deterministic batches of (model inputs, one-hot labels), or of what `task` makes of them, every example once."""
    ds = examples.map(preprocessing.eval_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    return _with_sharding(_to_model_inputs(ds.batch(batch_size), preprocessing, task, seed=0)).prefetch(AUTOTUNE)


def _to_model_inputs(
    ds: tf.data.Dataset, preprocessing: Preprocessing, task: Task, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """Batches of ([0, 255] pixels, labels) -> what the model trains on; a task draws from (seed, batch number),
    the first batch being number `start_step`."""
    if task is None:
        return ds.map(lambda pixels, labels: (preprocessing.to_model_inputs(pixels), labels), num_parallel_calls=AUTOTUNE)

    def batch(step, example):
        pixels, _ = example
        return task(preprocessing.to_model_inputs(pixels), pixels, tf.stack([tf.constant(seed, tf.int64), step]))

    return ds.enumerate(start=start_step).map(batch, num_parallel_calls=AUTOTUNE, deterministic=True)


def _batch_augmentation(preprocessing: Preprocessing, seed: int):
    """RandAugment and MixUp (keras-cv) on a batch of [0, 255] images."""
    layers = []
    if preprocessing.randaugment:
        import keras_cv

        count, magnitude = preprocessing.randaugment
        layers.append(
            keras_cv.layers.RandAugment(
                value_range=(0, 255), augmentations_per_image=count, magnitude=magnitude, seed=seed
            )
        )
    mixup = None
    if preprocessing.mixup_alpha > 0:
        import keras_cv

        mixup = keras_cv.layers.MixUp(alpha=preprocessing.mixup_alpha, seed=seed)

    def augment(images, labels):
        for layer in layers:
            images = layer(images, training=True)
        if mixup is not None:
            mixed = mixup({"images": images, "labels": labels}, training=True)
            images, labels = mixed["images"], mixed["labels"]
        return images, labels

    return augment


def _with_sharding(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Shards by data under multi-worker strategies (in-memory sources have no files to shard)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)
