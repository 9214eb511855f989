"""`RunConfig`: everything that defines a training run, typed and frozen, and the checks that need nothing else.

`python -m keras_vit.training.train` builds one from its flags (each flag is a field,
with the field's default), the studies and `keras_vit.training.vtab` build them
directly, `run.json` stores one, and `keras_vit.training.trainer.train(config)`
runs it. Importable without TensorFlow, so contradicting flags are refused at
once.
"""

from __future__ import annotations

import dataclasses
import json

import keras_vit
from keras_vit import position_embeddings
from keras_vit.lora import DEFAULT_LORA_TARGETS
from keras_vit.options import ARCHITECTURE, MODEL_OPTIONS
from keras_vit.training.fewshot import SHOTS

#: `--model ResNet`: the paper's convolutional baseline (`keras_vit.ResNet`), with these of the architecture fields.
RESNET_FIELDS = ("resnet_layers", "resnet_width")
#: The few-shot accuracies `--fewshot_every` logs, and their shots.
FEWSHOT_MONITORS = {f"fewshot_{k}shot": k for k in SHOTS}
#: What early stopping may watch: the logged accuracies (validation, and few-shot with `fewshot_every`).
EARLY_STOPPING_MONITORS = ("val_accuracy", *FEWSHOT_MONITORS)
#: Fields that change how a run is shown or where it lives, not what it computes: `run.json` leaves them out.
NOT_CONFIGURATION = ("progress", "verbose", "output_dir")
#: The demo's ViT, which the studies share: 16x16 inputs, 4x4 patches (16 tokens), 4 blocks of D 64; it trains on
#: the digits in about two minutes on 2 CPU cores.
DEMO_MODEL = dict(model="ViT", image_size=(16,), patch_size=4, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=4)
#: The demo's training on the digits, which the studies share (an arm may change the learning rate).
DEMO_TRAINING = dict(dataset="digits", batch_size=32, learning_rate=3e-3, warmup_steps=100, label_smoothing=0.0,
                     dropout_rate=0.0, jit_compile=True)
#: Fields added since runs were first recorded, with the value a `run.json` that leaves them out was run with.
ADDED_FIELDS = {
    "dynamic_image_size": False, "head": None, "remat": False, "position_embedding_placement": None,
    "lora_rank": 0, "lora_targets": list(DEFAULT_LORA_TARGETS), "layer_decay": None,
    "early_stopping_patience": 0, "early_stopping_min_delta": 0.0, "early_stopping_monitor": "val_accuracy",
    "deterministic": False,
    # Runs recorded before minival validated on their --eval_split: no value of the flag does that now.
    "validation_split": "(the --eval_split)",
}


