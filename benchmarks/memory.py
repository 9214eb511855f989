"""Memory and time of one training step with and without rematerialisation (`VisionTransformer(remat=True)`).

    python benchmarks/memory.py                                  # ViT-B/16, batch 8, and ViT-L/16, batch 2, at 224
    python benchmarks/memory.py --models ViT_S16:16 --rounds 3

Each measurement is its own process: a keras_vit model (the variant's default
dropout, random weights, 1000 classes) compiled as `keras_vit.training.train` compiles it
(AdamW, XLA by default on a CPU), two warm-up steps (the first compiles), then
`--steps` measured `train_on_batch` calls. TensorFlow's own accounting of
the CPU device's allocator (`tf.config.experimental.get_memory_info`, which
counts graph tensors and XLA's buffers alike) gives each step's memory: the
allocator's peak during the step minus what it held just before (the
weights, the optimizer state and whatever the compiled program keeps between
steps): the activations kept for the backward pass, the gradients and the
temporaries of the update. Configurations alternate round by round; the table gives medians and
the ratios of remat to the plain model measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

def worker(variant: str, batch: int, size: int, remat: bool, steps: int, jit_compile: str) -> dict:
    import numpy as np
    import keras
    import tensorflow as tf

    import keras_vit

    keras.utils.set_random_seed(0)
    model = keras_vit.create_model(variant, image_size=size, remat=remat)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile="auto" if jit_compile == "auto" else jit_compile == "true")
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, model.classes, batch)
    for _ in range(2):
        model.train_on_batch(images, labels)
    memory, times = [], []
    for _ in range(steps):
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        tf.config.experimental.reset_memory_stats("CPU:0")
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - start)
        memory.append(tf.config.experimental.get_memory_info("CPU:0")["peak"] - before)
    return {"step_mb": float(np.median(memory)) / 2**20, "step_seconds": float(np.median(times)),
            "held_mb": before / 2**20, "jit_compile": bool(model.jit_compile)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT_B16:8", "ViT_L16:2"], help="VARIANT:BATCH pairs")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per process (median)")
    parser.add_argument("--rounds", type=int, default=2, help="processes per configuration, alternating")
    parser.add_argument("--jit_compile", choices=("auto", "true", "false"), default="auto",
                        help="XLA for the training step (auto: keras_vit's default, XLA in float32)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, batch, size, remat, steps, jit_compile = args.worker
        print(json.dumps(worker(variant, int(batch), int(size), remat == "1", int(steps), jit_compile)))
        return 0

    print(f"# One training step, with and without remat, at {args.image_size}x{args.image_size}")
    print(harness.cpu_description())
    rows = []
    for spec in args.models:
        variant, batch = spec.split(":")
        systems = ["plain", "remat"]

        def measure(system: str, _round: int) -> dict:
            return harness.run_worker(__file__, [variant, batch, str(args.image_size), str(int(system == "remat")),
                                                 str(args.steps), args.jit_compile], timeout=3600)

        def report(system: str, r: int, result: dict) -> None:
            harness.print_progress(f"round {r + 1}: {variant} batch {batch} {system}: {result}")

        results = harness.alternate(systems, args.rounds, measure, report)
        plain_mb, remat_mb = (harness.median(results[s], "step_mb") for s in systems)
        plain_s, remat_s = (harness.median(results[s], "step_seconds") for s in systems)
        if None in (plain_mb, remat_mb, plain_s, remat_s):
            rows.append([f"{variant}", batch, "failed: " + str(harness.first_error(results["plain"] + results["remat"])), "", "", "", ""])
            continue
        rows.append([variant, batch, f"{plain_mb:,.0f}", f"{remat_mb:,.0f}", f"{plain_mb / remat_mb:.2f}x less",
                     f"{plain_s:.2f} / {remat_s:.2f}", f"{remat_s / plain_s - 1:+.0%}"])
    print(harness.markdown_table(
        ["model", "batch", "step memory, plain (MB)", "with remat (MB)", "memory", "step seconds, plain / remat",
         "time"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
