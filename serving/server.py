"""A model server that speaks TensorFlow Serving's REST and gRPC APIs, with its flag names.

    python -m keras_vit.serving.server --port 8500 --rest_api_port 8501 --model_name vit --model_base_path models/vit

For machines where `tensorflow_model_server` cannot be installed: the same
clients, requests and responses work against both. It serves the latest
version by default (or the policy of --model_config_file), polls
model_base_path for new versions, batches concurrent requests with
--enable_batching, binds 127.0.0.1 unless --host says otherwise, and shuts
down gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING

from keras_vit import cli
from keras_vit.serving.batching import BatchingOptions
from keras_vit.serving.connections import ConnectionLimits, rest_protocol
from keras_vit.serving.image_limits import DEFAULT_MAX_IMAGE_PIXELS
from keras_vit.serving.metrics import read_monitoring_config
from keras_vit.serving.native_heap import DEFAULT_INTERVAL_SECONDS, PeriodicRelease

if TYPE_CHECKING:
    from keras_vit.serving.model_manager import ModelManager

logger = logging.getLogger("keras_vit.serving.server")


def parser() -> argparse.ArgumentParser:
    p = cli.command_parser("python -m keras_vit.serving.server", __doc__)
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: no gRPC server)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0: no REST server)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (TF Serving binds all; we default to loopback)")
    p.add_argument("--model_name", default="default", help="name of the model (without --model_config_file)")
    p.add_argument("--model_base_path", default=None, help="folder of the model's numeric version folders")
    p.add_argument("--model_config_file", default=None, help="a ModelServerConfig text proto (model_config_list)")
    p.add_argument("--enable_batching", action="store_true", help="batch concurrent requests")
    p.add_argument("--batching_parameters_file", default=None, help="BatchingParameters text proto")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0, help="seconds between version polls (0: once)")
    p.add_argument("--rest_api_num_threads", type=int, default=32, help="threads running REST requests")
    p.add_argument("--grpc_max_threads", type=int, default=32, help="threads running gRPC requests")
    p.add_argument("--max_request_bytes", type=int, default=64 << 20, help="largest accepted request body")
    p.add_argument("--header_timeout_seconds", type=float, default=ConnectionLimits.header_timeout_seconds,
                   help="a connection that has not sent a whole request head by then is closed (408)")
    p.add_argument("--idle_timeout_seconds", type=float, default=ConnectionLimits.idle_timeout_seconds,
                   help="kept-alive connections idle this long are closed")
    p.add_argument("--body_timeout_seconds", type=float, default=ConnectionLimits.body_timeout_seconds,
                   help="a request body must arrive within this, plus 1 s per --body_min_rate bytes received, else 408 "
                        "(Apache mod_reqtimeout's body=20,MinRate=500)")
    p.add_argument("--body_min_rate", type=int, default=ConnectionLimits.body_min_rate,
                   help="bytes of body that buy one more second (0: no extension)")
    p.add_argument("--lingering_time_seconds", type=float, default=ConnectionLimits.lingering_time_seconds,
                   help="after an error answered while the body still arrives, read and discard the rest for at most "
                        "this long before closing (nginx's lingering_time)")
    p.add_argument("--lingering_timeout_seconds", type=float, default=ConnectionLimits.lingering_timeout_seconds,
                   help="... and at most this long between reads (nginx's lingering_timeout)")
    p.add_argument("--lingering_max_bytes", type=int, default=ConnectionLimits.lingering_max_bytes,
                   help="... and at most this many bytes")
    p.add_argument("--max_connections", type=int, default=ConnectionLimits.max_connections,
                   help="open connections per server (REST, gRPC); more are answered 503 and closed")
    p.add_argument("--max_image_pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help="encoded images declaring more pixels are refused before decoding")
    p.add_argument("--monitoring_config_file", default=None,
                   help="a MonitoringConfig text proto; with prometheus_config { enable: true } the REST port serves "
                        "Prometheus metrics at its path (default /monitoring/prometheus/metrics)")
    p.add_argument("--xla_cpu_compilation_enabled", action="store_true",
                   help="run versions exported with serving.export --jit_compile (XLA:CPU), as TF Serving's flag; "
                        "without it their requests are refused naming this flag")
    p.add_argument("--release_memory_seconds", type=float, default=DEFAULT_INTERVAL_SECONDS,
                   help="hand freed native memory back to the OS this often (glibc's malloc_trim; 0: only after a "
                        "version is unloaded); without it RSS creeps up under load")
    p.add_argument("--prefer_tflite_model", action="store_true",
                   help="run a version's model.tflite (serving.export --format tflite|tflite_int8) instead of its "
                        "SavedModel, where it has one")
    p.add_argument("--prefer_openvino_model", action="store_true",
                   help="run a version's OpenVINO IR (serving.export --format openvino) instead of its SavedModel, "
                        "where it has one (before model.tflite, with both flags)")
    p.add_argument("--openvino_plugin_config", default=None,
                   help="a JSON object of OpenVINO CPU properties the OpenVINO IRs are compiled with, as OpenVINO "
                        "Model Server's --plugin_config, e.g. '{\"PERFORMANCE_HINT\": \"LATENCY\"}' (with batching "
                        "a lone client then has every core: docs/serving.md)")
    return p


def build_manager(args: argparse.Namespace) -> ModelManager:
    from keras_vit.serving.model_manager import ModelConfig, ModelManager, read_model_config_file
    from keras_vit.serving.servable import ServingOptions

    if args.model_config_file:
        configs = read_model_config_file(args.model_config_file)
    elif args.model_base_path:
        configs = [ModelConfig(args.model_name, os.path.abspath(args.model_base_path))]
    else:
        raise ValueError("Give --model_base_path (with --model_name) or --model_config_file.")
    openvino_config = None
    if args.openvino_plugin_config is not None:
        if not args.prefer_openvino_model:
            raise ValueError("--openvino_plugin_config configures the OpenVINO IRs --prefer_openvino_model runs: give "
                             "that flag too.")
        from keras_vit.serving.openvino_model import plugin_config

        openvino_config = plugin_config(args.openvino_plugin_config)
    batching = None
    if args.enable_batching:
        batching = BatchingOptions.from_file(args.batching_parameters_file) if args.batching_parameters_file else BatchingOptions()
    options = ServingOptions(
        batching=batching, max_image_pixels=args.max_image_pixels, prefer_tflite=args.prefer_tflite_model,
        prefer_openvino=args.prefer_openvino_model, openvino_config=openvino_config,
        xla_cpu_compilation_enabled=args.xla_cpu_compilation_enabled,
    )
    return ModelManager(configs, args.file_system_poll_wait_seconds, options)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) for the REST server, or an OSError naming the port.

    Bound before the server says it listens (uvicorn would bind it only once
    it runs, after that line). SO_REUSEADDR lets a restarted server take the
    port back from connections in TIME_WAIT; on Linux it never lets two
    servers listen on one port. The protocol is named (IPPROTO_TCP, not 0):
    asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections of
    sockets that say they are TCP, and with it on, every answer on a
    kept-alive connection waited for the client's delayed ACK, 40 ms.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"--rest_api_port: cannot listen on {host}:{port}: {error.strerror}.") from None
    return sock


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        metrics_path = read_monitoring_config(args.monitoring_config_file) if args.monitoring_config_file else None
        if metrics_path and not args.rest_api_port:
            raise ValueError("--monitoring_config_file serves the metrics on the REST port: give --rest_api_port.")
        release = PeriodicRelease(args.release_memory_seconds)
        manager = build_manager(args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    limits = ConnectionLimits(
        args.header_timeout_seconds, args.idle_timeout_seconds, args.max_connections, args.body_timeout_seconds,
        args.body_min_rate, args.lingering_time_seconds, args.lingering_timeout_seconds, args.lingering_max_bytes,
    )
    try:
        limits.check_file_limit(servers=bool(args.port) + bool(args.rest_api_port))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from keras_vit.serving.grpc_service import make_grpc_server

    try:  # both ports are taken before any model loads, or the server does not start
        grpc_server = make_grpc_server(
            manager, f"{args.host}:{args.port}", args.grpc_max_threads, args.max_request_bytes, limits
        ) if args.port else None
        rest_socket = bind_socket(args.host, args.rest_api_port) if args.rest_api_port else None
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    manager.start()
    release.start()
    for name in manager.configs:
        if not manager.served[name]:
            logger.warning("No servable version of %s found yet under %s", name, manager.configs[name].base_path)

    # Our handlers stand behind uvicorn's: it installs its own while it runs, restores ours and
    # re-raises the signal after its graceful shutdown, which then lands here instead of killing
    # the process before gRPC and the model manager are stopped.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if grpc_server is not None:
            grpc_server.start()
            logger.info("gRPC server listening on %s:%d", args.host, args.port)
        if rest_socket is not None:
            import uvicorn

            from keras_vit.serving.rest import make_app

            app = make_app(manager, args.rest_api_num_threads, args.max_request_bytes, metrics_path)
            config = uvicorn.Config(
                app, host=args.host, port=args.rest_api_port, log_level="warning", timeout_graceful_shutdown=10,
                http=rest_protocol(limits), timeout_keep_alive=limits.idle_timeout_seconds,
            )
            logger.info("REST server listening on http://%s:%d", args.host, args.rest_api_port)
            if metrics_path:
                logger.info("Prometheus metrics at http://%s:%d%s", args.host, args.rest_api_port, metrics_path)
            uvicorn.Server(config).run(sockets=[rest_socket])  # returns after SIGTERM/SIGINT, requests answered
        else:
            stop.wait()
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=10).wait()
        manager.stop()
        release.stop()
        logger.info("Server stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
