"""`import keras_vit` starts no TensorFlow, yet Keras finds keras_vit's classes whatever is imported first."""

import subprocess
import sys

import pytest

import keras_vit
from support import REPO, env

#: Import orders a user may write before loading a .keras file with Keras' own loader. Keras first
#: (`import keras, keras_vit`) is test_training's fresh-process load of a trained run.
IMPORT_ORDERS = [
    "import keras_vit; import keras",  # keras_vit first: registered when Keras arrives
    "import keras_vit; import tensorflow as tf; import keras",  # TensorFlow imports Keras while it initialises
    "import keras_vit.layers; import keras",  # Keras first imported from inside a keras_vit module
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


def test_import_keras_vit_starts_no_tensorflow():
    code = "import sys, keras_vit; keras_vit.get_variant('ViT-B/16'); print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    assert python(code) == "[]"


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
