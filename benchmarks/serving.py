"""Serving throughput and latency: the REST server with and without batching, against the raw SavedModel.

    python benchmarks/serving.py [--model ViT_Ti16] [--image_size 224] [--seconds 10] [--clients 1 16 64]
    python benchmarks/serving.py --format tflite_int8     # the server runs model.tflite (--prefer_tflite_model)
    python benchmarks/serving.py --format openvino --precision int8   # the OpenVINO IR (--prefer_openvino_model)
    python benchmarks/serving.py --jit_compile            # XLA in the served graph (--xla_cpu_compilation_enabled)
    python benchmarks/serving.py --protocol grpc          # PredictRequests on the gRPC port instead of REST
    python benchmarks/serving.py --format openvino --openvino_plugin_config '{"PERFORMANCE_HINT": "LATENCY"}'
                                                          # a third server: batching, compiled with that config

Exports the model (random weights; the cost does not depend on them), measures
the raw SavedModel's batched throughput in this process (batches of 32 encoded
images through `serving_default`, the server's own signature, one call at a
time or as many at once as the server's batch threads, whichever is faster),
then starts `python -m keras_vit.serving.server` on 127.0.0.1 without and with
`--enable_batching` and drives it with concurrent REST (or, with `--protocol
grpc`, gRPC) clients, one PNG per request, each client a thread of this
process on its own kept-alive connection. The raw model and the two servers
alternate over rounds. Prints medians of requests/s, p50/p99 latency, the
ratio to the raw throughput of the same round, and the CPU seconds per second
the server and the clients took: they share this machine's cores.
With `--format tflite|tflite_int8|openvino` the export adds model.tflite or
the OpenVINO IR, the server runs it, and the raw figure is the same work in
this process: the SavedModel's `decode`, then that engine on the batch (an
OpenVINO engine for two concurrent calls runs two streams, as the batching
server's does). With `--jit_compile` the export compiles the forward pass with
XLA and the server runs with `--xla_cpu_compilation_enabled`; the raw figure
is that SavedModel's.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import harness  # noqa: E402
import keras_vit  # noqa: E402
from keras_vit.serving import auto_export, saved_model, signatures  # noqa: E402
from keras_vit.options import EXPORT_FORMATS, OPENVINO_PRECISIONS  # noqa: E402
from keras_vit.serving.batching import BatchingOptions  # noqa: E402
from keras_vit.serving.client import GrpcClient, RestClient  # noqa: E402


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The server's flag for the engine each format adds beside the SavedModel.
ENGINE_FLAGS = {"tflite": "--prefer_tflite_model", "tflite_int8": "--prefer_tflite_model",
                "openvino": "--prefer_openvino_model"}


def raw_throughput(path: str, images: list[bytes], seconds: float, format: str, batch: int = 32) -> float:
    """The same work in this process, at its best: batches of `batch` PNGs through one call at a time or through as
    many concurrent calls as the server's batch threads (each engine set up for that many), whichever is faster."""
    loaded = tf.saved_model.load(path)
    inputs = tf.constant((images * batch)[:batch])
    best = 0.0
    for calls in sorted({1, BatchingOptions().num_batch_threads}):
        if format in ENGINE_FLAGS:
            engine = auto_export.runner(path, format, concurrent_calls=calls)
            step = lambda: engine(loaded.decode(inputs).numpy())  # noqa: E731
        else:
            function = loaded.signatures[signatures.DEFAULT_SIGNATURE]
            step = lambda: function(images=inputs)  # noqa: E731
        best = max(best, harness.timed_concurrently(step, batch, seconds, calls))
    return best


