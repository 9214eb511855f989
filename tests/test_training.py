"""Training: recipes, schedules, weight decay, strategies, fault tolerance, fine-tuning, few-shot, CLI errors."""

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf

import keras_vit
from keras_vit.serving import signatures
from keras_vit.training import datasets, distribute, pipeline, trainer
from keras_vit.training.config import RunConfig
from keras_vit.training.recipes import build_recipe, excluded_from_weight_decay
from keras_vit.schedules import WarmupDecay
from keras_vit.training.trainer import default_batch_size
from support import TINY_MODEL, env, free_port, run_module, start_module


def test_warmup_then_linear_and_cosine_decay():
    linear = WarmupDecay(1.0, warmup_steps=10, total_steps=110, decay="linear")
    cosine = WarmupDecay(1.0, warmup_steps=10, total_steps=110, decay="cosine")
    values = lambda s, steps: [float(s(step)) for step in steps]  # noqa: E731
    np.testing.assert_allclose(values(linear, [0, 5, 10, 60, 110, 200]), [0, 0.5, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(values(cosine, [5, 10, 60, 110]), [0.5, 1.0, 0.5, 0.0], atol=1e-6)
    assert WarmupDecay.from_config(linear.get_config()).get_config() == linear.get_config()


def test_recipes_and_overrides():
    rows = {name: build_recipe(name) for name in ("jft", "imagenet21k", "imagenet1k", "finetune", "pretrain")}
    table = {
        name: (r.optimizer, r.learning_rate, r.schedule, r.warmup_steps, r.weight_decay, r.dropout_rate, r.batch_size,
               r.global_clipnorm, r.loss, r.head_bias_init)
        for name, r in rows.items()
    }
    assert table == {
        "jft": ("adam", 8e-4, "linear", 10_000, 0.1, 0.0, 4096, None, "sigmoid", -10.0),
        "imagenet21k": ("adam", 1e-3, "linear", 10_000, 0.03, 0.1, 4096, None, "sigmoid", -10.0),
        "imagenet1k": ("adam", 3e-3, "cosine", 10_000, 0.3, 0.1, 4096, 1.0, "softmax", 0.0),
        "finetune": ("sgd", 0.03, "cosine", 500, 0.0, None, 512, 1.0, "softmax", 0.0),
        "pretrain": ("adam", 1e-3, "linear", 10_000, 0.1, 0.1, 4096, 1.0, "softmax", 0.0),
    }
    assert rows["pretrain"].label_smoothing == 0.1 and all(r.label_smoothing == 0 for n, r in rows.items() if n != "pretrain")
    finetune = build_recipe("finetune", learning_rate=0.01)
    assert finetune.learning_rate == 0.01 and finetune.momentum == 0.9
    with pytest.raises(ValueError, match="Unknown recipe"):
        build_recipe("distill")
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=8, mlp_dim=16, num_heads=2, num_layers=1, classes=3)
    assert finetune.build_optimizer(model, 100).global_clipnorm == 1.0
    assert build_recipe("finetune", global_clipnorm=0).build_optimizer(model, 100).global_clipnorm is None
    adam = rows["imagenet21k"].build_optimizer(model, 100)
    assert isinstance(adam, keras.optimizers.AdamW) and (adam.beta_1, adam.beta_2, adam.epsilon) == (0.9, 0.999, 1e-8)


def test_sigmoid_recipe_sums_binary_cross_entropies_from_a_head_biased_to_minus_ten():
    recipe = build_recipe("imagenet21k")
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=8, mlp_dim=16, num_heads=2, num_layers=1, classes=5,
                          head_bias_init=recipe.head_bias_init)
    recipe.compile(model, total_steps=10)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3)).astype("float32")
    labels = np.eye(5, dtype="float32")[[0, 1, 2, 3]]
    np.testing.assert_allclose(model.predict(images, verbose=0), -10.0)  # zero kernel, bias -10
    expected = np.log1p(np.exp(10.0)) + 4 * np.log1p(np.exp(-10.0))  # the true class at -10, four others at -10
    np.testing.assert_allclose(model.evaluate(images, labels, verbose=0, return_dict=True)["loss"], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="Label smoothing applies to the softmax loss"):
        build_recipe("imagenet21k", label_smoothing=0.1).compile(model, total_steps=10)


