"""Workflow runs: stored, executed by the workflow engine in a thread each, every tool step
an ordinary kran job of the run's owner (labelled `kran.workflow=<run>`).

A server restart resumes each unfinished run: its steps still running are waited for,
the ones that succeeded are marked done in the run's job cache (so the engine reuses them
instead of running them again), one that failed fails the run; then the engine starts
over on the same documents and cache.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from kran.domain.auth import Principal
from kran.domain.jobs import JobSpec
from kran.domain.records import JobRecord
from kran.domain.states import JobState
from kran.domain.workflows import CACHE_KEY, EXIT_FAILED, RunResult, RunState, WorkflowRecord, final_state, step_label
from kran.errors import Forbidden, InvalidInput, KranError, NotFound, StepCancelled
from kran.jobfs import Missing, OpenFile, Refused, Tree
from kran.ports import Clock, StepOutcome, Store, WorkflowRunner, Workflows
from kran.services.datadir import DataDir
from kran.services.jobs import JobService
from kran.services.wakeups import Wakeups

log = logging.getLogger("kran.workflows")

KEY_LABEL = "kran.cwl-key"  # cwltool's cache key of the step: the same step after a restart
STEP_LABEL = "kran.step"


class StepWatch:
    """One thread follows the job event log and wakes the steps whose job changed state.
    It reads the log when this server's monitor has settled attempts (`settled`), and every
    0.2 s (changes made elsewhere: a kill, another server)."""

    def __init__(self, store: Store, settled: threading.Event | None = None) -> None:
        self.store = store
        self.settled = settled or threading.Event()
        self._waiters: dict[int, list[threading.Event]] = {}
        self._lock = threading.Lock()
        self._after = store.last_event_id()
        threading.Thread(target=self._follow, name="kran-step-watch", daemon=True).start()

    def wait(self, job_id: int, on_tick: Any = None) -> JobRecord:
        ev = threading.Event()
        with self._lock:
            self._waiters.setdefault(job_id, []).append(ev)
        try:
            while True:
                job = self.store.get_job(job_id)
                if job is None:
                    raise NotFound(f"job {job_id} is gone")
                if job.state.is_final:
                    return job
                ev.wait(2.0)
                ev.clear()
                if on_tick is not None:
                    on_tick()
        finally:
            with self._lock:
                self._waiters[job_id].remove(ev)
                if not self._waiters[job_id]:
                    del self._waiters[job_id]

    def _follow(self) -> None:
        while True:
            try:
                events = self.store.events_after(self._after, limit=2000)
            except Exception:  # the store is closing or briefly unavailable
                log.debug("step watch: reading events failed", exc_info=True)
                events = []
            if events:
                self._after = events[-1].id
                with self._lock:
                    for e in events:
                        for ev in self._waiters.get(e.job_id, ()):
                            ev.set()
            else:
                self.settled.wait(0.2)
                self.settled.clear()


class RunLauncher:
    """The StepLauncher of one run: steps become jobs of the run's owner."""

    def __init__(self, service: WorkflowService, run: WorkflowRecord) -> None:
        self.service = service
        self.run = run
        self.watch = service.watch()

    def _cancelled(self) -> bool:
        current = self.service.workflows.get(self.run.id)
        return current is None or current.cancel_requested

    def _active_with_key(self, key: str) -> int | None:
        labels = {**step_label(self.run.id), KEY_LABEL: key}
        for job in self.service.store.list_jobs(labels=labels, owner=self.run.owner, limit=10):
            if not job.state.is_final:
                return job.id
        return None

    def run_step(self, spec: JobSpec, step: str, key: str | None) -> StepOutcome:
        if self._cancelled():
            raise StepCancelled(f"workflow run {self.run.id} was cancelled")
        job_id = self._active_with_key(key) if key else None
        if job_id is None:
            labels = {**spec.labels, **step_label(self.run.id), STEP_LABEL: step[:200]}
            if key:
                labels[KEY_LABEL] = key
            spec = replace(spec, labels=labels, name=f"{self.run.name}/{step}"[:200])
            job_id = self.service.jobs.submit_step(spec, self.run.owner)
            log.info("workflow %s: step %s is job %s", self.run.id, step, job_id)
        else:
            log.info("workflow %s: step %s re-attached to job %s", self.run.id, step, job_id)
        if self._cancelled():  # cancelled while it was submitted: the sweep may have missed it
            self.service.jobs.kill_for_owner([job_id])  # killed for the run's owner
        job = self.watch.wait(job_id)
        exit_code = job.exit_code if job.state in (JobState.SUCCEEDED, JobState.FAILED) else None
        if job.state == JobState.KILLED and self._cancelled():
            raise StepCancelled(f"workflow run {self.run.id} was cancelled")
        return StepOutcome(job.id, job.state.value, exit_code, job.reason)


