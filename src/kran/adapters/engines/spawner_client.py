"""The server's end of the fork server (spawner.py): started with the engine, and again if
it went away (or stopped answering). A wrapper it started is "running" until it reports
the wrapper's end (it reaps them all), so an attempt is never taken for ended before its
exit code is written. A wrapper is its pid and start time (a pid may be used again)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPAWNER = Path(__file__).with_name("spawner.py")
ANSWER_S = 30.0


class _Generation:
    """One spawner process, its socket and what it said."""

    def __init__(self, on_exit: Callable[[], None] | None, env: dict[str, str]) -> None:
        self.on_exit = on_exit
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SPAWNER)],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,
                env=env,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.alive = True
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.answers: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self.owned: set[tuple[int, str]] = set()
        self.ended: dict[tuple[int, str], tuple[int, str | None]] = {}  # wait status, why setup failed
        self.next_id = 0
        threading.Thread(target=self._read, name="kran-spawner", daemon=True).start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    self._take(json.loads(line))
        except Exception:  # noqa: BLE001 - gone or garbled: this one is done either way
            pass
        finally:
            with self.lock:
                self.alive = False
                waiting = list(self.answers.values())
                self.answers.clear()
            for event, _ in waiting:
                event.set()
            self.stop()
        if self.on_exit:
            self.on_exit()  # what it started is now read from the exit code files

    def stop(self) -> None:
        with self.lock:
            self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        except OSError:
            pass
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _take(self, msg: dict[str, Any]) -> None:
        if "ended" in msg:
            with self.lock:
                why = msg.get("error")
                self.ended[(int(msg["ended"]), str(msg["start"]))] = (int(msg["status"]), str(why) if why else None)
            if self.on_exit:
                self.on_exit()
            return
        with self.lock:
            if "pid" in msg:
                self.owned.add((int(msg["pid"]), str(msg["start"])))
            waiting = self.answers.pop(int(msg["id"]), None)
        if waiting:
            waiting[1].append(msg)
            waiting[0].set()

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        event, answer = threading.Event(), list[dict[str, Any]]()
        with self.lock:
            if not self.alive:
                raise OSError("the fork server went away")
            self.next_id += 1
            rid = self.next_id
            self.answers[rid] = (event, answer)
        with self.send_lock:
            self.sock.sendall(json.dumps({**request, "id": rid}).encode() + b"\n")
        if not event.wait(ANSWER_S) or not answer:
            with self.lock:
                self.answers.pop(rid, None)
            self.stop()  # hung: the next launch starts another (what it started runs on)
            raise OSError("the fork server did not answer")
        return dict(answer[0])


class Spawner:
    def __init__(self, on_exit: Callable[[], None] | None = None, env: dict[str, str] | None = None) -> None:
        self._on_exit = on_exit
        self._env = env or {}
        self._lock = threading.Lock()
        self._gen: _Generation | None = None
        self._old: list[_Generation] = []

    def _live(self) -> _Generation:
        with self._lock:
            if self._gen is None or not self._gen.alive:
                if self._gen is not None:
                    self._old = [g for g in self._old if g.ended] + [self._gen]
                self._gen = _Generation(self._on_exit, self._env)
            return self._gen

    def start(self) -> None:
        """Start it now (the first launch would otherwise wait for it)."""
        self._live()

    def ready(self) -> bool:
        """Running and answering no other request: a launch now gets its answer at once
        (not after starting another fork server, nor behind one that may hang)."""
        with self._lock:
            gen = self._gen
        if gen is None:
            return False
        with gen.lock:
            return gen.alive and not gen.answers

    def spawn(self, request: dict[str, Any]) -> tuple[int, str]:
        """Start a wrapper: its pid and start time. OSError when it could not be started."""
        answer = self._live().ask(request)
        if "pid" not in answer:
            raise OSError(str(answer.get("error", "no pid")))
        return int(answer["pid"]), str(answer["start"])

    def _gens(self) -> list[_Generation]:
        with self._lock:
            return [g for g in (self._gen, *self._old) if g is not None]

    def outcome(self, pid: int, start: str) -> tuple[str, int | None, str | None]:
        """("ended", wait status, why its set-up failed or None), ("running", None, None)
        while a live fork server of ours has it, or ("unknown", None, None): not started by
        this server, or its fork server went away (then the wrapper's exit code file tells)."""
        for g in self._gens():
            with g.lock:
                if (pid, start) in g.ended:
                    return "ended", *g.ended[(pid, start)]
                if (pid, start) in g.owned and g.alive:
                    return "running", None, None
        return "unknown", None, None

    def forget(self, pid: int, start: str) -> None:
        for g in self._gens():
            with g.lock:
                g.ended.pop((pid, start), None)
                g.owned.discard((pid, start))

    def close(self) -> None:
        """End the fork server (the wrappers it started run on)."""
        with self._lock:
            gen, self._gen = self._gen, None
        if gen is not None:
            gen.stop()

    def pid(self) -> int | None:
        """The live fork server's pid."""
        with self._lock:
            return self._gen.proc.pid if self._gen is not None and self._gen.alive else None
