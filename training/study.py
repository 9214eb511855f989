"""The paper's ablations and data-scale study in small, re-run on one dataset with several seeds.

    python -m keras_vit.training.study posemb           --dataset digits --out posemb.md   # Table 8: none / 1-D / 2-D / relative
    python -m keras_vit.training.study posemb --placements input every_layer every_layer_shared --out table8.md  # all of Table 8
    python -m keras_vit.training.study classifier       --dataset digits --out cls.md      # Fig. 9: class token vs GAP, own lr
    python -m keras_vit.training.study data_scale       --dataset digits --out scale.md    # Fig. 3/4: ViT vs hybrid vs ResNet
    python -m keras_vit.training.study self_supervision --dataset digits --out ssl.md      # 4.6: scratch / masked patch / supervised
    python -m keras_vit.training.study scaling          --dataset digits --out scaling.md  # Fig. 5: accuracy against compute

Every arm of a study trains the same small model family on the same data,
for the same steps, with the same seeds, through `keras_vit.training.train` (each run
a folder under --runs_dir: a study started again reuses its finished runs).
Each run reports its test accuracy and few-shot linear accuracy (1/5/10
shots, big_vision's protocol) of its representation; the study writes a
Markdown table (mean +- standard deviation over seeds) and a PNG beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np

from keras_vit import cli, position_embeddings
from keras_vit.options import POSITION_EMBEDDING_PLACEMENTS, POSITION_EMBEDDINGS
from keras_vit.training import outputs
from keras_vit.training.config import DEMO_MODEL, DEMO_TRAINING, RunConfig

#: The small ViT of the studies: the demo's.
VIT = DEMO_MODEL
#: The same Transformer on the hybrid's ResNet root and one unit (stride 4: a 4x4 map, patch 1, 16 tokens).
HYBRID = dict(DEMO_MODEL, resnet_layers=(1,), patch_size=1)
#: A ResNet of the hybrid's units, two stages.
RESNET = dict(model="ResNet", image_size=(16,), resnet_layers=(1, 1))
#: Fine-tuning a pre-trained run's model: its architecture comes from its file.
FINETUNE = dict(model="ViT", image_size=(16,))
#: Training every run shares (the demo's recipe); an arm may change the learning rate.
TRAINING = {key: value for key, value in DEMO_TRAINING.items() if key not in ("dataset", "learning_rate")}
LEARNING_RATE = DEMO_TRAINING["learning_rate"]
#: The scaling study's families, three sizes each: the demo's ViT narrower and wider, the same Transformers on the
#: hybrid's ResNet root and one unit, and ResNets of the hybrids' units.
#: The largest trains at a third of the demo's learning rate: at 3e-3 it diverges (29.7% test accuracy, seed 0).
_VIT_SIZES = {"S": dict(hidden_size=32, mlp_dim=64, num_heads=2, num_layers=2), "M": {},
              "L": dict(hidden_size=128, mlp_dim=256, num_heads=4, num_layers=6, learning_rate=1e-3)}
SCALING = {
    "ViT": {size: {**VIT, **widths} for size, widths in _VIT_SIZES.items()},
    "hybrid": {size: {**HYBRID, **widths} for size, widths in _VIT_SIZES.items()},
    "ResNet": {"S": RESNET, "M": {**RESNET, "resnet_layers": (2, 2)},
               "L": {**RESNET, "resnet_layers": (2, 2), "resnet_width": 2}},
}
#: Figure 5 also varies the patch size (B/32 to B/16) and the training length (7 and 14 epochs): the middle ViT with
#: twice its patch (8: 4 tokens instead of 16), and with twice the epochs.
SCALING_AXES = (("M/8", dict(patch_size=8), 1), ("M, 2x epochs", {}, 2))
SHOTS = (1, 5, 10)
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One configuration of a study: the RunConfig fields of its run, and optionally of a run it starts from."""

    name: str
    fields: dict  # of its RunConfig
    pretrain: dict | None = None  # the RunConfig fields of a pre-training run whose model.keras this arm's run starts from
    series: str = ""  # data_scale: the model family
    x: float | None = None  # data_scale: the training fraction
    epochs_factor: int = 1  # the run trains this many times the study's epochs (scaling: Figure 5's 7 and 14 epochs)