def test_polyak_average_is_per_update_under_gradient_accumulation():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    kernel = model.trainable_variables[0]
    averages = {}
    for k in (1, 3):
        recipe = build_recipe("finetune", learning_rate=0.1, warmup_steps=0, momentum=0.0, global_clipnorm=0,
                              grad_accum_steps=k, ema_momentum=0.9)
        optimizer = recipe.build_optimizer(model, total_steps=6)
        kernel.assign(np.zeros((1, 1), "float32"))
        for _ in range(6 * k + k - 1):  # 6 updates, then the k - 1 micro-batches that follow the last one
            optimizer.apply_gradients([(tf.ones((1, 1)), kernel)])
        averages[k] = float(optimizer._model_variables_moving_average[0].numpy()[0, 0])
        assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.9 ** (1 / k))
    np.testing.assert_allclose(averages[3], averages[1], rtol=1e-5)


def test_weight_decay_skips_biases_norms_tokens_and_position_embeddings():
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=8, mlp_dim=16, num_heads=2, num_layers=1, classes=3)
    for v in model.weights:
        v.assign(np.full(v.shape, 0.5, "float32"))
    excluded = {v.path for v in excluded_from_weight_decay(model)}
    assert "cls/cls" in excluded and "posembed_input/pos_embedding" in excluded
    assert all(not p.endswith("kernel") for p in excluded)

    optimizer = build_recipe("pretrain", learning_rate=0.1, warmup_steps=0).build_optimizer(model, total_steps=10)
    optimizer.build(model.trainable_variables)
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zeros, model.trainable_variables))  # Adam moves nothing: only decay acts
    for v in model.trainable_variables:
        value = keras.ops.convert_to_numpy(v)
        if v.path in excluded:
            np.testing.assert_allclose(value, 0.5, err_msg=v.path)
        else:
            np.testing.assert_allclose(value, 0.5 * (1 - 0.1 * 0.1), rtol=1e-6, err_msg=v.path)


def test_the_training_stream_is_a_function_of_the_seed_and_the_step():
    """Two pipelines give the same batches, one started at step k gives the other's from k on (a resume), and a
    pass over the data is a permutation of it; another seed, other batches."""
    info = datasets.describe("digits")
    examples = datasets.load(info, "train[:100]")  # 100 examples, batch 16: passes end inside batches
    prep = pipeline.Preprocessing((16, 16), 10, train_crop="random", flip=True)

    def batches(steps, start_step=0, seed=0):
        ds = pipeline.train_dataset(examples, prep, 16, steps, seed=seed, start_step=start_step)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    whole = batches(20)
    assert len(whole) == 20
    for (x, y), (x2, y2) in zip(whole, batches(20)):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    for (x, y), (x2, y2) in zip(whole[13:], batches(7, start_step=13)):  # step 13 starts inside the third pass
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    labels = np.concatenate([y for _, y in whole]).argmax(-1)
    truth = np.array([int(label) for _, label in examples])
    for p in range(3):  # each pass holds every example once, in an order of its own
        np.testing.assert_array_equal(np.bincount(labels[p * 100:(p + 1) * 100], minlength=10), np.bincount(truth, minlength=10))
    assert not np.array_equal(labels[:100], labels[100:200])
    assert not np.array_equal(whole[0][0], batches(1, seed=1)[0][0])


