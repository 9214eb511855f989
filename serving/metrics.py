"""The server's Prometheus metrics, as TF Serving exposes them with `--monitoring_config_file`.

The config file is TF Serving's `MonitoringConfig` text proto:

    prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }

and the metrics are served on the REST port at that path (TF Serving's
default when `path` is empty), in Prometheus' text format, by
`prometheus_client`. Names are TF Serving's (and TensorFlow's, for model
loads), with `/` written `:` as its exporter writes them; latencies are in
microseconds with TF Serving's buckets (10 us x 1.8^i, 33 of them).
Counters carry the `_total` suffix `prometheus_client` gives every counter.

| metric | kind | labels |
|---|---|---|
| `:tensorflow:serving:request_count` | counter | model_name, API, entrypoint, status |
| `:tensorflow:serving:request_latency` | histogram (us) | model_name, API, entrypoint |
| `:tensorflow:serving:runtime_latency` | histogram (us) | model_name, API, runtime |
| `:tensorflow:serving:batching:processed_batch_size` | histogram | model_name, op_name |
| `:tensorflow:cc:saved_model:load_attempt_count` | counter | model_path, status |
| `:tensorflow:serving:model_versions_available` | gauge | model_name |

`API` is predict, classify, regress or GetModelMetadata; `entrypoint` REST
or GRPC; `status` the request's status code name (OK, INVALID_ARGUMENT,
NOT_FOUND, ...); `runtime` TF or LiteRT; `op_name` the signature.
TF Serving's `request_count` has model_name and status only: the two more
labels split the same counts by API and entrypoint, and a query that sums
over them reads TF Serving's series.
"""

from __future__ import annotations

import contextlib
import os
import time

#: TF Serving's `PrometheusExporter::kPrometheusPath`, used when the config names no path.
DEFAULT_PATH = "/monitoring/prometheus/metrics"
#: Microseconds: TF Serving's `Buckets::Exponential(10, 1.8, 33)`, at the six significant digits its exporter prints
#: them with (absl's StrCat), so labels read `le="32.4"`, not the float product's `le="32.400000000000006"`.
LATENCY_BUCKETS = tuple(float(f"{10 * 1.8**i:.6g}") for i in range(33))
#: Examples per processed batch: powers of two up to 2^14.
BATCH_SIZE_BUCKETS = tuple(2.0**i for i in range(15))


def read_monitoring_config(path: str) -> str | None:
    """The metrics path of a MonitoringConfig text file, or None when Prometheus is not enabled in it.

    Raises ValueError naming the file, line and column when it does not parse.
    """
    from google.protobuf import text_format

    from keras_vit.serving.declared_protos import monitoring_config_class

    try:
        with open(path) as f:
            config = text_format.Parse(f.read(), monitoring_config_class()())
    except text_format.ParseError as error:
        raise ValueError(f"{path}:{error}") from None
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    if prometheus.path and not prometheus.path.startswith("/"):
        raise ValueError(f"{path}: prometheus_config.path must start with '/', got {prometheus.path!r}.")
    return prometheus.path or DEFAULT_PATH


class Metrics:
    """The metrics of one server process, in a registry of their own."""

    def __init__(self):
        import prometheus_client

        prometheus_client.disable_created_metrics()  # no *_created series: TF Serving has none
        self.registry = prometheus_client.CollectorRegistry()
        options = {"registry": self.registry}
        self.request_count = prometheus_client.Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "API", "entrypoint", "status"], **options,
        )
        self.request_latency = prometheus_client.Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS, **options,
        )
        self.runtime_latency = prometheus_client.Histogram(
            ":tensorflow:serving:runtime_latency", "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS, **options,
        )
        self.batch_size = prometheus_client.Histogram(
            ":tensorflow:serving:batching:processed_batch_size", "Tracks the batch size distribution on processing.",
            ["model_name", "op_name"], buckets=BATCH_SIZE_BUCKETS, **options,
        )
        self.load_attempts = prometheus_client.Counter(
            ":tensorflow:cc:saved_model:load_attempt_count", "The number of times a SavedModel was loaded.",
            ["model_path", "status"], **options,
        )
        self.versions_available = prometheus_client.Gauge(
            ":tensorflow:serving:model_versions_available", "Versions of each model being served.",
            ["model_name"], **options,
        )

    @contextlib.contextmanager
    def request(self, model_name: str, api: str, entrypoint: str):
        """Counts and times one request: its status is OK, or the ServingError's code it raised (INTERNAL else)."""
        from keras_vit.serving.errors import ServingError

        start = time.perf_counter()
        status = "OK"
        try:
            yield
        except ServingError as error:
            status = error.code
            raise
        except BaseException:
            status = "INTERNAL"
            raise
        finally:
            self.request_count.labels(model_name, api, entrypoint, status).inc()
            self.request_latency.labels(model_name, api, entrypoint).observe((time.perf_counter() - start) * 1e6)

    def runtime(self, model_name: str, runtime: str, seconds: float, api: str = "predict") -> None:
        self.runtime_latency.labels(model_name, api, runtime).observe(seconds * 1e6)

    def batch(self, model_name: str, signature: str, size: int) -> None:
        self.batch_size.labels(model_name, signature).observe(size)

    def load_attempt(self, path: str, succeeded: bool) -> None:
        self.load_attempts.labels(os.path.abspath(path), "success" if succeeded else "fail").inc()

    def versions(self, model_name: str, count: int) -> None:
        self.versions_available.labels(model_name).set(count)

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        import prometheus_client

        return prometheus_client.generate_latest(self.registry)


_METRICS: Metrics | None = None


def metrics() -> Metrics:
    """The process' metrics (created on first use; every server of the process records into them)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS
