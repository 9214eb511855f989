"""What every benchmark table needs: the machine it ran on, workers in their own processes, medians over rounds.

Each measurement runs in a fresh Python process (`run_worker`), so that no
system inherits another's thread pools, caches or allocator state, and the
systems alternate round by round (`alternate`): a drift in the machine's
speed during the run then shows in every system's spread instead of
favouring whichever ran first. Tables report medians over the rounds.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The CPU flags that decide which precision paths the hardware really has.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description() -> str:
    """One line: CPU model, cores this process may use, and which of FLAGS_OF_INTEREST the CPU has."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    present = [f for f in FLAGS_OF_INTEREST if f in flags]
    absent = [f for f in FLAGS_OF_INTEREST if f not in flags]
    return f"{model}, {cores} cores; flags: {' '.join(present) or 'none'} (absent: {' '.join(absent) or 'none'})"


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a server a benchmark starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_path() -> str:
    """The checkout first, then whatever PYTHONPATH already holds (packages carried to a machine, say)."""
    return os.pathsep.join(part for part in (ROOT, os.environ.get("PYTHONPATH")) if part)


def run_worker(script: str, arguments: list[str], timeout: float = 1800) -> dict:
    """Runs `python script --worker arguments...` and returns the JSON object its last stdout line holds.

    A worker that fails returns {"error": its last stderr line}, so that one
    missing peer does not end the whole benchmark.
    """
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=python_path())
    try:
        done = subprocess.run(
            [sys.executable, script, "--worker", *arguments],
            capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": errors[-1] if errors else f"exit code {done.returncode}"}
    return json.loads(lines[-1])


class PersistentWorker:
    """`python script --serve arguments...` kept running: `ask` sends it one JSON request line, reads one JSON reply.

    For systems whose compilation dwarfs a measurement (XLA, `torch.compile` on
    a GPU): each system compiles once in its own process, and the orchestrator
    still alternates the systems round by round. A worker that dies answers
    {"error": ...} from then on.
    """

    def __init__(self, script: str, arguments: list[str], env: dict[str, str] | None = None):
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=python_path(), PYTHONUNBUFFERED="1")
        environment.update(env or {})
        self._stderr = tempfile.TemporaryFile("w+")  # a pipe nobody reads would fill and stop the worker
        self._process = subprocess.Popen(
            [sys.executable, script, "--serve", *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, env=environment, cwd=ROOT,
        )

    def ask(self, request: dict) -> dict:
        self.send(request)
        return self.receive()

    def send(self, request: dict) -> None:
        """Sends a request without waiting: several workers can then work side by side (compiling, say)."""
        if self._process.poll() is None:
            try:
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
            except BrokenPipeError:
                pass

    def receive(self) -> dict:
        """The reply to the last request sent."""
        if self._process.poll() is None:
            for line in self._process.stdout:  # a library may print lines of its own first
                if line.startswith("{"):
                    return json.loads(line)
        self._process.wait()
        self._stderr.seek(0)
        errors = [line for line in self._stderr.read().splitlines() if line.strip()]
        return {"error": errors[-1] if errors else f"worker exited with {self._process.returncode}"}

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._stderr.close()


def serve_requests(answer: Callable[[dict], dict]) -> None:
    """The worker's side of `PersistentWorker`: answers each JSON line on stdin with one on stdout, until EOF."""
    for line in sys.stdin:
        try:
            reply = answer(json.loads(line))
        except Exception as error:  # noqa: BLE001 - reported to the orchestrator, which shows it in the table
            reply = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
        print(json.dumps(reply), flush=True)


def timed(step, batch: int, seconds: float, warmup: int = 2, minimum: int = 3) -> float:
    """Images per second of `step()` over at least `seconds` and `minimum` calls, after `warmup` calls."""
    for _ in range(warmup):
        step()
    calls, start = 0, time.perf_counter()
    while calls < minimum or time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def timed_concurrently(step, batch: int, seconds: float, threads: int) -> float:
    """Images per second of `threads` threads each calling `step()` for `seconds` (after one warm-up call each)."""
    if threads == 1:
        return timed(step, batch, seconds, warmup=1)
    calls = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def work(index: int) -> None:
        step()
        barrier.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            step()
            calls[index] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return sum(calls) * batch / (time.perf_counter() - start)


def alternate(systems: list[str], rounds: int, measure: Callable[[str, int], dict],
              report: Callable[[str, int, dict], None] = lambda *_: None) -> dict[str, list[dict]]:
    """Measures every system `rounds` times, rotating their order each round; results per system."""
    results: dict[str, list[dict]] = {system: [] for system in systems}
    for r in range(rounds):
        for system in systems[r % len(systems):] + systems[: r % len(systems)]:
            result = measure(system, r)
            report(system, r, result)
            results[system].append(result)
    return results


def median(results: Iterable[dict], key: str) -> float | None:
    """Median of `key` over the results that have it (None when every run failed)."""
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def first_error(results: Iterable[dict]) -> str | None:
    return next((r["error"] for r in results if "error" in r), None)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def print_progress(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)