class RestConnection:
    """One client's kept-alive HTTP connection (as load generators and `requests.Session` keep theirs), Nagle off as
    urllib3 sets it: else a request's last segment waits for the server's delayed ACK, 40 ms. Its request body, the
    PNG in base64 JSON, is encoded once."""

    def __init__(self, server: dict, image: bytes):
        self.address = urllib.parse.urlsplit(server["rest"])
        self.connection = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=120)
        self.body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()

    def predict(self) -> bool:
        try:
            if self.connection.sock is None:
                self.connection.connect()
                self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connection.request("POST", f"{self.address.path}:predict", self.body,
                                    {"Content-Type": "application/json"})
            with self.connection.getresponse() as response:
                response.read()
                return response.status == 200
        except OSError:
            self.connection.close()  # opened again by the next request
            return False

    def close(self) -> None:
        self.connection.close()


class GrpcConnection:
    """One client's gRPC channel: the PNG goes as a binary DT_STRING tensor, no JSON or base64."""

    def __init__(self, server: dict, image: bytes):
        self.client = GrpcClient(server["grpc"], "vit", timeout=120)
        self.image = image

    def predict(self) -> bool:
        import grpc

        try:
            self.client.predict_images([self.image])
            return True
        except grpc.RpcError:
            return False

    def close(self) -> None:
        self.client.close()


PROTOCOLS = {"rest": RestConnection, "grpc": GrpcConnection}


