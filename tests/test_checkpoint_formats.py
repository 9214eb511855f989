"""Every released checkpoint layout loads and reproduces the reference fixtures: each layout written by the test."""

import re

import numpy as np
import pytest

import keras_vit
from harness import predict
from support import fixture_model

PRE_LINEN_TO_LINEN = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}


def linen(params):
    """The fixture as flax Linen saves it: modules numbered per type inside each encoder block."""
    return {re.sub("|".join(PRE_LINEN_TO_LINEN), lambda m: PRE_LINEN_TO_LINEN[m.group(0)], k): v for k, v in params.items()}


def optimizer_checkpoint(params):
    """A flax optimizer checkpoint: parameters under opt/target/, optimizer state beside them."""
    out = {f"opt/target/{k}": v for k, v in params.items()}
    out.update({f"opt/state/param_states/{k}/momentum": np.zeros_like(v) for k, v in params.items()})
    out["opt/state/step"] = np.asarray(1000)
    return out


def big_vision(params, scan=False):
    """big_vision's layout: Linen names under params/, the position embedding at the top level, added before
    the class token is prepended (so the class token's row is folded into the token), blocks optionally stacked."""
    params = linen(params)
    posemb = params.pop("Transformer/posembed_input/pos_embedding")
    if "cls" in params:
        params["cls"] = params["cls"] + posemb[:, :1]
        posemb = posemb[:, 1:]
    params["pos_embedding"] = posemb
    if scan:
        blocks = sorted({k.split("/")[1] for k in params if k.startswith("Transformer/encoderblock_")}, key=lambda b: int(b.split("_")[1]))
        for leaf in sorted({k.split("/", 2)[2] for k in params if k.startswith(f"Transformer/{blocks[0]}/")}):
            params[f"Transformer/encoderblock/{leaf}"] = np.stack([params.pop(f"Transformer/{b}/{leaf}") for b in blocks])
    out = {f"params/{k}": v for k, v in params.items()}
    out["opt/1/0/mu/embedding/kernel"] = np.zeros(3)  # a training checkpoint's optimizer state, ignored
    return out


LAYOUTS = {
    "linen": linen,
    "opt_target": optimizer_checkpoint,
    "opt_target_linen": lambda p: optimizer_checkpoint(linen(p)),
    "big_vision": big_vision,
    "big_vision_scan": lambda p: big_vision(p, scan=True),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["vit_tiny_token", "hybrid_tiny"])
def test_every_layout_reproduces_the_reference_logits(name, layout, fixtures_dir, fixture_specs, tmp_path):
    original = dict(np.load(fixtures_dir / f"{name}.npz"))
    path = tmp_path / f"{layout}.npz"
    np.savez(path, **LAYOUTS[layout](original))
    assert keras_vit.weights.npz_architecture(path) == keras_vit.weights.npz_architecture(fixtures_dir / f"{name}.npz")
    model = fixture_model(fixtures_dir, name, weights=str(path))
    images = np.load(fixtures_dir / f"{name}_inputs.npy")
    np.testing.assert_allclose(
        predict(model, images), np.load(fixtures_dir / f"{name}_logits.npy"),
        atol=fixture_specs[name]["tolerance"]["logits_atol"], rtol=0,
    )
    # Written back in the released layout: the original file's arrays. (big_vision folds the class token's
    # position embedding into the token, so only their sum survives that layout.)
    keras_vit.save_npz(model, tmp_path / "released.npz")
    written = dict(np.load(tmp_path / "released.npz"))
    assert set(written) == set(original)
    posemb = "Transformer/posembed_input/pos_embedding"
    if layout.startswith("big_vision") and "cls" in original:
        for params in (written, original):
            params["cls"] = params["cls"] + params[posemb][:, :1]
            params[posemb] = params[posemb][:, 1:]
    for key, value in original.items():
        np.testing.assert_allclose(written[key].reshape(value.shape), value, atol=1e-6 if key == "cls" else 0, err_msg=key)


def test_map_head_checkpoints_are_refused_by_name(fixtures_dir, tmp_path):
    params = big_vision(dict(np.load(fixtures_dir / "vit_tiny_token.npz")))
    params["params/MAPHead_0/probe"] = np.zeros((1, 1, 64))
    np.savez(tmp_path / "map.npz", **params)
    with pytest.raises(ValueError, match="MAP head"):
        fixture_model(fixtures_dir, "vit_tiny_token", weights=str(tmp_path / "map.npz"))


def test_errors_name_keys_as_the_file_spells_them(fixtures_dir, tmp_path):
    params = dict(np.load(fixtures_dir / "vit_tiny_token.npz"))
    params["Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias"] = np.zeros(7, "float32")
    np.savez(tmp_path / "bad.npz", **params)
    with pytest.raises(ValueError, match=r"'Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias': the model's shape \(\d+,\), the file holds \(7,\)"):
        fixture_model(fixtures_dir, "vit_tiny_token", weights=str(tmp_path / "bad.npz"))
