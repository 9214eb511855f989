"""Writes the timm fixtures of tests/test_torch_checkpoints.py: tiny random timm ViTs and their own outputs.

timm needs a torchvision built for the installed torch, which the test environment's CPU torch lacks, so its
reference outputs are made here, once, where timm runs (`pip install timm safetensors`), as the reference
fixtures of ../shared were made with the original implementation:

    python tests/timm_fixtures/make.py

Each model is `<name>.safetensors` (its state dict, as timm users hold them); `outputs.npz` holds the images
(NHWC in [0, 1)) and, under each model's name, timm's logits in eval mode. The weights are drawn from N(0, 0.1), larger than timm's
initialisation, so that every layer moves the outputs.
"""

import pathlib
from functools import partial

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_hybrid import HybridEmbed, _resnetv2

HERE = pathlib.Path(__file__).parent
TINY = dict(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3, mlp_ratio=2, num_classes=5)
MODELS = {
    "token": (VisionTransformer, {}),
    "gap_fc_norm": (VisionTransformer, dict(class_token=False, global_pool="avg")),  # fc_norm by default
    "gap": (VisionTransformer, dict(class_token=False, global_pool="avg", fc_norm=False)),
    "no_embed_class": (VisionTransformer, dict(no_embed_class=True)),
    "deit_distilled": (VisionTransformerDistilled, {}),
    # The hybrids as timm builds its vit_*_r* models: a ResNetV2 stem alone, and with one stage of one unit.
    "hybrid_stem": (VisionTransformer, dict(patch_size=2, embed_layer=lambda **kw: HybridEmbed(backbone=_resnetv2(()), **kw))),
    "hybrid_r1": (VisionTransformer, dict(patch_size=2, embed_layer=lambda **kw: HybridEmbed(backbone=_resnetv2((1,)), **kw))),
}


def main() -> None:
    torch.manual_seed(0)
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    outputs = {"images": images}
    for name, (cls, options) in MODELS.items():
        model = cls(**{**TINY, **options}).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.1)
            outputs[name] = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, HERE / f"{name}.safetensors")
    np.savez(HERE / "outputs.npz", **outputs)
    print(f"timm {timm.__version__}: {', '.join(MODELS)}")


if __name__ == "__main__":
    main()
