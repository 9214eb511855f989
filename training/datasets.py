"""Dataset sources: any tensorflow-datasets name, a folder of class sub-folders, scikit-learn's digits, or a VTAB-1k
task ("vtab:cifar100", `keras_vit.training.vtab_tasks`).

Every source yields `(image uint8 [H, W, 3], label int64)` examples and
describes itself with a `DatasetInfo`. A split may be sliced as tfds slices
them, `train[800:1000]` (absolute indices; tfds names take percentages too).
A folder's images are in a fixed random order (`FOLDER_ORDER_SEED`), not in
class order, so that its slices hold every class.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket

import numpy as np
import tensorflow as tf

#: The offline default: scikit-learn's 1,797 handwritten 8x8 digits, split 80/20 (stratified, seed 0).
DIGITS = "digits"
FOLDER_PREFIX = "folder:"
VTAB_PREFIX = "vtab:"
_SLICE = re.compile(r"^(\w+)\[(\d*):(\d*)\]$")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
#: The order of a folder's images: a permutation of their sorted paths with this seed.
FOLDER_ORDER_SEED = 0
#: The part of the training split that `minival` holds out for model selection where a dataset has no validation
#: split (big_vision holds out 2% of ImageNet's train as "minival"; 10% suits small datasets better).
MINIVAL_FRACTION = 0.1
MINIVAL = "minival"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    class_names: tuple[str, ...]
    num_examples: dict[str, int]
    flip: bool  # horizontal flips keep the label (not for digits)
    train_crop: str = "inception"  # "random" for tiny images, where a 5%-area crop leaves nothing; "resize": VTAB
    train_split: str = "train"
    eval_split: str = "test"
    validation_split: str | None = None  # held out for model selection; None: the dataset has none

    def count(self, split: str) -> int:
        """Examples in `split`, a slice `name[a:b]` of one included; 0 for a split it does not have."""
        if split in self.num_examples:
            return self.num_examples[split]
        base, start, stop = parse_split(split)
        return len(range(self.num_examples.get(base, 0))[start:stop])

    def check_split(self, split: str, flag: str) -> int:
        """The examples in `split`; a ValueError naming `flag` when it has none (an unknown split, an empty slice)."""
        count = self.count(split)
        if count:
            return count
        base = parse_split(split)[0]
        if base not in self.num_examples:
            raise ValueError(f"{flag} {split}: {self.name} has no split {base!r} (it has {', '.join(self.num_examples)}).")
        raise ValueError(f"{flag} {split}: the split {split} of {self.name} is empty ({base} has "
                         f"{self.num_examples[base]:,} examples).")


def parse_split(split: str) -> tuple[str, int | None, int | None]:
    """("train", 800, 1000) of "train[800:1000]"; (split, None, None) of a plain split name."""
    match = _SLICE.match(split)
    if not match:
        return split, None, None
    return match.group(1), *(int(v) if v else None for v in match.group(2, 3))


def describe(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Checks that a dataset exists (before any work) and describes it; ValueError otherwise."""
    if name == DIGITS:
        images, labels = _digits_arrays()
        n_test = len(_digits_split(labels)[1])
        return DatasetInfo(DIGITS, 10, tuple(str(i) for i in range(10)), {"train": len(labels) - n_test, "test": n_test}, flip=False, train_crop="random")
    if name.startswith(VTAB_PREFIX):
        return _describe_vtab(name, data_dir)
    if name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX):]
        splits = _folder_splits(root)
        classes = _folder_classes(os.path.join(root, next(iter(splits))) if splits else root)
        if splits:
            counts = {s: len(_folder_files(os.path.join(root, s), classes)[0]) for s in splits}
            eval_split = "test" if "test" in splits else "validation" if "validation" in splits else next(iter(splits))
            return DatasetInfo(name, len(classes), tuple(classes), counts, flip=True, eval_split=eval_split,
                               validation_split=_validation(splits, eval_split))
        files, _ = _folder_files(root, classes)
        n_eval = len(_holdout(len(files)))
        return DatasetInfo(name, len(classes), tuple(classes), {"train": len(files) - n_eval, "test": n_eval}, flip=True)
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as error:
        raise ValueError(
            f"Unknown dataset {name!r}: not '{DIGITS}', not 'folder:PATH', and not a tensorflow-datasets name "
            f"({str(error).splitlines()[0]})."
        ) from error
    if not builder.is_prepared():
        _download_and_prepare(builder, name)
    label = builder.info.features["label"]
    splits = {s: info.num_examples for s, info in builder.info.splits.items()}
    eval_split = "test" if "test" in splits else "validation"
    return DatasetInfo(name, label.num_classes, tuple(label.names), splits, flip=True, eval_split=eval_split,
                       validation_split=_validation(splits, eval_split))


