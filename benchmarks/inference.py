"""Inference and training speed of keras_vit against its peers, on this machine, in the same run.

    pip install -e ".[benchmarks]"        # keras-hub, transformers, torch==2.13.0 (CPU)
    python benchmarks/inference.py [--variants ViT_Ti16 ViT_S16 ViT_B16] [--batches 1 16] [--rounds 3]
    python benchmarks/inference.py --precision bfloat16    # where the CPU has AVX512_BF16 or AMX
    python benchmarks/inference.py --dynamic               # what dynamic_image_size costs
    python benchmarks/inference.py --modes train           # the training step's row alone

Systems, each in its own process, alternating round by round:
  keras_vit   `keras_vit.ViT_*` without head, `model.predict_on_batch` (Keras' compiled predict)
  keras_hub   keras-hub's `ViTBackbone` of the same width, `predict_on_batch` (TensorFlow backend)
  hf_torch    Hugging Face transformers' `ViTModel` on PyTorch's CPU build, under `torch.inference_mode()`
  keras_hub_xla  (only with --systems) keras-hub compiled with `jit_compile=True`
  keras_vit_dynamic  (with --dynamic) keras_vit built with `dynamic_image_size=True`, stored at 224x224

Each system runs as its users get it by default: Keras' `jit_compile="auto"`
leaves XLA off on CPU-only machines, keras_vit's models turn it on there
(`VisionTransformer.compile`).

Random weights at 224x224 (the cost does not depend on them). Prints images/s
(median over rounds), the matrix-multiply GFLOP/s this achieves (ViT-B/16
costs 35.1 GFLOP per image), its fraction of this machine's measured float32
GEMM peak (TensorFlow, 2048^3), and keras_vit's ratio to the best peer.
Unless `--modes` leaves out "train", it also times one training step,
forward + backward + AdamW, of ViT-S/16 with a 1000-class head. Peers that are not installed show
as "n/a"; the CPU's flags head the table.

`--dynamic` adds keras_vit_dynamic to every inference row at 224x224 (its
ratio to the static model is the cost of taking any size at the stored
one), a ViT-B/16 row at 384x384 where the static model is built at 384 and
the dynamic one (stored at 224) resizes its position embeddings in the graph
on every call, and the in-graph resize alone (24x24 from 14x14, under XLA)
against that row's forward pass.

`--precision bfloat16` runs every system as its users turn bfloat16 on: the
Keras systems under the "mixed_bfloat16" dtype policy (float32 variables,
bfloat16 compute; what `keras_vit.serving.export --dtype_policy` serves), PyTorch
under `torch.autocast("cpu", dtype=torch.bfloat16)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

SYSTEMS = ["keras_vit", "keras_hub", "hf_torch"]
#: Measured on request (--systems): keras-hub with XLA forced on, which Keras leaves off on CPU-only machines.
EXTRA_SYSTEMS = ["keras_hub_xla"]
IMAGE_SIZE = 224
MODES = ("infer", "train")
TRAIN_VARIANT, TRAIN_BATCH, CLASSES = "ViT_S16", 16, 1000
#: The `--dynamic` row: a model stored at IMAGE_SIZE called at this size, against one built there.
DYNAMIC_VARIANT, DYNAMIC_SIZE = "ViT_B16", 384


def encoder_config(variant: str) -> dict:
    """Patch size and widths of `variant` from keras_vit's table: every system is built from the same row."""
    from keras_vit.models.variants import get_variant

    return get_variant(variant).config


def forward_gflop(variant: str, image_size: int = IMAGE_SIZE) -> float:
    """GFLOP (2 per multiply-add) of the encoder's matrix products for one image.

    Patch projection N*P*P*3*D; per block the q, k, v and output projections
    4*T*D*D, the attention logits and weighted sum 2*T*T*D, the MLP 2*T*D*M,
    with N patches and T = N + 1 tokens.
    """
    c = encoder_config(variant)
    patches = (image_size // c["patch_size"]) ** 2
    tokens, d, m = patches + 1, c["hidden_size"], c["mlp_dim"]
    block = 4 * tokens * d * d + 2 * tokens * tokens * d + 2 * tokens * d * m
    return 2 * (patches * c["patch_size"] ** 2 * 3 * d + c["num_layers"] * block) / 1e9


# --- Workers: each builds one system and times it -----------------------------------------------


def keras_step(system: str, variant: str, batch: int, train: bool, precision: str, size: int = IMAGE_SIZE):
    import numpy as np
    import keras

    if precision == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    c = encoder_config(variant)
    if system in ("keras_vit", "keras_vit_dynamic"):
        import keras_vit

        dynamic = system == "keras_vit_dynamic"
        model = keras_vit.ViT(
            **c, image_size=IMAGE_SIZE if dynamic else size, dynamic_image_size=dynamic, include_top=train, classes=CLASSES
        )
    else:
        import keras_hub

        backbone = keras_hub.models.ViTBackbone(
            image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), patch_size=c["patch_size"], num_layers=c["num_layers"],
            num_heads=c["num_heads"], hidden_dim=c["hidden_size"], mlp_dim=c["mlp_dim"],
        )
        model = keras_hub.models.ViTImageClassifier(backbone, CLASSES, preprocessor=None) if train else backbone
    jit_compile = True if system == "keras_hub_xla" else "auto"
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    if not train:
        model.compile(jit_compile=jit_compile)
        return lambda: model.predict_on_batch(images)
    labels = rng.integers(0, CLASSES, batch)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=jit_compile,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return lambda: model.train_on_batch(images, labels)


