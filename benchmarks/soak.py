"""A soak of the server under load while versions swap: failures, latency, memory and file descriptors per minute.

    python benchmarks/soak.py [--minutes 10] [--rest_clients 16] [--grpc_clients 4] [--swap_seconds 60]

Exports a model (random weights), starts `python -m keras_vit.serving.server` on
127.0.0.1 with batching, and drives it with REST clients (one PNG per
request, row format) and gRPC clients (tensorflow-serving-api's stubs)
sending real encoded images, all threads of this process, for `--minutes`.
Every `--swap_seconds` a new version is exported into the model's folder
(written beside and renamed in, as serving.export does); the server loads
it and unloads the previous one, and the oldest folder on disk is removed,
so two versions stay there.

Prints per minute: requests, failures, p50/p99 latency, the server's RSS
and open file descriptors; then, after `--warmup_minutes` (2: the first
swap's loads included), the least-squares slope of RSS (MB/min) at one
phase of the swap cycle: its floor over the 30 s before each swap (one
version loaded: during a swap two are, so samples across the cycle form a
sawtooth; the floor leaves out the requests' transient buffers, which only
ever add), of RSS over all samples every 5 s (for information), and of
descriptors; the failures
within 10 s of a swap, and the tracebacks in the server's log. It ends with one line per criterion: no failure, RSS
slope under 1 MB/min, no descriptor growth, no traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import harness  # noqa: E402


#: Seconds before each swap over which the RSS floor is taken.
FLOOR_SECONDS = 30


def server_usage(pid: int) -> tuple[float, int]:
    """(RSS in MB, open file descriptors) of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def slope(times: list[float], values: list[float]) -> float:
    """Least-squares slope of values per minute."""
    if len(times) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(times) / 60, np.asarray(values), 1)[0])