@dataclasses.dataclass(frozen=True)
class Study:
    title: str
    source: str
    arms: tuple[Arm, ...]
    epochs: int  # default epochs of each run (of the full training split)
    seeds: int  # default seeds
    differs: str = ""  # one line: where the study must differ from the paper's protocol
    fewshot_plotted: int = 5  # the few-shot accuracy the plot's second panel shows: the paper's figures are 5-shot


def lr(value: float) -> dict:
    return dict(learning_rate=value)


def posemb_arms(placements: tuple[str, ...] = ("input",)) -> tuple[Arm, ...]:
    """Table 8: every kind of position embedding at every placement it has (learned tables only move)."""
    return tuple(
        Arm(kind if placement == "input" else f"{kind}, {placement}",
            {**VIT, **lr(LEARNING_RATE), "position_embedding": kind,
             **({"position_embedding_placement": placement} if placement != "input" else {})})
        for kind in POSITION_EMBEDDINGS
        for placement in placements
        if placement == "input" or position_embeddings.get(kind).has_table
    )


def studies(placements: tuple[str, ...] = ("input",)) -> dict[str, Study]:
    """The studies, each a list of arms; `placements`: the posemb study's placements of learned tables."""
    half, rest = dict(train_fraction=0.5), dict(train_offset=0.5, train_fraction=0.5)
    return {
        "posemb": Study(
            "Position embeddings", "paper Table 8 (appendix D.4)",
            posemb_arms(placements),
            epochs=30, seeds=3,
            differs="Differs from the paper in scale: 16 tokens of 8x8 digits and minutes of CPU, not ImageNet-21k.",
        ),
        "classifier": Study(
            "Class token vs global average pooling", "paper Figure 9 (appendix D.3)",
            (
                Arm(f"token, lr {LEARNING_RATE:g}", {**VIT, **lr(LEARNING_RATE), "classifier": "token"}),
                Arm(f"gap, lr {LEARNING_RATE:g}", {**VIT, **lr(LEARNING_RATE), "classifier": "gap"}),
                Arm(f"gap, lr {LEARNING_RATE * 3 / 8:g}", {**VIT, **lr(LEARNING_RATE * 3 / 8), "classifier": "gap"}),
            ),
            epochs=30, seeds=3,
            differs="Differs from the paper in scale: 16 tokens of 8x8 digits and minutes of CPU, not ImageNet.",
        ),
        "data_scale": Study(
            "ViT, hybrid and ResNet as the training data grows", "paper Figures 3 and 4, in small",
            tuple(
                Arm(f"{family} {fraction:.0%}",
                    {**fields, **lr(LEARNING_RATE), "train_fraction": fraction, "early_stopping_patience": 3,
                     "early_stopping_monitor": "fewshot_5shot", "fewshot_every": 1},
                    series=family, x=fraction)
                for family, fields in (("ViT", VIT), ("hybrid", HYBRID), ("ResNet", RESNET))
                for fraction in FRACTIONS
            ),
            epochs=30, seeds=2,  # 24 runs, some stopped early: under 30 minutes on 2 cores; at 15 the small ViT is undertrained
            differs="Differs from the paper: the data is 1,293 8x8 training images, not ImageNet to JFT-300M. As "
                    "Figure 4, early stopping (patience 3) watches 5-shot accuracy, here on minival.",
        ),
        "scaling": Study(
            "Performance against pre-training compute", "paper section 4.4, Figure 5, in small",
            tuple(
                Arm(f"{family} {size}", {**lr(LEARNING_RATE), **fields}, series=family)
                for family, sizes in SCALING.items()
                for size, fields in sizes.items()
            ) + tuple(
                # Points of their own on the plot: on the ViT line they would join sizes to other axes.
                Arm(f"ViT {name}", {**lr(LEARNING_RATE), **SCALING["ViT"]["M"], **change}, series=f"ViT {name}",
                    epochs_factor=factor)
                for name, change, factor in SCALING_AXES
            ),
            epochs=20, seeds=2,  # 22 runs: about 20 minutes on 2 cores
            differs="Differs from the paper in scale: models of 10^4-10^6 parameters on 1,293 8x8 digits (4 or 16 "
                    "tokens) for minutes of CPU, where the paper spans 10^3-10^4 exaFLOPs of JFT-300M pre-training; "
                    "width, depth, patch size and epochs vary, but no model is pre-trained on one dataset and "
                    "transferred to another: transfer is measured as 5-shot accuracy on the same digits.",
            fewshot_plotted=5,
        ),
        "self_supervision": Study(
            "Fine-tuning from scratch, from masked patch prediction, from supervised pre-training",
            "paper section 4.6 (pre-training on the first half of the training split, fine-tuning on the other half)",
            (
                Arm("scratch", {**VIT, **lr(LEARNING_RATE), **rest}),
                # Pre-training at the recipes' own learning rates (masked patch: 2e-4); fine-tuning with the paper's
                # recipe (SGD with momentum, cosine, no weight decay, clipping) and, from --head new, a zero head.
                Arm("masked patch pre-training", {**FINETUNE, **rest, "recipe": "finetune"},
                    pretrain={**VIT, **half, "recipe": "masked_patch"}),
                Arm("supervised pre-training", {**FINETUNE, **rest, "recipe": "finetune"},
                    pretrain={**VIT, **lr(LEARNING_RATE), **half}),
            ),
            epochs=24, seeds=2,  # 10 runs (two arms pre-train first): under 20 minutes on 2 cores
            differs="Differs from the paper in scale: 8x8 digits at 16x16 (16 tokens), halves of 1,437 training "
                    "images instead of JFT and ImageNet, minutes of CPU; the recipes and the new head are the paper's.",
        ),
    }


