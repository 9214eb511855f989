"""Few-shot linear evaluation (paper section 4.1): closed-form regularised least squares on frozen features.

    python -m training.fewshot --model runs/demo/model.keras --dataset digits --shots 1 5 10

For each of several seeds, `shots` examples per class are drawn from the
training split, a linear map from their (centred) representations to
{-1, 1}^K targets is solved in closed form, and the test split is classified
by the largest output.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import keras

import keras_vit


def features(model, batches) -> tuple[np.ndarray, np.ndarray]:
    """(representations [N, D] that the model's head would see, integer labels [N]) of (images, one-hot labels) batches."""
    xs, ys = [], []
    for images, labels in batches:
        xs.append(keras.ops.convert_to_numpy(model.representation(images)))
        ys.append(np.argmax(keras.ops.convert_to_numpy(labels), axis=-1))
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def linear_fewshot(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, num_classes: int, l2_reg: float = 1.0
) -> float:
    """Test accuracy of the regularised least-squares map from features (+ bias) to {-1, 1}^K."""
    mean = train_x.mean(axis=0)
    x = np.concatenate([train_x - mean, np.ones((len(train_x), 1))], axis=1)
    targets = 2.0 * np.eye(num_classes)[train_y] - 1.0
    weights = np.linalg.solve(x.T @ x + l2_reg * np.eye(x.shape[1]), x.T @ targets)
    test = np.concatenate([test_x - mean, np.ones((len(test_x), 1))], axis=1)
    return float(np.mean(np.argmax(test @ weights, axis=1) == test_y))


def fewshot_accuracies(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    shots: tuple[int, ...] = (1, 5, 10, 25),
    seeds: int = 5,
    l2_reg: float = 1.0,
) -> dict[int, tuple[float, float]]:
    """{shots: (mean accuracy, std over seeds)}."""
    train_x, train_y = train
    by_class = [np.flatnonzero(train_y == c) for c in range(num_classes)]
    out = {}
    for k in shots:
        if any(len(idx) < k for idx in by_class):
            raise ValueError(f"{k}-shot needs {k} training examples of every class; the smallest class has {min(map(len, by_class))}.")
        accs = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            pick = np.concatenate([rng.choice(idx, k, replace=False) for idx in by_class])
            accs.append(linear_fewshot(train_x[pick], train_y[pick], *test, num_classes, l2_reg))
        out[k] = (float(np.mean(accs)), float(np.std(accs)))
    return out


class FewShotEvaluation(keras.callbacks.Callback):
    """Logs `fewshot_{k}shot` accuracies every `every` epochs (into the logs, so CSV and TensorBoard get them).

    Args:
        train_batches, test_batches: (images, one-hot labels) batches, not augmented.
        num_classes: K.
        shots, seeds, l2_reg: as `fewshot_accuracies`.
        every: epochs between evaluations.
    """

    def __init__(self, train_batches, test_batches, num_classes: int, shots=(1, 5), seeds: int = 3, l2_reg: float = 1.0, every: int = 1):
        super().__init__()
        self.train_batches, self.test_batches = train_batches, test_batches
        self.num_classes, self.shots, self.seeds, self.l2_reg, self.every = num_classes, tuple(shots), seeds, l2_reg, every

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every:
            # CSVLogger fixes its columns at the first epoch: keep them present, NaN when not evaluated.
            logs.update({f"fewshot_{k}shot": float("nan") for k in self.shots})
            return
        results = fewshot_accuracies(
            features(self.model, self.train_batches), features(self.model, self.test_batches),
            self.num_classes, self.shots, self.seeds, self.l2_reg,
        )
        for k, (mean, _) in results.items():
            logs[f"fewshot_{k}shot"] = mean


def main(argv: list[str] | None = None) -> int:
    from training import datasets, pipeline

    parser = argparse.ArgumentParser(description="Few-shot linear evaluation of a trained model's representation.")
    parser.add_argument("--model", required=True, help="a .keras file saved by training.train")
    parser.add_argument("--dataset", default="digits", help="digits, folder:PATH or a tensorflow-datasets name")
    parser.add_argument("--data_dir", default=None, help="tensorflow-datasets data directory")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 25], help="examples per class")
    parser.add_argument("--seeds", type=int, default=5, help="draws of the few-shot set per shot count")
    parser.add_argument("--l2_reg", type=float, default=1.0, help="ridge regularisation of the least squares")
    parser.add_argument("--batch_size", type=int, default=256, help="batch size of the feature extraction")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    info = datasets.describe(args.dataset, args.data_dir)
    model = keras_vit.load_model(args.model)
    prep = pipeline.Preprocessing.for_model(model, flip=False)
    splits = [
        features(model, pipeline.eval_dataset(datasets.load(info, split, args.data_dir), prep, args.batch_size))
        for split in (info.train_split, info.eval_split)
    ]
    results = fewshot_accuracies(*splits, info.num_classes, tuple(args.shots), args.seeds, args.l2_reg)
    print(f"few-shot linear evaluation on {args.dataset} ({info.num_classes} classes, {args.seeds} seeds, chance {1 / info.num_classes:.1%})")
    for k, (mean, std) in results.items():
        print(f"  {k:3d}-shot: {mean:.2%} +- {std:.2%}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({f"{k}shot": {"mean": m, "std": s} for k, (m, s) in results.items()}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
