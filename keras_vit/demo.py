"""A short demo of the model: read a reference checkpoint's architecture, build, load, predict, compare.

    python -m keras_vit.demo [--fixtures ../shared/fixtures]
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

import keras_vit
from keras_vit import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m keras_vit.demo", __doc__.splitlines()[0], verbose=False)
    parser.add_argument("--fixtures", type=pathlib.Path, default=pathlib.Path("../shared/fixtures"),
                        help="folder with fixtures.json (default: ../shared/fixtures, beside the repository's root)")
    args = parser.parse_args(argv)
    if not (args.fixtures / "fixtures.json").is_file():
        parser.error(f"no fixtures.json in {args.fixtures}: pass --fixtures FOLDER")

    specs = json.loads((args.fixtures / "fixtures.json").read_text())["fixtures"]
    worst = 0.0
    for name, spec in specs.items():
        start = time.perf_counter()
        checkpoint = args.fixtures / f"{name}.npz"
        model = keras_vit.ViT(weights=str(checkpoint), name=name, **keras_vit.weights.npz_architecture(checkpoint))
        logits = model.predict(np.load(args.fixtures / f"{name}_inputs.npy"), verbose=0)
        error = float(np.abs(logits - np.load(args.fixtures / f"{name}_logits.npy")).max())
        tolerance = spec["tolerance"]["logits_atol"]
        worst = max(worst, error / tolerance)
        print(
            f"{name:16s} {model.count_params():>9,d} params  predicted classes {logits.argmax(-1).tolist()}  "
            f"max |logits - reference| {error:.2e} (tolerance {tolerance:.0e})  {time.perf_counter() - start:.1f}s"
        )
    print("OK: outputs match the reference implementation" if worst <= 1 else "MISMATCH with the reference")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
