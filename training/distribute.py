"""Choosing a tf.distribute strategy (or, on JAX and PyTorch, a keras.distribution), and model.fit under
MultiWorkerMirroredStrategy.

On the JAX and PyTorch backends tf.distribute has nothing to distribute:
`make_strategy` returns a `KerasDistribution`, which the trainer uses as it
uses a strategy (`scope()`, `num_replicas_in_sync`). On JAX, "auto" spreads
each batch over every device with `keras.distribution.DataParallel`.

Keras 3's `model.fit` does not work under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585; seen here with TF 2.21 / Keras 3.15):

1. `TensorFlowTrainer._maybe_symbolic_build` takes the first distributed batch
   and `strategy.reduce("MEAN", batch)`s it to build the model symbolically;
   across workers that fails with `ValueError: Attempt to convert a value
   (PerReplica...)`. It needs only the batch's shapes and dtypes, which any
   replica's local batch has.
2. Each step's logs then go through `reduce_per_replica`, which in
   multi-worker mode reduces scalars with `strategy.reduce("MEAN", v, axis=0)`
   and fails on rank-0 losses and metrics ("Invalid reduction dimension 0").

`enable_multi_worker_fit` fixes both on one model instance, leaving Keras'
fit loop, callbacks, metrics and progress bar as they are: the symbolic build
uses the local replica's batch, and the train and test functions run Keras'
own `train_step` / `test_step` through `strategy.run` and reduce the logs
with `axis=None`, compiled as Keras compiles them (`jit_compile`) and running
`steps_per_execution` steps per call. It replaces private methods of Keras'
TensorFlow trainer, so it refuses Keras versions it was not checked against.
Other strategies are untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import types

import keras
import tensorflow as tf

from keras_vit.training.choices import STRATEGIES

logger = logging.getLogger(__name__)

#: Keras versions whose TensorFlow trainer `enable_multi_worker_fit` was written against.
MULTI_WORKER_KERAS_VERSIONS = ("3.15",)


#: The strategies of the JAX and PyTorch backends (the others are tf.distribute's).
KERAS_DISTRIBUTION_STRATEGIES = ("auto", "one_device")


@dataclasses.dataclass(frozen=True)
class KerasDistribution:
    """The strategy of a run on JAX or PyTorch: the devices a batch is split over (one: no distribution)."""

    devices: tuple[str, ...]

    @property
    def num_replicas_in_sync(self) -> int:
        return len(self.devices)

    def scope(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # keras.distribution's is global, set by `make_strategy`


def make_strategy(name: str = "auto") -> tf.distribute.Strategy | KerasDistribution:
    """auto: TPU if a resolver finds one, else mirrored over the local GPUs, else the default strategy.

    On JAX and PyTorch (`KerasDistribution`): auto is data parallel over every device on JAX, one device on
    PyTorch (Keras distributes only JAX); one_device is one device; tf.distribute's strategies are refused.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}.")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        return _keras_distribution(name, backend)
    if name == "auto":
        tpu = _find_tpu()
        if tpu is not None:
            return _tpu_strategy(tpu)
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multi_worker needs the TF_CONFIG environment variable (cluster and task).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    tpu = _find_tpu()
    if tpu is None:
        raise ValueError("--strategy tpu: no TPU found by TPUClusterResolver.")
    return _tpu_strategy(tpu)


def _keras_distribution(name: str, backend: str) -> KerasDistribution:
    if name not in KERAS_DISTRIBUTION_STRATEGIES:
        raise ValueError(
            f"--strategy {name} is a tf.distribute strategy, which needs Keras' TensorFlow backend; this run is on "
            f"{backend}: use --strategy auto (JAX: keras.distribution.DataParallel over every device) or one_device, "
            f"or --backend tensorflow."
        )
    devices = tuple(keras.distribution.list_devices()) if backend == "jax" else (backend,)
    if name == "one_device" or len(devices) == 1:
        return KerasDistribution(devices[:1])
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=list(devices)))
    return KerasDistribution(devices)


