"""One run at a time in an --output_dir: a second run started there says who holds it, exits non-zero, writes nothing."""

import os
import signal
import time

import pytest

from keras_vit.training import outputs
from support import TINY_MODEL, run_module, start_module


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    with outputs.locked(str(tmp_path)):
        with pytest.raises(ValueError, match=rf"--output_dir {tmp_path} is in use by process {os.getpid()}, a run"):
            with outputs.locked(str(tmp_path)):
                pass
    with outputs.locked(str(tmp_path)):  # released when the block ends
        pass


@pytest.mark.process
def test_a_second_run_on_a_busy_output_dir_refuses_and_writes_nothing(tmp_path):
    command = [*TINY_MODEL, "--epochs", "200", "--batch_size", "16", "--progress", "0", "--output_dir", str(tmp_path)]
    first = start_module("keras_vit.training.train", *command)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "best.keras").exists():  # the first run has trained an epoch
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-2000:]
            time.sleep(0.1)
        before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
        second = run_module("keras_vit.training.train", *command, timeout=240)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: --output_dir {tmp_path} is in use by process {first.pid}, a run still going there: wait for it or "
            "stop it (the same command then resumes), or pass another --output_dir.")
        new = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} - before
        # The first run's own writes only: backups, TensorBoard logs, and a better best.keras on its way in.
        assert {p for p in new if p.parts[0] not in ("backup", "logs", "best.partial.keras")} == set()
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with outputs.locked(str(tmp_path)):  # killed, the first run holds nothing: its rerun may start
        pass
