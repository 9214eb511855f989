"""The 19 tasks of VTAB-1k (Zhai et al. 2019), as google-research/task_adaptation reads them from tensorflow-datasets.

Each task names its tfds dataset, its train, validation and test splits (the
task_adaptation `data/<dataset>.py` definitions, percentages included), its
label (some are derived: CLEVR's object count, KITTI's closest-vehicle
distance bins, dSprites' binned position and orientation) and its group.
The tfds versions are task_adaptation's: `kitti:3.1.0` is pinned as it pins
it (3.2.0 updated the devkit, 3.3.0 added occlusion labels). One is no longer
in tensorflow-datasets: task_adaptation reads `oxford_iiit_pet:3.*.*`, and
tfds now has 4.0.0 alone, which adds head bounding boxes, fixes corrupt images
and moves the download URL; the classes and splits are the same.
VTAB-1k trains on the first 800 examples of the train split ("train800"),
selects on the first 200 of the validation split ("val200"), retrains on both
("train800val200") and tests on the whole test split. `keras_vit.training.datasets`
serves them as the datasets "vtab:NAME".
"""

from __future__ import annotations

import dataclasses
from typing import Callable

#: VTAB-1k's split names -> (the task's split, examples taken from its start).
VTAB_SPLITS = {"train800": ("train", 800), "val200": ("val", 200)}
GROUPS = ("Natural", "Specialized", "Structured")


def _label(example):
    return example["label"]


def _image(example):
    return example["image"]


def _clevr_count(example):
    import tensorflow as tf

    return tf.size(example["objects"]["size"]) - 3  # 3 to 10 objects: 8 classes


def _binned(value, thresholds):
    """The index of the last threshold below `value` (task_adaptation's binning)."""
    import tensorflow as tf

    return tf.reduce_max(tf.where(tf.constant(thresholds, tf.float32) - tf.cast(value, tf.float32) < 0))


def _clevr_distance(example):
    import tensorflow as tf

    return _binned(tf.reduce_min(example["objects"]["pixel_coords"][:, 2]), [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])


def _kitti_vehicle_distance(example):
    import tensorflow as tf

    vehicles = tf.where(example["objects"]["type"] < 3)  # car, van, truck
    depth = tf.gather(example["objects"]["location"][:, 2], vehicles)
    depth = tf.concat([tf.reshape(depth, [-1]), tf.constant([1000.0])], axis=0)  # no vehicle: the last class
    return _binned(tf.reduce_min(depth), [-100.0, 8.0, 20.0, 999.0])


def _dsprites(attribute: str, original_classes: int):
    def label(example):
        import tensorflow as tf

        factor = original_classes / 16.0
        return tf.cast(tf.math.floordiv(tf.cast(example[attribute], tf.float32), factor), tf.int64)

    return label


def _gray_to_rgb(scale: float = 1.0):
    def image(example):
        import tensorflow as tf

        return tf.cast(tf.tile(example["image"], [1, 1, 3]), tf.float32) * scale

    return image


def _attribute(name: str):
    return lambda example: example[name]


@dataclasses.dataclass(frozen=True)
class Task:
    """One VTAB task: a tfds dataset, its splits and its label."""

    name: str
    group: str
    tfds: str
    num_classes: int
    train: str = "train"
    val: str = "validation"
    test: str = "test"
    label: Callable = _label
    image: Callable = _image
    reads: tuple[str, ...] = ("image", "label")  # the tfds features `label` and `image` use

    def split(self, split: str) -> tuple[str, int | None]:
        """(the tfds split string, examples taken from its start or None for all) of a VTAB-1k split name."""
        if split in VTAB_SPLITS:
            which, count = VTAB_SPLITS[split]
            return getattr(self, which), count
        if split == "test":
            return self.test, None
        raise ValueError(f"VTAB task {self.name!r} has the splits train800, val200, train800val200 and test, not {split!r}.")


TASKS: dict[str, Task] = {task.name: task for task in (
    # Natural
    Task("caltech101", "Natural", "caltech101:3.*.*", 102, train="train[:90%]", val="train[90%:]"),
    Task("cifar100", "Natural", "cifar100:3.*.*", 100, train="train[:90%]", val="train[90%:]"),
    Task("dtd", "Natural", "dtd:3.*.*", 47),
    Task("oxford_flowers102", "Natural", "oxford_flowers102:2.*.*", 102),
    Task("oxford_iiit_pet", "Natural", "oxford_iiit_pet:4.*.*", 37, train="train[:80%]", val="train[80%:]"),
    Task("sun397", "Natural", "sun397/tfds:4.*.*", 397),
    Task("svhn", "Natural", "svhn_cropped:3.*.*", 10, train="train[:90%]", val="train[90%:]"),
    # Specialized
    Task("patch_camelyon", "Specialized", "patch_camelyon:2.*.*", 2),
    Task("eurosat", "Specialized", "eurosat/rgb:2.*.*", 10, train="train[:60%]", val="train[60%:80%]", test="train[80%:]"),
    Task("resisc45", "Specialized", "resisc45:3.*.*", 45, train="train[:60%]", val="train[60%:80%]", test="train[80%:]"),
    Task("diabetic_retinopathy", "Specialized", "diabetic_retinopathy_detection/btgraham-300:3.*.*", 5),
    # Structured
    Task("clevr_count", "Structured", "clevr:3.*.*", 8, train="train[:90%]", val="train[90%:]", test="validation",
         label=_clevr_count, reads=("image", "objects")),
    Task("clevr_distance", "Structured", "clevr:3.*.*", 6, train="train[:90%]", val="train[90%:]", test="validation",
         label=_clevr_distance, reads=("image", "objects")),
    Task("dmlab", "Structured", "dmlab:2.0.1", 6),
    Task("kitti_distance", "Structured", "kitti:3.1.0", 4, label=_kitti_vehicle_distance, reads=("image", "objects")),
    Task("dsprites_location", "Structured", "dsprites:2.*.*", 16, train="train[:80%]", val="train[80%:90%]",
         test="train[90%:]", label=_dsprites("label_x_position", 32), image=_gray_to_rgb(255.0),
         reads=("image", "label_x_position")),
    Task("dsprites_orientation", "Structured", "dsprites:2.*.*", 16, train="train[:80%]", val="train[80%:90%]",
         test="train[90%:]", label=_dsprites("label_orientation", 40), image=_gray_to_rgb(255.0),
         reads=("image", "label_orientation")),
    Task("smallnorb_azimuth", "Structured", "smallnorb:2.*.*", 18, train="train", val="test[:50%]", test="test[50%:]",
         label=_attribute("label_azimuth"), image=_gray_to_rgb(), reads=("image", "label_azimuth")),
    Task("smallnorb_elevation", "Structured", "smallnorb:2.*.*", 9, train="train", val="test[:50%]", test="test[50%:]",
         label=_attribute("label_elevation"), image=_gray_to_rgb(), reads=("image", "label_elevation")),
)}
