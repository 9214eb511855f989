"""A run killed at any instant resumes and logs every epoch once; damaged or foreign backups and runs are refused clearly."""

import csv
import json
import pathlib
import shutil
import signal
import time

import pytest

from support import TINY_MODEL, run_commands, run_module, start_module
from keras_vit.training import backup, train

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

EPOCHS = 3
COMMAND = [*TINY_MODEL, "--epochs", str(EPOCHS), "--steps_per_epoch", "12", "--batch_size", "16", "--backup_freq", "5",
           "--warmup_steps", "5", "--progress", "2"]
PAUSE = {backup.PAUSE_ENV: "0.4"}  # widens the window inside each backup write


def epochs_logged(out):
    path = out / "history.csv"
    return [int(row["epoch"]) for row in csv.DictReader(path.open())] if path.exists() else []


def kill_when(out, ready, timeout=240):
    """Starts the run, waits until `ready(out)` holds, and SIGKILLs it; returns False if the run ended first."""
    process = start_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out), **PAUSE)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline and not ready(out):
        time.sleep(0.02)
    alive = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return alive


def writing_a_backup(out):
    return any(p.name.endswith(".tmp") for p in (out / "backup").glob("state-*"))


def newest_state(out):
    return pathlib.Path(backup.states(str(out / "backup"))[0])


def has_state(out):
    return bool(backup.states(str(out / "backup")))


def all_epochs_logged(out):
    return len(epochs_logged(out)) == EPOCHS


@pytest.fixture(scope="module")
def killed_in_epoch_one(tmp_path_factory):
    """A run killed right after its first mid-epoch backup: a state, and no history row yet."""
    out = tmp_path_factory.mktemp("killed")
    assert kill_when(out, has_state)
    assert has_state(out) and epochs_logged(out) == []
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def history(out):
    return list(csv.DictReader((out / "history.csv").open()))


def test_kills_at_many_instants_end_with_every_epoch_logged_once_and_the_uninterrupted_run(
        killed_in_epoch_one, uninterrupted, tmp_path, capsys):
    """Killed mid-epoch and at epoch ends, the run resumes at the step it saved: the same updates, learning rates,
    validation scores, FLOPs and weights as the run never killed (its first process was a second run of the command)."""
    out = tmp_path / "run"
    shutil.copytree(killed_in_epoch_one, out)  # first kill: after a step backup, before any epoch was logged
    instants = [writing_a_backup, lambda o: len(epochs_logged(o)) >= 1 and writing_a_backup(o), writing_a_backup,
                all_epochs_logged]  # the last: after the last epoch, before the model and results are written
    kills = 1
    for ready in instants:
        if kill_when(out, ready):
            kills += 1
        for state in backup.states(str(out / "backup")):  # whatever the instant, every state is whole
            assert (pathlib.Path(state) / backup.WEIGHTS).exists() and backup.read_metadata(state)
    finished = run_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out))
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert kills >= 4
    assert epochs_logged(out) == list(range(EPOCHS))
    results = json.loads((out / "results.json").read_text())
    expected = json.loads((uninterrupted / "results.json").read_text())
    assert results["epochs"] == EPOCHS
    assert (out / "model.keras").exists() and not (out / "backup").exists()
    assert results["weights_sha256"] == expected["weights_sha256"]
    assert (results["training_flops"], results["accuracy"]) == (expected["training_flops"], expected["accuracy"])
    assert results["train_seconds"] > 0.5 * expected["train_seconds"]  # every process's time, not the last one's
    for row, reference in zip(history(out), history(uninterrupted), strict=True):
        for column in ("epoch", "updates", "learning_rate", "val_accuracy", "val_loss"):
            assert row[column] == reference[column], (column, row, reference)
        for column in ("accuracy", "loss"):  # running means summed in another order after a resume
            assert float(row[column]) == pytest.approx(float(reference[column]), rel=1e-5), (column, row, reference)

    # A finished run is recognised from the command line, before TensorFlow is set up: here, in this process.
    assert train.main([*COMMAND, "--output_dir", str(out)]) == 0
    assert "holds this run, finished" in capsys.readouterr().out
    assert epochs_logged(out) == list(range(EPOCHS))


