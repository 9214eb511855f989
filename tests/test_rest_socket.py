"""The REST port's socket, as uvicorn serves it: its connections send each answer at once."""

import asyncio
import socket

from keras_vit.serving.server import bind_socket


def test_the_rest_sockets_connections_have_nagles_algorithm_off():
    """asyncio sets TCP_NODELAY only on connections of a socket that says it is TCP. Without it, the second write of
    every answer on a kept-alive connection (uvicorn writes the head, then the body) waited for the client's delayed
    ACK: 40 ms a request."""
    listening = bind_socket("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        accepted = loop.create_future()

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await loop.create_server(Protocol, sock=listening)
        _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) == 1
