"""After `import keras_vit`, Keras' own loader finds keras_vit's classes whatever is imported first; the import is quiet."""

import re
import subprocess
import sys

import pytest

import keras_vit
from support import REPO, env

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

#: Import orders a user may write before loading a .keras file with Keras' own loader.
IMPORT_ORDERS = [
    "import keras_vit; import keras",
    "import tensorflow as tf; import keras_vit; import keras",  # TensorFlow (and Keras) first
    "import keras, keras_vit",
    "import keras_vit.layers; import keras",  # a sub-module first: the package's __init__ runs before it
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("lazy") / "tiny.keras"
    keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=3,
                  representation_size=16).save(path)
    return path


def python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_import_keras_vit_holds_back_tensorflows_informational_start_up_lines():
    quiet = {k: v for k, v in env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import sys, keras_vit; print('on stderr', file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=quiet, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "on stderr\n", result.stderr
    # TF_CPP_MIN_LOG_LEVEL=0 asks for every line: TensorFlow's own start-up lines then come through.
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(quiet, TF_CPP_MIN_LOG_LEVEL="0"),
                            capture_output=True, text=True, timeout=120)
    assert re.search(r"^I\d{4} .*port\.cc", result.stderr, re.M) and result.stderr.endswith("on stderr\n"), result.stderr


def test_tensorflows_info_lines_stay_off_and_the_environment_is_left_as_it_was():
    quiet = {k: v for k, v in env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = ("import os, keras_vit, tensorflow as tf\n"
            "tf.function(lambda x: x * 2, jit_compile=True)(tf.ones(3))\n"  # XLA logs an INFO line when compiling
            "print('TF_CPP_MIN_LOG_LEVEL' in os.environ)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=quiet, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]
    assert not re.search(r"^I\d{4} ", result.stderr, re.M), result.stderr[-2000:]


@pytest.mark.parametrize("imports", IMPORT_ORDERS)
def test_keras_loads_keras_vit_models_after_any_import_order(imports, saved):
    code = f"{imports}; m = keras.saving.load_model({str(saved)!r}, safe_mode=True); print(type(m).__name__, m.count_params())"
    assert python(code) == f"VisionTransformer {keras_vit.load_model(saved).count_params()}"


def test_every_public_name_resolves():
    for name in keras_vit.__all__:
        assert getattr(keras_vit, name) is not None, name
    assert set(keras_vit.__all__) <= set(dir(keras_vit))
    assert keras_vit.ViT_B16 is keras_vit.models.constructors.CONSTRUCTORS["ViT_B16"]
    with pytest.raises(AttributeError, match="has no attribute 'ViT_B17'"):
        keras_vit.ViT_B17
