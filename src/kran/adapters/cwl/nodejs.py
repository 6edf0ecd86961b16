"""JavaScript expressions run in nodejs processes that cwl-utils keeps per thread and never
ends. In a long-lived server every run's step threads would leave theirs behind (3 pipes
each, until select() fails past 1024 descriptors): this engine records each process with
the thread that made it, and `reap()` ends those of threads that have exited."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from typing import Any

from cwl_utils.sandboxjs import NodeJSEngine, set_js_engine

_lock = threading.Lock()
_procs: list[tuple[threading.Thread, subprocess.Popen[str]]] = []


class ReapedNodeEngine(NodeJSEngine):
    def new_js_proc(self, *args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        proc = super().new_js_proc(*args, **kwargs)
        with _lock:
            _procs.append((threading.current_thread(), proc))
        return proc


def reap() -> int:
    """End the nodejs processes of exited threads; how many."""
    with _lock:
        dead = [p for t, p in _procs if not t.is_alive()]
        _procs[:] = [(t, p) for t, p in _procs if t.is_alive()]
    for p in dead:
        for stream in (p.stdin, p.stdout, p.stderr):
            with contextlib.suppress(OSError):
                stream.close() if stream is not None else None
        p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)
    return len(dead)


def install() -> None:
    set_js_engine(ReapedNodeEngine())
