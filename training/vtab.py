"""VTAB-1k transfer (paper section 4.2): fine-tune a model on each task with 1,000 examples and report its test accuracy.

    python -m keras_vit.training.vtab --model ViT_B16 --weights imagenet21k --tasks all --out vtab.md
    python -m keras_vit.training.vtab --model ViT --weights runs/demo/model.keras --image_size 16 --tasks digits --out vtab.md

Two protocols (`--protocol`):

- `paper` (the default), the paper's appendix B.1.1: one setting for all 19
  tasks, learning rate 0.01, 2,500 steps of batch 512 at 384x384 (the paper
  chose it with a small sweep of two rates and two schedules on the 200
  validation examples). Each task fine-tunes once on its 1,000 examples
  (train800val200) and is evaluated on its test split.
- `sweep`, ours: fine-tune on the 800 training examples once per learning
  rate of `--learning_rates` (0.001-0.03), keep the rate that scores best on
  the 200 validation examples, fine-tune again with it on all 1,000, test.
  The reference code runs one setting per call; the per-task sweep is
  keras_vit's.

Every run is `keras_vit.training.train`'s finetune recipe (SGD with momentum,
cosine decay, clipping) with a new zero head, on images resized to the
resolution (no crop, no flip, as task_adaptation trains). The Markdown table
gives each task's accuracy, the Natural, Specialized and Structured group
means, and the mean over all tasks.

--tasks takes the 19 VTAB tasks by name (`keras_vit.training.vtab_tasks`;
"all", or a group: "natural", "specialized", "structured"), read from
tensorflow-datasets with task_adaptation's splits (prepared under --data_dir,
or downloaded; without network the command stops at once saying so), and
also any dataset `keras_vit.training.train` takes, "digits" or "folder:PATH" (its
first --train_examples / next --val_examples training examples, and its test split).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from keras_vit import cli
from keras_vit.training.vtab_tasks import GROUPS, TASKS

#: The paper's one VTAB-1k setting for every task (appendix B.1.1): rate, updates, batch, resolution.
PAPER_SETTING = dict(learning_rates=[0.01], steps=2500, batch_size=512, image_size=[384])
#: `--protocol sweep` (ours): the learning rates tried on each task, the best on its validation examples kept.
LEARNING_RATES = (0.001, 0.003, 0.01, 0.03)
PROTOCOLS = ("paper", "sweep")


def parser() -> argparse.ArgumentParser:
    p = cli.command_parser("python -m keras_vit.training.vtab", __doc__)
    p.add_argument("--model", default="ViT_B16", help="a variant, or ViT with --weights giving the architecture")
    p.add_argument("--weights", required=True, help="the pre-trained model: a known name or a .npz/.keras/.weights.h5 file")
    p.add_argument("--protocol", choices=PROTOCOLS, default="paper",
                   help="paper: one setting for every task, trained once on 1,000 examples; sweep (ours): the best of "
                        "--learning_rates on the 200 validation examples, then 1,000")
    cli.add_image_size_flag(p, default=None, help="fine-tuning resolution (default: 384, the paper's)")
    p.add_argument("--tasks", nargs="+", required=True,
                   help="VTAB task names, all, natural, specialized, structured, digits or folder:PATH")
    p.add_argument("--learning_rates", type=float, nargs="+", default=None,
                   help=f"the rates (default: 0.01 with --protocol paper, {' '.join(map(str, LEARNING_RATES))} "
                        f"with --protocol sweep)")
    p.add_argument("--steps", type=int, default=None, help="optimizer updates of each fine-tuning run (default 2,500)")
    p.add_argument("--batch_size", type=int, default=None, help="default 512")
    p.add_argument("--train_examples", type=int, default=800, help="digits and folder: training examples (VTAB: 800)")
    p.add_argument("--val_examples", type=int, default=200, help="digits and folder: validation examples (VTAB: 200)")
    p.add_argument("--data_dir", default=None, help="tensorflow-datasets data directory")
    p.add_argument("--out", required=True, help="the Markdown table to write (a .json with every run beside it)")
    p.add_argument("--runs_dir", default=None, help="where the runs go (default: OUT without .md, plus _runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="3 steps of batch 16, the sweep's first two rates, 80/20 examples: checks the runner, measures nothing")
    return p


def settle(args: argparse.Namespace) -> argparse.Namespace:
    """The protocol's values for what the command line left out (and --quick's)."""
    defaults = dict(PAPER_SETTING, learning_rates=list(PAPER_SETTING["learning_rates"] if args.protocol == "paper"
                                                       else LEARNING_RATES))
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.steps, args.batch_size, args.train_examples, args.val_examples = 3, 16, 80, 20
        args.learning_rates = args.learning_rates[:2]
    if args.protocol == "paper" and len(args.learning_rates) != 1:
        raise ValueError(f"--protocol paper trains once per task, at one learning rate; --learning_rates gave "
                         f"{len(args.learning_rates)} (a sweep is --protocol sweep).")
    return args


def task_names(requested: list[str]) -> list[str]:
    """The requested tasks in VTAB's order, groups and "all" expanded; datasets of other kinds as given."""
    out = []
    for name in requested:
        if name == "all":
            out += list(TASKS)
        elif name.capitalize() in GROUPS:
            out += [task.name for task in TASKS.values() if task.group == name.capitalize()]
        elif name in TASKS or name == "digits" or name.startswith("folder:"):
            out.append(name)
        else:
            raise ValueError(f"Unknown VTAB task {name!r}; the tasks are {', '.join(TASKS)}, or digits, folder:PATH, "
                             f"all, natural, specialized, structured.")
    return list(dict.fromkeys(out))


