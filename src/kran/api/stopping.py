"""uvicorn's server, ending the responses that never end by themselves when it stops."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn


class StoppingServer(uvicorn.Server):
    """Event streams, followed logs and the dashboard's live table stay open while their
    clients listen. A stop now ends them first (`on_stop`) and waits only for what else
    runs; uvicorn alone waited `timeout_graceful_shutdown` for them, then cancelled them,
    with an error in the log for each."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_stop()
        await super().shutdown(sockets)
