"""Evaluate a saved model on a dataset split: top-1 accuracy, and the cross-entropy without label smoothing.

    python -m keras_vit.training.evaluate --model runs/demo/model.keras --dataset digits
    python -m keras_vit.training.evaluate --model runs/dynamic/model.keras --dataset digits --image_size 48

A model trained with --dynamic_image_size runs at any --image_size (the
images are resized and cropped to it as at its own size): the paper's
fine-tuning at a higher resolution, or FixRes-style testing above the
training size, without building another model.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import keras_vit
from keras_vit import cli

if TYPE_CHECKING:
    from keras_vit.training import datasets


def evaluate(
    model: keras_vit.VisionTransformer,
    info: datasets.DatasetInfo,
    split: str,
    batch_size: int = 256,
    data_dir: str | None = None,
    image_size: tuple[int, int] | None = None,
) -> dict:
    """{"accuracy", "loss", "examples", "image_size"} of a model on one split, preprocessed as the model expects.

    The loss is the softmax cross-entropy of the true labels, without label
    smoothing, whatever the model was trained with. `image_size` (a model
    built with `dynamic_image_size` only; default its own) is the size the
    images are resized and cropped to.
    """
    import keras

    from keras_vit.training import datasets, pipeline
    from keras_vit.training.recipes import classification_loss

    if not model.include_top or model.classes != info.num_classes:
        head = f"{model.classes} classes" if model.include_top else "no classification head"
        raise ValueError(f"The model has {head}, {info.name} has {info.num_classes}: evaluate it on its own task "
                         f"(or fine-tune it with python -m keras_vit.training.train --init_from).")
    image_size = tuple(image_size or model.image_size)
    model.grid_for(image_size)  # refuses a size the model cannot take, before any data is read
    prep = pipeline.Preprocessing.for_model(model, flip=False, image_size=image_size)
    batches = pipeline.eval_dataset(datasets.load(info, split, data_dir), prep, batch_size)
    model.compile(
        loss=classification_loss(model),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    result = model.evaluate(batches, verbose=0, return_dict=True)
    return {
        "accuracy": float(result["accuracy"]),
        "loss": float(result["loss"]),
        "examples": info.count(split),
        "image_size": list(image_size),
    }


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m keras_vit.training.evaluate", __doc__)
    parser.add_argument("--model", required=True, help="a .keras file saved by training.train")
    parser.add_argument("--dataset", default="digits", help="digits, folder:PATH or a tensorflow-datasets name")
    parser.add_argument("--split", default=None, help="default: the dataset's test (or validation) split")
    parser.add_argument("--data_dir", default=None, help="tensorflow-datasets data directory")
    parser.add_argument("--batch_size", type=int, default=256, help="evaluation batch size")
    cli.add_image_size_flag(parser, default=None,
                            help="evaluate at this size (one, or height and width): a model trained with "
                                 "--dynamic_image_size takes any (default: the model's own)")
    parser.add_argument("--output", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        image_size = cli.image_size_of(args.image_size)
    except ValueError as error:
        parser.error(str(error))
    from keras_vit.training import datasets

    try:
        info = datasets.describe(args.dataset, args.data_dir)
        model = keras_vit.load_model(args.model)
        result = evaluate(model, info, args.split or info.eval_split, args.batch_size, args.data_dir, image_size)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    height, width = result["image_size"]
    print(f"{args.model} on {args.dataset}/{args.split or info.eval_split} at {height}x{width}: accuracy {result['accuracy']:.2%} "
          f"({result['examples']} examples), loss {result['loss']:.4f} (cross-entropy, no label smoothing)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
