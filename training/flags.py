"""The training command's flags that the library reads too, and the checks that need nothing but the flags.

Importable without TensorFlow, so `python -m training.train` refuses contradicting flags at once.
"""

from __future__ import annotations

import keras_vit
from keras_vit.training.fewshot import SHOTS

#: Flags that describe a custom architecture (`--model ViT`); their defaults are VisionTransformer's.
ARCHITECTURE_FLAGS = ("patch_size", "hidden_size", "mlp_dim", "num_heads", "num_layers", "resnet_layers", "resnet_width")
#: `--model ResNet`: the paper's convolutional baseline (`keras_vit.ResNet`), with these flags of the above.
RESNET_FLAGS = ("resnet_layers", "resnet_width")
#: Flags of `VisionTransformer` options that any model (a named variant too) may change.
MODEL_OPTIONS = ("classifier", "representation_size", "position_embedding")
#: What early stopping may watch: the logged accuracies (validation, and few-shot with --fewshot_every).
EARLY_STOPPING_MONITORS = ("val_accuracy", *(f"fewshot_{k}shot" for k in SHOTS))


def check_flags(args) -> None:
    """Refuses flags (`training.train`'s parsed arguments) that contradict each other, before TensorFlow starts.

    The rest is checked by `trainer.plan`.
    """
    if args.model == "ResNet":
        given = [f"--{flag}" for flag in ARCHITECTURE_FLAGS + MODEL_OPTIONS if flag not in RESNET_FLAGS and getattr(args, flag) is not None]
        if given:
            raise ValueError(f"--model ResNet has no Transformer: {', '.join(given)} are for ViT models.")
        if args.recipe == "masked_patch":
            raise ValueError("Masked patch prediction trains a ViT's patch tokens; --model ResNet has none.")
        if args.dynamic_image_size:
            raise ValueError("--dynamic_image_size resizes a ViT's position embeddings; --model ResNet has none.")
    elif args.model != "ViT":
        keras_vit.get_variant(args.model)
        given = [f"--{flag}" for flag in ARCHITECTURE_FLAGS if getattr(args, flag) is not None]
        if given:
            raise ValueError(f"{args.model} fixes its architecture: {', '.join(given)} are for --model ViT.")
    if len(args.image_size) > 2:
        raise ValueError(f"--image_size takes one size or a height and a width, got {len(args.image_size)} numbers.")
    if args.dynamic_image_size and args.recipe == "masked_patch":
        raise ValueError("Masked patch prediction runs at the stored grid: drop --dynamic_image_size (fine-tune with it).")
    if args.dynamic_image_size and args.position_embedding == "relative":
        raise ValueError("--position_embedding relative cannot take --dynamic_image_size: its raster offsets fit one grid.")
    if args.weights and args.init_from:
        raise ValueError("Give --weights or --init_from, not both.")
    if args.early_stopping_patience < 0:
        raise ValueError(f"--early_stopping_patience must be 0 (off) or positive, got {args.early_stopping_patience}.")
    if args.early_stopping_monitor.startswith("fewshot") and args.early_stopping_patience and not args.fewshot_every:
        raise ValueError(f"--early_stopping_monitor {args.early_stopping_monitor} needs --fewshot_every N to log it.")
