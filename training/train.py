"""Train or fine-tune a keras_vit model with `model.fit`, under any tf.distribute strategy.

    python -m keras_vit.training.train --model ViT_Ti16 --image_size 32 --dataset digits --epochs 30 --output_dir runs/demo
    python -m keras_vit.training.train --model ViT_B16 --weights imagenet21k --image_size 384 --dataset cifar10 \\
        --recipe finetune --batch_size 512 --steps 10000 --strategy mirrored --output_dir runs/b16_c10

Writes into --output_dir: run.json (the configuration), model.keras (last),
best.keras (best validation accuracy), labels.txt (the class names, which
serving.export carries into the SavedModel), history.csv, logs/ (TensorBoard),
results.json (final evaluation; written last). Started again with the same
command after a kill at any instant, it resumes from its newest whole backup
and logs every epoch once; started again after it finished, it says so. A
directory holding a run of another configuration is refused.
"""

from __future__ import annotations

import argparse
import sys

import keras_vit
from keras_vit import cli
from keras_vit.lora import LORA_TARGETS
from keras_vit.options import (
    CLASSIFIERS, DTYPE_POLICIES, HEAD_POLICIES, POSITION_EMBEDDING_PLACEMENTS, POSITION_EMBEDDINGS,
)
from keras_vit.training.choices import STRATEGIES, TRAIN_CROPS
from keras_vit.training import outputs
from keras_vit.training.config import EARLY_STOPPING_MONITORS, RunConfig
from keras_vit.training.recipes import RECIPES