def test_digits_source_and_pipelines():
    info = datasets.describe("digits")
    assert info.num_classes == 10 and info.num_examples == {"train": 1437, "test": 360}
    images, labels = next(iter(datasets.load(info, "train").batch(1437)))
    assert images.shape == (1437, 8, 8, 3) and images.dtype == tf.uint8
    assert int(tf.reduce_max(images)) == 255 and set(np.unique(labels)) == set(range(10))

    prep = pipeline.Preprocessing((16, 16), 10, train_crop="random", flip=False, randaugment=(2, 0.5), mixup_alpha=0.2)
    x, y = next(iter(pipeline.train_dataset(datasets.load(info, "train"), prep, 32, steps=1)))
    assert x.shape == (32, 16, 16, 3) and y.shape == (32, 10)
    assert float(tf.reduce_min(x)) >= -1.0 and float(tf.reduce_max(x)) <= 1.0
    np.testing.assert_allclose(tf.reduce_sum(y, axis=-1), 1.0, atol=1e-5)  # MixUp mixes one-hot labels

    first = [b[0].numpy() for b in pipeline.eval_dataset(datasets.load(info, "test"), prep, 100)]
    second = [b[0].numpy() for b in pipeline.eval_dataset(datasets.load(info, "test"), prep, 100)]
    assert sum(len(b) for b in first) == 360
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_image_folder_source(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(tmp_path / split / name / f"{i}.png")
    info = datasets.describe(f"folder:{tmp_path}")
    assert info.class_names == ("cat", "dog") and info.num_examples == {"test": 6, "train": 6}
    images, labels = next(iter(datasets.load(info, "train").batch(6)))
    assert images.shape == (6, 10, 12, 3) and sorted(labels.numpy()) == [0, 0, 0, 1, 1, 1]
    assert list(labels.numpy()) != [0, 0, 0, 1, 1, 1]  # a fixed random order: slices hold both classes
    _, again = next(iter(datasets.load(info, "train").batch(6)))
    np.testing.assert_array_equal(labels, again)
    assert info.validation_split is None and trainer.choose_validation(RunConfig("out", dataset=info.name), info, "train") == ("train[5:6]", 1)


def test_model_selection_never_uses_the_reported_split():
    """Digits has no validation split: minival, the end of train, selects; a dataset's own validation split, or one
    named, is taken as it is; --validation_split minival asks for minival where there is a validation split."""
    digits = datasets.describe("digits")
    assert trainer.choose_validation(RunConfig("out"), digits, "train") == ("train[1293:1437]", 144)
    assert trainer.choose_validation(RunConfig("out"), digits, "train[:800]") == ("train[720:800]", 80)
    assert trainer.choose_validation(RunConfig("out", eval_split="test"), digits, "train") == ("test", 0)
    assert trainer.choose_validation(RunConfig("out", validation_split="train[:100]"), digits, "train") == ("train[:100]", 0)
    with_validation = dataclasses.replace(digits, num_examples={"train": 1000, "validation": 100, "test": 360},
                                          validation_split="validation")
    assert trainer.choose_validation(RunConfig("out"), with_validation, "train") == ("validation", 0)
    assert trainer.choose_validation(RunConfig("out", validation_split="minival"), with_validation, "train") == \
        ("train[900:1000]", 100)
    with pytest.raises(ValueError, match="too small to hold out 10% for model selection; name a --validation_split"):
        trainer.choose_validation(RunConfig("out"), digits, "train[:1]")
    run = trainer.plan(RunConfig("out", deterministic=False))  # (deterministic kernels would hold for the process)
    assert (run.validation_split, run.eval_split, len(run.train_examples)) == ("train[1293:1437]", "test", 1293)


def test_default_batch_size_fits_small_datasets():
    assert default_batch_size(4096, 1437) == 128
    assert default_batch_size(512, 50_000) == 512


def test_results_name_the_loss_they_report():
    from keras_vit.training.trainer import loss_function

    assert loss_function(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)) == \
        "categorical_crossentropy, label smoothing 0.1"
    assert loss_function(keras_vit.losses.SigmoidCrossEntropy()) == "sigmoid_cross_entropy"


@pytest.mark.parametrize("flags, message", [
    (["--eval_split", "train[2000:]"], "--eval_split train[2000:]: the split train[2000:] of digits is empty (train "
                                       "has 1,437 examples)."),
    (["--eval_split", "validation"], "--eval_split validation: digits has no split 'validation' (it has train, test)."),
    (["--train_split", "test[400:]"], "--train_split test[400:]: the split test[400:] of digits is empty (test has 360 "
                                      "examples)."),
])
def test_an_empty_or_unknown_split_is_one_line_before_any_training(flags, message, tmp_path):
    from keras_vit.training import train, trainer
    from keras_vit.training.config import RunConfig

    config = RunConfig.from_flags(train.parser().parse_args(["--dataset", "digits", "--output_dir", str(tmp_path), *flags]))
    with pytest.raises(ValueError) as raised:
        trainer.plan(config)
    assert str(raised.value) == message
    assert not tmp_path.joinpath("run.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "no_such_dataset_xyz"], "Unknown dataset 'no_such_dataset_xyz'"),
        (["--model", "ViT_Q16"], "Unknown ViT variant 'ViT_Q16'"),
        (["--weights", "/nonexistent/ckpt.npz"], "--weights /nonexistent/ckpt.npz: no such file"),
        (["--model", "ViT_Ti16", "--patch_size", "8"], "ViT_Ti16 fixes its architecture: --patch_size, --hidden_size, --mlp_dim, --num_heads, --num_layers are for --model ViT"),
    ],
)
def test_bad_command_lines_fail_before_any_work(args, message, tmp_path, capsys):
    from keras_vit.training import train

    assert train.main([*TINY_MODEL, "--epochs", "1", "--output_dir", str(tmp_path), *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "history.csv").exists() and not (tmp_path / "run.json").exists()  # a fixed command may use it


@pytest.mark.process
def test_a_batch_the_replicas_cannot_split_fails_before_any_work(tmp_path):
    """As the others, from a real process: the replicas are the logical CPUs it splits the CPU into first."""
    result = run_module("keras_vit.training.train", *TINY_MODEL, "--epochs", "1", "--output_dir", str(tmp_path),
                        "--logical_cpus", "2", "--strategy", "mirrored", "--batch_size", "33", timeout=120)
    assert result.returncode == 2
    assert "error: The global batch per step (33) is not divisible by the 2 replicas" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "history.csv").exists() and not (tmp_path / "run.json").exists()


