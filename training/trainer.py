"""One training run, as `keras_vit.training.train` describes it: plan it, build the model and data, fit, write the results."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

import keras_vit
from keras_vit import analysis
from keras_vit.training import backup, callbacks as run_callbacks, datasets, determinism, distribute, outputs, pipeline
from keras_vit.options import ARCHITECTURE, MODEL_OPTIONS
from keras_vit.training.config import FEWSHOT_MONITORS, RESNET_FIELDS, RunConfig
from keras_vit.training.recipes import RECIPES, Recipe, build_recipe


def default_batch_size(recipe_batch: int, num_examples: int) -> int:
    """The recipe's batch, or for a small dataset the largest power of two giving >= 8 steps an epoch."""
    if recipe_batch * 8 <= num_examples:
        return recipe_batch
    return max(1, 2 ** int(math.log2(max(1, num_examples // 8))))


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of every weight's bytes: equal on all workers of a synchronous run."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass
class Plan:
    """What a run will do, settled from the command line before any work starts."""

    info: datasets.DatasetInfo
    train_split: str
    eval_split: str  # the split the final score is reported on
    validation_split: str  # the split evaluated after each epoch, on which early stopping and best.keras select
    recipe: Recipe
    strategy: tf.distribute.Strategy | distribute.KerasDistribution
    train_examples: range  # which examples of the training split are trained on (--train_fraction)
    held_out: int  # examples at the end of the training split that validation holds out (minival; 0: none)
    step_batch: int  # global batch of one step (all replicas, one micro-batch)
    steps_per_epoch: int
    epochs: int
    total_updates: int


def plan(config: RunConfig) -> Plan:
    """Checks everything that can be wrong with the command, then sets up precision, seed and strategy."""
    info = datasets.describe(config.dataset, config.data_dir)
    train_split = config.train_split or info.train_split
    eval_split = config.eval_split or info.eval_split
    info.check_split(eval_split, "--eval_split")  # before any training, not when the first evaluation finds nothing
    in_split = info.check_split(train_split, "--train_split")
    validation_split, held_out = choose_validation(config, info, train_split)
    info.check_split(validation_split, "--validation_split")
    train_examples = training_range(in_split - held_out, config.train_offset, config.train_fraction)
    n_train = len(train_examples)
    if not n_train:
        raise ValueError(
            f"Split {train_split!r} of {config.dataset} ({info.num_examples}) has no examples from --train_offset "
            f"{config.train_offset} for --train_fraction {config.train_fraction}."
        )
    recipe = build_recipe(
        config.recipe,
        optimizer=config.optimizer,
        learning_rate=config.learning_rate,
        schedule=config.schedule,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        global_clipnorm=config.global_clipnorm,
        label_smoothing=config.label_smoothing,
        dropout_rate=config.dropout_rate,
        loss=config.loss,
        head_bias_init=config.head_bias_init,
        ema_momentum=config.ema_momentum,
        batch_size=config.batch_size or default_batch_size(RECIPES[config.recipe].batch_size, n_train),
        grad_accum_steps=config.grad_accum_steps,
    )

    if config.logical_cpus:
        distribute.split_cpu(config.logical_cpus)
    if determinism.wanted(config.deterministic, config.jit_compile):
        determinism.enable()
    keras.config.set_dtype_policy(config.precision)
    keras.utils.set_random_seed(config.seed)
    strategy = distribute.make_strategy(config.strategy)
    step_batch = distribute.check_batch_size(recipe.batch_size, strategy, recipe.grad_accum_steps)
    steps_per_epoch = config.steps_per_epoch or max(1, n_train // step_batch)
    if config.steps is not None:
        data_steps = config.steps * recipe.grad_accum_steps
        steps_per_epoch = min(steps_per_epoch, data_steps)
        epochs = math.ceil(data_steps / steps_per_epoch)
    else:
        epochs = config.epochs or 10
    total_updates = max(1, epochs * steps_per_epoch // recipe.grad_accum_steps)
    return Plan(info, train_split, eval_split, validation_split, recipe, strategy, train_examples, held_out,
                step_batch, steps_per_epoch, epochs, total_updates)


def choose_validation(config: RunConfig, info: datasets.DatasetInfo, train_split: str) -> tuple[str, int]:
    """(the split model selection evaluates, how many examples it holds out of the end of `train_split`).

    `--validation_split`, else the `--eval_split` given (selection then sees
    the split the score is reported on, as before minival existed), else the
    dataset's validation split, else minival: the end of the training split.
    """
    named = config.validation_split or config.eval_split or info.validation_split
    return (named, 0) if named and named != datasets.MINIVAL else datasets.minival(info, train_split)


def training_range(count: int, offset: float = 0.0, fraction: float = 1.0) -> range:
    """The examples [offset * count, (offset + fraction) * count) of a split, at least one when it has any."""
    if not (0.0 <= offset < 1.0 and 0.0 < fraction <= 1.0 and offset + fraction <= 1.0 + 1e-9):
        raise ValueError(
            f"--train_offset {offset} and --train_fraction {fraction} must satisfy 0 <= offset < 1, 0 < fraction <= 1 "
            f"and offset + fraction <= 1."
        )
    start = round(offset * count)
    return range(start, min(count, max(start + 1, round((offset + fraction) * count))))


def build_model(config: RunConfig, run: Plan) -> keras.Model:
    """The model under the strategy's scope: a named variant, or `--model ViT` with the flags given.

    The masked patch recipe wraps the encoder (no head) in `keras_vit.MaskedPatchPrediction`.

    Architecture flags and model options left out take, for `--model ViT`
    with a `.keras` or `.npz` file to start from, that file's architecture,
    else the model's defaults; initial weights follow
    `keras_vit.load_weights` with the head policy `--head` (default: "new",
    a zero head, for the finetune recipe, as the paper fine-tunes; else "auto").
    """
    options = {flag: getattr(config, flag) for flag in ARCHITECTURE + MODEL_OPTIONS if getattr(config, flag) is not None}
    source = config.initial_weights
    if config.model == "ViT" and source and source.endswith((".keras", ".npz")):
        options = {**keras_vit.weights.architecture_of(source), **options}  # the flags given override the file
    inherited = not config.dynamic_image_size and run.recipe.task != "masked_patch" and _takes_any_size(source)
    if inherited:
        print(f"{source} takes images of any size: so does the model trained from it.")
    if config.dynamic_image_size or inherited:
        options["dynamic_image_size"] = True
    if config.remat:
        options["remat"] = True
    if run.recipe.dropout_rate is not None:  # else the model's own
        options["dropout_rate"] = run.recipe.dropout_rate
    masked_patch = run.recipe.task == "masked_patch"
    if masked_patch:  # the encoder alone: its representation is what fine-tuning starts from
        options["include_top"] = False
    if config.model == "ResNet":
        return _build_resnet(config, run)
    with run.strategy.scope():
        model = keras_vit.create_model(
            config.model,
            image_size=config.model_image_size,
            classes=run.info.num_classes,
            weights=config.initial_weights,
            head=config.head_policy,
            head_bias_init=run.recipe.head_bias_init,
            attention_dropout_rate=config.attention_dropout_rate,
            stochastic_depth_rate=config.stochastic_depth_rate,
            crop_fraction=config.crop_fraction,
            **options,
        )
        if source and not masked_patch:
            print(f"Starting from {source} with {_head_policy(config, run.info.num_classes)}.")
        if masked_patch:
            model = keras_vit.MaskedPatchPrediction(model)
        if config.lora_rank:
            model.enable_lora(config.lora_rank, config.lora_targets)
            trained = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
            print(f"LoRA of rank {config.lora_rank} on {', '.join(config.lora_targets)}: {trained:,} of "
                  f"{model.count_params():,} parameters train; model.keras holds them merged.")
        if config.layer_decay is not None:
            decay, depth = config.layer_decay, len(model.encoder_blocks)
            print(f"Layer-wise learning-rate decay {decay}: the stem trains at {decay ** (depth + 1):.3g} times the "
                  f"learning rate, block 1 at {decay ** depth:.3g}, block {depth} at {decay:.3g}, the head at 1.")
        run.recipe.compile(model, run.total_updates, jit_compile=config.jit_compile,
                           steps_per_execution=config.steps_per_execution, layer_decay=config.layer_decay)
    distribute.enable_multi_worker_fit(model)
    return model


def _takes_any_size(source: str | None) -> bool:
    """Whether `source` is a `.keras` VisionTransformer with `dynamic_image_size` (one trained from it takes any too)."""
    if not (source and source.endswith(".keras")):
        return False
    saved = keras_vit.weights.sources.saved_config(source)
    return saved.get("class_name") == "VisionTransformer" and saved["config"].get("dynamic_image_size", False)


def _head_policy(config: RunConfig, classes: int) -> str:
    """The head a run starts from, in words."""
    why = "--head" if config.head else ("the finetune recipe's default" if config.recipe == "finetune" else "the default")
    return {
        "new": f"a new zero-initialised head of {classes} classes",
        "keep": "the stored head",
        "auto": f"the stored head where it fits {classes} classes, else a new zero-initialised one",
    }[config.head_policy] + f" (head policy {config.head_policy!r}: {why})"


def _build_resnet(config: RunConfig, run: Plan) -> keras_vit.ResNet:
    """`keras_vit.ResNet` with the flags given, from `.keras`/`.weights.h5` weights when given (strict)."""
    options = {flag: getattr(config, flag) for flag in RESNET_FIELDS if getattr(config, flag) is not None}
    source = config.initial_weights
    if source and not source.endswith((".keras", ".weights.h5")):
        raise ValueError(f"--model ResNet loads .keras or .weights.h5 files of a keras_vit.ResNet, not {source!r}.")
    with run.strategy.scope():
        model = keras_vit.ResNet(
            image_size=config.model_image_size,
            classes=run.info.num_classes,
            crop_fraction=config.crop_fraction,
            **options,
        )
        if source:
            model.load_weights(source)
        run.recipe.compile(
            model, run.total_updates, jit_compile=config.jit_compile, steps_per_execution=config.steps_per_execution
        )
    distribute.enable_multi_worker_fit(model)
    return model


@dataclasses.dataclass
class Data:
    """The batches of a run, fed as the model expects."""

    train_from: Callable[[int, int], tf.data.Dataset]  # (first step, steps) -> those training batches
    validation: tf.data.Dataset  # evaluated after each epoch: model selection
    evaluation: tf.data.Dataset  # the final score
    fewshot: tuple[tf.data.Dataset, tf.data.Dataset] | None  # (train, test) batches, or None


def build_data(config: RunConfig, run: Plan, model: keras.Model) -> Data:
    """The run's batches. Few-shot evaluation always reads labelled images, whatever the task trains on: the training
    examples, and the validation split."""
    task = model.corruption() if isinstance(model, keras_vit.MaskedPatchPrediction) else None
    prep = pipeline.Preprocessing.for_model(
        model.backbone if task else model,
        num_classes=run.info.num_classes,
        train_crop=run.info.train_crop if config.train_crop == "auto" else config.train_crop,
        flip=run.info.flip if config.flip == "auto" else config.flip == "yes",
        randaugment=(int(config.randaugment[0]), config.randaugment[1]) if config.randaugment else None,
        mixup_alpha=config.mixup,
    )
    if task and config.mixup:
        raise ValueError("MixUp blends labels; masked patch prediction has none to blend: drop --mixup.")

    def load(split: str):
        return datasets.load(run.info, split, config.data_dir)

    examples = load(run.train_split).skip(run.train_examples.start).take(len(run.train_examples))
    validation = pipeline.eval_dataset(load(run.validation_split), prep, run.step_batch, task=task)
    evaluation = validation if run.eval_split == run.validation_split else pipeline.eval_dataset(
        load(run.eval_split), prep, run.step_batch, task=task)
    fewshot = None
    if config.fewshot_every:
        fewshot = (pipeline.eval_dataset(examples, prep, run.step_batch),
                   pipeline.eval_dataset(load(run.validation_split), prep, run.step_batch))
    return Data(
        lambda step, steps: pipeline.train_dataset(examples, prep, run.step_batch, steps, seed=config.seed, task=task,
                                                   start_step=step),
        validation, evaluation, fewshot,
    )


def train(config: RunConfig) -> dict:
    """Runs `config`: trains (or resumes, or reports the finished run in `output_dir`) and returns its results.

    The chief holds `output_dir`'s lock for the whole run (`outputs.locked`): a second run there refuses to start.
    """
    run = plan(config)
    chief = distribute.is_chief()
    with outputs.locked(config.output_dir) if chief else contextlib.nullcontext():
        return _train(config, run, chief)


def _train(config: RunConfig, run: Plan, chief: bool) -> dict:
    """`train`'s work, once the run owns its output directory."""
    record = config.record()
    if chief:  # only the chief owns --output_dir; the other workers keep a backup folder there
        status = outputs.check(config.output_dir, record)
        if status == "finished" and not distribute.is_multi_worker(run.strategy):
            print(outputs.finished_message(config.output_dir))
            with open(os.path.join(config.output_dir, outputs.RESULTS)) as f:
                return json.load(f)
    model = build_model(config, run)
    data = build_data(config, run, model)

    backup_dir = backup.directory(config.output_dir, chief, distribute.task()[1])
    best_path = os.path.join(config.output_dir, outputs.BEST_MODEL)
    early_stopping = None
    if config.early_stopping_patience:
        warmup_batches = run.recipe.warmup_for(run.total_updates) * run.recipe.grad_accum_steps
        early_stopping = run_callbacks.EarlyStopping(
            config.early_stopping_monitor, config.early_stopping_patience, config.early_stopping_min_delta,
            path=best_path if chief else None, start_epoch=math.ceil(warmup_batches / run.steps_per_epoch),
        )
    position = backup.restore(
        model, backup_dir, {run_callbacks.EarlyStopping.NAME: early_stopping} if early_stopping else None
    )
    if position.step(run.steps_per_epoch) > run.epochs * run.steps_per_epoch or position.batch >= run.steps_per_epoch:
        at = f"epoch {position.epoch}" + (f", batch {position.batch}" if position.batch else "")
        raise ValueError(
            f"The backup in {backup_dir} is at {at}, past --epochs {run.epochs} of {run.steps_per_epoch} batches: "
            f"it is not this run's. Remove {backup_dir} to start the run over."
        )
    if chief:
        outputs.record(config.output_dir, record)
        outputs.trim_history(os.path.join(config.output_dir, outputs.HISTORY), position.epoch)
    callbacks = run_callbacks.run_callbacks(config.output_dir, chief, backup_dir, config.backup_freq, early_stopping)
    if data.fewshot is not None:
        monitored = FEWSHOT_MONITORS.get(config.early_stopping_monitor) if early_stopping is not None else None
        callbacks.insert(0, run_callbacks.FewShotEvaluation(*data.fewshot, run.info.num_classes,
                                                            every=config.fewshot_every,
                                                            required=(monitored,) if monitored else ()))
    clock = next(c for c in callbacks if isinstance(c, backup.AtomicBackup))
    clock.resume(position)

    _announce(config, run, model, position)
    if early_stopping is not None and run.eval_split == run.validation_split and chief:
        print(f"warning: early stopping selects the model on {config.dataset}/{run.eval_split}, the split its score is "
              f"reported on (--eval_split without --validation_split); results.json records both.")
    _fit(model, run, data, position, callbacks, early_stopping, config.progress)
    if early_stopping is not None and early_stopping.stopped_epoch is not None:
        _restore_best(model, early_stopping, best_path)
    final = model.evaluate(data.evaluation, verbose=0, return_dict=True)
    epochs_trained = early_stopping.stopped_epoch + 1 if early_stopping and early_stopping.stopped_epoch is not None else run.epochs
    results = {
        "model": config.model,
        "task": run.recipe.task,  # the accuracy is over the colours of corrupted patches for masked_patch
        "dataset": config.dataset,
        "split": run.eval_split,  # the split "accuracy" and "loss" were measured on
        "examples": run.info.count(run.eval_split),
        "selection_split": run.validation_split,  # evaluated after each epoch: early stopping and best.keras
        "accuracy": float(final["accuracy"]),
        "loss": float(final["loss"]),
        "loss_function": loss_function(model.loss),  # what "loss" is: training's, label smoothing included
        "epochs": run.epochs,
        **(_early_stopping_results(early_stopping) if early_stopping else {}),
        "train_seconds": round(clock.seconds(), 1),  # every process of the run, resumed ones included
        # The paper's compute (Table 6, Fig. 5): forward and backward passes over every example the run trains on.
        "training_flops": analysis.training_flops(counted_model(model), epochs_trained * run.steps_per_epoch * run.step_batch),
        "weights_sha256": weights_fingerprint(model),
    }
    if chief:  # the model, then the results that mark the run finished, then the backups it no longer needs
        outputs.write_atomically(os.path.join(config.output_dir, outputs.MODEL), model.save)
        if run.recipe.task == "classification":
            outputs.write_labels(config.output_dir, run.info.class_names)
        outputs.write_json(os.path.join(config.output_dir, outputs.RESULTS), results)
    backup.clear(backup_dir)
    print(f"Final evaluation on {config.dataset}/{run.eval_split}: accuracy {results['accuracy']:.2%}, loss {results['loss']:.4f}")
    print(f"Weights fingerprint: {results['weights_sha256']}")
    return results


def _fit(model: keras.Model, run: Plan, data: Data, position: backup.Position, callbacks: list,
         early_stopping: run_callbacks.EarlyStopping | None, progress: int) -> None:
    """Trains from `position` to the last epoch, or until early stopping stops (or had stopped before a kill).

    Keras fits whole epochs, so the rest of an epoch a kill interrupted is
    one `fit` of its remaining batches, and the epochs after it another."""
    def stopped() -> bool:
        return early_stopping is not None and early_stopping.stopped_epoch is not None

    _create_training_state(model, data.validation)
    fit = functools.partial(model.fit, validation_data=data.validation, callbacks=callbacks,
                            shuffle=False, verbose=progress)  # the pipeline shuffles
    epoch = position.epoch
    if position.batch and not stopped():
        remaining = run.steps_per_epoch - position.batch
        fit(data.train_from(position.step(run.steps_per_epoch), remaining), epochs=epoch + 1, initial_epoch=epoch,
            steps_per_epoch=remaining)
        epoch += 1
    if epoch < run.epochs and not stopped():
        fit(data.train_from(epoch * run.steps_per_epoch, (run.epochs - epoch) * run.steps_per_epoch),
            epochs=run.epochs, initial_epoch=epoch, steps_per_epoch=run.steps_per_epoch)


def _create_training_state(model: keras.Model, batches: tf.data.Dataset) -> None:
    """Creates the optimizer's, the loss's and the metrics' variables before `fit` traces its step, from one batch.

    TensorFlow traces a function that creates variables twice, and Keras'
    TensorFlow trainer creates these in the step's first call when no
    tf.distribute strategy is set (with one, it builds them itself): a small
    run spent 4 of its 14 seconds on the second trace.
    """
    if keras.backend.backend() != "tensorflow" or model.distribute_strategy is not tf.distribute.get_strategy():
        return
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(next(iter(batches)))
    y_pred = model(x, training=False)
    model.compute_loss(x, y, y_pred, sample_weight)
    model.compute_metrics(x, y, y_pred, sample_weight)


def counted_model(model: keras.Model) -> keras.Model:
    """The model whose compute a run counts: masked patch prediction's encoder, or the model itself."""
    return model.backbone if isinstance(model, keras_vit.MaskedPatchPrediction) else model


def _announce(config: RunConfig, run: Plan, model: keras.Model, position: backup.Position) -> None:
    """One line: what trains, on what, how long, and where a resumed run picks up."""
    resumed = ""
    if position.batch:
        resumed = f", resuming at epoch {position.epoch + 1}, batch {position.batch + 1} of {run.steps_per_epoch}"
    elif position.epoch:
        resumed = f", resuming at epoch {position.epoch + 1}"
    held_out = f"; {run.validation_split} held out for selection" if run.held_out else ""
    print(
        f"Training {config.model} ({model.count_params():,} parameters) at "
        f"{'x'.join(map(str, counted_model(model).image_size))}px on {config.dataset} "
        f"({len(run.train_examples)} examples{held_out}, {run.info.num_classes} classes): "
        f"{run.epochs} epochs x {run.steps_per_epoch} steps, global batch {run.recipe.batch_size}, "
        f"{run.strategy.num_replicas_in_sync} replica(s), recipe {config.recipe} ({run.recipe.source}), "
        f"selecting on {run.validation_split}{resumed}."
    )


def _restore_best(model: keras.Model, early_stopping: run_callbacks.EarlyStopping, best_path: str) -> None:
    """The best weights early stopping kept: from memory, or after a resume from best.keras (model and optimizer)."""
    if early_stopping.best_weights is not None:
        model.set_weights(early_stopping.best_weights)
    else:
        model.load_weights(best_path)
    print(f"Early stopping: no gain in {early_stopping.monitor} for {early_stopping.patience} evaluation(s) after epoch "
          f"{early_stopping.best_epoch + 1}; stopped after epoch {early_stopping.stopped_epoch + 1}, keeping epoch "
          f"{early_stopping.best_epoch + 1}'s weights ({early_stopping.monitor} {early_stopping.best:.4f}).")


def loss_function(loss) -> str:
    """The compiled loss in words, as results.json names it: "categorical_crossentropy, label smoothing 0.1"."""
    name = getattr(loss, "name", None) or getattr(loss, "__name__", str(loss))
    smoothing = getattr(loss, "label_smoothing", 0.0)
    return f"{name}, label smoothing {smoothing:g}" if smoothing else name


def _early_stopping_results(early_stopping: run_callbacks.EarlyStopping) -> dict:
    """results.json's early stopping entries: 1-based epochs, as Keras prints them; stopped_epoch null if it ran on."""
    stopped = early_stopping.stopped_epoch
    return {
        "early_stopping_monitor": early_stopping.monitor,
        "best_epoch": None if early_stopping.best_epoch is None else early_stopping.best_epoch + 1,
        "best_value": early_stopping.best,
        "stopped_epoch": None if stopped is None else stopped + 1,
    }


def train_in_process(config: RunConfig) -> dict:
    """`train(config)` as one of several runs in this process (studies, VTAB): a fresh Keras session before it, and the
    global dtype policy, which a mixed-precision run sets, back to float32 after it."""
    keras.backend.clear_session()
    try:
        return dict(train(config))
    finally:
        keras.config.set_dtype_policy("float32")
