"""The HTTPS port answers plain HTTP with a 400 that says to use https:// (as nginx's "The
plain HTTP request was sent to HTTPS port"), instead of closing the connection unanswered.

Connections are accepted unencrypted; the first byte is peeked at (MSG_PEEK, on a
duplicate of the socket: nothing is read) once it arrives. A TLS handshake (0x16) goes on
as TLS (`loop.start_tls`) to uvicorn's own HTTP protocol; anything else gets the 400.
The duplicate is polled, never handed to the event loop: uvloop (libuv's epoll) loses
track of the connection when a duplicate of its fd is watched and closed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Any, cast

TLS_HANDSHAKE = 0x16  # the first byte of every TLS record that opens a connection
FIRST_BYTE_TIMEOUT_S = 30.0  # a connection that sends nothing is closed
POLL_S = (0.001, 0.05)  # the first byte is looked for after 1 ms, then less often, up to every 50 ms
HANDSHAKE_TIMEOUT_S = 30.0
REQUEST_HEAD_MAX = 16 << 10  # the plain request read before the 400 (so closing does not reset it)
_handshakes: set[asyncio.Task[None]] = set()


def https_only(inner: type[asyncio.Protocol], context: ssl.SSLContext) -> type[asyncio.Protocol]:
    """A uvicorn protocol class: TLS connections are `inner`'s, plain HTTP gets the 400."""

    class HttpsOnly(_HttpsOnly):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(lambda: inner(**kwargs), context, kwargs.get("_loop"))

    return HttpsOnly


class _HttpsOnly(asyncio.Protocol):
    def __init__(self, make_inner: Any, context: ssl.SSLContext, loop: asyncio.AbstractEventLoop | None) -> None:
        self.make_inner = make_inner
        self.context = context
        self.loop = loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.peek: socket.socket | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.poll: asyncio.Handle | None = None
        self.deadline = 0.0
        self.every = POLL_S[0]
        self.head = b""
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.pause_reading()  # the first byte stays in the socket for TLS
        fd = transport.get_extra_info("socket").fileno()
        self.peek = socket.socket(fileno=os.dup(fd))  # the transport owns fd: watch a duplicate
        self.peek.setblocking(False)
        self.deadline = self.loop.time() + FIRST_BYTE_TIMEOUT_S
        self.poll = self.loop.call_soon(self._first_byte)  # a client's first bytes come with its connect

    def _stop_peeking(self) -> None:
        if self.peek is not None:
            self.peek.close()
            self.peek = None
        if self.poll is not None:
            self.poll.cancel()
            self.poll = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _first_byte(self) -> None:
        assert self.peek is not None and self.transport is not None
        try:
            first = self.peek.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            if self.loop.time() > self.deadline:
                self._close()
            else:
                self.poll = self.loop.call_later(self.every, self._first_byte)
                self.every = min(self.every * 2, POLL_S[1])
            return
        except OSError:
            first = b""
        self._stop_peeking()
        if not first:
            self._close()
        elif first[0] == TLS_HANDSHAKE:
            task = self.loop.create_task(self._start_tls(self.transport))
            _handshakes.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(_handshakes.discard)
        else:  # plain text: read the request's head, then answer
            self.timer = self.loop.call_later(FIRST_BYTE_TIMEOUT_S, self._close)
            self.transport.resume_reading()

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        relay = _Relay(self.make_inner())
        try:
            tls = await self.loop.start_tls(
                transport, relay, self.context, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
            )
        except (TimeoutError, OSError, ssl.SSLError):
            transport.close()
            return
        if tls is not None:  # None: the connection closed during the handshake
            relay.attach(tls)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # the rest of the request, read so that closing does not reset the connection
        self.head += data
        if b"\r\n\r\n" in self.head or b"\n\n" in self.head or len(self.head) > REQUEST_HEAD_MAX:
            self._answer()

    def eof_received(self) -> bool | None:
        if not self.answered:
            self._answer()
        return None  # close

    def _answer(self) -> None:
        assert self.transport is not None
        self.answered = True
        host, port = self.transport.get_extra_info("sockname")[:2]
        host = f"[{host}]" if ":" in host else host
        body = (
            f"this port speaks HTTPS; use https://{host}:{port}/\n(the plain HTTP request was sent to an HTTPS port)\n"
        ).encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then EOF; we drain its rest
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(5.0, self._close)

    def _close(self) -> None:
        self._stop_peeking()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_peeking()


class _Relay(asyncio.Protocol):
    """The TLS layer's protocol until uvicorn's has its transport: the request can come in
    the same read as the end of the handshake, before `start_tls` returns the transport."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner
        self.early: list[bytes] = []
        self.eof = False

    def attach(self, tls: asyncio.Transport) -> None:
        self.inner.connection_made(tls)
        tls.set_protocol(self.inner)
        for data in self.early:
            self.inner.data_received(data)
        if self.eof and not self.inner.eof_received():
            tls.close()

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return True  # kept open until attached: uvicorn's protocol decides
