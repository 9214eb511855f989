"""What a client may hold open: header and idle deadlines and a connection cap, for REST (uvicorn) and gRPC.

A client that opens connections and sends nothing, or trickles its request
head a byte at a time, would otherwise keep a socket, and a file descriptor,
forever: enough of them exhaust the process' file limit and the port stops
answering. Every connection therefore has a deadline for its request head
(`header_timeout_seconds`, from the connection or from the first byte of the
next request on a kept-alive one), idle kept-alive connections are closed
after `idle_timeout_seconds`, and connections beyond `max_connections` are
answered 503 and closed at once. The file limit is raised to its hard limit
at start-up, and the caps must fit below it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource

from uvicorn.protocols.http.h11_impl import H11Protocol

#: File descriptors kept for everything but client sockets (model files, logs, gRPC's own).
RESERVED_FILES = 256


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """Per-server (REST, gRPC) connection bounds; the server's flags of the same names."""

    header_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 60.0
    max_connections: int = 1000

    def check_file_limit(self, servers: int) -> None:
        """Raises the soft file limit to the hard one; ValueError when `servers` x max_connections cannot fit."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        needed = servers * self.max_connections + RESERVED_FILES
        if hard != resource.RLIM_INFINITY and needed > hard:
            raise ValueError(
                f"--max_connections {self.max_connections} per server needs {needed} file descriptors, the "
                f"process may open {hard} (ulimit -n): lower --max_connections or raise the limit."
            )

    def grpc_options(self) -> list[tuple[str, int]]:
        """gRPC core channel arguments enforcing the same bounds on the gRPC port."""
        return [
            ("grpc.server_handshake_timeout_ms", int(self.header_timeout_seconds * 1000)),
            ("grpc.max_connection_idle_ms", int(self.idle_timeout_seconds * 1000)),
            ("grpc.max_allowed_incoming_connections", self.max_connections),
        ]


def _error_response(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def rest_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on every request head and a connection cap."""

    class BoundedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_deadline: asyncio.TimerHandle | None = None
            if len(self.connections) > limits.max_connections:
                transport.write(_error_response(
                    "503 Service Unavailable",
                    f"Too many connections: the server holds at most {limits.max_connections} (--max_connections).",
                ))
                transport.close()
                return
            self._arm_head_deadline()

        def data_received(self, data: bytes) -> None:
            if self._head_deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm_head_deadline()  # the first bytes of the next request on a kept-alive connection
            waiting_for = self.cycle
            super().data_received(data)
            if self.cycle is not waiting_for:  # h11 parsed a whole request head: a new cycle began
                self._cancel_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_deadline()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            self._head_deadline = self.loop.call_later(limits.header_timeout_seconds, self._head_timed_out)

        def _cancel_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_timed_out(self) -> None:
            self._head_deadline = None
            if not self.transport.is_closing():
                self.transport.write(_error_response(
                    "408 Request Timeout",
                    f"No complete request head within {limits.header_timeout_seconds:g} s (--header_timeout_seconds).",
                ))
                self.transport.close()

    return BoundedH11Protocol
