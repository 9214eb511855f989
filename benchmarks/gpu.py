"""keras_vit on an NVIDIA GPU, on Keras' JAX backend, against timm's ViT on PyTorch (SDPA attention, torch.compile).

    KERAS_BACKEND=jax python benchmarks/gpu.py        # ViT-B/16 and ViT-L/16 at 224: about 6 minutes on an H200
    KERAS_BACKEND=jax python benchmarks/gpu.py --variants ViT_Ti16 --image_size 32 --batch 2 --train_batch 2 \\
        --seconds 0.1 --rounds 1 --no_torch_compile                                      # the suite's CPU check

TensorFlow is not needed: the GPU machines this was written for have JAX, PyTorch and timm, and no TensorFlow.

Rows, per variant: inference in float32 and in bfloat16, and the training step (forward, backward, AdamW).
- keras_vit: `keras_vit.create_model(variant, classes=1000)`, compiled (`jit_compile=True`), `predict_on_batch` /
  `train_on_batch` on inputs already on the device. bfloat16 and training run under the "mixed_bfloat16" policy
  (float32 variables, bfloat16 compute). Attention goes through `keras.ops.dot_product_attention` (cuDNN's fused
  kernel where JAX picks it).
- timm: `timm.models.vision_transformer.VisionTransformer` of the same width, depth and patch size, with 1000
  classes, fused (SDPA) attention, `torch.compile`d; bfloat16 and training under `torch.autocast`, AdamW
  (`fused=True` on a GPU). float32 matrix products may use TF32 in both (JAX's default on GPUs;
  `torch.set_float32_matmul_precision("high")` for timm), so that the float32 rows compare like with like.

Each system runs in its own long-lived process (`harness.PersistentWorker`): both compile and warm up each row
side by side, untimed, then the systems alternate over `--rounds` and the table gives medians. Model FLOPs utilisation (MFU) counts
`keras_vit.analysis.flops` per image for inference and 3x that for a training step (forward and backward), over
the GPU's dense bfloat16 peak (`PEAK_BF16_TFLOPS` by the device's name, or `--peak_tflops`).

Without a GPU it runs all the same on the CPU with tiny shapes (the test suite does, so that the script cannot
rot); a peer whose packages are missing (`pip install timm`) shows "n/a".
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

#: Dense bfloat16 tensor-core peaks (TFLOP/s, no sparsity) of NVIDIA data-centre GPUs, by a part of their names.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
CLASSES = 1000
SYSTEMS = ("keras_vit", "timm")
#: The rows: inference in float32 and bfloat16, and the training step.
MODES = ("infer_float32", "infer_bfloat16", "train")
#: The share of the GPU's memory JAX takes (it takes 75% by default): the timm worker runs beside it.
JAX_MEMORY_FRACTION = "0.45"


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


# --- Workers: each prepares one row's step at a time and times it on request ---------------------------------


def keras_worker(variant: str, size: int):
    """(prepare(mode, batch) -> step, facts) for keras_vit on the current Keras backend."""
    import numpy as np
    import keras

    import keras_vit
    from keras_vit import analysis

    rng = np.random.default_rng(0)

    def prepare(mode: str, batch: int):
        keras.backend.clear_session()  # the previous row's model and compiled functions go
        keras.config.set_dtype_policy("float32" if mode == "infer_float32" else "mixed_bfloat16")
        model = keras_vit.create_model(variant, image_size=size, classes=CLASSES)
        images = keras.ops.convert_to_tensor(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
        if mode == "train":
            model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=True,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            labels = keras.ops.convert_to_tensor(rng.integers(0, CLASSES, batch).astype("int32"))
            step = lambda: model.train_on_batch(images, labels)  # noqa: E731
        else:
            model.compile(jit_compile=True)
            step = lambda: model.predict_on_batch(images)  # noqa: E731
        return step, {"forward_flops": analysis.flops(model, size), "version": f"{keras.backend.backend()} (Keras {keras.__version__})"}

    return prepare


def timm_worker(variant: str, size: int, compile_model: bool):
    """(prepare(mode, batch) -> step, facts) for timm's VisionTransformer on PyTorch."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from keras_vit.models.variants import get_variant

    c = get_variant(variant).config
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_float32_matmul_precision("high")

    def prepare(mode: str, batch: int):
        torch.manual_seed(0)
        model = VisionTransformer(img_size=size, patch_size=c["patch_size"], embed_dim=c["hidden_size"],
                                  depth=c["num_layers"], num_heads=c["num_heads"], mlp_ratio=c["mlp_dim"] / c["hidden_size"],
                                  num_classes=CLASSES).to(device)
        run = torch.compile(model) if compile_model else model
        images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=mode != "infer_float32")
        if mode == "train":
            model.train()
            labels = torch.randint(0, CLASSES, (batch,), device=device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")

            def step():
                with autocast:
                    loss = torch.nn.functional.cross_entropy(run(images), labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                synchronize()
        else:
            model.eval()

            def step():
                with torch.inference_mode(), autocast:
                    run(images)
                synchronize()

        return step, {"version": f"torch {torch.__version__}, timm {__import__('timm').__version__}"}

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    return prepare


def serve(system: str, variant: str, size: int, compile_model: bool) -> None:
    """Answers {"mode", "batch", "seconds"} requests with {"images_per_s", ...}, compiling each row once."""
    prepare = keras_worker(variant, size) if system == "keras_vit" else timm_worker(variant, size, compile_model)
    current: dict = {}

    def answer(request: dict) -> dict:
        key = (request["mode"], request["batch"])
        if current.get("key") != key:
            current.clear()  # frees the last row's model before the next is built
            current.update(zip(("step", "facts"), prepare(*key)), key=key)
        return {"images_per_s": harness.timed(current["step"], request["batch"], request["seconds"]), **current["facts"]}

    harness.serve_requests(answer)


# --- The orchestrator ---------------------------------------------------------------------------


def measure_variant(variant: str, args, report) -> list[dict]:
    """One result per mode: {"mode", "batch", system: [round results]}, the systems alternating round by round."""
    script = os.path.abspath(__file__)
    common = [variant, str(args.image_size), str(int(args.torch_compile))]
    workers = {"keras_vit": harness.PersistentWorker(script, ["keras_vit", *common],
                                                     env={"XLA_PYTHON_CLIENT_MEM_FRACTION": JAX_MEMORY_FRACTION})}
    if _timm_available():
        workers["timm"] = harness.PersistentWorker(script, ["timm", *common])
    out = []
    try:
        for mode in args.modes:
            batch = args.train_batch if mode == "train" else args.batch
            request = {"mode": mode, "batch": batch, "seconds": args.seconds}
            for worker in workers.values():  # compiled and warmed up side by side, untimed
                worker.send(dict(request, seconds=0))
            for system, worker in workers.items():
                report(f"{variant} {mode} batch {batch} {system} compiled: {worker.receive()}")
            results = harness.alternate(
                list(workers), args.rounds, lambda system, _round: workers[system].ask(request),
                lambda system, r, result: report(f"round {r + 1}: {variant} {mode} batch {batch} {system}: {result}"),
            )
            out.append({"mode": mode, "batch": batch, **results})
    finally:
        for worker in workers.values():
            worker.close()
    return out


def _timm_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("torch", "timm"))


def table_rows(variant: str, measured: list[dict], peak: float | None) -> list[list[str]]:
    rows = []
    for row in measured:
        passes = 3 if row["mode"] == "train" else 1
        ours = harness.median(row["keras_vit"], "images_per_s")
        peer = harness.median(row.get("timm", []), "images_per_s")
        flops = harness.median(row["keras_vit"], "forward_flops")

        def cells(speed: float | None, results: list[dict]) -> list[str]:
            if not speed:
                return [f"n/a ({harness.first_error(results) or 'timm not installed'})", "", ""]
            achieved = speed * flops * passes / 1e12 if flops else None
            return [f"{speed:.1f}", f"{achieved:.3g}" if achieved else "n/a",
                    f"{achieved / peak:.1%}" if achieved and peak and row["mode"] != "infer_float32" else ""]

        rows.append([variant, row["mode"].replace("_", " "), str(row["batch"]), *cells(ours, row["keras_vit"]),
                     *cells(peer, row.get("timm", [])), f"{ours / peer:.2f}x" if ours and peer else ""])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["ViT_B16", "ViT_L16"])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256, help="inference batch")
    parser.add_argument("--train_batch", type=int, default=128, help="training batch")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="which rows to measure")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bfloat16 peak (default: by name)")
    parser.add_argument("--no_torch_compile", dest="torch_compile", action="store_false",
                        help="run the timm model eagerly (a quick CPU check; by default it is torch.compile'd)")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        system, variant, size, compile_model = args.serve
        serve(system, variant, int(size), compile_model == "1")
        return 0

    name = device_name()
    peak = args.peak_tflops or peak_tflops(name)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(f"# keras_vit on {name}, Keras backend {backend}, {datetime.date.today()} "
          f"(dense bfloat16 peak: {f'{peak:g} TFLOP/s' if peak else 'unknown'})")
    print(harness.cpu_description())
    rows, versions = [], {}
    for variant in args.variants:
        measured = measure_variant(variant, args, harness.print_progress)
        rows += table_rows(variant, measured, peak)
        for row in measured:
            for system in SYSTEMS:
                versions.update({system: r["version"] for r in row.get(system, []) if "version" in r})
    print(harness.markdown_table(
        ["model", "step", "batch", "keras_vit images/s", "keras_vit TFLOP/s", "keras_vit MFU",
         "timm images/s", "timm TFLOP/s", "timm MFU", "keras_vit / timm"], rows))
    print(f"keras_vit: {versions.get('keras_vit', 'n/a')}; timm: {versions.get('timm', 'n/a')}; "
          f"medians of {args.rounds} alternating round(s) of {args.seconds:g} s; MFU against {peak or 'no'} TFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