def splits(task: str, train: int, val: int, test: str) -> dict[str, str]:
    """The task's VTAB-1k splits: selection (train on 800, validate on 200) and the final run (train on 1,000, test)."""
    if task in TASKS:
        return {"train": "train800", "val": "val200", "trainval": "train800val200", "test": "test"}
    return {"train": f"train[:{train}]", "val": f"train[{train}:{train + val}]", "trainval": f"train[:{train + val}]",
            "test": test}


def single_class_warning(info, split: str, data_dir: str | None = None) -> str | None:
    """What is wrong with choosing a learning rate on `split` when it holds one class only (None when it holds more)."""
    from keras_vit.training import datasets

    labels = {int(label) for _, label in datasets.load(info, split, data_dir)}
    if len(labels) > 1:
        return None
    return (f"the validation slice {split} of {info.name} holds one class only ({info.class_names[labels.pop()]}): "
            f"the sweep's choice of learning rate on it means little; give --val_examples more examples.")


def run_vtab(args: argparse.Namespace) -> dict:
    from keras_vit.training import datasets, trainer
    from keras_vit.training.config import RunConfig

    args = settle(args)
    tasks = task_names(args.tasks)
    runs_dir = args.runs_dir or os.path.splitext(args.out)[0] + "_runs"
    infos = {task: datasets.describe(f"vtab:{task}" if task in TASKS else task, args.data_dir) for task in tasks}
    for task in tasks:  # every task's slices hold examples, before the first run trains
        split = splits(task, args.train_examples, args.val_examples, infos[task].eval_split)
        infos[task].check_split(split["train"], "--train_examples")
        infos[task].check_split(split["val"], "--val_examples")
        if args.protocol == "sweep" and task not in TASKS:
            warning = single_class_warning(infos[task], split["val"], args.data_dir)
            if warning:
                print(f"warning: {warning}", flush=True)
    base = dict(model=args.model, weights=args.weights, image_size=tuple(args.image_size), recipe="finetune", head="new",
                steps=args.steps, steps_per_epoch=min(args.steps, 100), batch_size=args.batch_size, warmup_steps=None,
                data_dir=args.data_dir, seed=args.seed, progress=0)
    results, start = {}, time.perf_counter()

    def fine_tune(task: str, folder: str, lr: float, train: str, evaluate: str) -> float:
        config = RunConfig(output_dir=os.path.join(runs_dir, task.replace(":", "_").replace("/", "_"), folder),
                           dataset=infos[task].name, train_split=train, eval_split=evaluate, learning_rate=lr, **base)
        return trainer.train_in_process(config)["accuracy"]

    for task in tasks:
        split = splits(task, args.train_examples, args.val_examples, infos[task].eval_split)
        sweep = {}
        if args.protocol == "sweep":
            sweep = {lr: fine_tune(task, f"lr{lr:g}", lr, split["train"], split["val"]) for lr in args.learning_rates}
        best = max(sweep, key=sweep.get) if sweep else args.learning_rates[0]
        test = fine_tune(task, f"final-lr{best:g}", best, split["trainval"], split["test"])
        results[task] = {"group": TASKS[task].group if task in TASKS else "other", "sweep": sweep, "learning_rate": best,
                         "val_accuracy": sweep.get(best), "test_accuracy": test}
        chosen = f" (val {sweep[best]:.2%})" if sweep else ""
        print(f"[{time.perf_counter() - start:5.0f}s] {task}: learning rate {best:g}{chosen}, test {test:.2%}", flush=True)
    table = markdown(results, args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(table)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(table)
    return results


def markdown(results: dict, args: argparse.Namespace) -> str:
    """The table of a run, its header saying what ran: the protocol, the setting, the examples."""
    size = "x".join(map(str, args.image_size * (3 - len(args.image_size))))  # one size: a square
    setting = f"{args.steps:,} steps of batch {args.batch_size}"
    vtab = [task for task in results if task in TASKS]
    others = [task for task in results if task not in TASKS]
    examples = []
    if vtab:
        examples.append("VTAB tasks: 800 training and 200 validation examples (1,000 together)")
    if others:
        examples.append(f"{', '.join(others)}: the first {args.train_examples} training examples and the next "
                        f"{args.val_examples} ({args.train_examples + args.val_examples:,} together)")
    if args.protocol == "paper":
        protocol = (f"the paper's protocol (appendix B.1.1): one setting for every task, learning rate "
                    f"{args.learning_rates[0]:g}, {setting}, trained once on the training and validation examples "
                    f"together and tested on the test split")
    else:
        protocol = (f"keras_vit's sweep: {setting} at each learning rate of {args.learning_rates} on the training "
                    f"examples, the best on the validation examples, then again on both together, tested on the "
                    f"test split")
    lines = [
        "# VTAB-1k",
        "",
        f"{args.weights} ({args.model}) fine-tuned at {size} pixels with {protocol}. {'; '.join(examples)}."
        + (" --quick: a check that the runner runs, not a measurement." if args.quick else ""),
        "",
        "| task | group | learning rate | val accuracy (%) | test accuracy (%) |",
        "|---|---|---:|---:|---:|",
    ]
    for task, row in results.items():
        val = "" if row["val_accuracy"] is None else f"{row['val_accuracy'] * 100:.1f}"
        lines.append(f"| {task} | {row['group']} | {row['learning_rate']:g} | {val} | {row['test_accuracy'] * 100:.1f} |")
    lines += ["", "| group | tasks | mean test accuracy (%) |", "|---|---:|---:|"]
    for group in (*GROUPS, "other"):
        members = [row["test_accuracy"] for row in results.values() if row["group"] == group]
        if members:
            lines.append(f"| {group} | {len(members)} | {np.mean(members) * 100:.1f} |")
    if vtab:
        mean = np.mean([results[task]["test_accuracy"] for task in vtab]) * 100
        lines.append(f"| all VTAB tasks{'' if len(vtab) == len(TASKS) else ' run'} | {len(vtab)} | {mean:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    status = cli.report_errors(lambda: task_names(args.tasks))
    if status:
        return status
    return cli.report_errors(lambda: run_vtab(args))


if __name__ == "__main__":
    raise SystemExit(main())
