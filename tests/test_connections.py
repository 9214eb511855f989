"""Connections a client may hold: request-head and idle deadlines and a connection cap, on a real server process."""

import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from keras_vit.serving.client import RestClient
from support import REPO, env, free_port
from test_serving import assert_still_serving, exported, tiny_model  # noqa: F401  (the module's served models)

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

HEADER_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS = 1.0, 1.0, 20


@pytest.fixture(scope="module")
def server(exported):
    rest_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--model_config_file", str(exported["config"]), "--file_system_poll_wait_seconds", "0",
         "--header_timeout_seconds", str(HEADER_TIMEOUT), "--idle_timeout_seconds", str(IDLE_TIMEOUT),
         "--max_connections", str(MAX_CONNECTIONS), "--prefer_openvino_model"],  # the version's OpenVINO model
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    RestClient(f"http://127.0.0.1:{rest_port}", "vit").wait_until_available(process=process)
    yield {"rest": f"http://127.0.0.1:{rest_port}", "rest_port": rest_port, "grpc_port": grpc_port, "process": process}
    process.send_signal(signal.SIGTERM)
    log = process.communicate(timeout=60)[0]
    assert "Traceback" not in log, log[-3000:]


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (seconds from now)."""
    start, chunks = time.monotonic(), []
    sock.settimeout(limit)
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - start


def test_a_client_trickling_its_request_head_is_cut_off(server, exported):
    with socket.create_connection(("127.0.0.1", server["rest_port"])) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v1/models/vit:predict HTTP/1.1\r\n")
        try:
            while time.monotonic() - start < 10:  # one header byte every 0.2 s: never a whole head
                sock.sendall(b"X")
                time.sleep(0.2)
        except OSError:  # the server closed the connection
            pass
        answer, _ = read_until_closed(sock, 10)
    assert time.monotonic() - start < HEADER_TIMEOUT + 3
    assert answer.startswith(b"HTTP/1.1 408") and b"--header_timeout_seconds" in answer
    assert_still_serving(server, exported)


def test_idle_connections_are_closed_and_those_over_the_cap_refused(server, exported):
    sockets = [socket.create_connection(("127.0.0.1", server["rest_port"])) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        answers = [read_until_closed(sock, 10) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    refused = [a for a, _ in answers if a.startswith(b"HTTP/1.1 503")]
    timed_out = [a for a, _ in answers if a.startswith(b"HTTP/1.1 408")]
    assert len(refused) >= 10 and len(refused) + len(timed_out) == len(sockets)
    assert b"--max_connections" in refused[0]
    assert max(seconds for _, seconds in answers) < HEADER_TIMEOUT + 3
    assert_still_serving(server, exported)


def test_a_kept_alive_connection_is_closed_when_idle(server):
    request = b"GET /v1/models/vit HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server["rest_port"])) as sock:
        sock.sendall(request)
        answer, seconds = read_until_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 200") and b"AVAILABLE" in answer
    assert IDLE_TIMEOUT - 0.5 < seconds < IDLE_TIMEOUT + 3


def test_grpc_closes_silent_connections_and_keeps_serving(server):
    silent = [socket.create_connection(("127.0.0.1", server["grpc_port"])) for _ in range(5)]
    try:
        closed = [read_until_closed(sock, 10)[1] for sock in silent]
    finally:
        for sock in silent:
            sock.close()
    assert max(closed) < HEADER_TIMEOUT + 3
    with grpc.insecure_channel(f"127.0.0.1:{server['grpc_port']}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "vit"
        status = stub.GetModelStatus(request, timeout=30)
    assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_caps_that_do_not_fit_the_file_limit_are_refused(exported):
    result = subprocess.run(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", "0", "--rest_api_port", str(free_port()),
         "--model_config_file", str(exported["config"]), "--max_connections", "100000000"],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--max_connections 100000000 per server needs" in result.stderr.strip().splitlines()[-1]