def _validation(splits, eval_split: str) -> str | None:
    """A dataset's own validation split, where it has one besides the split scores are reported on."""
    return "validation" if "validation" in splits and eval_split != "validation" else None


def minival(info: DatasetInfo, train_split: str) -> tuple[str, int]:
    """(the split of the last `MINIVAL_FRACTION` of `train_split`, how many examples that takes from it).

    Model selection on a dataset without a validation split evaluates this
    slice, and training leaves it out (big_vision's "minival")."""
    base, start, stop = parse_split(train_split)
    examples = range(info.num_examples.get(base, 0))[start:stop]
    held_out = max(1, round(len(examples) * MINIVAL_FRACTION))
    if len(examples) - held_out < 1 or base not in info.num_examples:
        raise ValueError(f"--train_split {train_split} of {info.name} ({len(examples)} examples) is too small to hold "
                         f"out {MINIVAL_FRACTION:.0%} for model selection; name a --validation_split.")
    return f"{base}[{examples.stop - held_out}:{examples.stop}]", held_out


def _describe_vtab(name: str, data_dir: str | None) -> DatasetInfo:
    import tensorflow_datasets as tfds

    from keras_vit.training.vtab_tasks import TASKS

    task = TASKS.get(name[len(VTAB_PREFIX):])
    if task is None:
        raise ValueError(f"Unknown VTAB task {name!r}; the tasks are {', '.join(TASKS)}.")
    builder = tfds.builder(task.tfds, data_dir=data_dir)
    if not builder.is_prepared():
        _download_and_prepare(builder, task.tfds)
    return vtab_info(name, builder.info.splits[task.test].num_examples)


def vtab_info(name: str, test_examples: int) -> DatasetInfo:
    """A VTAB-1k task ("vtab:clevr_count"): its classes, its 800/200/1,000 training splits and its test split.

    task_adaptation resizes VTAB's training images to a square, no crop, no
    flip: a crop can leave out the objects a label counts, or move what it
    locates.
    """
    from keras_vit.training.vtab_tasks import TASKS

    task = TASKS[name[len(VTAB_PREFIX):]]
    counts = {"train800": 800, "val200": 200, "train800val200": 1000, "test": test_examples}
    return DatasetInfo(name, task.num_classes, tuple(str(i) for i in range(task.num_classes)), counts, flip=False,
                       train_crop="resize", train_split="train800", eval_split="val200", validation_split="val200")


#: The host tensorflow-datasets fetches prepared datasets from first: probed before a download is tried.
TFDS_HOST = "storage.googleapis.com"


def _download_and_prepare(builder, name: str) -> None:
    """Downloads a tfds dataset that is not in its data directory; ValueError at once when there is no network.

    tensorflow-datasets retries an unreachable host for minutes; a failed
    name lookup of its download host answers in milliseconds.
    """
    missing = (
        f"tensorflow-datasets {name!r} is not downloaded to {builder.data_dir}; run with network access to "
        f"download it, or pass --data_dir where it is prepared"
    )
    try:
        socket.getaddrinfo(TFDS_HOST, 443)
    except OSError as error:
        raise ValueError(f"{missing} (no network: {error}).") from None
    try:
        builder.download_and_prepare()
    except Exception as error:  # tfds raises network, checksum and file errors of many types
        raise ValueError(f"{missing} (download failed: {str(error).splitlines()[0]}).") from error