@dataclass(frozen=True)
class RunRequest:
    """A validated submission: the document and job order by path (under the roots or in
    the uploaded bundle, relative), the job order possibly inline."""

    name: str
    labels: dict[str, str]
    document: str
    job_order: str | None = None
    job_order_object: dict[str, Any] | None = None
    notify: str | None = None  # a URL told when the run ends (workflow.ended)


def _in_bundle(bundle: Path, rel: str, what: str) -> str:
    """An uploaded file, as a path relative to the run's dir (the bundle's parent)."""
    target = (bundle / rel).resolve()
    if not target.is_relative_to(bundle.resolve()) or not target.is_file():
        raise InvalidInput(f"{what} {rel!r} is not among the uploaded files", what)
    return str(target.relative_to(bundle.resolve().parent))


def outputs_dir(run: WorkflowRecord) -> Path:
    return Path(run.dir) / "outputs"


def open_output(run: WorkflowRecord, rel: str) -> OpenFile:
    """One file of the run's outputs, opened through the safe walk (steps wrote there);
    the caller closes it."""
    try:
        with Tree(outputs_dir(run)) as tree:
            return tree.open_file(rel)
    except Missing:
        raise NotFound(f"no output file {rel!r} in workflow run {run.id}") from None
    except Refused as e:
        raise InvalidInput(str(e), "path") from None