def parser() -> argparse.ArgumentParser:
    p = cli.command_parser("python -m keras_vit.training.study", __doc__)
    p.add_argument("study", choices=list(studies()), help="which study to run")
    p.add_argument("--dataset", default="digits", help="digits, folder:PATH or a tensorflow-datasets name")
    p.add_argument("--data_dir", default=None, help="tensorflow-datasets data directory")
    p.add_argument("--out", required=True, help="the Markdown table to write; the PNG goes beside it")
    p.add_argument("--runs_dir", default=None, help="where the runs go (default: OUT without .md, plus _runs)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the study's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the full training split per run (default: the study's)")
    p.add_argument("--placements", nargs="+", choices=POSITION_EMBEDDING_PLACEMENTS, default=["input"],
                   help="posemb: where learned tables are added (Table 8's columns; the full table: all three)")
    p.add_argument("--quick", action="store_true", help="a few steps, one seed: checks the study runs, measures nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return cli.report_errors(lambda: run_study(args))


def run_study(args: argparse.Namespace) -> dict[str, list[dict]]:
    study = studies(tuple(args.placements))[args.study]
    seeds = 1 if args.quick else args.seeds or study.seeds
    epochs = 1 if args.quick else args.epochs or study.epochs
    arms = study.arms
    if args.quick and args.study == "data_scale":
        arms = tuple(arm for arm in arms if arm.x in (FRACTIONS[0], FRACTIONS[-1]))  # the smallest slice too
    if args.quick and args.study == "scaling":
        arms = tuple(arm for arm in arms if arm.series != "hybrid" and arm.name.endswith((" S", " M")))
    runs_dir = args.runs_dir or os.path.splitext(args.out)[0] + "_runs"
    common = dict(TRAINING, dataset=args.dataset, data_dir=args.data_dir, progress=0)
    if args.quick:  # compiling costs more than a few steps
        common["jit_compile"] = False
    # Every run takes the same steps: `epochs` passes over the whole split (a fraction of it repeats more often).
    from keras_vit.training import datasets, trainer

    info = datasets.describe(args.dataset, args.data_dir)
    held_out = trainer.choose_validation(RunConfig(output_dir="", dataset=args.dataset), info, info.train_split)[1]
    full_steps = max(1, (info.num_examples[info.train_split] - held_out) // TRAINING["batch_size"])
    length = dict(epochs=1, steps_per_epoch=3) if args.quick else dict(epochs=epochs, steps_per_epoch=full_steps)
    rows: dict[str, list[dict]] = {arm.name: [] for arm in arms}
    start = time.perf_counter()
    for seed in range(seeds):
        for index, arm in enumerate(arms):
            shared = dict(common, seed=seed, **dict(length, epochs=length["epochs"] * arm.epochs_factor))
            init = {}
            if arm.pretrain is not None:
                folder = os.path.join(runs_dir, f"arm{index}-pretrain-seed{seed}")
                trainer.train_in_process(RunConfig(output_dir=folder, **arm.pretrain, **shared))
                init = dict(init_from=os.path.join(folder, outputs.MODEL), head="new")  # the paper: a new zero head
            folder = os.path.join(runs_dir, f"arm{index}-seed{seed}")
            result = trainer.train_in_process(RunConfig(output_dir=folder, **arm.fields, **init, **shared))
            result.update(_fewshot(folder, args.dataset, args.data_dir))
            rows[arm.name].append(result)
            elapsed, done, total = time.perf_counter() - start, seed * len(arms) + index + 1, seeds * len(arms)
            print(f"[{elapsed:5.0f}s] seed {seed} {arm.name}: accuracy {result['accuracy']:.2%}, "
                  + ", ".join(f"{k}-shot {result[f'{k}shot']:.2%}" for k in SHOTS)
                  + (f"; run {done} of {total}, about {elapsed / done * (total - done) / 60:.0f} min left"
                     if done < total else ""), flush=True)
    table = markdown(study, arms, rows, args, seeds, epochs)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(table)
    image = plot(study, arms, rows, os.path.splitext(args.out)[0] + ".png")
    print(table)
    print(f"Wrote {args.out} and {image}")
    return rows


def _fewshot(folder: str, dataset: str, data_dir: str | None) -> dict:
    """{f"{k}shot": mean few-shot accuracy over big_vision's seeds} of a run's model."""
    import keras_vit
    from keras_vit.training import datasets, fewshot, pipeline

    model = keras_vit.load_model(os.path.join(folder, outputs.MODEL))
    info = datasets.describe(dataset, data_dir)
    prep = pipeline.Preprocessing.for_model(model, flip=False, num_classes=info.num_classes)
    train_split, test_split = (
        fewshot.features(model, pipeline.eval_dataset(datasets.load(info, split, data_dir), prep, 256))
        for split in (info.train_split, info.eval_split)
    )
    results = fewshot.fewshot_accuracies(train_split, test_split, info.num_classes, shots=SHOTS)
    return {f"{k}shot": mean for k, (mean, _) in results.items()}


def _cell(values: list[float]) -> str:
    values = np.asarray(values) * 100
    return f"{values.mean():.1f}" if len(values) == 1 else f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def _splits(rows: dict[str, list[dict]]) -> list[str]:
    """The line saying which split chose each run's model and which one scored it (as their results.json say)."""
    pairs = {(r.get("selection_split"), r.get("split")) for results in rows.values() for r in results}
    if len(pairs) != 1 or None in next(iter(pairs)):
        return []
    selection, scored = next(iter(pairs))
    return [f"Each run selects its model (best.keras, early stopping) on {selection} and is "
            f"scored on {scored}."]


def markdown(study: Study, arms, rows: dict[str, list[dict]], args, seeds: int, epochs: int) -> str:
    header = ("| arm | test accuracy (%) | " + " | ".join(f"{k}-shot (%)" for k in SHOTS)
              + " | training compute (FLOPs) | train seconds |")
    lines = [
        f"# {study.title}",
        "",
        f"{study.source}. Dataset {args.dataset}; {seeds} seed(s) per arm, mean ± standard deviation over seeds; "
        f"{'--quick (a few steps: not a measurement)' if args.quick else f'{epochs} epochs of the full training split per run'}. "
        f"Few-shot: linear, on the representation, big_vision's protocol.",
        *([study.differs] if study.differs else []),
        *_splits(rows),
        "",
        header,
        "|" + "---|" * (4 + len(SHOTS)),
    ]
    for arm in arms:
        results = rows[arm.name]
        cells = [_cell([r["accuracy"] for r in results])] + [_cell([r[f"{k}shot"] for r in results]) for k in SHOTS]
        seconds = np.mean([r["train_seconds"] for r in results])
        compute = np.mean([r.get("training_flops", np.nan) for r in results])
        lines.append(f"| {arm.name} | " + " | ".join(cells) + f" | {compute:.2e} | {seconds:.0f} |")
    placements = getattr(args, "placements", ["input"])
    if study.title == "Position embeddings" and len(placements) > 1:
        lines += ["", "5-shot linear accuracy (%), the paper's Table 8 metric, laid out as it is (test accuracy in "
                      "brackets; N/A: no learned table to place):", "",
                  "| | " + " | ".join(placements) + " |", "|" + "---|" * (1 + len(placements))]
        for kind in POSITION_EMBEDDINGS:
            cells = []
            for placement in placements:
                name = kind if placement == "input" else f"{kind}, {placement}"
                found = rows.get(name)
                cells.append(f"{_cell([r['5shot'] for r in found])} ({_cell([r['accuracy'] for r in found])})"
                             if found else "N/A")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(study: Study, arms, rows: dict[str, list[dict]], path: str) -> str:
    """Test and few-shot accuracy per arm (bars), or per model family against the training fraction (data_scale) or
    the training compute (scaling)."""
    from keras_vit.analysis.plots import new_figure, save_figure

    figure = new_figure(8, 4.5)
    figure.suptitle(f"{study.title} ({study.source})", fontsize=10)
    axes = figure.subplots(1, 2)
    shots = study.fewshot_plotted
    for ax, key, label in zip(axes, ("accuracy", f"{shots}shot"), ("test accuracy", f"{shots}-shot accuracy")):
        stats = {arm.name: np.asarray([r[key] for r in rows[arm.name]]) * 100 for arm in arms}
        if all(arm.series for arm in arms):  # one line per model family: against data (x) or compute (measured)
            by_compute = any(arm.x is None for arm in arms)
            for series in dict.fromkeys(arm.series for arm in arms):
                members = [arm for arm in arms if arm.series == series]
                xs = [np.mean([r["training_flops"] for r in rows[a.name]]) if by_compute else a.x * 100 for a in members]
                xs, members = zip(*sorted(zip(xs, members), key=lambda pair: pair[0]))  # a line left to right
                ax.errorbar(xs, [stats[a.name].mean() for a in members],
                            yerr=[stats[a.name].std() for a in members], marker="o", capsize=3, label=series)
            ax.set_xscale("log")
            ax.set_xlabel("training compute (FLOPs)" if by_compute else "training examples used (% of the split)")
            ax.legend()
        else:
            names = [arm.name for arm in arms]
            ax.bar(range(len(names)), [stats[n].mean() for n in names], yerr=[stats[n].std() for n in names], capsize=3)
            ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
            low = min(stats[n].min() for n in names)
            ax.set_ylim(max(0, low - 10), 100)
        ax.set_ylabel(f"{label} (%)")
        ax.grid(alpha=0.3)
    return save_figure(figure, path)


if __name__ == "__main__":
    raise SystemExit(main())
