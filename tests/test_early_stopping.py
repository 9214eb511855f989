"""Early stopping on validation accuracy (the paper's pre-training): best weights kept, and a kill changes nothing."""

import csv
import json
import signal
import time

import numpy as np
import pytest
import keras

import keras_vit
from keras_vit.training import backup
from keras_vit.training.callbacks import EarlyStopping
from support import TINY_MODEL, run_module, start_module

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

# Learns in the first epoch; no later epoch gains 0.5 in accuracy, so it stops after epoch 1 + patience.
COMMAND = [*TINY_MODEL, "--epochs", "8", "--steps_per_epoch", "30", "--batch_size", "16", "--warmup_steps", "5",
           "--learning_rate", "3e-3", "--label_smoothing", "0", "--progress", "2",
           "--early_stopping_patience", "2", "--early_stopping_min_delta", "0.5"]


def epochs_logged(out):
    path = out / "history.csv"
    return [int(row["epoch"]) for row in csv.DictReader(path.open())] if path.exists() else []


def backed_up_epoch(out):
    states = backup.states(str(out / "backup"))
    return backup.read_metadata(states[0])["epoch"] if states else 0


def weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("early")
    result = run_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out, result


def test_a_run_stops_when_accuracy_stalls_and_keeps_the_best_weights(uninterrupted):
    out, result = uninterrupted
    results = json.loads((out / "results.json").read_text())
    assert results["best_epoch"] == 1 and results["stopped_epoch"] == 3
    assert results["early_stopping_monitor"] == "val_accuracy"
    assert epochs_logged(out) == [0, 1, 2]
    assert "stopped after epoch 3, keeping epoch 1's weights" in result.stdout
    for kept, best in zip(weights(out / "model.keras"), weights(out / "best.keras")):
        np.testing.assert_array_equal(kept, best)
    history = list(csv.DictReader((out / "history.csv").open()))
    assert results["best_value"] == pytest.approx(float(history[0]["val_accuracy"]))
    # Selected on minival, the end of digits' train, and scored on the test split.
    assert (results["selection_split"], results["split"], results["examples"]) == ("train[1293:1437]", "test", 360)
    model = keras_vit.load_model(out / "model.keras")
    assert results["training_flops"] == 3 * keras_vit.analysis.flops(model) * 3 * 30 * 16  # 3 epochs, not 8


def kill(process) -> None:
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def start_until(out, ready, **extra_env):
    """Starts the command in `out` and SIGKILLs it once `ready()` holds."""
    process = start_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out), **extra_env)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.01)
    kill(process)


def test_a_run_killed_after_an_epoch_and_in_the_epoch_it_stops_at_stops_there_with_the_same_weights(uninterrupted,
                                                                                                   tmp_path):
    """Killed after epoch 2's backup, then again while the stopping epoch's backup is written (its row logged, its
    state not yet in place): the run trains that epoch again, identically, and stops where the uninterrupted run did,
    with its weights."""
    reference, _ = uninterrupted
    out = tmp_path / "run"
    start_until(out, lambda: backed_up_epoch(out) >= 2)
    assert epochs_logged(out) == [0, 1]
    state = backup.read_metadata(backup.states(str(out / "backup"))[0])["callbacks"]["early_stopping"]
    assert (state["best_epoch"], state["wait"], state["stopped_epoch"]) == (0, 1, None)

    start_until(out, lambda: len(epochs_logged(out)) >= 3, **{backup.PAUSE_ENV: "0.5"})
    assert backed_up_epoch(out) == 2 and epochs_logged(out) == [0, 1, 2]  # the row is there, its state is not

    resumed = run_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out), timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    assert (results["best_epoch"], results["stopped_epoch"]) == (expected["best_epoch"], expected["stopped_epoch"]) == (1, 3)
    assert results["weights_sha256"] == expected["weights_sha256"]
    assert epochs_logged(out) == [0, 1, 2]
    for kept, best in zip(weights(out / "model.keras"), weights(out / "best.keras")):  # read back from best.keras
        np.testing.assert_array_equal(kept, best)


def test_early_stopping_counts_evaluations_and_skips_epochs_without_one():
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=8, mlp_dim=8, num_heads=1, num_layers=1, classes=2)
    callback = EarlyStopping("fewshot_10shot", patience=2, min_delta=0.01)
    callback.set_model(model)
    for epoch, value in enumerate([0.5, float("nan"), 0.505, float("nan"), 0.6, 0.6, float("nan"), 0.605]):
        model.stop_training = False
        callback.on_epoch_end(epoch, {"fewshot_10shot": value})
    assert (callback.best, callback.best_epoch, callback.stopped_epoch) == (0.6, 4, 7)
    restored = EarlyStopping("fewshot_10shot", patience=2)
    restored.set_state(json.loads(json.dumps(callback.get_state())))
    assert restored.get_state() == callback.get_state()


def test_evaluations_during_the_warm_up_keep_the_best_but_do_not_count_toward_patience():
    """A randomly initialised model's few-shot accuracy (0.226 here) can beat its first epochs of training."""
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=8, mlp_dim=8, num_heads=1, num_layers=1, classes=2)
    values = [0.226, 0.180, 0.175, 0.210, 0.300, 0.250]
    stopped = {}
    for start_epoch in (0, 3):
        callback = EarlyStopping("fewshot_5shot", patience=2, start_epoch=start_epoch)
        callback.set_model(model)
        model.stop_training = False
        for epoch, value in enumerate(values):
            callback.on_epoch_end(epoch, {"fewshot_5shot": value})
            if model.stop_training:
                break
        stopped[start_epoch] = (callback.stopped_epoch, callback.best, callback.best_epoch)
    assert stopped == {0: (2, 0.226, 0), 3: (None, 0.3, 4)}


@pytest.mark.parametrize("flags, message", [
    (["--early_stopping_patience", "2", "--early_stopping_monitor", "fewshot_10shot"],
     "--early_stopping_monitor fewshot_10shot needs --fewshot_every N"),
    (["--early_stopping_patience", "-1"], "--early_stopping_patience must be 0 (off) or positive"),
])
def test_contradicting_early_stopping_flags_are_refused_at_once(flags, message, tmp_path, capsys):
    """Refused with the command line, before TensorFlow is set up: the command runs in this process."""
    from keras_vit.training import train

    assert train.main([*TINY_MODEL, *flags, "--output_dir", str(tmp_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not any(tmp_path.iterdir())


def test_a_monitor_the_training_split_cannot_give_is_refused_before_training(tmp_path):
    """Found once the dataset is read (a tenth of the digits has 11 examples of its rarest class: its 25-shot accuracy
    would be NaN at every epoch); from a real process, as the run has set up TensorFlow by then."""
    result = run_module("keras_vit.training.train", *TINY_MODEL, "--train_fraction", "0.1", "--fewshot_every", "1",
                        "--early_stopping_patience", "2", "--early_stopping_monitor", "fewshot_25shot", "--output_dir",
                        str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert "fewshot_25shot cannot be computed: the smallest class of the training split has 11 examples" in result.stderr