def load(info: DatasetInfo, split: str, data_dir: str | None = None) -> tf.data.Dataset:
    """The examples of one split as `(uint8 [H, W, 3], int64)` pairs, in a fixed order.

    `info` comes from `describe`, which has downloaded and prepared a tensorflow-datasets dataset already.
    """
    if info.name.startswith(VTAB_PREFIX):
        return _load_vtab(info.name[len(VTAB_PREFIX):], split, data_dir)
    if info.name == DIGITS:
        images, labels = _digits_arrays()
        train, test = _digits_split(labels)
        index = _split_index(split, {"train": train, "test": test})
        return tf.data.Dataset.from_tensor_slices((images[index], labels[index]))
    if info.name.startswith(FOLDER_PREFIX):
        root = info.name[len(FOLDER_PREFIX):]
        splits = _folder_splits(root)
        if splits:
            base, start, stop = parse_split(split)
            if base not in splits:
                raise ValueError(f"Split {split!r} not found in {root}; it has {sorted(splits)}.")
            files, labels = _folder_files(os.path.join(root, base), list(info.class_names))
            files, labels = files[start:stop], labels[start:stop]
        else:
            files, labels = _folder_files(root, list(info.class_names))
            held_out = _holdout(len(files))
            index = _split_index(split, {"train": np.setdiff1d(np.arange(len(files)), held_out), "test": held_out})
            files, labels = [files[i] for i in index], labels[index]
        return tf.data.Dataset.from_tensor_slices((files, labels)).map(_read_image, num_parallel_calls=tf.data.AUTOTUNE)
    import tensorflow_datasets as tfds

    ds = tfds.load(info.name, split=split, data_dir=data_dir, as_supervised=True, download=False, shuffle_files=False)
    return ds.map(lambda image, label: (_to_rgb(image), tf.cast(label, tf.int64)), num_parallel_calls=tf.data.AUTOTUNE)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    return np.repeat(images[..., None], 3, axis=-1), digits.target.astype(np.int64)


def _digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)


def _split_index(split: str, splits: dict[str, np.ndarray]) -> np.ndarray:
    base, start, stop = parse_split(split)
    if base not in splits:
        raise ValueError(f"Unknown split {split!r}; expected one of {sorted(splits)}, or a slice such as {base}[:800].")
    return np.sort(splits[base])[start:stop]


def _load_vtab(name: str, split: str, data_dir: str | None) -> tf.data.Dataset:
    """A VTAB-1k split of one task: its examples, labels derived as task_adaptation derives them."""
    import tensorflow_datasets as tfds

    from keras_vit.training.vtab_tasks import TASKS

    task = TASKS[name]
    parts = ["train800", "val200"] if split == "train800val200" else [split]
    out = None
    for part in parts:
        tfds_split, count = task.split(part)
        ds = tfds.load(task.tfds, split=tfds_split, data_dir=data_dir, download=False, shuffle_files=False)
        ds = ds.take(count) if count else ds
        out = ds if out is None else out.concatenate(ds)
    return out.map(lambda x: (_to_rgb(tf.cast(tf.clip_by_value(tf.cast(task.image(x), tf.float32), 0, 255), tf.uint8)),
                              tf.cast(task.label(x), tf.int64)), num_parallel_calls=tf.data.AUTOTUNE)


def _holdout(n: int) -> np.ndarray:
    """A fixed 10% of a folder without split sub-folders, for evaluation."""
    return np.sort(np.random.default_rng(0).permutation(n)[: max(1, n // 10)])


def _folder_splits(root: str) -> list[str]:
    if not os.path.isdir(root):
        raise ValueError(f"Dataset folder {root!r} does not exist.")
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return [d for d in names if d in ("train", "test", "validation")]


def _folder_classes(root: str) -> list[str]:
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"Dataset folder {root!r} has no class sub-folders.")
    return classes


def _folder_files(root: str, classes: list[str]) -> tuple[list[str], np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        for file in sorted(os.listdir(folder)):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(folder, file))
                labels.append(label)
    if not files:
        raise ValueError(f"Dataset folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    order = np.random.default_rng(FOLDER_ORDER_SEED).permutation(len(files))
    return [files[i] for i in order], np.asarray(labels, np.int64)[order]


def _read_image(path, label):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return image, label


def _to_rgb(image):
    image = tf.cast(image, tf.uint8)
    return tf.cond(tf.shape(image)[-1] == 1, lambda: tf.image.grayscale_to_rgb(image), lambda: image)
