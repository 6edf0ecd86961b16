"""How the Docker engine learns that containers ended, against the real daemon: from its
`die` events while they are followed (the server always follows them), with a listing of
the instance's containers as the safety net; from a listing at every check otherwise."""

from __future__ import annotations

import json
import subprocess
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


def test_while_ends_are_told_a_check_inspects_only_what_ended(
    told: tuple[DockerEngine, threading.Event],
    lists: list[float],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    test_image: str,
) -> None:
    monkeypatch.setattr(docker_engine, "LIST_EVERY_S", 600.0)  # no safety listing during the test
    eng, woken = told
    ref = _launch(eng, tmp_path, 1, "sleep 1.5; exit 3", test_image)
    started = time.monotonic()
    checks, seen = _poll_until_ended(eng, ref, limit_s=10)
    assert woken.is_set()  # the die event woke the monitor
    assert checks >= 20  # ~30 checks over the job's 1.5 s
    assert len(lists) == 1, (len(lists), checks)  # the first since the stream opened; before: one a check
    assert seen - started < 1.5 + 1.0  # seen from its die event (no listing came after the first)
    eng.collect(ref)
    assert (ref.attempt_dir / "exit_code").read_text().strip() == "3"


@pytest.fixture
def no_safety_listing(told: tuple[DockerEngine, threading.Event], monkeypatch: pytest.MonkeyPatch) -> DockerEngine:
    monkeypatch.setattr(docker_engine, "LIST_EVERY_S", 600.0)
    return told[0]


def test_a_reopened_event_stream_is_followed_by_a_listing(
    no_safety_listing: DockerEngine, lists: list[float], tmp_path: Path, test_image: str
) -> None:
    """An end while the stream was away was never told: the first check after it opened
    again lists (else it would wait for the next safety listing)."""
    eng = no_safety_listing
    assert eng._exits is not None
    ref = _launch(eng, tmp_path, 4, "sleep 60", test_image)
    eng.check([ref])
    eng.check([ref])
    assert len(lists) == 1
    opened = eng._exits.live_since()
    eng._exits._stream.close()  # the stream breaks (as when the daemon restarts); it opens again
    deadline = time.monotonic() + 10
    while eng._exits.live_since() in (None, opened):
        assert time.monotonic() < deadline, "the event stream did not open again"
        time.sleep(0.02)
    eng.check([ref])
    eng.check([ref])
    assert len(lists) == 2
    eng.kill(ref)


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
    _poll_until_ended(eng, ref, limit_s=0.5 + docker_engine.LIST_EVERY_S + 1.5)
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


def test_a_daemon_that_stops_answering_costs_one_inspect_a_check_and_no_end(
    told: tuple[DockerEngine, threading.Event],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    test_image: str,
) -> None:
    eng, _ = told
    refs = [_launch(eng, tmp_path, job, "true", test_image) for job in (5, 6, 7)]
    deadline = time.monotonic() + 20
    while any(
        c.status not in docker_engine.FINAL
        for c in eng.client.containers.list(all=True, filters={"label": f"kran.instance={eng.instance}"})
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    asked = []

    def hangs(self: ContainerCollection, cid: str) -> Any:
        asked.append(cid)
        raise ConnectionError("read timed out")  # as a hung daemon's (the SDK raises an OSError), after its timeout

    real = ContainerCollection.get
    monkeypatch.setattr(ContainerCollection, "get", hangs)
    assert eng.check(refs) == {}
    assert len(asked) == 1  # each would have waited its timeout: the rest at the next pass
    monkeypatch.setattr(ContainerCollection, "get", real)
    ends = eng.check(refs)
    assert sorted(ends) == [(5, 1), (6, 1), (7, 1)] and all(e.exit_code == 0 for e in ends.values())
    for ref in refs:
        eng.collect(ref)


def test_a_die_told_after_the_collect_is_not_kept(
    told: tuple[DockerEngine, threading.Event], tmp_path: Path, test_image: str
) -> None:
    """An end the listing saw first, its event arriving after the collect removed the
    container: the mark goes with the next listing (a server running for months would
    otherwise keep one for each)."""
    eng, _ = told
    ref = _launch(eng, tmp_path, 8, "true", test_image)
    _poll_until_ended(eng, ref)
    eng.collect(ref)
    assert ref.handle is not None
    eng._died_event({"id": docker_engine.HANDLES.object_id(ref.handle)})  # late
    other = _launch(eng, tmp_path, 9, "sleep 30", test_image)
    eng._listed_at = float("-inf")  # the next check lists
    assert eng.check([other]) == {}
    assert eng._died == set()
    eng.kill(other)


@pytest.fixture
def bad_stop_signal_image(test_image: str, tmp_path: Path) -> Iterator[str]:
    """The test image with STOPSIGNAL SIGFOO in its config (a registry may serve such an
    image; the daemon runs it; `docker build` would refuse the Dockerfile)."""
    tag = f"kran-test/bad-stop-signal:{uuid.uuid4().hex[:8]}"
    saved = tmp_path / "saved"
    saved.mkdir()
    subprocess.run(["docker", "save", "-o", str(tmp_path / "img.tar"), test_image], check=True)
    subprocess.run(["tar", "-xf", str(tmp_path / "img.tar"), "-C", str(saved)], check=True)
    manifest = json.loads((saved / "manifest.json").read_text())
    config_path = saved / manifest[0]["Config"]
    config = json.loads(config_path.read_text())
    config["config"]["StopSignal"] = "SIGFOO"
    config_path.write_text(json.dumps(config))
    manifest[0]["RepoTags"] = [tag]
    (saved / "manifest.json").write_text(json.dumps(manifest))
    (saved / "repositories").unlink(missing_ok=True)
    subprocess.run(["tar", "-cf", str(tmp_path / "bad.tar"), "-C", str(saved), "."], check=True)
    subprocess.run(["docker", "load", "-q", "-i", str(tmp_path / "bad.tar")], check=True, capture_output=True)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True)


def test_an_image_whose_stop_signal_the_daemon_refuses_is_still_killed(
    request: pytest.FixtureRequest, tmp_path: Path, bad_stop_signal_image: str
) -> None:
    """The kill sent the image's STOPSIGNAL itself: SIGFOO was refused (HTTP 400) at every
    try, and the job could not be killed (a reviewer's finding). The daemon then refuses
    every signal but SIGKILL for that container: it gets SIGKILL at once."""
    eng = _engine(request, lambda: None)
    ref = _launch(eng, tmp_path, 11, "sleep 1000", bad_stop_signal_image)
    time.sleep(0.3)
    eng.kill(ref)
    _poll_until_ended(eng, ref, limit_s=15)
