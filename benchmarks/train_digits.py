"""Digits training: test accuracy and wall time of the demo's command, and of ViT-Ti/16 for comparison.

    python benchmarks/train_digits.py [--ti16]

Runs `python -m keras_vit.training.train` as a user would and reads results.json.
The target (issue: training) is >= 95% test accuracy in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from keras_vit.serving.demo import TRAIN_ARGS  # noqa: E402

RUNS = {
    "demo ViT (16px, patch 4, D 64, 4 layers), 60 epochs": [*TRAIN_ARGS, "--epochs", "60"],
    "ViT_Ti16 at 32px, 30 epochs (the issue's example)": [
        "--model", "ViT_Ti16", "--image_size", "32", "--dataset", "digits", "--epochs", "30", "--jit_compile"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ti16", action="store_true", help="also run ViT_Ti16 (about 5 minutes more)")
    args = parser.parse_args()
    rows = []
    for name, command in list(RUNS.items())[: 2 if args.ti16 else 1]:
        out = tempfile.mkdtemp(prefix="digits_")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "keras_vit.training.train", *command, "--output_dir", out, "--progress", "0"],
                       cwd=ROOT, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        results = json.load(open(os.path.join(out, "results.json")))
        rows.append((name, results["accuracy"], results["train_seconds"], time.perf_counter() - start))
    print(f"\n{os.cpu_count()} CPU cores\n")
    print("| run | test accuracy | fit seconds | wall seconds | >= 95% |")
    print("|---|---:|---:|---:|---|")
    for name, accuracy, fit, wall in rows:
        print(f"| {name} | {accuracy:.2%} | {fit:.0f} | {wall:.0f} | {'yes' if accuracy >= 0.95 else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
