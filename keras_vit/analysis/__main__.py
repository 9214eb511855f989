"""Draw what a ViT learned, as the paper's figures, for any keras_vit model.

    python -m keras_vit.analysis attention --model M --image cat.jpg --out attention.png   # rollout overlay (Fig. 6)
    python -m keras_vit.analysis distance  --model M --dataset digits --out distance.png    # mean attention distance (Fig. 7 right)
    python -m keras_vit.analysis posemb    --model M --out posemb.png                       # position embedding similarity (Fig. 7 center)
    python -m keras_vit.analysis filters   --model M --out filters.png                      # embedding filters (Fig. 7 left)
    python -m keras_vit.analysis report    --model M --dataset digits --out report/         # all of them: report/index.html

M is a .keras file, an original .npz checkpoint (its architecture is read from it; --variant names a released
variant), or a known weights name with --variant (e.g. --model imagenet21k --variant ViT_B16).
"""

from __future__ import annotations

import argparse

import numpy as np

from keras_vit import cli

COMMANDS = ("attention", "distance", "posemb", "filters", "report")


def parser() -> argparse.ArgumentParser:
    p = cli.command_parser("python -m keras_vit.analysis", __doc__, verbose=False)
    commands = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, help_text in zip(
        COMMANDS,
        (
            "attention rollout over images (Fig. 6)",
            "mean attention distance per head and depth (Fig. 7 right, Fig. 11)",
            "cosine similarity of the position embeddings (Fig. 7 center, Fig. 10)",
            "principal components of the patch embedding filters (Fig. 7 left)",
            "every analysis on one page: OUT/index.html and its PNGs",
        ),
    ):
        c = commands.add_parser(name, help=help_text, description=help_text, formatter_class=cli.HelpFormatter)
        cli.add_verbose_flag(c)
        c.add_argument("--model", required=True, help="a .keras file, an original .npz, or a known weights name")
        c.add_argument("--variant", default=None, help="the released variant of a .npz or a weights name (ViT_B16)")
        cli.add_image_size_flag(c, default=None,
                                help="resolution to analyse at (default: the file's own; position embeddings are resized)")
        c.add_argument("--out", required=True, help="the PNG to write" if name != "report" else "the folder to write")
        if name in ("attention", "distance", "report"):
            c.add_argument("--image", nargs="+", default=None, help="image files (JPEG, PNG, GIF, BMP)")
            c.add_argument("--dataset", default=None, help="digits, folder:PATH or a tensorflow-datasets name")
            c.add_argument("--data_dir", default=None, help="tensorflow-datasets data directory")
            c.add_argument("--split", default=None, help="dataset split (default: its evaluation split)")
        if name in ("attention", "report"):
            c.add_argument("--count", type=int, default=4, help="dataset images to draw the rollout of")
        if name in ("distance", "report"):
            c.add_argument("--examples", type=int, default=256, help="dataset images the distance averages over")
            c.add_argument("--level", choices=("pixel", "patch"), default="pixel",
                           help="distance between all pixel pairs (the paper's) or between patch centres")
        if name in ("filters", "report"):
            c.add_argument("--components", type=int, default=28, help="principal components to draw")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    model_file = args.model if args.model.endswith((".keras", ".npz", ".h5")) else None
    status = cli.report_errors(lambda: cli.check_files(image=getattr(args, "image", None), model=model_file))
    if status:
        return status
    return cli.report_errors(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from keras_vit.analysis import report

    model = report.analysed_model(args.model, args.variant, cli.image_size_of(args.image_size))
    command = args.command
    if command == "report":
        pixels = _images(args, model, max(args.count, args.examples)) if args.image or args.dataset else None
        index = report.write_report(
            model, args.out, pixels, rollouts=args.count, level=args.level, components=args.components, source=args.model
        )
        print(f"Wrote {index}")
        return
    if command == "attention":
        written, summary = report.attention(model, _images(args, model, args.count), args.out)
    elif command == "distance":
        written, summary = report.distance(model, _images(args, model, args.examples, attention=False), args.out, args.level)
    elif command == "posemb":
        written, summary = report.posemb(model, args.out)
    else:
        written, summary = report.filters(model, args.components, args.out)
    print(summary)
    print(f"Wrote {written}")


def dataset_images(name: str, model, count: int, split: str | None = None, data_dir: str | None = None) -> np.ndarray:
    """The first `count` images of a dataset split (default: its evaluation split), as `report.read_images` gives them.

    Here in the command, not in `report`: the datasets are the training application's (`keras_vit.training`), and the
    library does not import its applications.
    """
    from keras_vit.preprocessing import eval_resize
    from keras_vit.training import datasets

    info = datasets.describe(name, data_dir)
    examples = datasets.load(info, split or info.eval_split, data_dir).take(count)
    images = [eval_resize(image, model.image_size, model.crop_fraction).numpy() for image, _ in examples]
    if not images:
        raise ValueError(f"{name}/{split or info.eval_split} has no images.")
    return np.stack(images)


def _images(args: argparse.Namespace, model, count: int, attention: bool = True):
    """[n, h, w, 3] pixels in [0, 255] at the model's evaluation size, from --image files or --dataset."""
    from keras_vit.analysis import report

    if args.image:
        return report.read_images(args.image, model)
    if args.dataset:
        return dataset_images(args.dataset, model, count, split=args.split, data_dir=args.data_dir)
    what = "draw the rollout of" if attention else "average the attention distance over"
    raise ValueError(f"Give images to {what}: --image FILE ... or --dataset NAME.")


if __name__ == "__main__":
    raise SystemExit(main())
