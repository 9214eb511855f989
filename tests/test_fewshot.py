"""Few-shot linear evaluation follows big_vision's fewshot_lsr protocol, in the CLI's function and the callback alike."""

import numpy as np
import pytest
import keras

import keras_vit
from keras_vit.training import callbacks, fewshot


def big_vision_protocol(train_x, train_y, test_x, test_y, num_classes, shots, seeds, l2_reg):
    """An independent re-statement of big_vision's evaluators/fewshot_lsr.py (eigendecomposition, per-seed loop)."""
    results = {k: [] for k in shots}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        class_indices = [rng.permutation(np.where(train_y == c)[0]) for c in range(num_classes)]
        for k in shots:
            idx = np.concatenate([indices[:k] for indices in class_indices], axis=0)
            x, y = train_x[idx], train_y[idx]
            mean, std = x.mean(axis=0, keepdims=True), x.std(axis=0, keepdims=True) + 1e-5
            x = np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)
            y = 2.0 * np.eye(num_classes)[y] - 1.0
            if x.shape[0] >= x.shape[1]:
                eigs, q = np.linalg.eigh(x.T @ x)
                rhs, lhs = q.T @ (x.T @ y), q
            else:
                eigs, q = np.linalg.eigh(x @ x.T)
                rhs, lhs = q.T @ y, x.T @ q
            w = (lhs * (1.0 / (eigs + l2_reg)).reshape(1, -1)) @ rhs
            test = np.pad((test_x - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)
            results[k].append(np.mean(np.argmax(test @ w, axis=1) == test_y))
    return {k: (np.mean(v), np.std(v)) for k, v in results.items()}


def noisy_clusters(dim, n, num_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim)) * 1.5
    labels = rng.integers(0, num_classes, n)
    return centers[labels] + rng.normal(size=(n, dim)) * 2.0, labels


def test_defaults_are_big_vision_s():
    assert fewshot.SHOTS == (1, 5, 10, 25) and fewshot.SEEDS == 3 and fewshot.L2_REG == 1024.0


def test_accuracies_equal_an_independent_computation_of_the_protocol_in_primal_and_dual_form():
    for dim in (8, 96):  # 25 shots x 5 classes = 125 points: primal for 8 features, dual for 96 (and for 1-10 shots)
        x, y = noisy_clusters(dim, 1200)
        train, test = (x[:800], y[:800]), (x[800:], y[800:])
        ours = fewshot.fewshot_accuracies(train, test, 5, shots=(1, 5, 10, 25), seeds=3)
        reference = big_vision_protocol(*train, *test, 5, (1, 5, 10, 25), 3, 1024.0)
        for k in (1, 5, 10, 25):
            np.testing.assert_allclose(ours[k], reference[k], atol=1e-12, err_msg=f"dim {dim}, {k}-shot")
        assert ours[25][0] > ours[1][0] > 0.2  # learning happens, chance is 0.2


def test_bias_feature_and_whitening_make_the_answer_invariant_to_feature_shift_and_scale():
    x, y = noisy_clusters(16, 600, seed=1)
    train, test = (x[:400], y[:400]), (x[400:], y[400:])
    base = fewshot.fewshot_accuracies(train, test, 5, shots=(5,), seeds=3)
    moved = fewshot.fewshot_accuracies((train[0] * 7.0 + 3.0, train[1]), (test[0] * 7.0 + 3.0, test[1]), 5, shots=(5,), seeds=3)
    np.testing.assert_allclose(base[5], moved[5], atol=1e-12)


def test_callback_logs_the_numbers_the_cli_function_computes():
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1, classes=3)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(90, 8, 8, 3)).astype("float32")
    labels = keras.ops.one_hot(np.arange(90) % 3, 3)
    batches = [(images[i:i + 30], labels[i:i + 30]) for i in range(0, 90, 30)]
    callback = callbacks.FewShotEvaluation(batches, batches, 3, shots=(1, 5, 10))
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    direct = fewshot.fewshot_accuracies(fewshot.features(model, batches), fewshot.features(model, batches), 3, shots=(1, 5, 10))
    assert logs == {f"fewshot_{k}shot": mean for k, (mean, _) in direct.items()}


def test_shots_a_small_training_split_cannot_supply_are_nan_and_a_required_one_stops_the_run(capsys):
    """A tenth of the digits has 11 examples of its rarest class: 25-shot cannot be drawn, 1/5/10-shot still can."""
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1, classes=3)
    rng = np.random.default_rng(0)
    classes = np.array([0] * 20 + [1] * 20 + [2] * 7)  # class 2 has 7 examples
    images = rng.uniform(-1, 1, size=(len(classes), 8, 8, 3)).astype("float32")
    batches = [(images, keras.ops.one_hot(classes, 3))]
    callback = callbacks.FewShotEvaluation(batches, batches, 3, shots=(1, 5, 10))
    callback.set_model(model)
    callback.on_train_begin()
    assert "10-shot left out (logged as NaN): the smallest class of the training split has 7 examples" in capsys.readouterr().out
    logs = {}
    callback.on_epoch_end(0, logs)
    direct = fewshot.fewshot_accuracies(fewshot.features(model, batches), fewshot.features(model, batches), 3, shots=(1, 5))
    assert np.isnan(logs.pop("fewshot_10shot"))
    assert logs == {f"fewshot_{k}shot": mean for k, (mean, _) in direct.items()}

    monitored = callbacks.FewShotEvaluation(batches, batches, 3, shots=(1, 5, 10), required=(10,))
    with pytest.raises(ValueError, match="fewshot_10shot cannot be computed: the smallest class of the training split has 7"):
        monitored.on_train_begin()