def torch_step(variant: str, batch: int, train: bool, precision: str):
    import torch
    import transformers

    bfloat16 = precision == "bfloat16"

    c = encoder_config(variant)
    config = transformers.ViTConfig(
        hidden_size=c["hidden_size"], num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
        intermediate_size=c["mlp_dim"], image_size=IMAGE_SIZE, patch_size=c["patch_size"], num_labels=CLASSES,
    )
    torch.manual_seed(0)
    images = torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    if not train:
        model = transformers.ViTModel(config, add_pooling_layer=False).eval()

        def infer():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
                model(pixel_values=images)

        return infer
    model = transformers.ViTForImageClassification(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.randint(0, CLASSES, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            loss = model(pixel_values=images, labels=labels).loss
        loss.backward()
        optimizer.step()

    return step


def gemm_peak(seconds: float) -> float:
    """float32 GFLOP/s of TensorFlow's 2048^3 matrix product on this machine."""
    import tensorflow as tf

    a = tf.random.normal((2048, 2048))
    product = tf.function(lambda: tf.matmul(a, a))
    return harness.timed(lambda: product().numpy(), 1, seconds) * 2 * 2048**3 / 1e9


def resize_seconds(variant: str, size: int, seconds: float) -> float:
    """Seconds of the in-graph resize alone: a model's position embeddings from IMAGE_SIZE's grid to `size`'s, XLA."""
    import keras
    import tensorflow as tf

    import keras_vit

    c = encoder_config(variant)
    model = keras_vit.ViT(**c, image_size=IMAGE_SIZE, dynamic_image_size=True, include_top=False)
    grid = model.grid_for(size)
    table = tf.function(lambda: model.posembed_input.embedding(grid), jit_compile=True)
    return 1.0 / harness.timed(lambda: keras.ops.convert_to_numpy(table()), 1, seconds)


def worker(system: str, variant: str, batch: int, mode: str, seconds: float, precision: str, size: int) -> dict:
    if system == "gemm":
        return {"gflops": gemm_peak(seconds)}
    if system == "resize":
        return {"seconds": resize_seconds(variant, size, seconds)}
    train = mode == "train"
    if system == "hf_torch":
        step = torch_step(variant, batch, train, precision)
    else:
        step = keras_step(system, variant, batch, train, precision, size)
    return {"images_per_s": harness.timed(step, batch, seconds)}


# --- The orchestrator -----------------------------------------------------------------------------


def measure_rows(
    configs: list[tuple[str, int, str, int, list[str]]], rounds: int, seconds: float, precision: str
) -> list[dict]:
    """Each config (variant, batch, mode, image size, systems), its systems alternating over `rounds`."""
    script = os.path.abspath(__file__)
    rows = []
    for variant, batch, mode, size, systems in configs:
        def measure(system: str, _round: int) -> dict:
            return harness.run_worker(script, [system, variant, str(batch), mode, str(seconds), precision, str(size)])

        def report(system: str, r: int, result: dict) -> None:
            figure = f"{result['images_per_s']:.2f} images/s" if "images_per_s" in result else result["error"]
            harness.print_progress(f"round {r + 1}: {variant} {size}x{size} batch {batch} {mode} {system}: {figure}")

        results = harness.alternate(systems, rounds, measure, report)
        rows.append({"variant": variant, "batch": batch, "mode": mode, "size": size, "results": results})
    return rows


#: Systems that are keras_vit itself, not its peers.
OURS = ("keras_vit", "keras_vit_dynamic")


def format_rows(rows: list[dict], systems: list[str], peak: float | None) -> str:
    dynamic = "keras_vit_dynamic" in systems
    header = ["model", "size", "batch", "step", *systems, "keras_vit GFLOP/s", "of float32 GEMM peak",
              "keras_vit / best peer", *(["dynamic / static"] if dynamic else [])]
    table = []
    for row in rows:
        speeds = {s: harness.median(row["results"][s], "images_per_s") if s in row["results"] else None for s in systems}
        cells = [f"{speeds[s]:.2f}" if speeds[s] else "n/a" for s in systems]
        ours = speeds.get("keras_vit")
        peers = [v for s, v in speeds.items() if s not in OURS and v]
        gflop = forward_gflop(row["variant"], row["size"]) * (3 if row["mode"] == "train" else 1)  # backward ~ 2x forward
        achieved = ours * gflop if ours else None
        dynamic_speed = speeds.get("keras_vit_dynamic")
        ratio = [f"{dynamic_speed / ours:.3f}x" if ours and dynamic_speed else "n/a"]
        table.append([
            row["variant"], f"{row['size']}", str(row["batch"]), row["mode"], *cells,
            f"{achieved:.0f}" if achieved else "n/a",
            f"{achieved / peak:.0%}" if achieved and peak else "n/a",
            f"{ours / max(peers):.2f}x" if ours and peers else "n/a",
            *(ratio if dynamic else []),
        ])
    return harness.markdown_table(header, table)


def resize_share(rows: list[dict], rounds: int, seconds: float) -> str:
    """The in-graph resize's time against the forward pass of the `--dynamic` row's dynamic model."""
    script = os.path.abspath(__file__)
    results = [
        harness.run_worker(script, ["resize", DYNAMIC_VARIANT, "1", "infer", str(seconds), "float32", str(DYNAMIC_SIZE)])
        for _ in range(rounds)
    ]
    resize = harness.median(results, "seconds")
    row = next(r for r in rows if r["size"] == DYNAMIC_SIZE)
    speed = harness.median(row["results"]["keras_vit_dynamic"], "images_per_s")
    if not resize or not speed:
        return f"in-graph resize: n/a ({harness.first_error(results)})"
    forward = row["batch"] / speed
    return (
        f"in-graph resize of {DYNAMIC_VARIANT}'s position embeddings, {IMAGE_SIZE} -> {DYNAMIC_SIZE} pixels "
        f"(14x14 -> 24x24 grid), XLA: {resize * 1e6:.0f} us, {resize / forward:.3%} of the {forward * 1e3:.0f} ms "
        f"forward pass (batch {row['batch']}, median of {rounds})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["ViT_Ti16", "ViT_S16", "ViT_B16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS + EXTRA_SYSTEMS)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the table shows medians")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement, after warm-up")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="which rows: inference (every variant and batch), the ViT-S/16 training step")
    parser.add_argument("--no_train", action="store_true", help="deprecated: --modes infer")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: Keras' mixed_bfloat16 policy, PyTorch's CPU autocast")
    parser.add_argument("--dynamic", action="store_true",
                        help="add keras_vit with dynamic_image_size=True, a ViT-B/16 row at 384 and the resize's cost")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS,
                        metavar=("SYSTEM", "VARIANT", "BATCH", "MODE", "SECONDS", "PRECISION", "SIZE"))
    args = parser.parse_args()
    if args.no_train:
        print("warning: --no_train is deprecated; use --modes infer", file=sys.stderr)
        args.modes = [m for m in args.modes if m != "train"]
    if args.worker:
        system, variant, batch, mode, seconds, precision, size = args.worker
        print(json.dumps(worker(system, variant, int(batch), mode, float(seconds), precision, int(size))))
        return 0

    print(harness.cpu_description())
    peak = harness.median(
        [harness.run_worker(os.path.abspath(__file__), ["gemm", "-", "1", "-", "3", "float32", "0"]) for _ in range(args.rounds)],
        "gflops",
    )
    systems = args.systems + (["keras_vit_dynamic"] if args.dynamic else [])
    configs = [(v, b, "infer", IMAGE_SIZE, systems) for v in args.variants for b in args.batches if "infer" in args.modes]
    if args.dynamic:
        configs.append((DYNAMIC_VARIANT, 1, "infer", DYNAMIC_SIZE, ["keras_vit", "keras_vit_dynamic"]))
    if "train" in args.modes:
        configs.append((TRAIN_VARIANT, TRAIN_BATCH, "train", IMAGE_SIZE, args.systems))
    rows = measure_rows(configs, args.rounds, args.seconds, args.precision)
    print(f"float32 GEMM peak (TensorFlow, 2048^3): {peak:.0f} GFLOP/s" if peak else "GEMM peak: n/a")
    print(f"images/s, {args.precision}, medians of {args.rounds} alternating rounds\n")
    print(format_rows(rows, systems, peak))
    if args.dynamic:
        print("\n" + resize_share(rows, args.rounds, args.seconds))
    for row in rows:
        for system in row["results"]:
            error = harness.first_error(row["results"][system])
            if error:
                print(f"\n{system} {row['variant']} batch {row['batch']} {row['mode']}: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
