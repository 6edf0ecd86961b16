"""A TCP proxy to a test server that can lose things on the way, as a network does."""

from __future__ import annotations

import socket
import threading


class Relay:
    """Passes connections to 127.0.0.1:`port`, counting what clients send (`sent`).
    `cut`: a connection is dropped once that many bytes of it went up (an upload cut off).
    `drop_first_answer`: the first connection's request goes through whole, but its answer
    is not passed on (an answer lost after the server acted); `dropped` counts it."""

    def __init__(self, port: int, cut: int | None = None, drop_first_answer: bool = False) -> None:
        self.target, self.cut, self.drop_first_answer = port, cut, drop_first_answer
        self.sent = self.dropped = self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        drop = self.drop_first_answer and self.connections == 0
        self.connections += 1
        self.dropped += drop

        def forward(src: socket.socket, dst: socket.socket, up: bool) -> None:
            seen = 0
            try:
                while data := src.recv(1 << 16):
                    if up:
                        seen += len(data)
                        self.sent += len(data)
                        if self.cut is not None and seen > self.cut:
                            break
                    elif drop:  # the server answered: it has acted; the client hears nothing
                        break
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=forward, args=(client, upstream, True), daemon=True)
        t.start()
        forward(upstream, client, False)
        t.join(5)
        client.close()
        upstream.close()

    def stop(self) -> None:
        self.sock.close()
