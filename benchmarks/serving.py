"""Serving throughput and latency: serving.server with and without batching, against the raw model.

    python benchmarks/serving.py [--seconds 5] [--clients 1 8 32]

Exports ViT-Ti/16 at 32x32 (random weights; the cost does not depend on
them), measures the raw SavedModel's batched throughput in this process
(batches of 32 encoded images through `serving_default`), then starts
`python -m serving.server` on 127.0.0.1 without and with `--enable_batching`
and drives it with 1, 8 and 32 concurrent REST clients, one PNG per
request. Prints requests/s, p50/p99 latency and the ratio to the raw
throughput. Clients and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit.serving import export, signatures  # noqa: E402
from keras_vit.serving.client import RestClient  # noqa: E402


def raw_throughput(path: str, images: list[bytes], seconds: float, batch: int = 32) -> float:
    function = tf.saved_model.load(path).signatures[signatures.DEFAULT_SIGNATURE]
    inputs = tf.constant((images * batch)[:batch])
    function(images=inputs)  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        function(images=inputs)
        done += batch
    return done / (time.perf_counter() - start)


def drive(url: str, images: list[bytes], clients: int, seconds: float) -> dict:
    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode() for image in images]
    stop = time.perf_counter() + seconds

    def client(i: int) -> tuple[list[float], int]:
        latencies, failures = [], 0
        while time.perf_counter() < stop and len(latencies) < 100_000:
            request = urllib.request.Request(url, data=bodies[i % len(bodies)], headers={"Content-Type": "application/json"})
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                latencies.append(time.perf_counter() - start)
            except OSError:
                failures += 1
        return latencies, failures

    begin = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - begin
    latencies = np.concatenate([r[0] for r in results]) * 1000
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "failures": sum(r[1] for r in results),
    }


def start_server(base_path: str, batching: bool) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "keras_vit.serving.server", "--port", "0", "--rest_api_port", str(port),
               "--model_name", "vit", "--model_base_path", base_path, "--file_system_poll_wait_seconds", "0"]
    if batching:
        command += ["--enable_batching", "--batching_parameters_file", os.path.join(base_path, "batching_parameters.txt")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        RestClient(f"http://127.0.0.1:{port}", "vit").wait_until_available(process=process)
    except RuntimeError:
        process.kill()
        raise
    return process, f"http://127.0.0.1:{port}/v1/models/vit"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per configuration")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="keras_vit_bench_")
    model = keras_vit.ViT_Ti16(image_size=32, classes=10)
    path = export.export(model, os.path.join(workdir, "vit"))
    rng = np.random.default_rng(0)
    images = [export.encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(64)]
    raw = raw_throughput(path, images, args.seconds)

    rows = []
    for batching in (False, True):
        process, url = start_server(os.path.join(workdir, "vit"), batching)
        try:
            drive(f"{url}:predict", images, 4, 1.0)  # warm up
            for clients in args.clients:
                result = drive(f"{url}:predict", images, clients, args.seconds)
                rows.append((batching, clients, result))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    print(f"ViT-Ti/16 at 32x32, {os.cpu_count()} CPU cores; raw SavedModel, batches of 32: {raw:.0f} images/s\n")
    print("| batching | clients | requests/s | p50 ms | p99 ms | failures | vs raw batched |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for batching, clients, r in rows:
        print(f"| {'on' if batching else 'off'} | {clients} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{r['failures']} | {r['rps'] / raw:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