#: Fields whose flag has a `--no-` form, for False (None: the default, which depends on other fields).
NEGATABLE = ("deterministic",)
#: `keras_vit.training.train` flags of the process, not of the run (`cli.use_backend` acts on `--backend`).
PROCESS_FLAGS = ("backend",)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A training run. Fields are `keras_vit.training.train`'s flags (`--help` says what each does); None: the recipe's or the
    model's own value."""

    output_dir: str
    # The model.
    model: str = "ViT_Ti16"
    patch_size: int | None = None
    hidden_size: int | None = None
    mlp_dim: int | None = None
    num_heads: int | None = None
    num_layers: int | None = None
    resnet_layers: tuple[int, ...] | None = None
    resnet_width: int | None = None
    classifier: str | None = None
    representation_size: int | None = None
    position_embedding: str | None = None
    position_embedding_placement: str | None = None
    dynamic_image_size: bool = False
    remat: bool = False
    lora_rank: int = 0
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    layer_decay: float | None = None
    weights: str | None = None
    init_from: str | None = None
    head: str | None = None
    image_size: tuple[int, ...] = (224,)
    # The data.
    dataset: str = "digits"
    data_dir: str | None = None
    train_split: str | None = None
    eval_split: str | None = None
    validation_split: str | None = None
    train_fraction: float = 1.0
    train_offset: float = 0.0
    # How long, how wide.
    epochs: int | None = None
    steps: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    strategy: str = "auto"
    logical_cpus: int = 0
    # The recipe and its overrides.
    recipe: str = "pretrain"
    optimizer: str | None = None
    learning_rate: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    global_clipnorm: float | None = None
    label_smoothing: float | None = None
    dropout_rate: float | None = None
    loss: str | None = None
    head_bias_init: float | None = None
    ema_momentum: float | None = None
    grad_accum_steps: int | None = None
    attention_dropout_rate: float = 0.0
    stochastic_depth_rate: float = 0.0
    # Augmentation and evaluation crop.
    train_crop: str = "auto"
    crop_fraction: float = 1.0
    flip: str = "auto"
    randaugment: tuple[float, float] | None = None
    mixup: float = 0.0
    # Execution.
    precision: str = "float32"
    jit_compile: bool = False
    steps_per_execution: int = 1
    deterministic: bool | None = None  # None: on, unless --jit_compile on TensorFlow (`determinism.wanted`)
    backup_freq: str | int = "epoch"
    fewshot_every: int = 0
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    early_stopping_monitor: str = "val_accuracy"
    seed: int = 0
    # Display only.
    progress: int = 1
    verbose: bool = False

    def __post_init__(self):
        for name in ("resnet_layers", "image_size", "randaugment", "lora_targets"):  # lists (flags, JSON): tuples
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        self.check()

    @classmethod
    def from_flags(cls, flags) -> "RunConfig":
        """The configuration of parsed `keras_vit.training.train` flags (an argparse namespace, or any object with them).

        `PROCESS_FLAGS` choose how the process runs, not what the run is: they are not part of it."""
        values = {name: value for name, value in vars(flags).items() if name not in PROCESS_FLAGS}
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"RunConfig has no field for {', '.join(unknown)}.")
        return cls(**values)

    @classmethod
    def defaults(cls) -> dict:
        """Field -> default, for the command line's flags."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    def flags(self) -> list[str]:
        """The `keras_vit.training.train` command line of this configuration (fields at their defaults left out)."""
        return as_flags(**{k: v for k, v in dataclasses.asdict(self).items() if v != self.defaults().get(k, dataclasses.MISSING)})

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @property
    def model_image_size(self) -> int | tuple[int, int]:
        """`image_size` as the model constructors take it: one size, or (height, width)."""
        return self.image_size[0] if len(self.image_size) == 1 else tuple(self.image_size)

    @property
    def initial_weights(self) -> str | None:
        return self.weights or self.init_from

    @property
    def head_policy(self) -> str:
        """`head`, or its default: a new zero head when fine-tuning (the paper's section 3.2), else "auto"."""
        return self.head or ("new" if self.recipe == "finetune" else "auto")

    def record(self) -> dict:
        """What `run.json` stores: every field but `NOT_CONFIGURATION`, JSON-normalised, in name order."""
        values = {k: v for k, v in sorted(dataclasses.asdict(self).items()) if k not in NOT_CONFIGURATION}
        return json.loads(json.dumps(values))

    def check(self) -> None:
        """Refuses fields that contradict each other (the rest is checked once the data is known: `trainer.plan`)."""
        if self.model == "ResNet":
            given = [f"--{name}" for name in ARCHITECTURE + MODEL_OPTIONS
                     if name not in RESNET_FIELDS and getattr(self, name) is not None]
            if given:
                raise ValueError(f"--model ResNet has no Transformer: {', '.join(given)} are for ViT models.")
            if self.recipe == "masked_patch":
                raise ValueError("Masked patch prediction trains a ViT's patch tokens; --model ResNet has none.")
            if self.dynamic_image_size:
                raise ValueError("--dynamic_image_size resizes a ViT's position embeddings; --model ResNet has none.")
            if self.remat:
                raise ValueError("--remat recomputes a ViT's encoder blocks; --model ResNet has none.")
            if self.lora_rank:
                raise ValueError("--lora_rank adapts a ViT's attention projections; --model ResNet has none.")
        elif self.model != "ViT":
            keras_vit.get_variant(self.model)
            given = [f"--{name}" for name in ARCHITECTURE if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{self.model} fixes its architecture: {', '.join(given)} are for --model ViT.")
        if self.layer_decay is not None and (self.model == "ResNet" or self.recipe == "masked_patch"):
            raise ValueError("--layer_decay scales a ViT classifier's layers' learning rates (not --model ResNet's, "
                             "nor the masked_patch recipe's).")
        if self.lora_rank < 0:
            raise ValueError(f"--lora_rank must be positive (0: no LoRA), got {self.lora_rank}.")
        if self.lora_rank and self.recipe == "masked_patch":
            raise ValueError("--lora_rank fine-tunes a classifier; the masked_patch recipe pre-trains the whole encoder.")
        if not 1 <= len(self.image_size) <= 2:
            raise ValueError(f"--image_size takes one size or a height and a width, got {len(self.image_size)} numbers.")
        if self.dynamic_image_size and self.recipe == "masked_patch":
            raise ValueError("Masked patch prediction runs at the stored grid: drop --dynamic_image_size (fine-tune with it).")
        fixed_grid = self.position_embedding and position_embeddings.get(self.position_embedding).fixed_grid
        if self.dynamic_image_size and fixed_grid:
            raise ValueError(f"--position_embedding {self.position_embedding} cannot take --dynamic_image_size: {fixed_grid}.")
        if self.weights and self.init_from:
            raise ValueError("Give --weights or --init_from, not both.")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("Give --epochs or --steps, not both.")
        if self.early_stopping_patience < 0:
            raise ValueError(f"--early_stopping_patience must be 0 (off) or positive, got {self.early_stopping_patience}.")
        if self.early_stopping_monitor not in EARLY_STOPPING_MONITORS:
            raise ValueError(f"--early_stopping_monitor {self.early_stopping_monitor!r}: expected one of {EARLY_STOPPING_MONITORS}.")
        if self.early_stopping_monitor.startswith("fewshot") and self.early_stopping_patience and not self.fewshot_every:
            raise ValueError(f"--early_stopping_monitor {self.early_stopping_monitor} needs --fewshot_every N to log it.")


def as_flags(**fields) -> list[str]:
    """`keras_vit.training.train` flags of RunConfig fields: `as_flags(model="ViT", jit_compile=True)` is
    `["--model", "ViT", "--jit_compile"]`; None and False are left out (False of a `NEGATABLE` field: `--no-NAME`)."""
    out = []
    for name, value in fields.items():
        if value is False and name in NEGATABLE:
            out.append(f"--no-{name}")
        if value is None or value is False:
            continue
        out.append(f"--{name}")
        if value is not True:
            out += [str(v) for v in value] if isinstance(value, (tuple, list)) else [str(value)]
    return out
