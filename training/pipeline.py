"""tf.data input pipelines with the paper's preprocessing, and keras-cv augmentation behind flags."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from keras_vit.preprocessing import eval_resize, preprocess_input

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How images become model inputs.

    Training: an Inception crop (random area 5%-100%, aspect 3/4-4/3), or a
    resize to `image_size`, zero padding by 1/8 of it and a random crop back
    ("random": a translation at the evaluation's scale, for small images such
    as digits), then a horizontal flip where the dataset allows it.
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
    train_crop: str = "inception"  # or "random"
    crop_fraction: float = 1.0
    flip: bool = True
    randaugment: tuple[int, float] | None = None  # (augmentations per image, magnitude in [0, 1])
    mixup_alpha: float = 0.0

    @classmethod
    def for_model(cls, model, **options) -> "Preprocessing":
        """The preprocessing a keras_vit model expects: its size, classes, evaluation crop and scaling."""
        return cls(
            **{
                "image_size": model.image_size,
                "num_classes": model.classes,
                "scale": not model.include_preprocessing,
                "crop_fraction": model.crop_fraction,
                **options,
            }
        )

    def to_model_inputs(self, pixels):
        """[0, 255] pixels -> what the model takes."""
        return preprocess_input(pixels) if self.scale else tf.cast(pixels, tf.float32)

    def train_example(self, image, label):
        image = tf.convert_to_tensor(image)
        if self.train_crop == "inception":
            begin, size, _ = tf.image.sample_distorted_bounding_box(
                tf.shape(image),
                bounding_boxes=tf.zeros([1, 0, 4]),
                area_range=(0.05, 1.0),
                aspect_ratio_range=(3 / 4, 4 / 3),
                min_object_covered=0.0,
                use_image_if_no_bounding_boxes=True,
            )
            image = tf.image.resize(tf.slice(image, begin, size), self.image_size)
        else:
            height, width = self.image_size
            image = tf.image.resize(image, self.image_size)
            image = tf.image.pad_to_bounding_box(image, height // 8, width // 8, height * 5 // 4, width * 5 // 4)
            image = tf.image.random_crop(image, (height, width, 3))
        if self.flip:
            image = tf.image.random_flip_left_right(image)
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
    seed: int = 0,
    cache: bool = True,
    shuffle_buffer: int = 10_000,
    task: Task = None,
) -> tf.data.Dataset:
    """Shuffled, augmented, repeated batches of (model inputs, one-hot labels), or of what `task` makes of them."""
    if cache:
        examples = examples.cache()
    ds = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(preprocessing.train_example, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(_batch_augmentation(preprocessing, seed), num_parallel_calls=AUTOTUNE)
    return _with_sharding(_to_model_inputs(ds, preprocessing, task, seed)).prefetch(AUTOTUNE)


def eval_dataset(
    examples: tf.data.Dataset, preprocessing: Preprocessing, batch_size: int, cache: bool = True, task: Task = None
) -> tf.data.Dataset:
    """Deterministic batches of (model inputs, one-hot labels), or of what `task` makes of them, every example once."""
    ds = examples.map(preprocessing.eval_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    return _with_sharding(_to_model_inputs(ds.batch(batch_size), preprocessing, task, seed=0)).prefetch(AUTOTUNE)


def _to_model_inputs(ds: tf.data.Dataset, preprocessing: Preprocessing, task: Task, seed: int) -> tf.data.Dataset:
    """Batches of ([0, 255] pixels, labels) -> what the model trains on; a task draws from (seed, batch number)."""
    if task is None:
        return ds.map(lambda pixels, labels: (preprocessing.to_model_inputs(pixels), labels), num_parallel_calls=AUTOTUNE)

    def batch(step, example):
        pixels, _ = example
        return task(preprocessing.to_model_inputs(pixels), pixels, tf.stack([tf.constant(seed, tf.int64), step]))

    return ds.enumerate().map(batch, num_parallel_calls=AUTOTUNE, deterministic=True)


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
