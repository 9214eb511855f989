"""VTAB-1k transfer (paper section 4.2): fine-tune a model on each task with 1,000 examples and report its test accuracy.

    python -m keras_vit.training.vtab --model ViT_B16 --weights imagenet21k --image_size 224 --tasks all --out vtab.md
    python -m keras_vit.training.vtab --model ViT --weights runs/demo/model.keras --image_size 16 --tasks digits --out vtab.md

For each task, as VTAB's protocol prescribes: fine-tune on its 800 training
examples once per learning rate of the sweep (`--learning_rates`), keep the
rate that scores best on its 200 validation examples, fine-tune again with
that rate on all 1,000, and evaluate on the task's test split. Every run is
`keras_vit.training.train`'s finetune recipe (SGD with momentum, cosine decay, clipping)
with a new zero head. The Markdown table gives each task's accuracy and the
Natural, Specialized and Structured group means.

--tasks takes the 19 VTAB tasks by name (`keras_vit.training.vtab_tasks`;
"all", or a group: "natural", "specialized", "structured"), read from
tensorflow-datasets with task_adaptation's splits (prepared under --data_dir,
or downloaded; without network the command stops at once saying so), and
also any dataset `keras_vit.training.train` takes, "digits" or "folder:PATH" (its
first 800 / next 200 training examples, and its test split).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from keras_vit import cli
from keras_vit.training.vtab_tasks import GROUPS, TASKS

#: The sweep of VTAB's fine-tuning protocol (Zhai et al. 2019; Kolesnikov et al. 2020).
LEARNING_RATES = (0.001, 0.003, 0.01, 0.03)


def parser() -> argparse.ArgumentParser:
    p = cli.command_parser("python -m keras_vit.training.vtab", __doc__)
    p.add_argument("--model", default="ViT_B16", help="a variant, or ViT with --weights giving the architecture")
    p.add_argument("--weights", required=True, help="the pre-trained model: a known name or a .npz/.keras/.weights.h5 file")
    cli.add_image_size_flag(p, default=[224], help="fine-tuning resolution")
    p.add_argument("--tasks", nargs="+", required=True,
                   help="VTAB task names, all, natural, specialized, structured, digits or folder:PATH")
    p.add_argument("--learning_rates", type=float, nargs="+", default=list(LEARNING_RATES), help="the sweep")
    p.add_argument("--steps", type=int, default=2500, help="optimizer updates of each fine-tuning run")
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--train_examples", type=int, default=800, help="digits and folder: training examples (VTAB: 800)")
    p.add_argument("--val_examples", type=int, default=200, help="digits and folder: validation examples (VTAB: 200)")
    p.add_argument("--data_dir", default=None, help="tensorflow-datasets data directory")
    p.add_argument("--out", required=True, help="the Markdown table to write (a .json with every run beside it)")
    p.add_argument("--runs_dir", default=None, help="where the runs go (default: OUT without .md, plus _runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="3 steps of batch 16, the sweep's first two rates, 80/20 examples: checks the runner, measures nothing")
    return p


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


def run_vtab(args: argparse.Namespace) -> dict:
    from keras_vit.training import datasets, trainer
    from keras_vit.training.config import RunConfig

    if args.quick:
        args.steps, args.batch_size, args.train_examples, args.val_examples = 3, 16, 80, 20
        args.learning_rates = args.learning_rates[:2]
    tasks = task_names(args.tasks)
    runs_dir = args.runs_dir or os.path.splitext(args.out)[0] + "_runs"
    infos = {task: datasets.describe(f"vtab:{task}" if task in TASKS else task, args.data_dir) for task in tasks}
    for task in tasks:  # every task's slices hold examples, before the first run trains
        split = splits(task, args.train_examples, args.val_examples, infos[task].eval_split)
        infos[task].check_split(split["train"], "--train_examples")
        infos[task].check_split(split["val"], "--val_examples")
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
        sweep = {lr: fine_tune(task, f"lr{lr:g}", lr, split["train"], split["val"]) for lr in args.learning_rates}
        best = max(sweep, key=sweep.get)
        test = fine_tune(task, f"final-lr{best:g}", best, split["trainval"], split["test"])
        results[task] = {"group": TASKS[task].group if task in TASKS else "other", "sweep": sweep, "learning_rate": best,
                         "val_accuracy": sweep[best], "test_accuracy": test}
        print(f"[{time.perf_counter() - start:5.0f}s] {task}: learning rate {best:g} (val {sweep[best]:.2%}), "
              f"test {test:.2%}", flush=True)
    table = markdown(results, args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(table)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(table)
    return results


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = [
        "# VTAB-1k",
        "",
        f"{args.weights} ({args.model}) fine-tuned at {'x'.join(map(str, args.image_size))} px: per task, "
        f"{args.steps} steps of batch {args.batch_size} at each learning rate of {args.learning_rates} on 800 "
        f"examples, the best on 200 validation examples, then again on all 1,000 and tested on the test split."
        + (" --quick: a check that the runner runs, not a measurement." if args.quick else ""),
        "",
        "| task | group | learning rate | val accuracy (%) | test accuracy (%) |",
        "|---|---|---:|---:|---:|",
    ]
    for task, row in results.items():
        lines.append(f"| {task} | {row['group']} | {row['learning_rate']:g} | {row['val_accuracy'] * 100:.1f} | "
                     f"{row['test_accuracy'] * 100:.1f} |")
    lines += ["", "| group | tasks | mean test accuracy (%) |", "|---|---:|---:|"]
    for group in (*GROUPS, "other"):
        members = [row["test_accuracy"] for row in results.values() if row["group"] == group]
        if members:
            lines.append(f"| {group} | {len(members)} | {np.mean(members) * 100:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    status = cli.report_errors(lambda: task_names(args.tasks))
    if status:
        return status
    return cli.report_errors(lambda: run_vtab(args))


if __name__ == "__main__":
    raise SystemExit(main())