def test_an_output_dir_of_another_configuration_is_refused(killed_in_epoch_one, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed_in_epoch_one, out)
    other = list(COMMAND)
    other[other.index("--epochs") + 1] = "5"
    result = run_module("keras_vit.training.train", *other, "--output_dir", str(out), timeout=120)
    assert result.returncode == 2
    assert "holds a run of another configuration (--epochs 3 there, 5 now)" in result.stderr
    assert has_state(out)  # nothing was touched


def damage_metadata(state):
    (state / backup.METADATA).write_text('{"epoch": ')


def damage_weights(state):
    weights = state / backup.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])


def empty_weights(state):
    (state / backup.WEIGHTS).write_bytes(b"")


def past_the_last_epoch(state):
    (state / backup.METADATA).write_text(json.dumps({"epoch": 9, "batch": 0}))


DAMAGES = [
    (damage_metadata, "training_metadata.json: unreadable"),
    (damage_weights, "model.weights.h5 is not a readable HDF5 weights file"),
    (empty_weights, "model.weights.h5 is not a readable HDF5 weights file"),
    (past_the_last_epoch, "is at epoch 9, past --epochs 3"),
]


def test_a_damaged_backup_is_one_clear_line_naming_the_file(killed_in_epoch_one, tmp_path):
    """Each damage, in a copy of the killed run: the command exits 2 with one line naming the backup (the four runs
    in one process: `run_commands`)."""
    expected = {}
    for damage, message in DAMAGES:
        out = tmp_path / damage.__name__
        shutil.copytree(killed_in_epoch_one, out)
        damage(newest_state(out))
        expected[" ".join(["keras_vit.training.train", *COMMAND, "--output_dir", str(out)])] = (out, message)
    answers = run_commands(*expected)
    for command, (out, message) in expected.items():
        status, stdout, stderr = answers[command]
        assert status == 2, stdout[-2000:] + stderr[-2000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and str(out / "backup") in errors[0], stderr[-2000:]
        assert "Traceback" not in stderr


def test_a_damaged_newest_backup_falls_back_to_the_previous_whole_one(killed_in_epoch_one, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed_in_epoch_one, out)
    good = newest_state(out)
    newer = good.with_name("state-99999")
    shutil.copytree(good, newer)
    damage_weights(newer)
    result = run_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "skipped a damaged backup" in result.stderr and "state-99999" in result.stderr
    assert epochs_logged(out) == list(range(EPOCHS))


def test_the_best_model_is_replaced_only_whole(tmp_path):
    """A failed write of a better model (here: its temporary name is taken) keeps the previous best intact."""
    import keras
    import numpy as np

    import keras_vit
    from keras_vit.training.callbacks import BestModel

    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=8, mlp_dim=8, num_heads=1, num_layers=1, classes=2)
    path = tmp_path / "best.keras"
    callback = BestModel(str(path), "val_accuracy", best=0.5)
    callback.set_model(model)
    callback.on_epoch_end(0, {"val_accuracy": 0.4})
    assert not path.exists()  # not better than the threshold carried over from the history
    callback.on_epoch_end(1, {"val_accuracy": 0.6})
    saved = keras.saving.load_model(path).get_weights()
    model.set_weights([w + 1 for w in model.get_weights()])
    (tmp_path / "best.partial.keras").mkdir()
    with pytest.raises(OSError):
        callback.on_epoch_end(2, {"val_accuracy": 0.7})
    for kept, before in zip(keras.saving.load_model(path).get_weights(), saved):
        np.testing.assert_array_equal(kept, before)
    assert callback.best == 0.6