def parser() -> argparse.ArgumentParser:
    p = cli.command_parser("python -m keras_vit.training.train", __doc__)
    add = p.add_argument
    add("--model",
        help=f"a variant ({', '.join(keras_vit.VARIANTS)}), ViT for a custom one, or ResNet (keras_vit.ResNet)")
    custom = p.add_argument_group("custom architecture (with --model ViT or ResNet; default: the model class's)")
    custom.add_argument("--patch_size", type=int, help="patch size")
    custom.add_argument("--hidden_size", type=int, help="D")
    custom.add_argument("--mlp_dim", type=int, help="MLP width")
    custom.add_argument("--num_heads", type=int, help="attention heads")
    custom.add_argument("--num_layers", type=int, help="encoder blocks")
    custom.add_argument("--resnet_layers", type=int, nargs="*", metavar="UNITS",
                        help="ResNet units per stage: a hybrid ViT, or the ResNet's stages (no value: the root alone)")
    custom.add_argument("--resnet_width", type=int, help="ResNet width factor")
    head = p.add_argument_group("model options (any --model; default: the model's own)")
    head.add_argument("--classifier", choices=CLASSIFIERS, help="class token or global average pooling")
    head.add_argument("--representation_size", type=int, help="width of a tanh pre-logits layer")
    head.add_argument("--position_embedding", choices=POSITION_EMBEDDINGS,
                      help="the paper's appendix D.4 ablation")
    head.add_argument("--dynamic_image_size", action="store_true",
                      help="a model that takes images of any size (position embeddings resized in the graph per call); "
                           "it trains at --image_size, and training.evaluate --image_size runs it at others")
    head.add_argument("--position_embedding_placement", choices=POSITION_EMBEDDING_PLACEMENTS,
                      help="learned tables added at the input, or before every block (own or shared; Table 8)")
    head.add_argument("--remat", action="store_true",
                      help="gradient checkpointing: recompute each encoder block's activations in the backward pass "
                           "(less memory for the big variants, at the cost of another forward pass)")
    head.add_argument("--lora_rank", type=int, metavar="RANK",
                      help="LoRA: train only rank-RANK factors of the attention projections (--lora_targets) and the "
                           "head, all else frozen (0: off); the saved model.keras has the factors merged")
    head.add_argument("--lora_targets", nargs="+", choices=LORA_TARGETS, metavar="PROJECTION",
                      help=f"the projections LoRA adapts in every block, of {', '.join(LORA_TARGETS)}")
    head.add_argument("--layer_decay", type=float, metavar="DECAY",
                      help="layer-wise learning-rate decay (timm's layer_decay, e.g. 0.75): block i of L trains at "
                           "DECAY ** (L - i) times the rate, the stem at DECAY ** (L + 1), the head at the full rate")
    add("--weights", help="initial weights: a known name (imagenet21k, ...) or a .npz/.keras/.weights.h5 path")
    add("--init_from", help="alias of --weights for a checkpoint of this project (e.g. another resolution)")
    add("--head", choices=HEAD_POLICIES,
        help="the stored head of --weights: new (a zero head, as the paper fine-tunes), keep (load it; it must fit), "
             "auto (load it when it fits the classes); default: new with --recipe finetune, else auto")
    add("--image_size", type=int, nargs="+", metavar=("SIZE", "WIDTH"),
        help="training resolution: one size, or height and width; position embeddings are resized to it")
    add("--dataset", help="digits (offline), folder:PATH, or a tensorflow-datasets name")
    add("--data_dir", help="tensorflow-datasets data directory")
    add("--train_split", help="default: train")
    add("--eval_split",
        help="the split the final score is reported on (default: test, or validation where there is no test split)")
    add("--validation_split",
        help="the split evaluated after every epoch, on which early stopping and best.keras choose the model "
             "(default: the dataset's validation split; where it has none, minival: the last 10%% of the training "
             "split, held out from training; with --eval_split given, that split, as before)")
    add("--train_fraction", type=float,
        help="train on this fraction of the training split (in its stored order), from --train_offset")
    add("--train_offset", type=float, help="where the --train_fraction starts, as a fraction of the split")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="passes over the training split (default 10)")
    length.add_argument("--steps", type=int, help="optimizer updates (the paper's steps)")
    add("--steps_per_epoch", type=int, help="batches per epoch (default: one pass over the data)")
    add("--batch_size", type=int,
        help="global batch size (all replicas and accumulation steps; default: the recipe's, less for small datasets)")
    add("--strategy", choices=STRATEGIES,
        help="tf.distribute strategy; on JAX and PyTorch only auto (JAX: keras.distribution.DataParallel over "
             "every device) and one_device")
    cli.add_backend_flag(p)
    add("--logical_cpus", type=int, help="split the CPU into N logical devices (try strategies without GPUs; on JAX: N host devices)")
    add("--output_dir", required=True, help="where models, logs and backups go")
    add("--recipe", choices=list(RECIPES),
        help="jft, imagenet21k, imagenet1k and finetune are the paper's; pretrain is ours for small data")
    recipe = p.add_argument_group("recipe overrides (default: the recipe's value)")
    recipe.add_argument("--optimizer", choices=("adam", "sgd"), help="adam (AdamW with weight decay) or sgd")
    recipe.add_argument("--learning_rate", type=float, help="peak learning rate")
    recipe.add_argument("--schedule", choices=("linear", "cosine"), help="decay after warmup")
    recipe.add_argument("--warmup_steps", type=int, help="linear warmup steps")
    recipe.add_argument("--weight_decay", type=float, help="decoupled weight decay (kernels only)")
    recipe.add_argument("--momentum", type=float, help="SGD momentum")
    recipe.add_argument("--global_clipnorm", type=float, help="gradient clipping by global norm (0: off)")
    recipe.add_argument("--label_smoothing", type=float, help="label smoothing of the cross-entropy")
    recipe.add_argument("--dropout_rate", type=float, help="dropout in the encoder (recipe's, else the model's)")
    recipe.add_argument("--loss", choices=("softmax", "sigmoid"), help="softmax or sigmoid cross-entropy")
    recipe.add_argument("--head_bias_init", type=float, help="initial bias of a new head (-10 with sigmoid)")
    recipe.add_argument("--ema_momentum", type=float, help="Polyak averaging of the weights (e.g. 0.9999)")
    recipe.add_argument("--grad_accum_steps", type=int, help="micro-batches averaged per update")
    add("--attention_dropout_rate", type=float, help="dropout on attention weights")
    add("--stochastic_depth_rate", type=float, help="stochastic depth of the last block")
    add("--train_crop", choices=("auto", *TRAIN_CROPS),
        help="training crop (auto: random for digits, a plain resize for VTAB tasks, else inception)")
    add("--crop_fraction", type=float, help="resize to image_size / crop_fraction before cropping")
    add("--flip", choices=("auto", "yes", "no"), help="horizontal flips (auto: not for digits)")
    add("--randaugment", type=float, nargs=2, metavar=("N", "M"), help="keras-cv RandAugment: N ops, magnitude M in [0, 1]")
    add("--mixup", type=float, help="keras-cv MixUp alpha (0: off)")
    add("--precision", choices=DTYPE_POLICIES, help="dtype policy (mixed_float16 uses loss scaling)")
    add("--jit_compile", action="store_true", help="compile the train step with XLA (TensorFlow; JAX always compiles)")
    add("--steps_per_execution", type=int, help="train steps run per call of the compiled function")
    add("--deterministic", action=argparse.BooleanOptionalAction,
        help="deterministic kernels: the same command on the same machine ends with the same weights (default: on, "
             "but with --jit_compile on TensorFlow, where Keras then compiles no XLA step; docs/training.md gives "
             "its cost)")
    add("--backup_freq", type=backup_frequency, help="'epoch' or a number of steps between backups")
    add("--fewshot_every", type=int, help="log few-shot accuracy every N epochs (0: off)")
    stop = p.add_argument_group("early stopping (the paper's pre-training: on validation accuracy)")
    stop.add_argument("--early_stopping_patience", type=int,
                      help="stop when the monitored accuracy has not improved for N evaluations, keeping the best "
                           "weights in model.keras (0: off)")
    stop.add_argument("--early_stopping_min_delta", type=float, help="the least gain that counts")
    stop.add_argument("--early_stopping_monitor", choices=EARLY_STOPPING_MONITORS,
                      help="what to watch: validation accuracy, or few-shot accuracy (with --fewshot_every)")
    add("--seed", type=int, help="random seed")
    add("--progress", type=int, choices=(0, 1, 2), help="Keras progress: 0 none, 1 a bar, 2 a line per epoch")
    p.set_defaults(**RunConfig.defaults())  # one place for every default: the RunConfig's fields
    return p


def backup_frequency(text: str) -> str | int:
    if text == "epoch":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'epoch' or a number of steps, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cli.use_backend(args.backend)
    try:
        config = RunConfig.from_flags(args)
        cli.check_files(init_from=args.init_from, weights=args.weights if args.weights and args.weights.endswith((".npz", ".keras", ".h5")) else None)
        if args.strategy != "multi_worker":  # a worker's role is known once TensorFlow reads TF_CONFIG
            status = outputs.check(args.output_dir, config.record())
            if status == "finished":
                print(outputs.finished_message(args.output_dir))
                return 0
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from keras_vit.training import trainer

    try:
        trainer.train(config)
    except (ValueError, OSError) as error:  # bad flags, missing or unreachable files
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
