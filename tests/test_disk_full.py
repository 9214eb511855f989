"""A full disk during a run: one line naming what was being written, a non-zero exit, the last complete backup kept,
and the same command resumes once there is room (a real filesystem that fills: a 800 KB tmpfs)."""

import csv
import subprocess

import pytest

from support import TINY_MODEL, run_module

pytestmark = pytest.mark.process

COMMAND = [*TINY_MODEL, "--epochs", "6", "--batch_size", "16", "--progress", "0"]


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 800 KB (mounting needs root, as CI has; elsewhere the test is skipped), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=800k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_keeps_the_last_backup_and_the_rerun_resumes(small_disk):
    out = small_disk / "run"
    result = run_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out), timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    # Whichever write finds the disk full first (best.keras or a backup) says so.
    assert error.startswith("error: Could not write ") and ": the disk is full" in error, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Segmentation" not in result.stderr
    assert not [p.name for p in out.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]
    kept = [p.name for p in (out / "backup").iterdir()]
    assert len(kept) == 1 and kept[0].startswith("state-"), kept  # the last complete backup
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # room again
    result = run_module("keras_vit.training.train", *COMMAND, "--output_dir", str(out), timeout=300)
    assert result.returncode == 0 and "resuming at epoch" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    epochs = [int(row["epoch"]) for row in csv.DictReader((out / "history.csv").open())]
    assert epochs == list(range(6))  # every epoch logged once


def test_a_backup_that_does_not_fit_names_itself_and_keeps_the_previous_one(small_disk):
    import keras_vit
    from keras_vit.training import backup

    # About 600 KB of weights: one state fits on the 800 KB disk, a second one beside it does not.
    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=64, mlp_dim=256, num_heads=4, num_layers=3, classes=3)
    saver = backup.AtomicBackup(str(small_disk / "backup"))
    saver.set_model(model)
    saved = 0
    with pytest.raises(OSError, match=r"Could not write the backup .*state-\d+: the disk is full \(needs about 0\.\d MB, "
                                      r"0\.\d MB free\)\. The last complete "
                                      r"backup, .*state-\d+, is kept\. Free space and rerun"):
        for epoch in range(1, 100):  # each state is written beside the previous one before that is dropped
            saver.save(epoch=epoch, batch=0)
            saved = epoch
    assert saved >= 1
    assert [p.name for p in (small_disk / "backup").iterdir()] == [f"state-{saved:08d}"]
    assert backup.read_metadata(str(small_disk / "backup" / f"state-{saved:08d}"))["epoch"] == saved
