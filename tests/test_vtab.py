"""VTAB-1k: the 19 tasks' labels and splits, the runner's protocol end to end, and a clear stop without the data."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_vit
from keras_vit.training import datasets, vtab
from keras_vit.training.vtab_tasks import GROUPS, TASKS
from support import run_module

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers


def test_the_nineteen_tasks_in_their_groups():
    assert len(TASKS) == 19
    assert {group: sum(t.group == group for t in TASKS.values()) for group in GROUPS} == {
        "Natural": 7, "Specialized": 4, "Structured": 8}
    assert vtab.task_names(["structured", "cifar100", "digits"])[-2:] == ["cifar100", "digits"]
    assert vtab.task_names(["all"]) == list(TASKS)
    with pytest.raises(ValueError, match="Unknown VTAB task 'cifar10'"):
        vtab.task_names(["cifar10"])
    assert TASKS["eurosat"].split("val200") == ("train[60%:80%]", 200)
    assert TASKS["smallnorb_elevation"].split("test") == ("test[50%:]", None)


def test_every_task_names_a_dataset_this_tensorflow_datasets_has(tmp_path):
    """Each task's tfds name and version resolve to a builder (no data needed) with the features its label reads."""
    import tensorflow_datasets as tfds

    for task in TASKS.values():
        features = tfds.builder(task.tfds, data_dir=str(tmp_path)).info.features
        assert set(task.reads) <= set(features.keys()), task.name
        if "label" in task.reads:
            assert features["label"].num_classes == task.num_classes, task.name


def test_derived_labels_bin_as_task_adaptation_does():
    clevr = {"objects": {"size": tf.zeros([5]), "pixel_coords": tf.constant([[0.0, 0.0, 9.7], [0.0, 0.0, 8.7]])}}
    assert int(TASKS["clevr_count"].label(clevr)) == 2  # 5 objects: classes start at 3
    assert int(TASKS["clevr_distance"].label(clevr)) == 2  # the closest at 8.7: bins 0, 8, 8.5 | 9, ...
    kitti = {"objects": {"type": tf.constant([0, 5, 1]), "location": tf.constant([[0.0, 0, 25], [0, 0, 3], [0, 0, 12]])}}
    assert int(TASKS["kitti_distance"].label(kitti)) == 1  # the closest vehicle at 12 m (the pedestrian at 3 m is none)
    kitti["objects"]["type"] = tf.constant([5, 5, 5])
    assert int(TASKS["kitti_distance"].label(kitti)) == 3  # no vehicle
    sprite = {"label_x_position": tf.constant(31), "label_orientation": tf.constant(39)}
    assert int(TASKS["dsprites_location"].label(sprite)) == int(TASKS["dsprites_orientation"].label(sprite)) == 15


def test_split_slices_of_the_local_sources():
    info = datasets.describe("digits")
    assert (info.count("train[:800]"), info.count("train[800:1000]"), info.count("train[1400:]")) == (800, 200, 37)
    first = next(iter(datasets.load(info, "train[800:1000]").batch(1000)))[1].numpy()
    assert len(first) == 200
    np.testing.assert_array_equal(first, next(iter(datasets.load(info, "train").batch(2000)))[1].numpy()[800:1000])


@pytest.mark.parametrize("task", ["clevr_count", "dsprites_location", "kitti_distance", "smallnorb_azimuth"])
def test_a_tasks_training_pipeline_is_a_plain_resize(task):
    """No crop and no flip, as task_adaptation trains: they would move or leave out what the label counts or locates."""
    from keras_vit.preprocessing import preprocess_input
    from keras_vit.training import pipeline

    info = datasets.vtab_info(f"vtab:{task}", test_examples=10)
    assert (info.train_crop, info.flip) == ("resize", False)
    prep = pipeline.Preprocessing((32, 32), info.num_classes, train_crop=info.train_crop, flip=info.flip)
    image = np.zeros((60, 90, 3), np.uint8)
    image[5:15, 70:85] = 255  # an object near a corner: a crop could cut it, a flip would move it
    examples = tf.data.Dataset.from_tensor_slices((image[None], np.array([1])))
    expected = preprocess_input(tf.image.resize(image, (32, 32)))
    for batch, _ in pipeline.train_dataset(examples, prep, 1, steps=5):  # five draws of the augmentation
        np.testing.assert_allclose(batch[0], expected, atol=1e-6)


def test_a_validation_slice_of_one_class_is_warned_about():
    digits = datasets.describe("digits")
    assert vtab.single_class_warning(digits, "train[800:1000]") is None
    label = int(next(iter(datasets.load(digits, "train[5:6]")))[1])
    assert vtab.single_class_warning(digits, "train[5:6]") == (
        f"the validation slice train[5:6] of digits holds one class only ({label}): the sweep's choice of learning rate "
        f"on it means little; give --val_examples more examples.")