class Load:
    """Client threads recording (end time, latency, ok) of every request until `stop` is set."""

    def __init__(self, rest_url: str, grpc_address: str, images: list[bytes]):
        self.rest_url, self.grpc_address, self.images = rest_url, grpc_address, images
        self.records: list[tuple[float, float, bool]] = []
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def record(self, start: float, ok: bool, error: str | None = None) -> None:
        end = time.monotonic()
        with self.lock:
            self.records.append((end, end - start, ok))
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1

    def rest_client(self, index: int) -> None:
        bodies = [json.dumps({"instances": [{"b64": base64.b64encode(i).decode()}]}).encode() for i in self.images]
        n = index
        while not self.stop.is_set():
            n += 1
            request = urllib.request.Request(self.rest_url, data=bodies[n % len(bodies)],
                                             headers={"Content-Type": "application/json"})
            start = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    ok = response.status == 200 and "predictions" in json.loads(response.read())
                self.record(start, ok, None if ok else "REST: no predictions")
            except (OSError, ValueError) as error:  # HTTPError is an OSError
                self.record(start, False, f"REST: {error}"[:200])

    def grpc_client(self, index: int) -> None:
        from keras_vit.serving.client import GrpcClient

        client = GrpcClient(self.grpc_address, "vit")
        n = index
        try:
            while not self.stop.is_set():
                n += 1
                start = time.monotonic()
                try:
                    outputs = client.predict_images([self.images[n % len(self.images)]])
                    ok = "probabilities" in outputs
                    self.record(start, ok, None if ok else "gRPC: no probabilities")
                except Exception as error:  # grpc.RpcError and anything else: a failure to count, not to stop on
                    self.record(start, False, f"gRPC: {type(error).__name__}: {error}"[:200])
        finally:
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rest_clients", type=int, default=16)
    parser.add_argument("--grpc_clients", type=int, default=4)
    parser.add_argument("--swap_seconds", type=float, default=60.0, help="a new version this often")
    parser.add_argument("--model", default="ViT_Ti16", help="a variant of keras_vit.VARIANTS")
    parser.add_argument("--image_size", type=int, default=96, help="the model's resolution")
    parser.add_argument("--warmup_minutes", type=float, default=2.0, help="left out of the growth slopes")
    args = parser.parse_args()

    import keras_vit
    from keras_vit.serving import saved_model
    from keras_vit.serving.client import RestClient

    workdir = tempfile.mkdtemp(prefix="keras_vit_soak_")
    base = os.path.join(workdir, "vit")
    model = keras_vit.create_model(args.model, image_size=args.image_size, classes=1000)
    saved_model.export(model, base)
    rng = np.random.default_rng(0)
    images = [saved_model.encode_png(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)) for _ in range(32)]

    rest_port, grpc_port = harness.free_port(), harness.free_port()
    log_path = os.path.join(workdir, "server.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
             "--model_name", "vit", "--model_base_path", base, "--enable_batching",
             "--batching_parameters_file", os.path.join(base, "batching_parameters.txt"),
             "--file_system_poll_wait_seconds", "1"],
            cwd=harness.ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{rest_port}"
    RestClient(url, "vit").wait_until_available(process=server)
    load = Load(f"{url}/v1/models/vit:predict", f"127.0.0.1:{grpc_port}", images)
    threads = [threading.Thread(target=load.rest_client, args=(i,)) for i in range(args.rest_clients)]
    threads += [threading.Thread(target=load.grpc_client, args=(i,)) for i in range(args.grpc_clients)]
    begin = time.monotonic()
    for thread in threads:
        thread.start()

    samples, swaps, before_swaps = [], [], []  # (t, rss, fds) every 5 s; swap times; (t, RSS floor) before each
    next_swap, next_sample, end = begin + args.swap_seconds, begin, begin + args.minutes * 60
    try:
        while time.monotonic() < end and server.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - begin, *server_usage(server.pid)))
                next_sample += 5
            if now >= next_swap:
                window = [rss for t, rss, _ in samples if t >= now - begin - FLOOR_SECONDS]
                before_swaps.append((now - begin, min(window + [server_usage(server.pid)[0]])))
                saved_model.export(model, base)  # the next version, written beside and renamed in
                swaps.append(time.monotonic() - begin)
                versions = sorted(int(v) for v in os.listdir(base) if v.isdigit())
                for old in versions[:-2]:
                    shutil.rmtree(os.path.join(base, str(old)))
                harness.print_progress(f"{swaps[-1]:.0f} s: exported version {versions[-1]}")
                next_swap += args.swap_seconds
            time.sleep(0.2)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=120)
        server_alive = server.poll() is None
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    print(harness.cpu_description())
    print(f"{args.model} at {args.image_size}x{args.image_size}, batching on, {args.rest_clients} REST and "
          f"{args.grpc_clients} gRPC clients, one PNG per request, a new version every {args.swap_seconds:g} s\n")
    records = np.array(load.records) if load.records else np.zeros((0, 3))
    rows = []
    for minute in range(int(np.ceil(args.minutes))):
        lo, hi = begin + 60 * minute, begin + 60 * (minute + 1)
        in_minute = records[(records[:, 0] >= lo) & (records[:, 0] < hi)]
        latencies = in_minute[:, 1] * 1000
        usage = [s for s in samples if 60 * minute <= s[0] < 60 * (minute + 1)]
        rows.append([
            str(minute + 1), str(len(in_minute)), str(int((in_minute[:, 2] == 0).sum())),
            f"{np.percentile(latencies, 50):.0f}" if len(latencies) else "n/a",
            f"{np.percentile(latencies, 99):.0f}" if len(latencies) else "n/a",
            f"{usage[-1][1]:.0f}" if usage else "n/a", str(usage[-1][2]) if usage else "n/a",
        ])
    print(harness.markdown_table(["minute", "requests", "failures", "p50 ms", "p99 ms", "server RSS MB", "open fds"], rows))

    after = [s for s in samples if s[0] >= 60 * args.warmup_minutes]
    steady = [s for s in before_swaps if s[0] >= 60 * args.warmup_minutes]
    rss_slope = slope([s[0] for s in steady], [s[1] for s in steady])
    sawtooth_slope = slope([s[0] for s in after], [s[1] for s in after])
    fd_slope = slope([s[0] for s in after], [s[2] for s in after])
    failures = int((records[:, 2] == 0).sum())
    near_swaps = int(sum(((records[:, 2] == 0) & (abs(records[:, 0] - begin - t) < 10)).sum() for t in swaps))
    with open(log_path) as f:
        tracebacks = f.read().count("Traceback")
    print(f"\n{len(records)} requests, {failures} failed ({near_swaps} within 10 s of one of {len(swaps)} swaps); "
          f"after {args.warmup_minutes:g} minutes RSS {rss_slope:+.2f} MB/min at its floor before each swap "
          f"({', '.join(f'{r:.0f}' for _, r in steady)} MB; {sawtooth_slope:+.2f} MB/min over every sample), "
          f"open fds {fd_slope:+.2f}/min; "
          f"{tracebacks} tracebacks in the server's log")
    for error, count in sorted(load.errors.items(), key=lambda e: -e[1])[:5]:
        print(f"  {count} x {error}")
    verdicts = {
        "no request failed": failures == 0,
        "RSS grows under 1 MB/min": rss_slope < 1.0,
        "open fds do not grow": fd_slope < 0.5,
        "no traceback in the log": tracebacks == 0,
        "the server ran to the end": server_alive,
    }
    for name, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
