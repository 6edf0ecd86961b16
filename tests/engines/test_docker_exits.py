"""How the Docker engine learns that containers ended, against the real daemon: from its
`die` events while they are followed (the server always follows them), with a listing of
the instance's containers as the safety net; from a listing at every check otherwise."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import ContainerCollection

from kran.adapters.engines import docker_engine
from kran.adapters.engines.docker_engine import DockerEngine
from kran.ports import AttemptRef
from tests.engines.test_contract import shell_spec


@pytest.fixture
def lists(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each listing of containers was asked for (the real SDK call, counted)."""
    asked: list[float] = []
    real = ContainerCollection.list

    def counted(self: ContainerCollection, *a: Any, **kw: Any) -> Any:
        asked.append(time.monotonic())
        return real(self, *a, **kw)

    monkeypatch.setattr(ContainerCollection, "list", counted)
    return asked


def _engine(request: pytest.FixtureRequest, on_exit: Any) -> DockerEngine:
    request.getfixturevalue("test_image")
    eng = DockerEngine(uuid.uuid4().hex, kill_grace_s=1, on_exit=on_exit)

    def clean() -> None:
        for ref in eng.discover():
            eng.kill(ref)
            eng.collect(ref)
        eng.close()

    request.addfinalizer(clean)
    return eng


@pytest.fixture
def told(request: pytest.FixtureRequest) -> Iterator[tuple[DockerEngine, threading.Event]]:
    woken = threading.Event()
    eng = _engine(request, woken.set)
    deadline = time.monotonic() + 10
    while eng._exits is not None and eng._exits.live_since() is None:  # the stream is open: ends are told
        assert time.monotonic() < deadline, "the daemon's event stream did not open"
        time.sleep(0.01)
    yield eng, woken


def _launch(eng: DockerEngine, tmp_path: Path, job: int, script: str, image: str) -> AttemptRef:
    spec = shell_spec(tmp_path, job, script, image)
    return AttemptRef(job, 1, eng.launch(spec), spec.attempt_dir)


def _poll_until_ended(
    eng: DockerEngine, ref: AttemptRef, every_s: float = 0.05, limit_s: float = 30
) -> tuple[int, float]:
    """Check as the monitor does (every 50 ms, its default): (checks made, when the end was seen)."""
    checks = 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        checks += 1
        if (ref.job_id, 1) in eng.check([ref]):
            return checks, time.monotonic()
        time.sleep(every_s)
    raise AssertionError("the end was never seen")


def test_while_ends_are_told_a_check_lists_containers_only_as_a_safety_net(
    told: tuple[DockerEngine, threading.Event], lists: list[float], tmp_path: Path, test_image: str
) -> None:
    eng, woken = told
    ref = _launch(eng, tmp_path, 1, "sleep 2.5; exit 3", test_image)
    started = time.monotonic()
    checks, seen = _poll_until_ended(eng, ref)
    assert woken.is_set()  # the die event woke the monitor
    assert checks >= 30  # ~50 checks over the job's 2.5 s
    # one listing a second at most (each was one request for every container), where every
    # check listed before
    assert 1 <= len(lists) <= (seen - started) / docker_engine.LIST_EVERY_S + 2, (len(lists), checks)
    eng.collect(ref)
    assert (ref.attempt_dir / "exit_code").read_text().strip() == "3"


def test_an_end_the_event_stream_missed_is_found_by_the_next_listing(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, tmp_path: Path, test_image: str
) -> None:
    monkeypatch.setattr(DockerEngine, "_died_event", lambda self, event: None)  # every `die` event lost
    eng = _engine(request, lambda: None)
    deadline = time.monotonic() + 10
    while eng._exits is not None and eng._exits.live_since() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ref = _launch(eng, tmp_path, 2, "sleep 0.5", test_image)
    time.sleep(0.1)
    eng.check([ref])  # running: listed (the first listing since the stream opened)
    # found by a listing, at the latest LIST_EVERY_S after the last (the job ran 0.5 s)
    _poll_until_ended(eng, ref, limit_s=0.5 + docker_engine.LIST_EVERY_S + 2)
    eng.collect(ref)
    assert (ref.attempt_dir / "exit_code").read_text().strip() == "0"


def test_without_the_event_stream_every_check_lists(
    lists: list[float], request: pytest.FixtureRequest, tmp_path: Path, test_image: str
) -> None:
    eng = _engine(request, None)  # nothing to wake: no events followed
    ref = _launch(eng, tmp_path, 3, "sleep 0.5", test_image)
    checks, _ = _poll_until_ended(eng, ref)
    assert len(lists) == checks
    eng.collect(ref)