def test_a_vtab_task_without_its_data_stops_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "TFDS_HOST", "tfds.invalid")  # RFC 6761: never resolves
    with pytest.raises(ValueError, match=r"'cifar100:3.\*.\*' is not downloaded to .*pass --data_dir where it is prepared"):
        datasets.describe("vtab:cifar100", data_dir=str(tmp_path))


def pets_folder(root, train: int, test: int = 10) -> None:
    """A `folder:` dataset at root/pets: two classes of random 12x12 images, `train` and `test` of each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for name in ("cats", "dogs"):
            (root / "pets" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / "pets" / split / name / f"{i}.png")


def test_a_folder_too_small_for_the_slices_is_one_line_before_any_run(tmp_path):
    pets_folder(tmp_path, train=20)
    model = tmp_path / "pretrained.keras"
    keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=10).save(model)
    result = run_module("keras_vit.training.vtab", "--model", "ViT", "--weights", str(model), "--image_size", "16", "--tasks",
                        f"folder:{tmp_path / 'pets'}", "--out", str(tmp_path / "vtab.md"), timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --val_examples train[800:1000]: the split train[800:1000] of folder:{tmp_path / 'pets'} is empty "
        "(train has 40 examples).")
    assert not (tmp_path / "vtab_runs").exists()


def test_a_quick_vtab_run_sweeps_selects_retrains_and_tests(tmp_path):
    model = tmp_path / "pretrained.keras"
    keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=10).save(model)
    pets_folder(tmp_path, train=60)
    out = tmp_path / "vtab.md"
    result = run_module("keras_vit.training.vtab", "--model", "ViT", "--weights", str(model), "--image_size", "16", "--tasks",
                        "digits", f"folder:{tmp_path / 'pets'}", "--protocol", "sweep", "--quick", "--out", str(out),
                        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads((tmp_path / "vtab.json").read_text())
    assert list(runs) == ["digits", f"folder:{tmp_path / 'pets'}"]
    for row in runs.values():
        assert sorted(row["sweep"]) == ["0.001", "0.003"]
        assert row["learning_rate"] == float(max(row["sweep"], key=row["sweep"].get))  # the best on val, first on ties
        assert 0 <= row["test_accuracy"] <= 1
    table = out.read_text()
    assert "| digits | other |" in table and "| other | 2 |" in table
    finals = sorted(p.name for p in (tmp_path / "vtab_runs" / "digits").iterdir())
    assert finals[0].startswith("final-lr") and finals[1:] == ["lr0.001", "lr0.003"]
    assert "keras_vit's sweep: 3 steps of batch 16 at each learning rate of [0.001, 0.003]" in table


def test_the_papers_protocol_is_the_default_and_trains_each_task_once(tmp_path):
    model = tmp_path / "pretrained.keras"
    keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=10).save(model)
    out = tmp_path / "vtab.md"
    result = run_module("keras_vit.training.vtab", "--model", "ViT", "--weights", str(model), "--image_size", "16",
                        "--tasks", "digits", "--quick", "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "vtab.json").read_text())["digits"]
    assert (row["sweep"], row["learning_rate"], row["val_accuracy"]) == ({}, 0.01, None)
    assert [p.name for p in (tmp_path / "vtab_runs" / "digits").iterdir()] == ["final-lr0.01"]
    table = out.read_text()
    assert ("fine-tuned at 16x16 pixels with the paper's protocol (appendix B.1.1): one setting for every task, "
            "learning rate 0.01, 3 steps of batch 16") in table
    assert "digits: the first 80 training examples and the next 20 (100 together)" in table  # what ran, not 800
    assert "| digits | other | 0.01 |  |" in table
    args = vtab.settle(vtab.parser().parse_args(["--weights", "w", "--tasks", "all", "--out", "o.md"]))
    assert (args.learning_rates, args.steps, args.batch_size, args.image_size) == ([0.01], 2500, 512, [384])
    rows = {name: {"group": task.group, "learning_rate": 0.01, "val_accuracy": None, "test_accuracy": i / 100}
            for i, (name, task) in enumerate(TASKS.items())}
    assert "| all VTAB tasks | 19 | 9.0 |" in vtab.markdown(rows, args)  # the mean of 0..18 %, beside the groups'
    assert "| all VTAB tasks run | 2 | 0.5 |" in vtab.markdown(dict(list(rows.items())[:2]), args)
    with pytest.raises(ValueError, match="--protocol paper trains once per task, at one learning rate"):
        vtab.settle(vtab.parser().parse_args(["--weights", "w", "--tasks", "all", "--out", "o.md",
                                              "--learning_rates", "0.01", "0.03"]))