def drive(server: dict, protocol: str, images: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` threads, each on its own connection, sending one PNG per request for `seconds`."""
    stop = time.perf_counter() + seconds

    def client(i: int) -> tuple[list[float], int]:
        latencies, failures = [], 0
        connection = PROTOCOLS[protocol](server, images[i % len(images)])
        while time.perf_counter() < stop and len(latencies) < 100_000:
            start = time.perf_counter()
            if connection.predict():
                latencies.append(time.perf_counter() - start)
            else:
                failures += 1
        connection.close()
        return latencies, failures

    begin, clients_cpu, server_cpu = time.perf_counter(), time.process_time(), process_cpu_seconds(server["pid"])
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - begin
    latencies = np.concatenate([r[0] for r in results]) * 1000
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "p99": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
        "failures": sum(r[1] for r in results),
        "clients_cpu": (time.process_time() - clients_cpu) / elapsed,
        "server_cpu": (process_cpu_seconds(server["pid"]) - server_cpu) / elapsed,
    }


def summary(results: list[dict], raws: list[float]) -> dict:
    """Medians over rounds of one configuration; its ratio to the raw throughput is taken round by round."""
    return {key: harness.median(results, key) for key in results[0]} | {
        "failures": sum(r["failures"] for r in results),
        "ratio": statistics.median(r["rps"] / raw for r, raw in zip(results, raws)),
    }


def start_server(base_path: str, batching: bool, format: str, xla: bool = False,
                 openvino_plugin_config: str | None = None) -> tuple[subprocess.Popen, dict]:
    """The server on free REST and gRPC ports of 127.0.0.1: (process, {"rest": model URL, "grpc": address, "pid"})."""
    port, grpc_port = harness.free_port(), harness.free_port()
    command = [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(port),
               "--model_name", "vit", "--model_base_path", base_path, "--file_system_poll_wait_seconds", "0"]
    if format in ENGINE_FLAGS:
        command.append(ENGINE_FLAGS[format])
    if xla:
        command.append("--xla_cpu_compilation_enabled")
    if openvino_plugin_config:
        command += ["--openvino_plugin_config", openvino_plugin_config]
    if batching:
        command += ["--enable_batching", "--batching_parameters_file", os.path.join(base_path, "batching_parameters.txt")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        RestClient(f"http://127.0.0.1:{port}", "vit").wait_until_available(process=process)
    except RuntimeError:
        process.kill()
        raise
    return process, {"rest": f"http://127.0.0.1:{port}/v1/models/vit", "grpc": f"127.0.0.1:{grpc_port}",
                     "pid": process.pid}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT_Ti16", help="a variant of keras_vit.VARIANTS")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time per configuration")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64], help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the raw model and the servers")
    parser.add_argument("--format", choices=[f for f in EXPORT_FORMATS if f != "auto"], default="saved_model",
                        help="keras_vit.serving.export's format; tflite ones are served with --prefer_tflite_model, "
                             "openvino with --prefer_openvino_model")
    parser.add_argument("--precision", choices=OPENVINO_PRECISIONS, default=None, help="--format openvino's")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="rest",
                        help="rest: JSON with base64 PNGs on kept-alive connections; grpc: PredictRequests, PNG bytes")
    parser.add_argument("--jit_compile", action="store_true", help="export with XLA, serve with --xla_cpu_compilation_enabled")
    parser.add_argument("--openvino_plugin_config", default=None,
                        help="--format openvino: a third server, batching, run with this --openvino_plugin_config")
    args = parser.parse_args()
    if args.openvino_plugin_config and args.format != "openvino":
        parser.error("--openvino_plugin_config is for --format openvino")

    workdir = tempfile.mkdtemp(prefix="keras_vit_bench_")
    model = keras_vit.create_model(args.model, image_size=args.image_size, classes=1000)
    path = saved_model.export(model, os.path.join(workdir, "vit"), format=args.format, jit_compile=args.jit_compile,
                              precision=args.precision, min_top1_agreement=0.0)  # random weights: speed only
    rng = np.random.default_rng(0)
    size = (args.image_size, args.image_size, 3)
    images = [saved_model.encode_png(rng.integers(0, 256, size, dtype=np.uint8)) for _ in range(64)]
    # The servers: batching off, on, and on with the plugin config; (name in the table, batching, plugin config).
    servers = [("off", False, None), ("on", True, None)]
    if args.openvino_plugin_config:
        servers.append((f"on, {args.openvino_plugin_config}", True, args.openvino_plugin_config))
    raws, runs = [], {(name, clients): [] for name, _, _ in servers for clients in args.clients}
    for r in range(args.rounds):  # the raw model and the servers alternate; the table gives medians
        raws.append(raw_throughput(path, images, args.seconds, args.format))
        harness.print_progress(f"round {r + 1}: raw {raws[-1]:.1f} images/s")
        for name, batching, plugin_config in servers[r % len(servers):] + servers[:r % len(servers)]:
            process, server = start_server(os.path.join(workdir, "vit"), batching, args.format, args.jit_compile,
                                           plugin_config)
            try:
                drive(server, args.protocol, images, 4, 2.0)  # warm up
                for clients in args.clients:
                    result = drive(server, args.protocol, images, clients, args.seconds)
                    runs[name, clients].append(result)
                    harness.print_progress(f"round {r + 1}: batching {name} {clients} clients {result['rps']:.1f} req/s")
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    raw = statistics.median(raws)
    rows = [(name, clients, summary(results, raws)) for (name, clients), results in runs.items()]

    print(harness.cpu_description())
    raw_path = f"SavedModel `decode` + {args.format} engine" if args.format in ENGINE_FLAGS else (
        "SavedModel (`serving_default`)")
    print(f"{args.model} at {args.image_size}x{args.image_size}, --format {args.format}"
          f"{f' --precision {args.precision}' if args.precision else ''}"
          f"{' --jit_compile' if args.jit_compile else ''}, one PNG per {args.protocol.upper()} request; raw "
          f"{raw_path}, batches of 32 PNGs, this process, the faster of 1 and {BatchingOptions().num_batch_threads} "
          f"concurrent calls: {raw:.1f} images/s; medians of {args.rounds} rounds\n")
    print(harness.markdown_table(
        ["batching", "clients", "requests/s", "p50 ms", "p99 ms", "failures", "vs raw batched",
         "server CPU s/s", "clients CPU s/s"],
        [[name, str(clients), f"{r['rps']:.1f}", f"{r['p50']:.0f}", f"{r['p99']:.0f}",
          str(r["failures"]), f"{r['ratio']:.2f}", f"{r['server_cpu']:.2f}", f"{r['clients_cpu']:.2f}"]
         for name, clients, r in rows],
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
