"""Version folders that fail to load or are empty: logged once, retried with back-off, and the server keeps serving."""

import pytest
import shutil
import signal
import subprocess
import sys
import time

from keras_vit.serving.client import RestClient
from support import REPO, env, free_port
from test_serving import assert_still_serving, exported, get  # noqa: F401  (fixtures)

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers


def served_versions(base: str) -> list[int]:
    status, body = get(f"{base}/v1/models/vit")
    assert status == 200, body
    return sorted(int(v["version"]) for v in body["model_version_status"] if v["state"] == "AVAILABLE")


def test_a_broken_version_is_logged_once_retried_and_picked_up_when_fixed(exported, tmp_path):
    base = tmp_path / "vit"
    good = exported["root"] / "vit" / "1"
    shutil.copytree(good, base / "1")
    (base / "3").mkdir()  # an empty version folder
    rest_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", str(free_port()), "--rest_api_port", str(rest_port),
         "--model_name", "vit", "--model_base_path", str(base), "--file_system_poll_wait_seconds", "0.2"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{rest_port}"
    try:
        RestClient(url, "vit").wait_until_available(process=process)
        (base / "2").mkdir()
        (base / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
        time.sleep(4)  # 20 polls
        assert served_versions(url) == [1]
        assert_still_serving({"rest": url}, exported)
        # Fixed in place: the changed saved_model.pb is tried at once, not after the back-off.
        shutil.rmtree(base / "2")
        shutil.copytree(good, base / "2")
        deadline = time.monotonic() + 30
        while served_versions(url) != [2] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert served_versions(url) == [2]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert output.count("Could not load vit version 2") == 1, output[-3000:]
    assert "Traceback" not in output
    assert output.count(f"Version folder {base / '3'} has no saved_model.pb") == 1
    assert output.count(f"Version folder {base / '2'} has no saved_model.pb") <= 1  # while it was being copied
