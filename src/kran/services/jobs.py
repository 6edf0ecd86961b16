"""The one way into the queue. API submits (one, a batch, an upload), workflow steps and
schedules all come through here: the app merged in, the image classified, admitted
(services.admission), dependencies checked, stored by the group-commit writer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from kran.domain.apps import merge_job
from kran.domain.auth import Principal, can_see
from kran.domain.jobs import JobSpec
from kran.domain.records import Submission
from kran.domain.states import JobState
from kran.errors import Conflict, InvalidInput, NotFound
from kran.ports import Clock, Store
from kran.services.accounts import AccountService
from kran.services.admission import Admission
from kran.services.apps import AppService, pin_app
from kran.services.images import Answers, ImageManager
from kran.services.wakeups import Wakeups

Enqueue = Callable[[Submission], "Future[list[int]]"]


class JobService:
    def __init__(
        self,
        admission: Admission,
        apps: AppService,
        images: ImageManager,
        store: Store,
        enqueue: Enqueue,
        clock: Clock,
        wakeups: Wakeups,
        accounts: AccountService,
        check_notify_url: Callable[[str], None] = lambda url: None,
    ) -> None:
        self.admission = admission
        self.apps = apps
        self.images = images
        self.store = store
        self.enqueue = enqueue  # the group-commit writer (scheduler.batcher)
        self.clock = clock
        self.wakeups = wakeups
        self.accounts = accounts
        self.check_notify_url = check_notify_url  # InvalidInput for a URL outside notify.allowed_prefixes

    def with_app(
        self,
        who: Principal,
        owner: str,
        app_name: str,
        fields: dict[str, Any],
        build: Callable[[dict[str, Any]], JobSpec],
    ) -> JobSpec:
        """The job's fields as given, merged with the app's defaults (`build` parses the
        result), then pinned to the app (its name, version, user and volume)."""
        app = self.apps.app_for_job(who, owner, app_name)
        return pin_app(build(merge_job(app, fields)), app)

    def classify(self, specs: Sequence[JobSpec], owner: str, answers: Answers | None = None) -> list[JobSpec]:
        """Image digest, size and class from the registry (blocking I/O: call it off the event
        loop); the lookups count as the owner's. With `answers` (from `settle_images`), only
        those and answers known now."""
        return [self.images.classify(s, owner, answers) for s in specs]

    async def settle_images(self, specs: Sequence[JobSpec], owner: str) -> Answers:
        """Await the registry lookups `classify` will need, holding no thread meanwhile."""
        return await self.images.settle([s.image for s in specs if s.image], owner)

    def submit(
        self,
        specs: Sequence[JobSpec],
        owner: str,
        submitted_by: str | None = None,
        sees_all: bool = False,
        idempotency_key: str | None = None,
        request_digest: str = "",
    ) -> Future[list[int]]:
        """Admit the specs, then hand them to the group-commit writer: all are stored or none.
        The future resolves once they are committed (and the scheduler has been woken).
        `sees_all`: an admin submits, whose jobs may wait on anyone's. An idempotency key
        used within a day gives the ids stored the first time (nothing is stored again)."""
        specs = self.check(specs, owner, sees_all)
        return self.enqueue(Submission(specs, owner, submitted_by, idempotency_key, request_digest))

    def check(self, specs: Sequence[JobSpec], owner: str, sees_all: bool) -> list[JobSpec]:
        """What every way into the queue checks: the account and wall-time limits (which may
        set the timeout), admission, dependencies. Returns the specs as they are stored."""
        if not specs:
            raise InvalidInput("no jobs given", "jobs")
        specs = self.admit(specs, owner)
        for i, spec in enumerate(specs):
            self._check_dependencies(spec, owner, sees_all, i if len(specs) > 1 else None)
        return specs

    def admit(self, specs: Sequence[JobSpec], owner: str) -> list[JobSpec]:
        """The checks of every way in but dependencies (schedules take these at add): the
        account and wall-time limits, the notify URL, admission."""
        checked = self.accounts.charge(specs, owner)
        for url in {s.notify for s in checked if s.notify}:
            self.check_notify_url(url)
        self.admission.check(checked)
        return checked

    def submit_step(self, spec: JobSpec, owner: str) -> int:
        """A workflow step: a job of the run's owner, through the same checks."""
        (spec,) = self.classify([spec], owner)
        return self.submit([spec], owner).result()[0]

    def _check_dependencies(self, spec: JobSpec, owner: str, sees_all: bool, index: int | None) -> None:
        """A job waits only on jobs its owner may see: another user's job is "not found", as a
        missing one is (waiting on it told its state and outcome)."""
        where = f"job {index + 1}: " if index is not None else ""
        for dep in spec.waits_on:
            job = self.store.get_job(dep)
            if job is None or not (sees_all or job.owner == owner):
                raise InvalidInput(f"{where}after: unknown job {dep}", "after")
        for array_id in [a for _, a in spec.array_deps] + ([spec.after_corr] if spec.after_corr else []):
            found = self.store.array_owner(array_id)
            if found is None or not (sees_all or found[0] == owner):
                raise InvalidInput(f"{where}dependency: unknown array {array_id}", "dependency")
        if spec.after_corr is not None and spec.array is None:
            raise InvalidInput(f"{where}dependency: aftercorr is for arrays (kran submit --array)", "dependency")

    def kill(self, job_id: int, who: Principal) -> JobState:
        """Kill a queued or active job. Running work is stopped by the monitor (SIGTERM, then
        SIGKILL after the grace period); the job ends as killed when it has stopped."""
        job = self.store.get_job(job_id)
        if job is None or not can_see(who, job.owner, job.submitted_by):
            raise NotFound(f"job {job_id} not found")
        result = self.store.request_kill([job_id], "user", self.clock.now())
        if job_id not in result:
            raise NotFound(f"job {job_id} not found")
        state = result[job_id]
        if state.is_final and state != JobState.KILLED:
            raise Conflict(f"job {job_id} already ended: {state}")
        self.wakeups.wake.set()
        return state

    def kill_for_owner(self, job_ids: list[int]) -> None:
        """Jobs kran itself stops for their owner (a cancelled workflow's steps)."""
        self.store.request_kill(job_ids, "user", self.clock.now())
        self.wakeups.wake.set()
