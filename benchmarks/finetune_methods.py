"""Full fine-tuning against LoRA and layer-wise learning-rate decay, from one pre-trained .npz, on the demo task.

    python benchmarks/finetune_methods.py [--epochs 20] [--pretrain_epochs 30]

The pre-trained checkpoint is the demo's model after masked patch prediction on digits (self-supervised, the
paper's section 4.6; its labels unused), saved as an .npz. Each method fine-tunes it with the finetune recipe
(SGD with momentum, cosine decay, a new zero head) for the same epochs, through `python -m keras_vit.training.train`
as a user runs it, and reports the digits test accuracy, the parameters that train, and the training time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ROOT, cpu_description, markdown_table  # noqa: E402
from keras_vit.training.config import DEMO_MODEL, as_flags  # noqa: E402

METHODS = {
    "full fine-tuning": [],
    "full, layer decay 0.75": ["--layer_decay", "0.75"],
    "LoRA rank 4 (query, value)": ["--lora_rank", "4"],
    "LoRA rank 8 (query, value)": ["--lora_rank", "8"],
    "LoRA rank 8, layer decay 0.75": ["--lora_rank", "8", "--layer_decay", "0.75"],
    # The recipe's rate (0.03) is full fine-tuning's; fewer, low-rank parameters usually want a larger one.
    "full, layer decay 0.75, learning rate 0.1": ["--layer_decay", "0.75", "--learning_rate", "0.1"],
    "LoRA rank 8, learning rate 0.3": ["--lora_rank", "8", "--learning_rate", "0.3"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs of every method")
    parser.add_argument("--pretrain_epochs", type=int, default=30, help="masked patch prediction epochs")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="finetune_methods_")
    model = as_flags(**DEMO_MODEL)
    train(*model, "--recipe", "masked_patch", "--dataset", "digits", "--epochs", str(args.pretrain_epochs),
          "--batch_size", "32", "--output_dir", f"{folder}/pretrain")
    pretrained = f"{folder}/pretrained.npz"
    subprocess.run([sys.executable, "-c", "import sys, keras_vit; keras_vit.save_checkpoint(keras_vit.load_model("
                    "sys.argv[1]).backbone, sys.argv[2])", f"{folder}/pretrain/model.keras", pretrained],
                   cwd=ROOT, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    rows = []
    for name, flags in METHODS.items():
        out = f"{folder}/{len(rows)}"
        stdout = train("--model", "ViT", "--init_from", pretrained, "--image_size", "16", "--recipe", "finetune",
                       "--dataset", "digits", "--epochs", str(args.epochs), "--batch_size", "32", *flags,
                       "--output_dir", out)
        results = json.loads(open(f"{out}/results.json").read())
        total = int(re.search(r"Training ViT \(([\d,]+) parameters\)", stdout).group(1).replace(",", ""))
        lora = re.search(r"([\d,]+) of [\d,]+ parameters train", stdout)
        trained = int(lora.group(1).replace(",", "")) if lora else total
        rows.append([name, f"{trained:,}", f"{results['accuracy']:.4f}", f"{results['train_seconds']:.1f}"])
    print(f"CPU: {cpu_description()}\npre-trained: {pretrained} (masked patch prediction, {args.pretrain_epochs} "
          f"epochs); fine-tuning: {args.epochs} epochs of batch 32 on digits, the finetune recipe\n")
    print(markdown_table(["method", "parameters trained", "test accuracy", "training seconds"], rows))
    return 0


def train(*flags: str) -> str:
    done = subprocess.run([sys.executable, "-m", "keras_vit.training.train", *flags, "--progress", "0"], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if done.returncode:
        raise SystemExit(f"training failed: {' '.join(flags)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


if __name__ == "__main__":
    sys.exit(main())
