"""Few-shot linear evaluation (paper section 4.1), as big_vision's `evaluators/fewshot_lsr.py` computes it.

    python -m keras_vit.training.fewshot --model runs/demo/model.keras --dataset digits --shots 1 5 10

The protocol, step by step (defaults from big_vision's `configs/common_fewshot.py`):

1. Features are the model's representation (the input of its head: the
   pre-logits when there are any), over the whole training and test split.
2. For each seed s in 0..seeds-1, `np.random.default_rng(s)` permutes the
   training indices of every class; a k-shot set is the first k of each
   class, so the 1-shot set is inside the 5-shot set of the same seed.
3. The k-shot features are whitened with their own mean and standard
   deviation (+1e-5), and a constant feature of 100 is appended: the bias,
   large so that the L2 penalty barely touches it.
4. Targets are one-hot vectors rescaled to {-1, 1}; the weights solve
   min ||X W - Y||^2 + l2_reg ||W||^2 with l2_reg = 2^10, in the primal
   (D x D) form, or in the dual (n x n) form x^T (x x^T + l2 I)^-1 y when
   there are fewer examples than feature dimensions.
5. Test features are whitened with the same statistics; the prediction is
   the arg-max output. Results are the mean (and spread) over seeds.

big_vision solves through an eigendecomposition in float32; this module
solves the same system directly in float64.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import keras_vit
from keras_vit import cli

#: big_vision's defaults: shot counts, seeds, ridge strength and the bias feature's constant.
SHOTS = (1, 5, 10, 25)
SEEDS = 3
L2_REG = 2.0**10
BIAS_CONSTANT = 100.0


def features(model, batches) -> tuple[np.ndarray, np.ndarray]:
    """(representations [N, D] that the model's head would see, integer labels [N]) of (images, one-hot labels) batches."""
    import keras

    xs, ys = [], []
    for images, labels in batches:
        xs.append(model.predict_representation(np.asarray(images)))  # tf.data's tensors, whatever the Keras backend
        ys.append(np.argmax(keras.ops.convert_to_numpy(labels), axis=-1))
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def linear_fewshot(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    l2_reg: float = L2_REG,
) -> float:
    """Test accuracy of the ridge regression from whitened features (+ a bias feature) to {-1, 1}^K targets.

    Args:
        train_x: [n, D] few-shot features; train_y: [n] integer labels.
        test_x: [m, D] test features; test_y: [m] integer labels.
        num_classes: K.
        l2_reg: ridge strength.
    """
    mean = train_x.mean(axis=0, keepdims=True)
    std = train_x.std(axis=0, keepdims=True) + 1e-5

    def design(x):
        x = (np.asarray(x, np.float64) - mean) / std
        return np.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)

    x = design(train_x)
    targets = 2.0 * np.eye(num_classes)[train_y] - 1.0
    n, d = x.shape
    if n >= d:  # primal: (x^T x + l2 I)^-1 x^T y, a D x D system
        weights = np.linalg.solve(x.T @ x + l2_reg * np.eye(d), x.T @ targets)
    else:  # dual: x^T (x x^T + l2 I)^-1 y, an n x n system
        weights = x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(n), targets)
    return float(np.mean(np.argmax(design(test_x) @ weights, axis=1) == test_y))


def fewshot_accuracies(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    shots: tuple[int, ...] = SHOTS,
    seeds: int = SEEDS,
    l2_reg: float = L2_REG,
) -> dict[int, tuple[float, float]]:
    """{shots: (mean test accuracy over seeds, standard deviation over seeds)}."""
    train_x, train_y = train
    sizes = [int(np.sum(train_y == c)) for c in range(num_classes)]
    if max(shots) > min(sizes):
        raise ValueError(f"{max(shots)}-shot needs {max(shots)} training examples of every class; the smallest class has {min(sizes)}.")
    accuracies: dict[int, list[float]] = {k: [] for k in shots}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        by_class = [rng.permutation(np.flatnonzero(train_y == c)) for c in range(num_classes)]
        for k in shots:
            pick = np.concatenate([indices[:k] for indices in by_class])
            accuracies[k].append(linear_fewshot(train_x[pick], train_y[pick], *test, num_classes, l2_reg))
    return {k: (float(np.mean(a)), float(np.std(a))) for k, a in accuracies.items()}


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m keras_vit.training.fewshot", __doc__)
    parser.add_argument("--model", required=True, help="a .keras file saved by training.train")
    parser.add_argument("--dataset", default="digits", help="digits, folder:PATH or a tensorflow-datasets name")
    parser.add_argument("--data_dir", default=None, help="tensorflow-datasets data directory")
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS), help="examples per class")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="draws of the few-shot sets")
    parser.add_argument("--l2_reg", type=float, default=L2_REG, help="ridge regularisation (big_vision's)")
    parser.add_argument("--batch_size", type=int, default=256, help="batch size of the feature extraction")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    from keras_vit.training import datasets, pipeline

    try:
        info = datasets.describe(args.dataset, args.data_dir)
        model = keras_vit.load_model(args.model)
        # The representation serves any task: labels are the dataset's, whatever the model's head was trained on.
        prep = pipeline.Preprocessing.for_model(model, flip=False, num_classes=info.num_classes)
        splits = [
            features(model, pipeline.eval_dataset(datasets.load(info, split, args.data_dir), prep, args.batch_size))
            for split in (info.train_split, info.eval_split)
        ]
        results = fewshot_accuracies(*splits, info.num_classes, tuple(args.shots), args.seeds, args.l2_reg)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"few-shot linear evaluation on {args.dataset} ({info.num_classes} classes, {args.seeds} seeds, chance {1 / info.num_classes:.1%})")
    for k, (mean, std) in results.items():
        print(f"  {k:3d}-shot: {mean:.2%} +- {std:.2%}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({f"{k}shot": {"mean": m, "std": s} for k, (m, s) in results.items()}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
