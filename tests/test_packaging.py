"""What users install: the wheel and the sdist hold every module, and the wheel, installed (not editable) into a fresh
virtualenv with its extras, runs the user's journey from a folder outside the checkout.

The virtualenv reuses pip's cache (in CI, warm from `.ci/run`'s own install); nothing of the checkout is on its
`sys.path`, so a module the wheel forgot fails here as it would for a user.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest

from support import REPO, free_port

pytestmark = pytest.mark.process

#: The folders that are the package, and the name each installs under.
PACKAGE_FOLDERS = {"keras_vit": "keras_vit", "training": "keras_vit/training", "serving": "keras_vit/serving"}


def tracked_modules() -> list[str]:
    """Every `.py` file git tracks in the package folders, as the path it has in the wheel."""
    files = subprocess.run(["git", "ls-files", *PACKAGE_FOLDERS], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    modules = []
    for path in files:
        folder, _, rest = path.partition("/")
        if path.endswith(".py"):
            modules.append(f"{PACKAGE_FOLDERS[folder]}/{rest}")
    return modules


@pytest.fixture(scope="session")
def distributions(tmp_path_factory) -> dict[str, pathlib.Path]:
    """The wheel and the sdist, built by PyPA's `build` (isolated, as pip builds) from a copy of the tracked files."""
    root = tmp_path_factory.mktemp("dist")
    source = root / "source"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(root / "out"), str(source)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"wheel": next((root / "out").glob("*.whl")), "sdist": next((root / "out").glob("*.tar.gz"))}


@pytest.fixture(scope="session")
def installed(distributions, tmp_path_factory) -> pathlib.Path:
    """A fresh virtualenv with the wheel and its training, serving and analysis extras installed; its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"{distributions['wheel']}[training,serving,analysis]"],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return venv / "bin"


def user_env() -> dict[str, str]:
    """The environment of a user's shell: nothing that points back at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return dict(env, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")


def run(bin_dir: pathlib.Path, program: str, *args: str, cwd: pathlib.Path, timeout: float = 600):
    result = subprocess.run([str(bin_dir / program), *args], cwd=cwd, env=user_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{program} {' '.join(args)}\n" + result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_the_wheel_holds_every_tracked_module_and_no_other_top_level_name(distributions):
    names = set(zipfile.ZipFile(distributions["wheel"]).namelist())
    missing = [module for module in tracked_modules() if module not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"keras_vit"}
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(distributions["wheel"]).read(entry_points).decode()
    for script in ("keras-vit-train", "keras-vit-export", "keras-vit-serve", "keras-vit-analysis", "keras-vit-study"):
        assert f"{script} = " in scripts


def test_the_sdist_holds_every_tracked_module(distributions):
    with tarfile.open(distributions["sdist"]) as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    tracked = subprocess.run(["git", "ls-files", *PACKAGE_FOLDERS, "setup.py", "setup.cfg", "pyproject.toml"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    missing = [path for path in tracked if path.endswith((".py", ".cfg", ".toml")) and path not in names]
    assert not missing, f"the sdist lacks {missing}"


def test_the_installed_wheel_runs_the_users_journey(installed, fixtures_dir, fixture_specs, tmp_path):
    # 1. The reference fixture's checkpoint gives the reference logits.
    name = "vit_tiny_token"
    script = (
        "import sys, numpy as np, keras_vit\n"
        "path, inputs = sys.argv[1], np.load(sys.argv[2])\n"
        "model = keras_vit.ViT(weights=path, **keras_vit.weights.npz_architecture(path))\n"
        "np.save(sys.argv[3], model.predict(inputs, verbose=0))\n"
        "print(keras_vit.__file__)\n"
    )
    logits_path = tmp_path / "logits.npy"
    result = run(installed, "python", "-c", script, str(fixtures_dir / f"{name}.npz"),
                 str(fixtures_dir / f"{name}_inputs.npy"), str(logits_path), cwd=tmp_path)
    assert str(installed.parent) in result.stdout and str(REPO) not in result.stdout
    reference = np.load(fixtures_dir / f"{name}_logits.npy")
    np.testing.assert_allclose(np.load(logits_path), reference, atol=fixture_specs[name]["tolerance"]["logits_atol"], rtol=0)
    generic = subprocess.run([str(installed / "python"), "-c", "import training"], cwd=tmp_path, env=user_env(),
                             capture_output=True, text=True, timeout=120)
    assert "No module named 'training'" in generic.stderr

    # 2. One tiny epoch on digits, 3. the export, 4. a REST predict from the server, 5. the analysis.
    run(installed, "keras-vit-train", "--model", "ViT", "--image_size", "8", "--patch_size", "4", "--hidden_size", "16",
        "--mlp_dim", "32", "--num_heads", "2", "--num_layers", "1", "--dataset", "digits", "--epochs", "1",
        "--steps_per_epoch", "2", "--batch_size", "16", "--output_dir", "run", "--progress", "0", cwd=tmp_path)
    assert (tmp_path / "run" / "model.keras").is_file() and (tmp_path / "run" / "labels.txt").is_file()
    run(installed, "keras-vit-export", "--model", "run/model.keras", "--model_base_path", "models/vit", cwd=tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [str(installed / "keras-vit-serve"), "--port", "0", "--rest_api_port", str(port), "--model_name", "vit",
         "--model_base_path", "models/vit"],
        cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        body = json.dumps({"signature_name": "predict_pixels",
                           "instances": np.zeros((2, 8, 8, 3), "uint8").tolist()}).encode()
        answer = _post_when_ready(f"http://127.0.0.1:{port}/v1/models/vit:predict", body, server)
        assert len(answer["predictions"]) == 2
        assert abs(sum(answer["predictions"][0]["probabilities"]) - 1.0) < 1e-4
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output[-3000:]
    run(installed, "keras-vit-analysis", "posemb", "--model", "run/model.keras", "--out", "posemb.png", cwd=tmp_path)
    assert (tmp_path / "posemb.png").stat().st_size > 1000


def _post_when_ready(url: str, body: bytes, server: subprocess.Popen, seconds: float = 180) -> dict:
    """The server's answer to `body`, polling until it listens; fails at once if the server exits."""
    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            pytest.fail("the server exited: " + server.stdout.read()[-3000:])
        try:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