class WorkflowService:
    """Owns the runs executing here (their threads) and the watch their steps wait on."""

    def __init__(
        self,
        workflows: Workflows,
        runner: WorkflowRunner,
        jobs: JobService,
        store: Store,
        clock: Clock,
        dirs: DataDir,
        file_roots: tuple[Path, ...],
        wakeups: Wakeups,
    ) -> None:
        self.workflows = workflows
        self.runner = runner
        self.jobs = jobs
        self.store = store
        self.clock = clock
        self.dirs = dirs
        self.file_roots = file_roots
        self.wakeups = wakeups
        self._threads: dict[int, threading.Thread] = {}
        self._on_end: dict[int, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._watch: StepWatch | None = None

    def watch(self) -> StepWatch:
        with self._lock:
            if self._watch is None:
                self._watch = StepWatch(self.store, self.wakeups.settled)
            return self._watch

    def roots(self, run_dir: Path) -> tuple[Path, ...]:
        """Where a run may read documents and inputs: its own dir (never another run's: they
        may be another user's) and the configured shared roots (`files.file_url_roots`)."""
        return (run_dir.resolve(), *self.file_roots)

    def _under_roots(self, path: str, what: str) -> str:
        p = Path(path.split("#", 1)[0])
        if not p.is_absolute():
            raise InvalidInput(f"{what} {path!r}: give an absolute path on a shared root, or upload it", what)
        resolved = p.resolve()
        if not any(resolved.is_relative_to(r) for r in self.file_roots):
            raise InvalidInput(f"{what} {path!r} is not under a root this server shares (files.file_url_roots)", what)
        if not resolved.is_file():
            raise InvalidInput(f"{what} {path!r} does not exist on the server", what)
        return path

    def submit_run(self, who: Principal, req: RunRequest, uploads: dict[str, BinaryIO]) -> WorkflowRecord:
        """Place the run's files in a dir of its own, check them, then store the run and start
        it: a refused submission stores nothing."""
        for rel in uploads:
            if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel.strip():
                raise InvalidInput(f"uploaded file name {rel!r} must be a relative path inside the bundle", "files")
        if not Path(req.document).is_absolute() and req.document.split("#", 1)[0] not in uploads:
            raise InvalidInput(f"workflow {req.document!r} is not among the uploaded files", "workflow")
        if Path(req.document).is_absolute():
            self._under_roots(req.document, "workflow")
        if req.job_order and Path(req.job_order).is_absolute():
            self._under_roots(req.job_order, "job_order")
        if req.notify:
            self.jobs.check_notify_url(req.notify)
        self.dirs.workflows.mkdir(parents=True, exist_ok=True)
        staging = self.dirs.workflows / f".incoming-{secrets.token_hex(8)}"  # renamed to the run's id once stored
        try:
            staging.mkdir()
            document, job_order = self._stage(req, uploads, staging)
            run_id = self.workflows.create(who.user, req.name, req.labels, self.clock.now(), req.notify)
            run_dir = self.dirs.workflows / str(run_id)
            staging.rename(run_dir)
        except (KranError, OSError) as e:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(e, KranError):
                raise
            raise InvalidInput(f"storing the workflow's files: {e}", "files") from None
        base = run_dir.resolve()  # an absolute document or job order stays as it is
        document, job_order = str(base / document), str(base / job_order) if job_order else None
        self.workflows.set_files(run_id, str(run_dir), document, job_order)
        self.start(run_id)
        record = self.workflows.get(run_id)
        assert record is not None
        return record

    def _stage(self, req: RunRequest, uploads: dict[str, BinaryIO], run_dir: Path) -> tuple[str, str | None]:
        """Write the uploads (and an inline job order) under `run_dir`/in; raises when the
        documents named are not among them or an input is outside the roots. Returns the
        document and the job order: relative to `run_dir` when uploaded, else as given."""
        bundle = run_dir / "in"
        bundle.mkdir()
        for rel, src in uploads.items():
            dest = bundle / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
        document = req.document
        if not Path(document).is_absolute():
            rel, _, fragment = document.partition("#")
            document = _in_bundle(bundle, rel, "workflow") + (f"#{fragment}" if fragment else "")
        job_order = req.job_order
        if job_order and not Path(job_order).is_absolute():
            job_order = _in_bundle(bundle, job_order, "job_order")
        if req.job_order_object is not None:
            self.check_locations(req.job_order_object, run_dir)
            (bundle / "job.json").write_text(json.dumps(req.job_order_object))
            job_order = "in/job.json"
        return document, job_order

    def check_locations(self, obj: Any, run_dir: Path) -> None:
        """Absolute File/Directory locations in an inline job order must be on a shared root;
        relative ones are resolved inside the uploaded bundle."""
        if isinstance(obj, dict):
            if obj.get("class") in ("File", "Directory"):
                for k in ("location", "path"):
                    v = obj.get(k)
                    if isinstance(v, str) and (v.startswith("/") or "://" in v):
                        path = v[len("file://") :] if v.startswith("file://") else v
                        if "://" in path or not path.startswith("/"):
                            raise InvalidInput(
                                f"{v}: inputs are files on the server (uploaded or on a root)", "job_order"
                            )
                        resolved = Path(path).resolve()
                        if not any(resolved.is_relative_to(r) for r in self.roots(run_dir)):
                            raise InvalidInput(f"{v} is not under a root this server shares", "job_order")
                    elif isinstance(v, str) and ".." in Path(v).parts:
                        raise InvalidInput(f"{v}: relative locations must stay inside the bundle", "job_order")
            for v in obj.values():
                self.check_locations(v, run_dir)
        elif isinstance(obj, list):
            for v in obj:
                self.check_locations(v, run_dir)

    def start(self, run_id: int) -> None:
        with self._lock:
            if run_id in self._threads and self._threads[run_id].is_alive():
                return
            t = threading.Thread(target=self._execute, args=(run_id,), name=f"kran-workflow-{run_id}", daemon=True)
            self._threads[run_id] = t
        t.start()

    def on_end(self, run_id: int, callback: Callable[[], None]) -> bool:
        """Have `callback` called (on the run's thread) once the run, executing here, has
        stored its end; False when it is not executing here (ended, or on another server)."""
        with self._lock:
            if run_id not in self._threads:
                return False
            self._on_end.setdefault(run_id, []).append(callback)
            return True

    def forget_on_end(self, run_id: int, callback: Callable[[], None]) -> None:
        with self._lock:
            waiting = self._on_end.get(run_id, [])
            if callback in waiting:
                waiting.remove(callback)

    def resume_all(self) -> int:
        """At server start: every run not ended goes on."""
        runs = self.workflows.list(states=(RunState.QUEUED, RunState.RUNNING), limit=100_000)
        for run in runs:
            self.start(run.id)
        return len(runs)

    def _settle_previous(self, launcher: RunLauncher, run: WorkflowRecord) -> str | None:
        """Steps of an earlier incarnation of this run: wait for those still active, mark the
        succeeded ones done in the job cache; the reason to fail the run when one failed."""
        cache = Path(run.dir) / "cache"
        for job in self.step_jobs(run):
            if not job.state.is_final:
                job = launcher.watch.wait(job.id)
            key = job.spec.labels.get(KEY_LABEL)
            if not key or not CACHE_KEY.fullmatch(key):
                continue
            status = cache / f"{key}.status"
            done = status.exists() and status.read_text().strip()
            if done:
                continue
            if job.state == JobState.SUCCEEDED:
                status.write_text("success")
            elif not run.cancel_requested:
                step = job.spec.labels.get(STEP_LABEL, "?")
                why = f"step {step} (job {job.id}) ended {job.state} while the server was down: {job.reason or ''}"
                return why.strip()
        return None

    def _execute(self, run_id: int) -> None:
        try:
            run = self.workflows.get(run_id)
            if run is None or not self.workflows.start(run_id, self.clock.now()):
                return
            launcher = RunLauncher(self, run)
            failed = self._settle_previous(launcher, run) if run.started_at is not None else None
            if failed:
                result = RunResult(EXIT_FAILED, None, failed)
            else:
                result = self.runner.run(
                    run.document, run.job_order, Path(run.dir), launcher, self.roots(Path(run.dir))
                )
            current = self.workflows.get(run_id)
            cancelled = current is not None and current.cancel_requested
            state = final_state(result.exit_code, cancelled)
            reason = "cancelled" if cancelled else result.reason
            self.workflows.finish(run_id, state, self.clock.now(), result.exit_code, reason, result.outputs)
            log.info("workflow %s ended %s", run_id, state)
        except Exception as e:
            log.exception("workflow %s: executor failed", run_id)
            self.workflows.finish(run_id, RunState.FAILED, self.clock.now(), EXIT_FAILED, f"kran: {e}")
        finally:
            with self._lock:
                self._threads.pop(run_id, None)
                told = self._on_end.pop(run_id, [])
            for callback in told:
                callback()

    def visible_run(self, run_id: int, who: Principal) -> WorkflowRecord:
        run = self.workflows.get(run_id)
        if run is None or (run.owner != who.user and not who.is_admin):
            raise NotFound(f"workflow run {run_id} not found")
        return run

    def step_jobs(self, run: WorkflowRecord) -> list[JobRecord]:
        """The run's steps: its owner's jobs labelled with the run (labels alone are anyone's)."""
        return self.store.list_jobs(labels=step_label(run.id), owner=run.owner, limit=100_000)

    def with_steps(self, run: WorkflowRecord) -> WorkflowRecord:
        return replace(run, steps=sorted(self.step_jobs(run), key=lambda j: j.id))

    def list_runs(self, who: Principal, states: list[RunState], limit: int) -> list[WorkflowRecord]:
        return self.workflows.list(owner=None if who.is_admin else who.user, states=states, limit=limit)

    def cancel_run(self, run_id: int, who: Principal) -> WorkflowRecord:
        """Stop a run: no new steps, its running steps killed; it ends as cancelled."""
        run = self.visible_run(run_id, who)
        if run.owner != who.user and not who.is_admin:
            raise Forbidden("only the run's owner or an admin may cancel it")
        if run.state.is_final:
            return run
        self.workflows.request_cancel(run_id)
        active = [j.id for j in self.step_jobs(run) if not j.state.is_final]
        if active:
            self.store.request_kill(active, "user", self.clock.now())  # ends them as killed
            self.wakeups.wake.set()
        if run.state == RunState.QUEUED and run_id not in self._threads:
            self.workflows.finish(run_id, RunState.CANCELLED, self.clock.now(), EXIT_FAILED, "cancelled")
        return self.visible_run(run_id, who)
