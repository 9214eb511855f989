"""The table of ViT variants (paper Table 1 plus Ti and S) and of the named models built from them."""

from __future__ import annotations

import dataclasses
import re

from keras_vit.utils import to_pair

#: Encoder widths of the paper's and AugReg's variants: (hidden_size, mlp_dim, num_heads, num_layers).
WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 768, 3, 12),
    "S": (384, 1536, 6, 12),
    "B": (768, 3072, 12, 12),
    "L": (1024, 4096, 16, 24),
    "H": (1280, 5120, 16, 32),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named model: an encoder width, a patch size and, for hybrids, a ResNet.

    `reference_name` is the model's name in google-research/vision_transformer
    and in its released checkpoint files. `dropout_rate` is the training
    dropout of its reference config (`vit_jax/configs/models.py`): 0.1 for
    L/16, H/14 and the R50 hybrids (built on the L/16 and B/16-with-dropout
    configs), 0 elsewhere; the constructors default to it.
    """

    width: str
    patch_size: int
    reference_name: str
    resnet_layers: tuple[int, ...] | None = None
    resnet_width: int = 1
    dropout_rate: float = 0.0

    @property
    def config(self) -> dict:
        """Keyword arguments of `keras_vit.ViT` for this variant."""
        hidden_size, mlp_dim, num_heads, num_layers = WIDTHS[self.width]
        return dict(
            patch_size=self.patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_heads=num_heads,
            num_layers=num_layers,
            resnet_layers=self.resnet_layers,
            resnet_width=self.resnet_width,
        )


#: Constructor name -> variant. Hybrids embed the ResNet's feature map with the given patch size.
VARIANTS: dict[str, Variant] = {
    "ViT_Ti16": Variant("Ti", 16, "ViT-Ti_16"),
    "ViT_S16": Variant("S", 16, "ViT-S_16"),
    "ViT_S32": Variant("S", 32, "ViT-S_32"),
    "ViT_B8": Variant("B", 8, "ViT-B_8"),
    "ViT_B16": Variant("B", 16, "ViT-B_16"),
    "ViT_B32": Variant("B", 32, "ViT-B_32"),
    "ViT_L16": Variant("L", 16, "ViT-L_16", dropout_rate=0.1),
    "ViT_L32": Variant("L", 32, "ViT-L_32"),
    "ViT_H14": Variant("H", 14, "ViT-H_14", dropout_rate=0.1),
    # R50 uses 3 stages (3, 4, 9): 2 ** (2 + 2) = 16x downsampling, patch 1 -> /16.
    "R50_ViT_B16": Variant("B", 1, "R50+ViT-B_16", resnet_layers=(3, 4, 9), dropout_rate=0.1),
    # 4 stages: 2 ** (2 + 3) = 32x downsampling -> /32.
    "R26_ViT_S32": Variant("S", 1, "R26+ViT-S_32", resnet_layers=(2, 2, 2, 2)),
    "R26_ViT_B32": Variant("B", 1, "R26+ViT-B_32", resnet_layers=(2, 2, 2, 2)),
    "R50_ViT_L32": Variant("L", 1, "R50+ViT-L_32", resnet_layers=(3, 4, 6, 3), dropout_rate=0.1),
    # Stem only (4x downsampling) and 8x8 patches.
    "R_ViT_Ti16": Variant("Ti", 8, "R+ViT-Ti_16", resnet_layers=()),
}


def _normalize(name: str) -> str:
    """"ViT-Ti/16", "ViT-Ti_16", "ViT_Ti16" and "vit_ti16" all read "vit_ti16"; "R50+ViT-B/16" reads "r50_vit_b16"."""
    return re.sub(r"[-_/+]", "", name).lower()


def variant_name(name: str) -> str:
    """The constructor name ("ViT_B16") of a variant named in any spelling of the README's table.

    Accepts constructor names ("ViT_B16"), reference names ("ViT-B_16",
    "R50+ViT-B_16") and the paper's ("ViT-B/16"), in any case.
    """
    wanted = _normalize(name)
    for key, variant in VARIANTS.items():
        if wanted in (_normalize(key), _normalize(variant.reference_name)):
            return key
    raise ValueError(f"Unknown ViT variant {name!r}; known variants: {', '.join(VARIANTS)}.")


def get_variant(name: str) -> Variant:
    """Looks a variant up by any of its names ("ViT_B16", "ViT-B_16", "ViT-B/16")."""
    return VARIANTS[variant_name(name)]


def check_variant(name: str, **architecture) -> None:
    """ValueError unless `architecture` (keyword arguments of VisionTransformer) is that of variant `name`."""
    expected = dict(get_variant(name).config)
    expected["patch_size"] = to_pair(expected["patch_size"])
    different = {k: (architecture[k], v) for k, v in expected.items() if k in architecture and architecture[k] != v}
    if different:
        details = ", ".join(f"{k}={got!r} (the variant has {want!r})" for k, (got, want) in different.items())
        raise ValueError(f"variant={name!r} does not describe this architecture: {details}.")
