"""The checkpoints of HF transformers and timm: their tensors named in the canonical layout (`layout`), and back.

- HF transformers: a `save_pretrained` folder, or its `model.safetensors` /
  `pytorch_model.bin` with `config.json` beside it, of `ViTForImageClassification`,
  `ViTModel` (its pooler is the tanh representation layer) or
  `DeiTForImageClassificationWithTeacher`, under the hub's key names (which
  transformers 5 still writes) or transformers 5's own (its `state_dict()`). The architecture's conventions come from
  `config.json`: `layer_norm_eps`, `hidden_act`.
- timm: a state dict of `timm.models.vision_transformer.VisionTransformer`,
  DeiT's `VisionTransformerDistilled`, or a hybrid (`vit_*_r*`: a ResNetV2
  stem and stages in `patch_embed.backbone`), `.safetensors` or `.pth` / `.bin`.
  timm computes the exact GELU with LayerNorm epsilon 1e-6; a state dict does
  not record the number of heads, which the model (or the variant table) gives.

Torch stores [out, in] matrices and [out, in, h, w] convolutions; the
canonical layout holds flax's [in, out] and [h, w, in, out], with the
attention's projections split by head. timm fuses the three input projections
into one `qkv` matrix, split here before the names are mapped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np

from keras_vit.weights import layout

#: The files read and written here; `.bin`, `.pth` and `.pt` are torch pickles, which need torch to read.
TORCH_FILES = (".safetensors", ".bin", ".pth", ".pt")
HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: HF's image processor settings beside the model: the pixel statistics (`image_mean`, `image_std`).
HF_PREPROCESSOR = "preprocessor_config.json"
#: HF's `hidden_act` names of the GELU in the tanh approximation (keras_vit's `approximate_gelu=True`).
HF_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")
TIMM_LAYER_NORM_EPSILON = 1e-6
LIBRARIES = ("hf", "timm")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One array: its canonical key, its key in the library's file (`{i}`: the block) and how it is stored there."""

    canonical: str
    source: str
    kind: str  # a key of `_KINDS`


def _norm(canonical: str, source: str) -> list[Rule]:
    return [Rule(f"{canonical}/scale", f"{source}.weight", "copy"), Rule(f"{canonical}/bias", f"{source}.bias", "copy")]


def _linear(canonical: str, source: str, kernel: str = "linear", bias: str = "copy") -> list[Rule]:
    return [Rule(f"{canonical}/kernel", f"{source}.weight", kernel), Rule(f"{canonical}/bias", f"{source}.bias", bias)]


def _block_rules(norm1, query, key, value, out, norm2, fc1, fc2) -> list[Rule]:
    block, attention = "Transformer/encoderblock_{i}", "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_0"
    return [
        *_norm(f"{block}/LayerNorm_0", norm1),
        *(rule for name, source in (("query", query), ("key", key), ("value", value))
          for rule in _linear(f"{attention}/{name}", source, "heads_in", "heads_in_bias")),
        *_linear(f"{attention}/out", out, "heads_out"),
        *_norm(f"{block}/LayerNorm_1", norm2),
        *_linear(f"{block}/MlpBlock_0/Dense_0", fc1),
        *_linear(f"{block}/MlpBlock_0/Dense_1", fc2),
    ]


def _embedding_rules(projection, cls, dist, position) -> list[Rule]:
    """The patch embedding, the class and distillation tokens and the position table."""
    return [
        *_linear("embedding", projection, "conv"),
        Rule("cls", cls, "copy"),
        Rule(layout.DISTILLATION_TOKEN, dist, "copy"),
        Rule(layout.POSITION_EMBEDDING + "pos_embedding", position, "copy"),
    ]


#: HF's names, below the base model's prefix (`vit.`, `deit.`), except the heads.
_HF_RULES = [
    *_embedding_rules("embeddings.patch_embeddings.projection", "embeddings.cls_token",
                      "embeddings.distillation_token", "embeddings.position_embeddings"),
    *_block_rules(*(f"encoder.layer.{{i}}.{name}" for name in (
        "layernorm_before", "attention.attention.query", "attention.attention.key", "attention.attention.value",
        "attention.output.dense", "layernorm_after", "intermediate.dense", "output.dense"))),
    *_norm("Transformer/encoder_norm", "layernorm"),
    *_linear("pre_logits", "pooler.dense"),
]
#: The blocks as transformers 5 names them in memory (`model.state_dict()`); its `save_pretrained` writes the above.
_HF_5_BLOCK_RULES = _block_rules(*(f"layers.{{i}}.{name}" for name in (
    "layernorm_before", "attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj",
    "layernorm_after", "mlp.fc1", "mlp.fc2")))
