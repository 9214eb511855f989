"""Layer-wise learning-rate decay: timm's layer assignment, each variable's update scaled, the optimizer saved."""

import numpy as np
import pytest
import keras

import keras_vit
from harness import randomize
from keras_vit.layer_decay import LayerDecaySGD, layer_multipliers

TINY = dict(image_size=16, patch_size=4, hidden_size=24, mlp_dim=48, num_heads=3, num_layers=2, classes=5)
IMAGES = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
LABELS = np.arange(8) % 5


def model_of(seed=0, **options):
    model = keras_vit.ViT(**TINY, **options)
    randomize(model, seed)
    return model


def test_the_layers_are_timms_stem_blocks_and_head():
    model = model_of(representation_size=24)
    multipliers = layer_multipliers(model, 0.5)
    assert set(multipliers) == {v.path for v in model.trainable_variables}
    by_path = {path.split("/")[0] + "/" + path.split("/")[-1]: m for path, m in multipliers.items()}
    assert multipliers[model.embedding.projection.kernel.path] == 0.125  # the stem: layer 0 of L + 1 = 3
    assert multipliers[model.class_token.cls.path] == multipliers[model.posembed_input.pos_embedding.path] == 0.125
    assert by_path["encoderblock_0/kernel"] == 0.25 and by_path["encoderblock_1/kernel"] == 0.5
    for layer in (model.encoder_norm, model.pre_logits, model.head):
        assert all(multipliers[v.path] == 1.0 for v in layer.weights)
    model.enable_lora(2)
    factors = layer_multipliers(model, 0.5)
    assert factors[model.encoder_blocks[1].attention.query.lora_kernel_a.path] == 0.5
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        layer_multipliers(model, 1.5)


def test_each_variables_update_is_its_multiple_of_the_plain_update():
    """One SGD step without momentum: the update of every variable is lr * multiplier * gradient."""
    updates = {}
    for name, optimizer in (("plain", keras.optimizers.SGD(10.0)),  # large steps, which float32 weight differences resolve
                            ("decayed", LayerDecaySGD(10.0, lr_multipliers=layer_multipliers(model_of(), 0.5)))):
        model = model_of()
        before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
        model.compile(optimizer=optimizer, jit_compile=False)
        model.train_on_batch(IMAGES, LABELS)
        updates[name] = {v.path: keras.ops.convert_to_numpy(v) - before[v.path] for v in model.trainable_variables}
    multipliers = layer_multipliers(model_of(), 0.5)
    assert any(np.any(update) for update in updates["plain"].values())
    for path, plain in updates["plain"].items():
        np.testing.assert_allclose(updates["decayed"][path], multipliers[path] * plain, rtol=1e-3, atol=1e-7,
                                   err_msg=path)


def test_the_optimizer_saves_with_its_multipliers(tmp_path):
    model = model_of()
    multipliers = layer_multipliers(model, 0.75)
    model.compile(optimizer=keras_vit.layer_decay.LayerDecayAdamW(1e-3, lr_multipliers=multipliers))
    model.fit(IMAGES, LABELS, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")  # compiled as saved, the optimizer's class included
    assert type(loaded.optimizer).__name__ == "LayerDecayAdamW" and loaded.optimizer.lr_multipliers == multipliers