def split_cpu(count: int) -> None:
    """Exposes the CPU as `count` logical devices, so that mirrored strategies have replicas without GPUs.

    On JAX the count of host devices is read from XLA_FLAGS when JAX first looks for devices: set here, it
    holds if nothing has asked for a device yet; a clear error says so otherwise."""
    if keras.backend.backend() == "jax":
        return _split_jax_cpu(count)
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"--logical_cpus needs the TensorFlow or JAX backend, not {keras.backend.backend()}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def _split_jax_cpu(count: int) -> None:
    flag = f"--xla_force_host_platform_device_count={count}"
    os.environ["XLA_FLAGS"] = " ".join([*os.environ.get("XLA_FLAGS", "").split(), flag])
    import jax

    found = len(jax.devices("cpu"))
    if found != count:
        raise ValueError(f"--logical_cpus {count}: JAX had already started with {found} host device(s); set "
                         f"XLA_FLAGS={flag} before starting the command.")


def _find_tpu():
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, KeyError, RuntimeError):
        return None


def _tpu_strategy(resolver) -> tf.distribute.Strategy:
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_multi_worker(strategy: tf.distribute.Strategy | KerasDistribution) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def task() -> tuple[str, int]:
    """(task type, index) from TF_CONFIG; ("chief", 0) without one."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    spec = config.get("task", {})
    return spec.get("type", "chief"), int(spec.get("index", 0))


def is_chief() -> bool:
    """The task that writes final models and logs: the chief, or worker 0 of a cluster without one."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    kind, index = task()
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy | KerasDistribution, grad_accum_steps: int = 1) -> int:
    """The per-step global batch; ValueError unless it splits evenly over replicas and micro-batches."""
    replicas = strategy.num_replicas_in_sync
    if grad_accum_steps > 1 and replicas > 1:
        raise ValueError(
            f"--grad_accum_steps {grad_accum_steps} with {replicas} replicas: Keras 3's optimizer gradient accumulation "
            "fails under tf.distribute (merge_call inside a cond); accumulate on one device, or add replicas instead."
        )
    if batch_size % grad_accum_steps:
        raise ValueError(f"--batch_size {batch_size} is not divisible by --grad_accum_steps {grad_accum_steps}.")
    step_batch = batch_size // grad_accum_steps
    if step_batch % replicas:
        raise ValueError(
            f"The global batch per step ({step_batch}) is not divisible by the {replicas} replicas in sync."
        )
    return step_batch


def check_keras_version(version: str = keras.__version__) -> None:
    """RuntimeError unless `enable_multi_worker_fit` was written for this Keras version."""
    if not version.startswith(tuple(v + "." for v in MULTI_WORKER_KERAS_VERSIONS)):
        raise RuntimeError(
            f"--strategy multi_worker patches Keras' TensorFlow trainer around keras-team/keras#20585 and was "
            f"written for Keras {', '.join(MULTI_WORKER_KERAS_VERSIONS)}; this is Keras {version}. Check whether "
            f"keras-team/keras#20585 is fixed in it, then update training/distribute.py."
        )


def enable_multi_worker_fit(model: keras.Model) -> None:
    """Makes `model.fit` / `model.evaluate` work under MultiWorkerMirroredStrategy (see the module doc)."""
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow's trainer only
    if strategy is None or not is_multi_worker(strategy):
        return
    check_keras_version()
    if model.jit_compile and not any(("GPU" in d or "TPU" in d) for d in strategy.extended.worker_devices):
        raise ValueError(
            "--jit_compile with --strategy multi_worker needs GPU or TPU workers: XLA has no collectives on CPU "
            "devices (b/194942685), and the train step all-reduces its gradients inside the compiled function."
        )

    def local_batch(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, distributed in iterator:
                data_batch = tf.nest.map_structure(local_batch, next(distributed))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def distributed_function(step):
        def one_step(data):
            outputs = strategy.run(step, args=(data,))
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), outputs)

        if not model.run_eagerly:
            one_step = tf.function(one_step, reduce_retracing=True, jit_compile=model.jit_compile)

        def function(iterator):
            # Unrolled, as Keras' `unrolled_steps_per_execution`; an exhausted iterator raises OutOfRangeError,
            # which ends the epoch in Keras' loop (metrics are stateful, so no finished step is lost).
            for _ in range(model.steps_per_execution):
                outputs = one_step(next(iterator))
            return outputs

        return function if model.run_eagerly else tf.function(function)

    def make_train_function(self, force=False):
        if self.train_function is None or force:
            self.train_function = distributed_function(self.train_step)
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is None or force:
            self.test_function = distributed_function(self.test_step)
        return self.test_function

    model._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, model)
    model.make_train_function = types.MethodType(make_train_function, model)
    model.make_test_function = types.MethodType(make_test_function, model)
