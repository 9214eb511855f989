"""Dynamic batching of concurrent requests, like TF Serving's `--enable_batching`.

Requests queue up; a worker thread takes the first, waits up to
`batch_timeout_micros` for more until `max_batch_size` examples are
gathered, runs them as one batch, and hands each request its rows.
Requests merge only with those whose inputs have the same shape past the
batch axis (pixels of one size; a dynamic model's requests may differ), as
TF Serving's batching without padding does. If a merged batch fails (say, one request holds an undecodable image), its
requests run one by one, so only the bad one gets the error.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Callable

import numpy as np

from keras_vit.serving.declared_protos import batching_parameters_class

Tensors = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The batching parameters we use; these defaults are the ones `keras_vit.serving.export` writes."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    num_batch_threads: int = 2
    max_enqueued_batches: int = 100

    def to_text(self) -> str:
        """TF Serving's BatchingParameters text format."""
        from google.protobuf import text_format

        message = batching_parameters_class()()
        for field in dataclasses.fields(self):
            getattr(message, field.name).value = getattr(self, field.name)
        return text_format.MessageToString(message)

    @classmethod
    def from_file(cls, path: str) -> "BatchingOptions":
        """Reads a BatchingParameters text file; fields it leaves out keep these defaults, others are ignored."""
        from google.protobuf import text_format

        with open(path) as f:
            message = text_format.Parse(f.read(), batching_parameters_class()())
        values = {f.name: getattr(message, f.name).value for f in dataclasses.fields(cls) if message.HasField(f.name)}
        return cls(**values)


class _Task:
    __slots__ = ("inputs", "size", "shapes", "done", "outputs", "error")

    def __init__(self, inputs: Tensors):
        self.inputs = inputs
        self.size = len(next(iter(inputs.values())))
        self.shapes = tuple((name, value.shape[1:]) for name, value in sorted(inputs.items()))  # all but the batch axis
        self.done = threading.Event()
        self.outputs: Tensors | None = None
        self.error: BaseException | None = None


class Batcher:
    """Runs `run(inputs) -> outputs` on merged batches of concurrent `submit` calls; `on_batch(size)` hears of each."""

    def __init__(self, run: Callable[[Tensors], Tensors], options: BatchingOptions,
                 on_batch: Callable[[int], None] | None = None):
        self.run = run
        self.options = options
        self.on_batch = on_batch or (lambda size: None)
        self.queue: queue.Queue[_Task | None] = queue.Queue(maxsize=options.max_enqueued_batches * options.max_batch_size)
        self.closed = False
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(options.num_batch_threads)]
        for thread in self.threads:
            thread.start()

    def submit(self, inputs: Tensors) -> Tensors:
        """Blocks until this request's rows of a batch are computed."""
        task = _Task(inputs)
        if self.closed or task.size > self.options.max_batch_size:
            return self.run(inputs)
        self.queue.put(task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def close(self) -> None:
        """Finishes the queued requests, then stops the workers."""
        self.closed = True
        for _ in self.threads:
            self.queue.put(None)

    def _work(self) -> None:
        carry: _Task | None = None
        while True:
            first = carry or self.queue.get()
            carry = None
            if first is None:
                return
            batch, total = [first], first.size
            deadline = time.monotonic() + self.options.batch_timeout_micros / 1e6
            while total < self.options.max_batch_size:
                try:
                    task = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if task is None:
                    self.queue.put(None)  # let this worker finish the batch, then stop on the next get
                    break
                if total + task.size > self.options.max_batch_size:
                    carry = task
                    break
                batch.append(task)
                total += task.size
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Task]) -> None:
        """Runs the batch as one call per input shape: requests merge only with those of the same image size."""
        groups: dict[tuple, list[_Task]] = {}
        for task in batch:
            groups.setdefault(task.shapes, []).append(task)
        for group in groups.values():
            self._run_group(group)

    def _run_group(self, batch: list[_Task]) -> None:
        self.on_batch(sum(task.size for task in batch))
        if len(batch) == 1:
            self._run_one(batch[0])
            return
        try:
            merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
            outputs = self.run(merged)
        except BaseException:
            for task in batch:  # isolate the failing request
                self._run_one(task)
            return
        start = 0
        for task in batch:
            task.outputs = {k: v[start:start + task.size] for k, v in outputs.items()}
            start += task.size
            task.done.set()

    def _run_one(self, task: _Task) -> None:
        try:
            task.outputs = self.run(task.inputs)
        except BaseException as error:  # handed to the waiting request
            task.error = error
        task.done.set()
