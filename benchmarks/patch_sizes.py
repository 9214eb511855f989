"""The demo model at other patch sizes than it was trained at (FlexiViT's resampling, issue 32): digits test accuracy.

    python benchmarks/patch_sizes.py [--model runs/demo/model.keras]

Without --model, trains the demo's model first (`python -m keras_vit.training.train` with the demo's flags, about
two minutes on 2 cores). Each row builds `keras_vit.ViT(weights=model, patch_size=p, image_size=s)`: the
patch-embedding kernel is resampled from the trained size (`patch_embedding_resize`: big_vision's "bilinear" or
timm's "bicubic") and the position embeddings are resized to the new grid; the head is the trained one. The
images are resized to `s` as the model's own evaluation resizes them. No training at the new size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ROOT, cpu_description, markdown_table  # noqa: E402
from keras_vit.serving.demo import TRAIN_ARGS  # noqa: E402

#: (image size, patch size): the trained model's own, then other patch sizes at its image size and at the
#: image size that keeps its grid (where upsampling a patch loses nothing).
ROWS = [(16, 4), (16, 2), (16, 8), (8, 2), (32, 8)]
EPOCHS = 30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained .keras file of the demo's architecture (default: train one)")
    args = parser.parse_args()
    model_path = args.model or train()

    import keras_vit
    from keras_vit.training import datasets
    from keras_vit.training.evaluate import evaluate

    info = datasets.describe("digits")
    rows = []
    for image_size, patch_size in ROWS:
        for method in ("bilinear", "bicubic") if (image_size, patch_size) != ROWS[0] else ("(as trained)",):
            options = {} if method.startswith("(") else dict(patch_embedding_resize=method)
            model = keras_vit.ViT(weights=model_path, image_size=image_size, patch_size=patch_size, head="keep",
                                  **options)
            accuracy = evaluate(model, info, "test")["accuracy"]
            rows.append([str(image_size), str(patch_size), "x".join(map(str, model.grid_size)), method, f"{accuracy:.4f}"])
    print(f"CPU: {cpu_description()}\nmodel: {model_path}\n")
    print(markdown_table(["image", "patch", "grid", "resampling", "test accuracy"], rows))
    return 0


def train() -> str:
    out = tempfile.mkdtemp(prefix="patch_sizes_")
    subprocess.run([sys.executable, "-m", "keras_vit.training.train", *TRAIN_ARGS, "--epochs", str(EPOCHS),
                    "--output_dir", out, "--progress", "0"], cwd=ROOT, check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return os.path.join(out, "model.keras")


if __name__ == "__main__":
    sys.exit(main())
