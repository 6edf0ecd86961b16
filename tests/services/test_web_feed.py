"""The dashboard's live feed (one reader of the events table for every browser) and the
per-attempt usage sampler, with in-memory stand-ins for the store and the cgroups."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from kran.adapters.usage_series import SeriesFiles
from kran.domain.auth import Principal, Role
from kran.domain.records import ActiveAttempt, EventRecord
from kran.domain.states import JobState
from kran.services.live import LiveFeed
from kran.services.usage_sampler import UsageSampler, step_for


class Events:
    def __init__(self) -> None:
        self.rows: list[tuple[EventRecord, str, str | None]] = []
        self.reads = 0
        self.lock = threading.Lock()

    def add(self, job_id: int, owner: str, to: str, by: str | None = None) -> None:
        with self.lock:
            n = len(self.rows) + 1
            self.rows.append((EventRecord(n, job_id, 1, None, to, None, float(n)), owner, by))

    def last_event_id(self) -> int:
        return len(self.rows)

    def events_with_owners(self, after_id: int, limit: int) -> list[tuple[EventRecord, str, str | None]]:
        with self.lock:
            self.reads += 1
            return [r for r in self.rows if r[0].id > after_id][:limit]


async def _drain(queue: asyncio.Queue[EventRecord | None], n: int) -> list[EventRecord | None]:
    return [await asyncio.wait_for(queue.get(), 5) for _ in range(n)]


def test_one_reader_fans_out_what_each_may_see() -> None:
    async def run() -> None:
        events = Events()
        feed = LiveFeed(events, interval_s=0.02)
        alice = feed.subscribe(Principal("alice", Role.USER))
        alice2 = feed.subscribe(Principal("alice", Role.USER))
        admin = feed.subscribe(Principal("root", Role.ADMIN))
        svc = feed.subscribe(Principal("portal", Role.SERVICE))
        bobs = [feed.subscribe(Principal("bob", Role.USER)) for _ in range(40)]
        events.add(1, "alice", "running")
        events.add(2, "bob", "running")
        events.add(3, "carol", "running", by="portal")
        got = await _drain(alice.queue, 1)
        assert [e.job_id for e in got if e] == [1]
        assert [e.job_id for e in await _drain(alice2.queue, 1) if e] == [1]
        assert [e.job_id for e in await _drain(admin.queue, 3) if e] == [1, 2, 3]
        assert [e.job_id for e in await _drain(svc.queue, 1) if e] == [3]  # a service sees what it submitted
        for b in bobs:
            assert [e.job_id for e in await _drain(b.queue, 1) if e] == [2]
        await asyncio.sleep(0.2)
        assert alice.queue.empty() and svc.queue.empty()
        # 44 subscribers, one reader: reads grow with time, not with subscribers
        reads = events.reads
        await asyncio.sleep(0.2)
        assert events.reads - reads <= 15
        for sub in [alice, alice2, admin, svc, *bobs]:
            feed.unsubscribe(sub)
        await asyncio.sleep(0.1)
        idle = events.reads
        await asyncio.sleep(0.2)
        assert events.reads == idle  # nobody listens: nothing reads

    asyncio.run(run())


def test_a_subscriber_far_behind_is_told_to_reload() -> None:
    async def run() -> None:
        events = Events()
        feed = LiveFeed(events, interval_s=0.02)
        sub = feed.subscribe(Principal("root", Role.ADMIN))
        for i in range(2500):
            events.add(i + 1, "x", "queued")
        await asyncio.sleep(0.5)
        items = []
        while not sub.queue.empty():
            items.append(sub.queue.get_nowait())
        assert items[-1] is None and sub.behind
        feed.unsubscribe(sub)

    asyncio.run(run())


def test_a_follower_far_behind_catches_up_from_the_store_missing_none() -> None:
    """The queue's overflow dropped its oldest event, never sent: the catch-up started
    after the newest sent, so that one change was missed."""

    async def run() -> None:
        events = Events()
        feed = LiveFeed(events, interval_s=0.01)
        admin = Principal("root", Role.ADMIN)

        def backlog(last: int) -> list[EventRecord]:
            return [e for e, _, _ in events.events_with_owners(last, 500)]

        stream = feed.follow(admin, 0, backlog, keepalive_s=10)
        first = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.05)
        for i in range(2500):  # more than a queue holds, while nobody reads it
            events.add(i + 1, "x", "queued")
        await asyncio.sleep(0.5)
        got = [(await first).id]  # type: ignore[union-attr]
        while len(got) < 2500:
            e = await asyncio.wait_for(anext(stream), 5)
            if isinstance(e, EventRecord):
                got.append(e.id)
        assert got == list(range(1, 2501))
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(run())


def test_a_follow_from_past_the_last_event_still_goes_live() -> None:
    """An `after` beyond the stored events (a client's value, a Last-Event-ID from before a
    restore) dropped every live event as already seen, on the API's stream as on the pages'."""

    async def run() -> None:
        events = Events()
        events.add(1, "x", "queued")
        feed = LiveFeed(events, interval_s=0.01)

        def backlog(last: int) -> list[EventRecord]:
            return [e for e, _, _ in events.events_with_owners(last, 500)]

        stream = feed.follow(Principal("root", Role.ADMIN), 10**12, backlog, keepalive_s=10)
        first = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.05)
        events.add(2, "x", "running")
        got = await asyncio.wait_for(first, 5)
        assert isinstance(got, EventRecord) and got.id == 2
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(run())


class Cgroups:
    def __init__(self) -> None:
        self.cpu = 0.0

    def relative(self, instance: str, job_id: int, attempt: int) -> str:
        return f"kran/{instance}/{job_id}.{attempt}"

    def sample(self, rel: str) -> tuple[float, int] | None:
        return (self.cpu, 64 << 20) if rel.endswith("7.1") else None


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


class Running:
    def active_attempts(self) -> list[ActiveAttempt]:
        return [
            ActiveAttempt(7, 1, JobState.RUNNING, "h", 990.0, 1000.0, None, None, 0),
            ActiveAttempt(8, 1, JobState.STARTING, None, 990.0, None, None, None, 0),
        ]


def test_samples_become_cpus_and_memory_over_time(tmp_path: Path) -> None:
    cg, clock = Cgroups(), Clock()
    sampler = UsageSampler(Running(), cg, SeriesFiles(tmp_path / "series"), "inst", clock, 86400)
    for _ in range(4):
        clock.t += 5
        cg.cpu += 10  # two cpus busy
        sampler.tick()
    clock.t += 1  # too soon: no sample
    sampler.tick()
    points = sampler.points(7, 1)
    assert [p["cpus"] for p in points] == [2.0, 2.0, 2.0]
    assert all(p["mem_mb"] == 64.0 for p in points)
    assert sampler.points(8, 1) == []  # not running yet
    assert (tmp_path / "series").stat().st_mode & 0o777 == 0o700


def test_older_attempts_are_sampled_less_often() -> None:
    assert step_for(30) == 5 and step_for(3600) == 60 and step_for(86400) == 600
    week = 600 / 5 + (7200 - 600) / 60 + (7 * 86400 - 7200) / 600
    assert week < 1300


def test_a_planted_link_is_not_followed(tmp_path: Path) -> None:
    series = SeriesFiles(tmp_path / "series")
    target = tmp_path / "victim"
    target.write_text("keep\n")
    (tmp_path / "series" / "5.1.csv").symlink_to(target)
    try:
        series.append(5, 1, 1.0, 1.0, 1)
    except OSError:
        pass
    assert target.read_text() == "keep\n"
    assert series.read(5, 1) == []


def test_follow_replays_the_store_then_goes_live_once_each_in_order() -> None:
    async def run() -> None:
        events = Events()
        for i in range(1200):
            events.add(i + 1, "alice" if i % 2 else "bob", "queued")
        feed = LiveFeed(events, interval_s=0.01)
        alice = Principal("alice", Role.USER)

        def backlog(last: int) -> list[EventRecord]:
            return [e for e, owner, _ in events.events_with_owners(last, 10**9) if owner == "alice"][:500]

        got: list[int] = []

        async def reader() -> None:
            async for e in feed.follow(alice, 100, backlog, keepalive_s=0.05):
                if isinstance(e, EventRecord):
                    got.append(e.id)
                if len(got) >= 1100 // 2 + 300:
                    return

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        for i in range(1200, 2400):  # live while it replays; 2,000+ behind at times: caught up from the store
            events.add(i + 1, "alice" if i % 2 else "bob", "running")
        await asyncio.wait_for(task, 10)
        expected = [n for n in range(101, 2401) if n % 2 == 0][: len(got)]
        assert got == expected

    asyncio.run(run())


def test_a_commit_of_the_server_is_read_at_once_not_at_the_next_interval(tmp_path: Path) -> None:
    """bootstrap wires every commit of the store to the feed: with an interval of a minute,
    a job's events still reach a subscriber as they are stored."""
    from kran.adapters.store.sql_store import SqlStore
    from kran.bootstrap import _live_feed
    from kran.domain.records import Submission
    from tests.services.fakes import spec

    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    feed = _live_feed(store)
    feed.interval_s = 60.0

    async def run() -> None:
        sub = feed.subscribe(Principal("alice", Role.USER))
        await asyncio.sleep(0.1)  # the reader waits out its interval
        (ids,) = store.insert_job_groups([Submission([spec()], "alice")], 1.0, 100)
        assert isinstance(ids, list)
        (event,) = await _drain(sub.queue, 1)
        assert event is not None and event.job_id == ids[0] and event.to_state == "queued"
        feed.unsubscribe(sub)
        feed.poke()

    try:
        asyncio.run(run())
    finally:
        store.close()