def test_unknown_strategy_is_refused_by_the_parser(tmp_path, capsys):
    from keras_vit.training import train

    with pytest.raises(SystemExit) as exited:
        train.main(["--strategy", "parameter_server", "--output_dir", str(tmp_path)])
    assert exited.value.code == 2 and "invalid choice: 'parameter_server'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny model trained on digits by the real command line (one device)."""
    out = tmp_path_factory.mktemp("run")
    result = run_module("keras_vit.training.train", *TINY_MODEL, "--dataset", "digits", "--epochs", "10", "--batch_size", "32",
                        "--learning_rate", "3e-3", "--label_smoothing", "0", "--dropout_rate", "0", "--warmup_steps", "50",
                        "--strategy", "one_device", "--output_dir", str(out), "--progress", "2", "--fewshot_every", "5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


@pytest.mark.process
def test_one_device_run_writes_models_logs_and_results(trained_run):
    out, result = trained_run
    for name in ("model.keras", "best.keras", "history.csv", "results.json"):
        assert (out / name).exists(), name
    assert list((out / "logs").rglob("*tfevents*"))
    assert not (out / "backup").exists()  # removed after a finished run
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 10 and results["examples"] == 360 and results["accuracy"] > 0.6
    assert results["loss_function"] == "categorical_crossentropy"  # --label_smoothing 0 here
    # The paper's compute: 3 forward passes' worth per example, 10 epochs of 1293 // 32 batches of 32 (digits' train
    # but minival).
    model = keras_vit.load_model(out / "model.keras")
    assert results["training_flops"] == 3 * keras_vit.analysis.flops(model) * 10 * (1293 // 32) * 32
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(10))
    assert float(rows[-1]["fewshot_5shot"]) > 0.3  # the few-shot callback logs into the history
    assert "Epoch 10/10" in result.stdout


@pytest.mark.process
def test_a_trained_model_loads_with_keras_own_loader_in_a_fresh_process(trained_run):
    out, _ = trained_run
    script = (
        "import sys, keras, keras_vit\n"
        "model = keras.models.load_model(sys.argv[1])\n"  # safe_mode and compile on: the optimizer and its schedule too
        "print(type(model).__name__, model.optimizer.__class__.__name__, type(model.optimizer._learning_rate).__name__)\n"
        "print(type(keras_vit.load_model(sys.argv[1])).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(out / "model.keras")], capture_output=True, text=True,
                            env=env(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["VisionTransformer", "AdamW", "WarmupDecay", "VisionTransformer"]


@pytest.mark.process
def test_importing_the_packages_changes_no_environment_variable():
    script = (
        "import os, tensorflow, keras\n"  # what TensorFlow itself sets at import is not ours
        "before = dict(os.environ)\n"
        "import keras_vit, keras_vit.training.train, keras_vit.training.evaluate, keras_vit.training.fewshot\n"
        "import keras_vit.serving.export, keras_vit.serving.server\n"
        "changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}\n"
        "print(sorted(changed))\n"
    )
    clean = {k: v for k, v in env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=clean, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_multi_worker_fit_refuses_a_keras_it_was_not_written_for():
    distribute.check_keras_version(keras.__version__)
    with pytest.raises(RuntimeError, match=r"keras-team/keras#20585.*written for Keras 3.15; this is Keras 3.16.0"):
        distribute.check_keras_version("3.16.0")


@pytest.mark.process
def test_evaluate_cli_reproduces_the_final_evaluation(trained_run, tmp_path):
    """(The commands' own main(), in this process: TensorFlow is started already.)"""
    from keras_vit.training import evaluate

    out, _ = trained_run
    assert evaluate.main(["--model", str(out / "model.keras"), "--dataset", "digits",
                          "--output", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert abs(evaluated["accuracy"] - json.loads((out / "results.json").read_text())["accuracy"]) < 1e-6


@pytest.mark.process
def test_fewshot_cli_is_well_above_chance(trained_run, tmp_path):
    from keras_vit.training import fewshot

    out, _ = trained_run
    assert fewshot.main(["--model", str(out / "model.keras"), "--dataset", "digits", "--shots", "1", "5", "10",
                         "--seeds", "3", "--output", str(tmp_path / "fewshot.json")]) == 0
    accuracies = json.loads((tmp_path / "fewshot.json").read_text())
    assert accuracies["10shot"]["mean"] > 0.5  # chance is 0.1
    assert accuracies["10shot"]["mean"] >= accuracies["1shot"]["mean"]


@pytest.mark.process
def test_finetune_at_higher_resolution(trained_run, tmp_path):
    out, _ = trained_run
    # No architecture flags: --model ViT takes the architecture from the file it starts from.
    result = run_module("keras_vit.training.train", *TINY_MODEL[:2], "--image_size", "24", "--init_from", str(out / "model.keras"),
                        "--recipe", "finetune", "--batch_size", "64", "--steps", "20", "--learning_rate", "0.01",
                        "--output_dir", str(tmp_path), "--progress", "2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.input_shape == (None, 24, 24, 3)
    assert model.posembed_input.pos_embedding.shape == (1, 1 + 6 * 6, 32)
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] > 0.3


@pytest.mark.process
def test_mirrored_strategy_over_two_cpu_replicas(tmp_path):
    result = run_module("keras_vit.training.train", *TINY_MODEL, "--epochs", "1", "--steps_per_epoch", "5", "--batch_size", "32",
                        "--strategy", "mirrored", "--output_dir", str(tmp_path), "--progress", "2", "--logical_cpus", "2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 replica(s)" in result.stdout
    assert json.loads((tmp_path / "results.json").read_text())["epochs"] == 1


def test_gradient_accumulation_applies_the_schedule_and_weight_decay_once_per_update():
    k, updates = 4, 10
    schedule = WarmupDecay(0.1, warmup_steps=3, total_steps=updates, decay="cosine")
    expected = [float(schedule(i)) for i in range(updates)]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    kernel = model.trainable_variables[0]

    # SGD without momentum on a gradient of 1: update i moves the weight by exactly its learning rate.
    sgd = build_recipe("finetune", learning_rate=0.1, warmup_steps=3, momentum=0.0, global_clipnorm=0, grad_accum_steps=k)
    optimizer = sgd.build_optimizer(model, total_steps=updates)
    kernel.assign(np.zeros((1, 1), "float32"))
    trace = []
    for _ in range(updates * k):
        before = float(kernel.numpy()[0, 0])
        optimizer.apply_gradients([(tf.ones((1, 1)), kernel)])
        trace.append(before - float(kernel.numpy()[0, 0]))
    applied = np.reshape(trace, (updates, k))
    np.testing.assert_allclose(applied[:, :-1], 0.0)  # micro-batches only accumulate
    np.testing.assert_allclose(applied[:, -1], expected, rtol=1e-5, atol=1e-7)

    # AdamW on zero gradients: only the decoupled decay acts, w <- w * (1 - wd * lr_i), once per update.
    adamw = build_recipe("pretrain", learning_rate=0.1, schedule="cosine", warmup_steps=3, weight_decay=0.5, global_clipnorm=0, grad_accum_steps=k)
    optimizer = adamw.build_optimizer(model, total_steps=updates)
    kernel.assign(np.ones((1, 1), "float32"))
    values = []
    for step in range(updates * k):
        optimizer.apply_gradients([(tf.zeros((1, 1)), kernel)])
        if step % k == k - 1:
            values.append(float(kernel.numpy()[0, 0]))
    np.testing.assert_allclose(values, np.cumprod([1 - 0.5 * lr for lr in expected]), rtol=1e-5)
    assert int(optimizer.iterations) == updates


@pytest.mark.process
def test_gradient_accumulation_run_logs_the_schedule_per_update_and_is_refused_across_replicas(tmp_path):
    result = run_module("keras_vit.training.train", *TINY_MODEL, "--steps", "10", "--steps_per_epoch", "8", "--batch_size", "32",
                        "--grad_accum_steps", "4", "--learning_rate", "0.01", "--warmup_steps", "4",
                        "--strategy", "one_device", "--output_dir", str(tmp_path), "--progress", "2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "5 epochs x 8 steps" in result.stdout  # 10 updates of 4 micro-batches of 8
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    schedule = WarmupDecay(0.01, warmup_steps=4, total_steps=10, decay="linear")
    assert [int(r["updates"]) for r in rows] == [2, 4, 6, 8, 10]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], [float(schedule(u)) for u in (2, 4, 6, 8, 10)], atol=1e-9)
    restored = keras.models.load_model(tmp_path / "model.keras")  # the optimizer keeps counting updates
    assert isinstance(restored.optimizer._learning_rate, keras_vit.PerUpdate)
    assert restored.optimizer._learning_rate.accumulation_steps == 4
    refused = run_module("keras_vit.training.train", *TINY_MODEL, "--epochs", "1", "--batch_size", "32", "--grad_accum_steps", "2",
                         "--strategy", "mirrored", "--logical_cpus", "2", "--output_dir", str(tmp_path / "x"))
    assert refused.returncode == 2 and "fails under tf.distribute" in refused.stderr


@pytest.mark.process
def test_two_worker_processes_train_identical_weights(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(start_module(
            "keras_vit.training.train", *TINY_MODEL, "--epochs", "2", "--steps_per_epoch", "4", "--batch_size", "32",
            "--strategy", "multi_worker", "--output_dir", str(tmp_path / f"worker{index}"), "--progress", "2",
            "--steps_per_execution", "2", TF_CONFIG=config,
        ))
    outputs = []
    for worker in workers:
        stdout, _ = worker.communicate(timeout=300)
        outputs.append(stdout)
        assert worker.returncode == 0, stdout[-3000:]
    assert all("4/4" in out for out in outputs)  # two calls of two steps each per epoch
    fingerprints = [line for out in outputs for line in out.splitlines() if line.startswith("Weights fingerprint")]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert (tmp_path / "worker0" / "model.keras").exists()  # the chief writes the model and logs
    assert not (tmp_path / "worker1" / "model.keras").exists() and not (tmp_path / "worker1" / "history.csv").exists()


@pytest.mark.process
def test_jit_compile_under_multi_worker_on_cpus_is_refused_not_ignored(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        start_module(
            "keras_vit.training.train", *TINY_MODEL, "--epochs", "1", "--steps_per_epoch", "2", "--batch_size", "32",
            "--strategy", "multi_worker", "--jit_compile", "--output_dir", str(tmp_path / f"worker{index}"),
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        for index in range(2)
    ]
    for worker in workers:
        stdout, _ = worker.communicate(timeout=120)
        assert worker.returncode == 2, stdout[-2000:]
        assert "--jit_compile with --strategy multi_worker needs GPU or TPU workers" in stdout


@pytest.mark.process
def test_class_names_travel_from_training_into_the_export(trained_run, tmp_path, capsys):
    from keras_vit.serving import export

    out, _ = trained_run
    assert (out / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    assert export.main(["--model", str(out / "model.keras"), "--model_base_path", str(tmp_path / "m")]) == 0
    assert "with the class names of" in capsys.readouterr().out
    served = tf.saved_model.load(str(tmp_path / "m" / "1")).signatures[signatures.PIXELS_SIGNATURE]
    answer = served(**{signatures.PIXELS_INPUT: tf.zeros((1, 16, 16, 3), tf.float32)})
    classes = answer[signatures.CLASSES].numpy()[0]
    assert [name.decode() for name in answer[signatures.LABELS].numpy()[0]] == [str(c) for c in classes]


@pytest.mark.process
def test_a_non_square_image_size_trains_and_saves_its_grid(tmp_path):
    architecture = TINY_MODEL[:2] + TINY_MODEL[4:]
    result = run_module("keras_vit.training.train", *architecture, "--image_size", "16", "24", "--epochs", "1", "--steps_per_epoch", "2",
                        "--batch_size", "16", "--output_dir", str(tmp_path), "--progress", "2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "at 16x24px" in result.stdout
    model = keras_vit.load_model(tmp_path / "model.keras")
    assert model.input_shape == (None, 16, 24, 3) and model.grid_size == (4, 6)
