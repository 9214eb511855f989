"""keras_vit on an NVIDIA GPU: inference against Hugging Face's PyTorch ViT (SDPA attention), and the training step's MFU.

    python benchmarks/gpu.py                     # ViT-B/16 and ViT-L/16 at 224; about 6 minutes on an H100
    python benchmarks/gpu.py --variants ViT_Ti16 --image_size 32 --batch 2 --train_batch 2 --seconds 0.2 --rounds 1

Rows, each system in its own process, alternating over `--rounds` (medians):
- inference, float32 and bfloat16: keras_vit (`predict_on_batch`, XLA; bfloat16 under the "mixed_bfloat16"
  policy) against `transformers.ViTModel` with `attn_implementation="sdpa"` under `torch.inference_mode()`
  (bfloat16: the model cast to bfloat16, as PyTorch users run it on GPUs);
- the training step (forward, backward, AdamW) of keras_vit under "mixed_bfloat16" and XLA, with its model FLOPs
  utilisation: 3 x `keras_vit.analysis.flops` per image (forward and backward) x images/s over the GPU's dense
  bfloat16 peak (`PEAK_BF16_TFLOPS` by the device's name, or `--peak_tflops`).

On a machine without a GPU it runs all the same on the CPU (the test suite does, with tiny shapes, so that the
script cannot rot); a peer whose packages are not installed (`pip install -e ".[benchmarks]"`) shows "n/a".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

#: Dense bfloat16 tensor-core peaks (TFLOP/s, no sparsity) of NVIDIA data-centre GPUs, by a part of their names.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
CLASSES = 1000
#: The rows: inference in float32 and bfloat16 (against the peer), and the training step.
MODES = ("infer_float32", "infer_bfloat16", "train")


def device_name() -> str:
    """The first NVIDIA GPU's name (nvidia-smi), or "CPU"."""
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30)
        names = found.stdout.strip().splitlines()
        return names[0].strip() if found.returncode == 0 and names else "CPU"
    except (OSError, subprocess.TimeoutExpired):
        return "CPU"


def peak_tflops(name: str) -> float | None:
    return next((peak for part, peak in PEAK_BF16_TFLOPS.items() if part in name), None)


# --- Workers ------------------------------------------------------------------------------------


def keras_worker(variant: str, size: int, batch: int, mode: str, seconds: float) -> dict:
    import numpy as np
    import keras

    import keras_vit
    from keras_vit import analysis

    if mode != "infer_float32":
        keras.config.set_dtype_policy("mixed_bfloat16")
    train = mode == "train"
    model = keras_vit.create_model(variant, image_size=size, classes=CLASSES, include_top=train)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    if train:
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=True,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        labels = rng.integers(0, CLASSES, batch)
        step = lambda: model.train_on_batch(images, labels)  # noqa: E731
    else:
        model.compile(jit_compile=True)
        step = lambda: model.predict_on_batch(images)  # noqa: E731
    return {"images_per_s": harness.timed(step, batch, seconds), "forward_flops": analysis.flops(model, size)}


def torch_worker(variant: str, size: int, batch: int, mode: str, seconds: float) -> dict:
    import torch
    import transformers

    from keras_vit.models.variants import get_variant

    c = get_variant(variant).config
    config = transformers.ViTConfig(
        hidden_size=c["hidden_size"], num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
        intermediate_size=c["mlp_dim"], image_size=size, patch_size=c["patch_size"],
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if mode == "infer_bfloat16" else torch.float32
    model = transformers.ViTModel(config, add_pooling_layer=False, attn_implementation="sdpa").to(device, dtype).eval()
    images = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).to(dtype)

    def step():
        with torch.inference_mode():
            model(pixel_values=images)
        if device == "cuda":
            torch.cuda.synchronize()

    return {"images_per_s": harness.timed(step, batch, seconds)}


def worker(system: str, variant: str, size: int, batch: int, mode: str, seconds: float) -> dict:
    if system == "hf_torch":
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError:
            return {"error": "not installed"}
        return torch_worker(variant, size, batch, mode, seconds)
    return keras_worker(variant, size, batch, mode, seconds)


# --- The orchestrator ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["ViT_B16", "ViT_L16"])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64, help="inference batch")
    parser.add_argument("--train_batch", type=int, default=32, help="training batch")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="which rows to measure")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bfloat16 peak (default: by name)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import json

        system, variant, size, batch, mode, seconds = args.worker
        print(json.dumps(worker(system, variant, int(size), int(batch), mode, float(seconds))))
        return 0

    name = device_name()
    peak = args.peak_tflops or peak_tflops(name)
    print(f"# keras_vit on {name} (dense bfloat16 peak: {f'{peak:g} TFLOP/s' if peak else 'unknown'})")
    print(harness.cpu_description())
    script = os.path.abspath(__file__)
    rows = []
    for variant in args.variants:
        for mode in args.modes:
            systems, batch = (["keras_vit"], args.train_batch) if mode == "train" else (["keras_vit", "hf_torch"], args.batch)
            def measure(system: str, _round: int) -> dict:
                return harness.run_worker(script, [system, variant, str(args.image_size), str(batch), mode,
                                                   str(args.seconds)], timeout=1200)

            def report(system: str, r: int, result: dict) -> None:
                harness.print_progress(f"round {r + 1}: {variant} {mode} batch {batch} {system}: {result}")

            results = harness.alternate(systems, args.rounds, measure, report)
            ours = harness.median(results["keras_vit"], "images_per_s")
            peer = harness.median(results.get("hf_torch", []), "images_per_s")
            flops = harness.median(results["keras_vit"], "forward_flops")
            achieved = ours * flops * (3 if mode == "train" else 1) / 1e12 if ours and flops else None
            rows.append([
                variant, mode.replace("_", " "), str(batch),
                f"{ours:.1f}" if ours else f"n/a ({harness.first_error(results['keras_vit'])})",
                "" if mode == "train" else (f"{peer:.1f}" if peer else f"n/a ({harness.first_error(results['hf_torch'])})"),
                f"{ours / peer:.2f}x" if ours and peer else "",
                f"{achieved:.3g}" if achieved else "n/a",
                f"{achieved / peak:.0%}" if achieved and peak and mode != "infer_float32" else "",
            ])
    print(harness.markdown_table(
        ["model", "step", "batch", "keras_vit images/s", "HF PyTorch (SDPA) images/s", "keras_vit / PyTorch",
         "keras_vit TFLOP/s", "of bf16 peak (MFU)"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
