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

A request body must arrive in time too, as Apache's `mod_reqtimeout`
bounds it by default (`body=20,MinRate=500`): `body_timeout_seconds` from
the end of its head, extended by a second per `body_min_rate` bytes
received; a body still arriving then is answered 408 and the connection
closed.

An error answered before the body has arrived (a body over
`--max_request_bytes`, say) is followed by a lingering close, as nginx's
`lingering_close`: the answer is sent, the server's side of the connection
shut for writing, and what the client still sends is read and thrown away
until it closes, for at most `lingering_time_seconds` in all,
`lingering_timeout_seconds` between reads and `lingering_max_bytes`; only
then is the socket closed. Closing at once would reset the connection while
the client is still sending, and clients that send the whole body before
they read (urllib, requests, curl, browsers) would see the reset, not the
answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: File descriptors kept for everything but client sockets (model files, logs, gRPC's own).
RESERVED_FILES = 256


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """Per-server (REST, gRPC) connection bounds; the server's flags of the same names."""

    header_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 60.0
    max_connections: int = 1000
    body_timeout_seconds: float = 20.0
    body_min_rate: int = 500
    lingering_time_seconds: float = 30.0
    lingering_timeout_seconds: float = 5.0
    lingering_max_bytes: int = 64 << 20

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


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: a close after a complete answer, while the request body is
    still arriving (uvicorn closes at once when the client asked for `Connection: close`), starts the protocol's
    lingering close instead. Everything else goes to the transport."""

    def __init__(self, transport: asyncio.Transport, protocol):
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def close(self) -> None:
        if not self._protocol._start_lingering():
            self._transport.close()


def rest_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with deadlines on every request head and body, a connection cap and lingering close."""

    class BoundedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._socket = transport  # closes that must not linger go here
            super().connection_made(_LingeringTransport(transport, self))
            self._head_deadline: asyncio.TimerHandle | None = None
            self._body_deadline: asyncio.TimerHandle | None = None
            self._body_cycle = None  # the request whose body the deadline below times
            self._body_started = self._body_bytes = 0
            self._lingering: dict | None = None  # {"until", "bytes", "timer"} once lingering
            if len(self.connections) > limits.max_connections:
                transport.write(_error_response(
                    "503 Service Unavailable",
                    f"Too many connections: the server holds at most {limits.max_connections} (--max_connections).",
                ))
                transport.close()
                return
            self._arm_head_deadline()

        def data_received(self, data: bytes) -> None:
            if self._lingering is not None:
                self._linger(len(data))
                return
            if self._head_deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm_head_deadline()  # the first bytes of the next request on a kept-alive connection
            waiting_for = self.cycle
            super().data_received(data)
            if self.cycle is not waiting_for:  # h11 parsed a whole request head: a new cycle began
                self._cancel_head_deadline()
            if self.cycle is not self._body_cycle:  # a new request (pipelined ones begin between packets too)
                # Its body's deadline runs from here; the bytes of the packet that ended its head are not counted.
                self._body_cycle, self._body_started, self._body_bytes = self.cycle, self.loop.time(), -len(data)
            if self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete:
                self._body_bytes += len(data)
                self._arm_body_deadline()
            else:
                self._cancel(self._body_deadline)

        def on_response_complete(self) -> None:
            self._cancel(self._body_deadline)
            if self._lingering is not None or self._start_lingering():
                self.server_state.total_requests += 1
                return
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_deadline()
            self._cancel(self._body_deadline)
            if self._lingering is not None:
                self._cancel(self._lingering["timer"])
            super().connection_lost(exc)

        # --- the request body's deadline (mod_reqtimeout's body=20,MinRate=500) -----------------

        def _arm_body_deadline(self) -> None:
            self._cancel(self._body_deadline)
            extension = self._body_bytes / limits.body_min_rate if limits.body_min_rate else 0.0
            deadline = self._body_started + limits.body_timeout_seconds + extension
            self._body_deadline = self.loop.call_at(deadline, self._body_timed_out)

        def _body_timed_out(self) -> None:
            self._body_deadline = None
            if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
                return
            if not self.cycle.response_started:
                self.transport.write(_error_response(
                    "408 Request Timeout",
                    f"The request body did not arrive within {limits.body_timeout_seconds:g} s plus 1 s per "
                    f"{limits.body_min_rate} bytes received (--body_timeout_seconds, --body_min_rate).",
                ))
            self._socket.close()

        # --- lingering close (nginx's lingering_close) ----------------------------------------

        def _start_lingering(self) -> bool:
            """Lingers (and says so) when a whole answer has gone out while the request body is still arriving."""
            if (
                self._lingering is not None
                or self.cycle is None
                or not self.cycle.response_complete
                or self.conn.their_state is not h11.SEND_BODY
                or self._socket.is_closing()
            ):
                return False
            self._cancel(self._body_deadline)
            self._cancel_head_deadline()
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            self._lingering = {"until": self.loop.time() + limits.lingering_time_seconds, "bytes": 0, "timer": None}
            if self._socket.can_write_eof():
                self._socket.write_eof()  # the answer is complete: the client reads it, then an end of stream
            self._linger(0)
            return True

        def _linger(self, received: int) -> None:
            """Throws away `received` bytes; closes once a bound is reached, else waits for more."""
            state = self._lingering
            state["bytes"] += received
            self._cancel(state["timer"])
            now = self.loop.time()
            if state["bytes"] > limits.lingering_max_bytes or now >= state["until"]:
                self._socket.close()
                return
            wake = min(state["until"], now + limits.lingering_timeout_seconds)
            state["timer"] = self.loop.call_at(wake, self._socket.close)

        def eof_received(self) -> bool | None:
            if self._lingering is not None:  # the client is done sending: close now
                self._socket.close()
                return None
            return super().eof_received()

        @staticmethod
        def _cancel(timer: asyncio.TimerHandle | None) -> None:
            if timer is not None:
                timer.cancel()

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
                self._socket.close()

    return BoundedH11Protocol