#: HF's heads (outside the base model's prefix), by architecture: (class head, distillation head).
_HF_HEADS = {
    "ViTForImageClassification": ("classifier", None),
    "ViTModel": (None, None),
    "DeiTForImageClassificationWithTeacher": ("cls_classifier", "distillation_classifier"),
    "DeiTModel": (None, None),
}
_HF_MODEL_TYPES = ("vit", "deit")

#: timm's names, `qkv` already split into `q`, `k` and `v`.
_TIMM_RULES = [
    *_embedding_rules("patch_embed.proj", "cls_token", "dist_token", "pos_embed"),
    *_block_rules(*(f"blocks.{{i}}.{name}" for name in (
        "norm1", "attn.q", "attn.k", "attn.v", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"))),
    *_linear("head", "head"),
    *_linear(layout.HEAD_DIST.rstrip("/"), "head_dist"),
]
_TIMM_NORMS = {False: "norm", True: "fc_norm"}  # the final LayerNorm, by `fc_norm`
#: A hybrid's ResNetV2 in timm (`patch_embed.backbone.`): its stem alone (`conv`, `norm`), or `stem.` and stages.
_TIMM_BACKBONE = re.compile(r"patch_embed\.backbone\.(?:(?:stem\.)?(conv|norm)|stages\.(\d+)\.blocks\.(\d+)\."
                            r"(conv[123]|norm[123]|downsample\.conv|downsample\.norm))\.(weight|bias)$")
_TIMM_UNIT_PARTS = {"downsample.conv": "conv_proj", "downsample.norm": "gn_proj",
                    **{f"conv{n}": f"conv{n}" for n in "123"}, **{f"norm{n}": f"gn{n}" for n in "123"}}


@dataclasses.dataclass
class TorchCheckpoint:
    """A checkpoint of another library, named in the canonical layout.

    Attributes:
        library: "hf" or "timm".
        params: canonical key -> array, in the canonical layout's shapes.
        names: canonical key -> the key in the file.
        unexpected: key in the file -> shape, of arrays no rule maps.
        architecture: the `VisionTransformer` arguments the file tells.
        grid: the patch grid its position table was trained for, where the file tells it (HF's config; a timm
            table is square).
    """

    library: str
    params: dict[str, np.ndarray]
    names: dict[str, str]
    unexpected: dict[str, tuple[int, ...]]
    architecture: dict
    grid: tuple[int, int] | None = None


def is_torch_checkpoint(path: str) -> bool:
    """Whether `path` is a file or a `save_pretrained` folder of another library's checkpoint."""
    return path.endswith(TORCH_FILES) or (os.path.isdir(path) and os.path.exists(os.path.join(path, HF_CONFIG)))


def read(path: str, num_heads: int | None = None) -> TorchCheckpoint:
    """An HF folder or file, or a timm file, named in the canonical layout.

    `num_heads` splits a timm file's attention (whose state dict does not
    record it); None takes it from the variant table by the width. ValueError
    naming the file when it cannot be read or is not a ViT of either library.
    """
    weights, config = _hf_files(path)
    tensors = read_tensors(weights)
    if config is not None or any(key.endswith("embeddings.patch_embeddings.projection.weight") for key in tensors):
        if config is None:
            raise ValueError(f"{weights} holds an HF transformers checkpoint without its {HF_CONFIG}: put the "
                             f"config.json it was saved with beside it (the architecture is read from there).")
        found = _read_hf(weights, tensors, config)
        statistics = _json(os.path.join(os.path.dirname(weights), HF_PREPROCESSOR)) or {}
        found.architecture.update(pixel_statistics(statistics.get("image_mean"), statistics.get("image_std")))
        return found
    if "patch_embed.proj.weight" in tensors:
        found = _read_timm(weights, tensors, num_heads)
        timm_config = _json(os.path.join(os.path.dirname(weights), HF_CONFIG)) or {}
        statistics = timm_config.get("pretrained_cfg", {})
        found.architecture.update(pixel_statistics(statistics.get("mean"), statistics.get("std")))
        return found
    first = ", ".join(sorted(tensors)[:4])
    raise ValueError(f"{weights} holds neither an HF transformers ViT/DeiT nor a timm ViT state dict (its first "
                     f"keys: {first}); keras_vit reads those, original .npz checkpoints and Keras files.")


def _hf_files(path: str) -> tuple[str, dict | None]:
    """(the weights file, the HF config beside it or None) of a folder or a file."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    weights = path
    if os.path.isdir(path):
        found = [os.path.join(path, name) for name in HF_WEIGHTS if os.path.exists(os.path.join(path, name))]
        if not found:
            raise ValueError(f"{path} has a {HF_CONFIG} but none of {', '.join(HF_WEIGHTS)} (sharded checkpoints "
                             f"are not read: save the model with a larger max_shard_size).")
        weights = found[0]
    config = _json(os.path.join(folder, HF_CONFIG))
    return weights, config if config and "model_type" in config else None


def _json(path: str) -> dict | None:
    """A JSON file's object, None where there is no such file; ValueError naming an unreadable one."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({error}).") from None


def pixel_statistics(mean, std) -> dict:
    """{"pixel_mean", "pixel_std"} of a library's stated statistics: None for the reference's 0.5 (or none stated)."""
    if mean is None or std is None or (list(mean) == [0.5] * len(mean) and list(std) == [0.5] * len(std)):
        return {"pixel_mean": None, "pixel_std": None}
    return {"pixel_mean": tuple(float(m) for m in mean), "pixel_std": tuple(float(s) for s in std)}


def read_tensors(path: str) -> dict[str, np.ndarray]:
    """The arrays of a `.safetensors` file (safetensors' NumPy API: no torch) or a torch pickle (needs torch)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path!r}.")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, TypeError) as error:  # TypeError: a dtype NumPy lacks (bfloat16)
            raise ValueError(f"Could not read {path} as a safetensors file: {error}") from None
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path} is a torch pickle, which needs torch to read: pip install torch, or convert it "
                         f"to .safetensors.") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, pickle errors, EOFError, ...
        raise ValueError(f"Could not read {path} as a torch checkpoint: {error}") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    return {key: value.detach().float().numpy() if value.is_floating_point() else value.numpy()
            for key, value in state.items() if isinstance(value, torch.Tensor)}


def _read_hf(path: str, tensors: dict[str, np.ndarray], config: dict) -> TorchCheckpoint:
    model_type = config.get("model_type")
    architecture = (config.get("architectures") or ["ViTModel" if model_type == "vit" else "DeiTModel"])[0]
    if model_type not in _HF_MODEL_TYPES or architecture not in _HF_HEADS:
        raise ValueError(f"{path} holds an HF {architecture} ({model_type!r}); keras_vit reads "
                         f"{', '.join(_HF_HEADS)}.")
    if not config.get("qkv_bias", True):
        raise ValueError(f"{path}: its attention has no query/key/value biases (qkv_bias=false), which keras_vit's has.")
    activation = config.get("hidden_act", "gelu")
    if activation not in ("gelu", *HF_TANH_GELU):
        raise ValueError(f"{path}: its MLP activation {activation!r} is not a GELU, which keras_vit's ViT computes.")
    prefix = model_type + "."
    base = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    heads = {key: value for key, value in tensors.items() if not key.startswith(prefix)}
    if not base:  # a base model saved alone has no prefix
        base, heads = tensors, {}
    rules = _HF_RULES + _HF_5_BLOCK_RULES
    for canonical, source in zip(("head", layout.HEAD_DIST.rstrip("/")), _HF_HEADS[architecture]):
        if source is not None:
            rules += _linear(canonical, source)
    num_heads = int(config["num_attention_heads"])
    params, names, unexpected = _apply(rules, {**base, **heads}, num_heads, path)
    size = config.get("image_size", 224)
    image_size = tuple(int(n) for n in size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    patch = config.get("patch_size", 16)
    patch = tuple(patch) if isinstance(patch, (list, tuple)) else (patch, patch)
    grid = (image_size[0] // patch[0], image_size[1] // patch[1])
    found = {
        **_architecture(params, path, grid),
        "image_size": image_size,
        "channels": int(config.get("num_channels", 3)),
        "num_heads": num_heads,
        "layer_norm_epsilon": float(config.get("layer_norm_eps", 1e-12)),
        "approximate_gelu": activation in HF_TANH_GELU,
    }
    return TorchCheckpoint("hf", params, names, unexpected, found, grid)


def _read_timm(path: str, tensors: dict[str, np.ndarray], num_heads: int | None) -> TorchCheckpoint:
    tensors = dict(tensors)
    for key in [key for key in tensors if key.endswith(".attn.qkv.weight") or key.endswith(".attn.qkv.bias")]:
        stem, leaf = key[: -len(".qkv.weight" if key.endswith("weight") else ".qkv.bias")], key.rsplit(".", 1)[1]
        for name, part in zip("qkv", np.split(tensors.pop(key), 3, axis=0)):
            tensors[f"{stem}.{name}.{leaf}"] = part
    fc_norm = "fc_norm.weight" in tensors
    if fc_norm and "cls_token" in tensors:
        raise ValueError(f"{path} averages the patch tokens beside a class token (timm's global_pool='avg' with "
                         f"class_token=True), which keras_vit does not build: its 'gap' models have no class token.")
    hidden = tensors["patch_embed.proj.weight"].shape[0]
    num_heads = num_heads or _standard_heads(hidden, path)
    rules = _TIMM_RULES + _norm("Transformer/encoder_norm", _TIMM_NORMS[fc_norm]) + _timm_backbone_rules(tensors)
    params, names, unexpected = _apply(rules, tensors, num_heads, path)
    names.update({key: re.sub(r"\.attn\.[qkv]\.", ".attn.qkv.", name) for key, name in names.items()})
    found = {
        **_architecture(params, path),
        "num_heads": num_heads,
        "layer_norm_epsilon": TIMM_LAYER_NORM_EPSILON,
        "approximate_gelu": False,
        "fc_norm": fc_norm,
    }
    return TorchCheckpoint("timm", params, names, unexpected, found)


def _timm_backbone_rules(keys) -> list[Rule]:
    """The rules of the timm hybrid backbone arrays among `keys` (its ResNetV2: the canonical `conv_root`, `gn_root`,
    `block{s}/unit{u}/...`)."""
    rules = []
    for key in keys:
        match = _TIMM_BACKBONE.match(key)
        if not match:
            continue
        root, stage, block, part, leaf = match.groups()
        if root:
            layer = "conv_root" if root == "conv" else "gn_root"
        else:
            layer = f"block{int(stage) + 1}/unit{int(block) + 1}/{_TIMM_UNIT_PARTS[part]}"
        if layer.rsplit("/", 1)[-1].startswith("conv"):
            rules.append(Rule(f"{layer}/kernel", key, "conv"))
        else:
            rules.append(Rule(f"{layer}/{'scale' if leaf == 'weight' else 'bias'}", key, "copy"))
    return rules


def _timm_backbone_keys(params: dict[str, np.ndarray]) -> list[str]:
    """The timm names of a hybrid's canonical ResNet arrays (`_timm_backbone_rules`' inverse)."""
    parts = {canonical: timm for timm, canonical in _TIMM_UNIT_PARTS.items()}
    stem = "patch_embed.backbone.stem." if any(key.startswith("block") for key in params) else "patch_embed.backbone."
    keys = []
    for key in params:
        layer, _, leaf = key.rpartition("/")
        leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
        if layer in ("conv_root", "gn_root"):
            keys.append(f"{stem}{'conv' if layer == 'conv_root' else 'norm'}.{leaf}")
        elif key.startswith("block"):
            stage, unit, part = layer.split("/")
            keys.append(f"patch_embed.backbone.stages.{int(stage[5:]) - 1}.blocks.{int(unit[4:]) - 1}.{parts[part]}.{leaf}")
    return keys


def _standard_heads(hidden: int, path: str) -> int:
    """The heads of the variants of width `hidden` (ViT-Ti 3, S 6, B 12, L and H 16); ValueError when none or several."""
    from keras_vit.models.variants import VARIANTS

    heads = {variant.config["num_heads"] for variant in VARIANTS.values() if variant.config["hidden_size"] == hidden}
    if len(heads) != 1:
        raise ValueError(f"{path} is a timm state dict of width {hidden}, which does not record its number of "
                         f"attention heads and matches no single variant: pass num_heads=.")
    return heads.pop()


def _apply(rules: list[Rule], tensors: dict[str, np.ndarray], num_heads: int, path: str):
    """(canonical params, canonical key -> file key, unmapped file keys -> shapes) of `tensors` under `rules`."""
    blocks = sorted({int(match.group(1)) for key in tensors for match in [re.search(r"(?:layer|layers|blocks)\.(\d+)\.", key)]
                     if match})
    params, names, used = {}, {}, set()
    for rule in rules:
        for i in blocks if "{i}" in rule.source else [None]:
            source, canonical = rule.source.format(i=i), rule.canonical.format(i=i)
            if source in tensors:
                try:
                    params[canonical] = _to_canonical(tensors[source], rule.kind, num_heads)
                except ValueError as error:
                    raise ValueError(f"{path}: {source!r} of shape {tensors[source].shape}: {error}") from None
                names[canonical], _ = source, used.add(source)
    position = layout.POSITION_EMBEDDING + "pos_embedding"
    if position in params:
        params[position] = _with_prefix_rows(params[position], int("cls" in params) + int(layout.DISTILLATION_TOKEN in params))
    unexpected = {key: tuple(value.shape) for key, value in tensors.items() if key not in used}
    return params, names, unexpected


def _with_prefix_rows(posemb: np.ndarray, prefix: int) -> np.ndarray:
    """A table without rows for the prefix tokens (timm's `no_embed_class`) gets zero rows for them, which adds
    nothing to those tokens, as that model does."""
    rows = posemb.shape[1]
    if prefix and math.isqrt(rows - prefix) ** 2 != rows - prefix and math.isqrt(rows) ** 2 == rows:
        return np.concatenate([np.zeros_like(posemb[:, :prefix]), posemb], axis=1)
    return posemb


def _architecture(params: dict[str, np.ndarray], path: str, grid: tuple[int, int] | None = None) -> dict:
    try:
        return layout.architecture(params, grid)
    except KeyError as error:
        raise ValueError(f"{path} lacks {error}, which every ViT checkpoint has.") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}.") from None


#: How each kind of array is stored: kind -> (the file's -> canonical, given the heads; canonical -> the file's).
_KINDS = {
    "copy": (lambda v, heads: v, lambda v: v),
    "linear": (lambda v, heads: v.T, lambda v: v.T),  # torch's [out, in]; flax's [in, out]
    "conv": (lambda v, heads: v.transpose(2, 3, 1, 0), lambda v: v.transpose(3, 2, 0, 1)),  # OIHW; HWIO
    "heads_in": (lambda v, heads: v.T.reshape(v.shape[1], heads, -1), lambda v: v.reshape(v.shape[0], -1).T),
    "heads_in_bias": (lambda v, heads: v.reshape(heads, -1), lambda v: v.reshape(-1)),
    "heads_out": (lambda v, heads: v.T.reshape(heads, -1, v.shape[0]), lambda v: v.reshape(-1, v.shape[-1]).T),
}


def _to_canonical(value: np.ndarray, kind: str, num_heads: int) -> np.ndarray:
    if kind.startswith("heads") and value.shape[0] % num_heads:
        raise ValueError(f"its width does not divide into {num_heads} heads")
    return _KINDS[kind][0](value, num_heads)


def _from_canonical(value: np.ndarray, kind: str) -> np.ndarray:
    return _KINDS[kind][1](value)


def hf_state(params: dict[str, np.ndarray], num_layers: int, prefix: str, heads: tuple[str | None, str | None]) -> dict:
    """The HF tensors of canonical `params` (the heads named as `heads`, the rest below `prefix`)."""
    rules = [Rule(r.canonical, prefix + r.source, r.kind) for r in _HF_RULES]
    for canonical, source in zip(("head", layout.HEAD_DIST.rstrip("/")), heads):
        if source is not None:
            rules += _linear(canonical, source)
    return _state(rules, params, num_layers)


def timm_state(params: dict[str, np.ndarray], num_layers: int, fc_norm: bool) -> dict:
    """The timm state dict of canonical `params`, q, k and v fused into `qkv`."""
    rules = _TIMM_RULES + _norm("Transformer/encoder_norm", _TIMM_NORMS[fc_norm])
    state = _state(rules + _timm_backbone_rules(_timm_backbone_keys(params)), params, num_layers)
    for i in range(num_layers):
        for leaf in ("weight", "bias"):
            parts = [state.pop(f"blocks.{i}.attn.{name}.{leaf}") for name in "qkv"]
            state[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate(parts, axis=0)
    return state


def _state(rules: list[Rule], params: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    state = {}
    for rule in rules:
        for i in range(num_layers) if "{i}" in rule.source else [None]:
            canonical = rule.canonical.format(i=i)
            if canonical in params:
                state[rule.source.format(i=i)] = np.ascontiguousarray(_from_canonical(params[canonical], rule.kind))
    missing = sorted(set(params) - {rule.canonical.format(i=i) for rule in rules for i in range(num_layers)})
    if missing:
        raise ValueError(f"the format has no place for {', '.join(missing[:3])}")
    return state
