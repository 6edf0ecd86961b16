"""One scheduler pass: place queued jobs and hand their launches to the engine."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

from kran.domain.fairshare import DEFAULT_ACCOUNT
from kran.domain.images import canonical
from kran.domain.limits import Scope
from kran.domain.placement import Assignment, Candidate, has_room, held_back, place_jobs
from kran.domain.records import QueuedRow, StartedAttempt
from kran.errors import EngineError, EngineUnavailable, FetchError
from kran.ports import Apps, Clock, Engine, Store
from kran.services.disk import DiskWatch
from kran.services.fairness import Fairness, PassLimits
from kran.services.nodes import NodeDirectory
from kran.services.scheduler.preempt import Preemptor
from kran.services.scheduler.staging import Stager
from kran.services.scheduler.state import Launched, LaunchFailed, Outbox, SchedulerState
from kran.services.wakeups import Wakeups

log = logging.getLogger("kran.dispatch")
PAGE = 128
MAX_READ = 10  # windows of queued jobs a pass may read past held ones
INLINE_MAX = 2  # quick launches a pass makes itself (more: in parallel in the pool)
HOLD_TRIES = 6  # launches of one attempt the engine did not take (2, 4, ... 30 s apart) before it fails


@dataclass(frozen=True)
class DispatchConfig:
    window: int = 1000  # queued jobs a pass looks at
    reserve_after_s: float = 600.0  # a job waiting this long gets room kept for it
    pack: bool = False  # fill nodes one by one instead of spreading


class Dispatcher:
    def __init__(
        self,
        store: Store,
        nodes: NodeDirectory,
        apps: Apps,
        engine: Engine,
        stager: Stager,
        disk: DiskWatch,
        clock: Clock,
        state: SchedulerState,
        outbox: Outbox,
        wakeups: Wakeups,
        pool: Executor,
        cfg: DispatchConfig,
        fairness: Fairness,
        make_tasks: Callable[[float], int] = lambda now: 0,
        preemptor: Preemptor | None = None,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.apps = apps
        self.engine = engine
        self.stager = stager
        self.disk = disk
        self.clock = clock
        self.state = state
        self.outbox = outbox
        self.wakeups = wakeups
        self.pool = pool
        self.cfg = cfg
        self.fairness = fairness
        self.make_tasks = make_tasks  # job arrays: tasks that may start become jobs first
        self.preemptor = preemptor

    def tick(self) -> int:
        """Start as many queued jobs as fit; returns how many launches were handed over.

        The queue is read page by page (services.fairness: in fair-share order, each
        association's queue from its head), and reading stops once the nodes are full, so a
        pass costs what it starts, not the length of the queue. Running limits hold jobs
        back as placement budgets.
        """
        if self.disk.full():  # queued jobs say so (queries.get_job); space returning resumes
            return 0
        now = self.clock.now()
        self.make_tasks(now)
        if self.state.held:
            self._release_held(now)
        nodes = self.nodes.with_load()
        assignments: list[Assignment] = []
        reserved_for = None
        held: set[str] | None = None  # app volumes in use, read once a candidate needs one
        preempting = self.preemptor is not None and self.preemptor.on
        if not any(has_room(n) for n in nodes) and not preempting:  # (full: what may be preempted is looked at)
            return 0
        window = self.cfg.window
        # jobs of a kind the engine cannot run now (its daemon down) wait: queries.get_job says why
        down = {image: self.engine.unavailable(image) is not None for image in (True, False)}
        known = self.fairness.standing(now) if self.fairness.needs_standing() else None
        limits = self.fairness.pass_limits(known)
        standing = known if self.fairness.enabled else None  # (fair share off: the queue by priority)
        skip: set[int] = set()  # associations whose every job a running-jobs limit holds
        queue = self.fairness.queue(standing, skip)
        budgets = limits.budgets if limits else None
        taken = read = 0
        unplaced: list[tuple[Candidate, int, int | None]] = []  # for preemption: what did not start, in order
        # the window counts jobs that could start; jobs a limit or a lock holds are passed
        # over (up to MAX_READ pages a pass), so they cannot keep others from being looked at
        while taken < window and read < window * MAX_READ:
            size = min(PAGE, window - taken)
            rows, candidates = self._page(queue, size, now, down, limits, skip)
            read += len(rows)
            if held is None and any(c.exclusive or c.lock for c in candidates):
                held = set(self.apps.volume_users())
                held |= {singleton_lock(o, n) for o, n in self.fairness.accounts.active_names()}
            placement = place_jobs(
                candidates, nodes, reserve_after_s=self.cfg.reserve_after_s, held=held, pack=self.cfg.pack,
                budgets=budgets,
            )  # fmt: skip
            assignments += placement.assignments
            placed = {a.job_id for a in placement.assignments}
            assoc = {r.job_id: r.assoc for r in rows}
            for c in candidates:  # after placement: a budget this page used up holds the rest
                if c.job_id in placed or not held_back(c, held, budgets):
                    taken += 1
                elif _limit_reached(c, budgets) and (a_id := assoc[c.job_id]) is not None:
                    skip.add(a_id)  # (its user's or account's running jobs: all of its jobs wait)
            if preempting:
                row = {r.job_id: r for r in rows}
                unplaced += [
                    (c, row[c.job_id].priority, row[c.job_id].assoc)
                    for c in candidates
                    if c.job_id not in placed and not held_back(c, held, budgets)
                ]
            for a in placement.assignments:
                node = next(n for n in nodes if n.node_id == a.node_id)
                node.allocated = node.allocated + a.allocation
            reserved_for = placement.reserved_for
            if reserved_for is not None or len(rows) < size or not any(has_room(n) for n in nodes):
                break
        self.state.reserved_for = reserved_for
        if preempting and self.preemptor is not None:
            self.preemptor.after_pass(unplaced, {a.job_id for a in assignments}, nodes, standing)
        started = self.store.start_attempts(assignments, now)
        # on a quiet server a pass that starts a few quick launches makes them itself (the
        # loop then records them `running` in the same pass: latency); else they go to the
        # pool, in parallel with each other and with the next pass (throughput)
        quiet = not self.wakeups.wake.is_set() and self.outbox.empty()
        inline = quiet and len(started) <= INLINE_MAX and all(self._quick(s) for s in started)
        for s in started:
            if inline:
                self._launch(s, inline=True)
            else:
                self.pool.submit(self._launch, s)
        return len(started)

    def _quick(self, s: StartedAttempt) -> bool:
        return self.stager.nothing_to_stage(s.spec) and self.engine.cheap_launch(False)

    def _page(
        self,
        queue: Iterator[QueuedRow],
        size: int,
        now: float,
        down: dict[bool, bool],
        limits: PassLimits | None,
        skip: set[int],
    ) -> tuple[list[QueuedRow], list[Candidate]]:
        """The next `size` queued rows, and those that are candidates: eligible now, of a kind
        the engine can run, within their user's and account's running-jobs budget counting
        the candidates before them (past it, the rest of that association's queue is
        skipped this pass: `skip` stops the queue yielding it)."""
        preempting = self.preemptor is not None and self.preemptor.on
        rows: list[QueuedRow] = []
        out: list[Candidate] = []
        ahead: dict[Hashable, int] = {}  # candidates of this page per budget
        for r in queue:
            rows.append(r)
            spec = self.state.spec_of(r.job_id, r.spec_json)
            if r.not_before <= now and not down[spec.image is not None]:
                keys = limits.keys(r, spec.account or DEFAULT_ACCOUNT) if limits else ()
                if limits and r.assoc is not None and _over(keys, limits.budgets, ahead):
                    skip.add(r.assoc)
                else:
                    for k in keys:
                        ahead[k] = ahead.get(k, 0) + 1
                    waited = now - r.queued_since
                    if preempting and self.preemptor is not None and self.preemptor.keeps_room_for(r.job_id):
                        waited = float("inf")  # jobs were stopped for it: their room is its
                    lock = singleton_lock(r.owner, spec.name) if spec.singleton else None
                    image = image_key(spec.image)
                    out.append(
                        Candidate(r.job_id, spec.request, waited, spec.volume, spec.node_class, image, keys, lock)
                    )
            if len(rows) >= size:
                break
        return rows, out

    def _release_held(self, now: float) -> None:
        """Launch again what the engine could not take, once it answers (or settle those
        killed meanwhile)."""
        killed = {a.job_id for a in self.store.active_attempts() if a.kill_reason}
        for _ in range(len(self.state.held)):
            s, tries, not_before = self.state.held.popleft()
            if s.job_id in killed:
                self.outbox.put(LaunchFailed(s.job_id, s.attempt, "killed before the engine took it"))
            elif not_before <= now and self.engine.unavailable(s.spec.image is not None) is None:
                self.pool.submit(self._launch, s, tries)
            else:
                self.state.held.append((s, tries, not_before))

    def _launch(self, s: StartedAttempt, tries: int = 0, inline: bool = False) -> None:
        """In the pool: launches proceed in parallel (fork/exec, downloads and pulls release
        the GIL); a few quick ones in the scheduler's pass (tick)."""
        try:
            handle = self.engine.launch(self.stager.stage(s))
        except FetchError as e:
            self.outbox.put(LaunchFailed(s.job_id, s.attempt, f"fetching the job's files: {e}"))
        except EngineUnavailable as e:  # not the job's: the same attempt again when the engine answers
            if tries + 1 >= HOLD_TRIES:  # it answers the probe but never takes this launch
                self.outbox.put(LaunchFailed(s.job_id, s.attempt, f"{e} ({HOLD_TRIES} tries)"))
            else:
                log.warning("job %s attempt %s held: %s", s.job_id, s.attempt, e)
                self.state.held.append((s, tries + 1, self.clock.now() + min(2.0 ** (tries + 1), 30.0)))
        except EngineError as e:
            self.outbox.put(LaunchFailed(s.job_id, s.attempt, str(e)))
        except Exception as e:  # an engine bug must not leave the attempt in starting forever
            self.outbox.put(LaunchFailed(s.job_id, s.attempt, f"engine error: {e!r}"))
        else:
            if s.spec.volume:
                self.state.volume_attempts[(s.job_id, s.attempt)] = (s.spec.volume, s.spec.volume_mb)
            self.outbox.put(Launched(s.job_id, s.attempt, handle))
        if not inline:  # (the loop records an inline launch in the same pass)
            self.wakeups.wake.set()


def image_key(image: str | None) -> str | None:
    """How the inventory names the image (`busybox` is listed as `busybox:latest`)."""
    return canonical(image) if image else None


def singleton_lock(owner: str, name: str | None) -> str:
    """The lock a singleton job takes: one active job per owner and name (Slurm's singleton)."""
    return f"singleton\0{owner}\0{name or ''}"


def _over(keys: tuple[Hashable, ...], budgets: dict[Hashable, list[int]], ahead: dict[Hashable, int]) -> bool:
    """A user's or account's running-jobs budget is used up by what runs and the candidates
    ahead: none of its jobs starts this pass."""
    return any(
        isinstance(k, Scope) and k.kind in ("user", "account") and (b := budgets.get(k)) is not None
        and b[0] - ahead.get(k, 0) < 1
        for k in keys
    )  # fmt: skip


def _limit_reached(c: Candidate, budgets: dict[Hashable, list[int]] | None) -> bool:
    """A running-jobs limit of its user or account is reached: none of their jobs starts."""
    if not budgets:
        return False
    return any(
        isinstance(k, Scope) and k.kind in ("user", "account") and (b := budgets.get(k)) is not None and b[0] < 1
        for k in c.budgets
    )
