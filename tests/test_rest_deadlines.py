"""The REST server's deadline on request bodies, and its lingering close, against real sockets on 127.0.0.1.

The server runs with short bounds (a 1 s head deadline, a 2 s body deadline,
a 3 s lingering timeout, 4 MB of lingering), so that each case takes seconds.
"""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import keras_vit
from keras_vit.serving import saved_model
from keras_vit.serving.client import RestClient
from support import REPO, env, free_port

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

LIMIT = 2_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("deadlines") / "vit"
    saved_model.export(keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1,
                                     classes=3), str(base))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", "0", "--rest_api_port", str(port), "--model_name", "vit",
         "--model_base_path", str(base), "--max_request_bytes", str(LIMIT), "--header_timeout_seconds", "1",
         "--body_timeout_seconds", "2", "--lingering_timeout_seconds", "3", "--lingering_max_bytes", "4000000"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    RestClient(url, "vit").wait_until_available(process=process)
    yield {"url": url, "port": port, "process": process}
    process.terminate()
    log = process.communicate(timeout=60)[0]
    assert "Traceback" not in log, log[-3000:]


def pixels_body(count: int = 1) -> bytes:
    values = np.zeros((count, 16, 16, 3)).tolist()
    return json.dumps({"signature_name": "predict_pixels", "instances": values}).encode()


def post(server, body, length: int | None = None) -> tuple[int, dict]:
    """urllib, as a plain blocking client: it sends the whole body before it reads the answer.

    `body` is bytes, or an iterable of pieces sent as they come: with `length`
    as its Content-Length, else chunked.
    """
    headers = {"Content-Type": "application/json"}
    if length is not None:
        headers["Content-Length"] = str(length)
    request = urllib.request.Request(f"{server['url']}/v1/models/vit:predict", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_still_serving(server):
    status, body = post(server, pixels_body())
    assert status == 200 and len(body["predictions"]) == 1, body


def head(length: int) -> bytes:
    return (f"POST /v1/models/vit:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_bodies_trickled_a_byte_at_a_time_are_cut_with_a_408(server):
    answers = []

    def trickle():
        with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as sock:
            sock.sendall(head(1000))
            started = time.monotonic()
            sock.settimeout(0.5)
            received = b""
            try:
                while time.monotonic() - started < 15:
                    sock.sendall(b" ")
                    try:
                        chunk = sock.recv(65536)
                    except socket.timeout:
                        continue
                    received += chunk
                    if not chunk:
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            answers.append((time.monotonic() - started, received))

    clients = [threading.Thread(target=trickle) for _ in range(50)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    assert len(answers) == 50
    for seconds, received in answers:
        assert seconds < 6, seconds  # 2 s, plus 1 s per 500 bytes: a few bytes buy nothing
        status, body = received.partition(b"\r\n")[0], received.partition(b"\r\n\r\n")[2]
        assert status == b"HTTP/1.1 408 Request Timeout", received[:200]
        assert "did not arrive within 2 s" in json.loads(body)["error"]
    assert_still_serving(server)


def test_a_slow_body_that_keeps_its_rate_is_not_cut(server):
    body = pixels_body(4)  # about 9 KB: 2 s + 18 s of allowance
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as sock:
        sock.sendall(head(len(body)))
        for start in range(0, len(body), len(body) // 8):
            sock.sendall(body[start : start + len(body) // 8])
            time.sleep(0.5)  # 4 s in all: past the 2 s, within the allowance
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_a_body_over_the_limit_gets_its_429_every_time(server):
    def oversized():  # 3 MB against 2 MB, sent in pieces with pauses longer than the head deadline (a slow client)
        for _ in range(3):
            yield b" " * 1_000_000
            time.sleep(1.2)

    for _ in range(2):
        status, answer = post(server, oversized(), length=3_000_000)  # refused from its Content-Length, then lingered
        assert status == 429 and "exceeds the limit" in answer["error"], answer
    status, answer = post(server, oversized())  # chunked: refused while read
    assert status == 429 and "exceeds the limit" in answer["error"], answer
    assert_still_serving(server)


def test_lingering_is_bounded_in_bytes_and_in_idle_time(server):
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as sock:
        sock.sendall(head(50_000_000))  # refused at once (429); then 4 MB of lingering at most
        closed = False
        try:
            for _ in range(200):
                sock.sendall(b" " * 65536)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        assert closed, "the server read 13 MB past its 4 MB lingering bound"
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as sock:
        sock.sendall(head(50_000_000) + b" " * 1000)
        received = b""
        while chunk := sock.recv(65536):  # the 429, then at once the end of the server's stream
            received += chunk
        assert received.startswith(b"HTTP/1.1 429"), received[:200]
        sock.sendall(b" " * 1000)  # still read (and thrown away) while the client keeps sending
        time.sleep(4.5)  # idle past the 3 s lingering timeout: the server closes
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(50):
                sock.sendall(b" " * 65536)
                time.sleep(0.02)
    assert_still_serving(server)
