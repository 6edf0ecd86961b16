"""GA4GH TES tasks (issue 21): created, staged, run as jobs, their outputs collected.

A task is stored first (STAGING), its inputs are fetched into its own file system on the
server (`tes/<task>/fs`, in the staging pool), then one job per executor is submitted,
each after the one before (JOBS). The tick (every second) follows the jobs: when they have
all ended the task ends with them, or (all succeeded) its outputs are collected (OUTPUTS)
and it is COMPLETE. A task that was STAGING or OUTPUTS when the server stopped is staged
or collected again when it starts. Another user's task is "not found", as a missing one.
The file work itself (staging, writing outputs as the user) is services/tes_files.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from kran import jobfs
from kran.domain import tes
from kran.domain.apps import AppRecord
from kran.domain.auth import Principal, Role, can_see
from kran.domain.datafiles import host_allowed
from kran.domain.jobs import JobSpec
from kran.domain.records import JobRecord
from kran.domain.states import JobState
from kran.errors import FetchError, InvalidInput, KranError, NotFound
from kran.jobfs_removal import remove_tree
from kran.ports import Clock, Fetcher, Store
from kran.services.apps import pin_app
from kran.services.datadir import DataDir
from kran.services.jobs import JobService
from kran.services.logs import JobLogs
from kran.services.tes_files import OutputError, file_url_path, source_url, stage_input, write_as_user

log = logging.getLogger("kran")

STAGING_THREADS = 4
TAIL_BYTES = 10_000  # of an executor's stdout/stderr in the FULL view


class TesStore(Protocol):
    def create(
        self,
        task_id: str,
        owner: str,
        submitted_by: str | None,
        document: dict[str, Any],
        logs: Sequence[str],
        now: float,
    ) -> None: ...
    def get(self, task_id: str) -> tes.TaskRecord | None: ...
    def find(
        self, owner: str | None, name_prefix: str | None, before: int | None, limit: int, documents: bool = True
    ) -> list[tes.TaskRecord]: ...
    def active(self) -> list[tes.TaskRecord]: ...
    def set_jobs(self, task_id: str, jobs: Sequence[int]) -> None: ...
    def advance(
        self,
        task_id: str,
        phase: str,
        now: float,
        log: str | None = None,
        outputs: Sequence[dict[str, str]] | None = None,
    ) -> bool: ...
    def request_cancel(self, task_id: str) -> bool: ...


class TesService:
    def __init__(
        self,
        store: TesStore,
        jobs: JobService,
        job_store: Store,
        logs: JobLogs,
        dirs: DataDir,
        fetcher: Fetcher,
        clock: Clock,
        default_mem_mb: int,
        identity: Callable[[str], tuple[int, int] | None],
        file_roots: Sequence[Path] = (),
        host_patterns: Sequence[str] = (),
        output_roots: Sequence[str] = (),
        network: bool = False,
        retention_s: float | None = None,
        url_prefix: str = "/ga4gh/tes/v1",
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.job_store = job_store
        self.logs = logs
        self.dirs = dirs
        self.fetcher = fetcher
        self.clock = clock
        self.default_mem_mb = default_mem_mb
        self.identity = identity  # the uid:gid a user's jobs run as (None: the server cannot switch)
        self.file_roots = tuple(file_roots)
        self.host_patterns = tuple(host_patterns)
        self.output_roots = tuple(output_roots)
        self.network = network
        self.retention_s = retention_s  # ended tasks keep their dirs this long (files.retention); None: forever
        self.url_prefix = url_prefix
        self._pool = ThreadPoolExecutor(STAGING_THREADS, thread_name_prefix="kran-tes")
        self._busy: set[str] = set()  # tasks being staged or collected by this process
        self._lock = threading.Lock()

    # ---- requests

    def create(self, who: Principal, task: tes.Task, document: dict[str, Any]) -> str:
        """Check the task whole (TaskError, nothing stored), store it, start its staging."""
        tes.check_task(task)
        be = tes.backend(task.resources, self.default_mem_mb, self.network)
        for i, inp in enumerate(task.inputs):
            if inp.content is None and (url := source_url(inp, f"inputs[{i}].url")).startswith("file:"):
                try:  # read where the admin allows, or refused now (not stored to fail later)
                    file_url_path(url, self.file_roots)
                except FetchError as e:
                    raise InvalidInput(str(e), f"inputs[{i}].url") from None
            elif inp.content is None and not host_allowed(url, self.host_patterns):
                raise InvalidInput(f"{url}: not a host downloads may reach (files.fetch_hosts)", f"inputs[{i}].url")
        specs = [tes.executor_spec(task, i, be, (), None) for i in range(len(task.executors))]
        if be.app:
            app = self._app(who, be.app)
            specs = [self._with_app(spec, app, i) for i, spec in enumerate(specs)]
        self.jobs.admission.check(specs)  # a full queue or an engine that runs no images: refused now
        task_id = uuid.uuid4().hex[:20]
        self.store.create(task_id, who.user, None, document, be.warnings, self.clock.now())
        self._start(task_id, self._stage)
        return task_id

    def get(self, who: Principal, task_id: str) -> tes.TaskRecord:
        rec = self.store.get(task_id) if len(task_id) <= 40 else None
        if rec is None or not can_see(who, rec.owner, rec.submitted_by):
            raise NotFound(f"task {task_id} not found")
        return rec

    def find(
        self,
        who: Principal,
        name_prefix: str | None,
        state: str | None,
        tags: dict[str, str],
        size: int,
        token: str | None,
        documents: bool = True,
    ) -> tuple[list[tes.TaskRecord], str | None]:
        """A page of the caller's tasks (an admin's: everyone's), newest first, filtered."""
        before = int(token) if token and token.isdigit() and len(token) < 19 else None
        if token and before is None:
            raise InvalidInput(f"page_token {token!r} is not one kran gave", "page_token")
        owner = None if who.is_admin else who.user
        out: list[tes.TaskRecord] = []
        while len(out) <= size:
            batch = self.store.find(owner, name_prefix, before, max(size * 2, 100), documents or bool(tags))
            if not batch:
                break
            for rec in batch:
                if all(rec.document.get("tags", {}).get(k) == v for k, v in tags.items()) and (
                    state is None or self.state(rec) == state
                ):
                    out.append(rec)
            before = batch[-1].row
        kept = out[:size]
        return kept, (str(kept[-1].row) if len(out) > size else None)

    def cancel(self, who: Principal, task_id: str) -> None:
        rec = self.get(who, task_id)
        if rec.phase in tes.FINAL:
            return  # already ended: nothing to cancel (as Funnel answers)
        self.store.request_cancel(task_id)
        if rec.jobs:
            self.jobs.kill_for_owner(list(rec.jobs))

    # ---- what a task is now

    def job_views(self, rec: tes.TaskRecord) -> list[tuple[tes.JobView, JobRecord | None]]:
        out: list[tuple[tes.JobView, JobRecord | None]] = []
        for job_id in rec.jobs:
            job = self.job_store.get_job(job_id)
            if job is None:
                out.append((tes.JobView(JobState.LOST, None, None, None, "the job is gone"), None))
                continue
            view = tes.JobView(
                job.state, job.exit_code, job.started_at, job.finished_at, job.reason, pulling=job.pull is not None
            )
            out.append((view, job))
        return out

    def state(self, rec: tes.TaskRecord) -> str:
        views = [v for v, _ in self.job_views(rec)] if rec.phase == "JOBS" else []
        return tes.task_state(rec.phase, views, rec.cancel_requested)

    def tail(self, job_id: int, stream: str) -> str:
        try:
            data = b"".join(self.logs.log_chunks(job_id, stream, follow=False))
        except KranError:
            return ""
        return data[-TAIL_BYTES:].decode("utf-8", "replace")

    def output_file(self, who: Principal, task_id: str, path: str) -> jobfs.OpenFile:
        """A kept output of a task, opened through the safe walk (the job wrote that tree)."""
        rec = self.get(who, task_id)
        if not any(o.get("path") == "/" + path.lstrip("/") for o in rec.outputs):
            raise NotFound(f"task {task_id} has no output {path!r}")
        try:
            with jobfs.Tree(self._fs(task_id)) as tree:
                return tree.open_file(path.lstrip("/"))
        except jobfs.Refused as e:
            raise NotFound(f"output {path!r}: {e}") from None

    # ---- the work

    def tick(self) -> None:
        """Follow every task that has not ended (the periodic, in the pool)."""
        for rec in self.store.active():
            try:
                self._follow(rec)
            except Exception:  # one task's trouble stops no other
                log.exception("TES task %s", rec.task_id)

    def _follow(self, rec: tes.TaskRecord) -> None:
        now = self.clock.now()
        if rec.phase == "STAGING":
            self._start(rec.task_id, self._stage)  # after a restart (busy ones are skipped)
            return
        if rec.phase == "OUTPUTS":
            self._start(rec.task_id, self._collect)
            return
        views = [v for v, _ in self.job_views(rec)]
        if rec.cancel_requested:
            active = [j for j, v in zip(rec.jobs, views, strict=True) if not v.state.is_final]
            if active:
                self.jobs.kill_for_owner(active)
                return
            self.store.advance(rec.task_id, "CANCELED", now, "canceled on request")
            return
        outcome = tes.jobs_outcome(task_from_document(rec.document), views)
        if outcome is None:
            return
        phase, why = outcome
        if phase == "OUTPUTS":
            if self.store.advance(rec.task_id, "OUTPUTS", now):
                self._start(rec.task_id, self._collect)
            return
        self.store.advance(rec.task_id, phase, now, why or None)

    def _start(self, task_id: str, work: Callable[[str], None]) -> None:
        with self._lock:
            if task_id in self._busy:
                return
            self._busy.add(task_id)

        def run() -> None:
            try:
                work(task_id)
            except Exception as e:
                log.exception("TES task %s", task_id)
                self.store.advance(task_id, "SYSTEM_ERROR", self.clock.now(), f"kran: {e}")
            finally:
                with self._lock:
                    self._busy.discard(task_id)

        self._pool.submit(run)

    def _fs(self, task_id: str) -> Path:
        return self.dirs.tes_dir(task_id) / "fs"

    def _stage(self, task_id: str) -> None:
        """Inputs into the task's dirs, then its executors' jobs. The inputs are staged into
        a fresh tree no job has seen (a staging cut short starts again from nothing); once
        they all are, a marker says so and no later pass writes there again. The jobs are
        submitted with a key per executor, so a pass cut short and redone stores none twice."""
        rec = self.store.get(task_id)
        if rec is None or rec.phase != "STAGING":
            return
        task = task_from_document(rec.document)
        fs, staged = self._fs(task_id), self.dirs.tes_dir(task_id) / "staged"
        if not staged.exists():
            if fs.exists():
                shutil.rmtree(fs)  # no job was given this tree: the marker comes before any
            fs.mkdir(parents=True, mode=0o700)
            os.chmod(fs.parent, 0o700)
            for d in tes.task_dirs(task):
                (fs / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
            for i, inp in enumerate(task.inputs):
                try:
                    stage_input(fs, inp, f"inputs[{i}].url", self.fetcher, self.file_roots)
                except (FetchError, OSError, InvalidInput, ValueError, jobfs.Refused) as e:
                    why = str(e).replace(str(fs), "")
                    self.store.advance(task_id, "SYSTEM_ERROR", self.clock.now(), f"input {inp.path}: {why}")
                    return
                if (now := self.store.get(task_id)) is None or now.cancel_requested:
                    break
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fsync(fd)
            os.close(fd)
        if (again := self.store.get(task_id)) is not None and again.cancel_requested:
            self.store.advance(task_id, "CANCELED", self.clock.now(), "canceled on request")
            return
        be = tes.backend(task.resources, self.default_mem_mb, self.network)
        binds = [(str(fs / m.lstrip("/")), m, True) for m in tes.mounts(task)]
        ids: list[int] = []
        try:
            for i in range(len(task.executors)):
                spec = tes.executor_spec(task, i, be, binds, ids[-1] if ids else None, task_id)
                if be.app:
                    spec = self._with_app(spec, self._app(Principal(rec.owner, Role.USER), be.app), i)
                digest = hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()
                (spec,) = self.jobs.classify([spec], rec.owner)
                key = f"tes-{task_id}-{i}"
                ids += self.jobs.submit([spec], rec.owner, rec.submitted_by, False, key, digest).result()
        except KranError as e:
            if ids:
                self.jobs.kill_for_owner(ids)
            self.store.advance(task_id, "SYSTEM_ERROR", self.clock.now(), f"submitting its jobs: {e}")
            return
        self.store.set_jobs(task_id, ids)

    def _app(self, who: Principal, name: str) -> AppRecord:
        """The app a task names (backend_parameters app), if its owner may run it."""
        try:
            return self.jobs.apps.app_for_job(who, who.user, name)
        except (NotFound, InvalidInput) as e:
            raise tes.TaskError("resources.backend_parameters", f"app: {e}") from None

    def _with_app(self, spec: JobSpec, app: AppRecord, index: int) -> JobSpec:
        """An executor's job as a run of the app: its user, volume, environment and files
        under the executor's own. Only with the app's image: an app's user (approved by an
        admin for that image) never runs another."""
        if spec.image != app.defaults.get("image"):
            raise tes.TaskError(f"executors[{index}].image", f"app {app.name} runs {app.defaults.get('image')!r} only")
        spec = replace(
            spec,
            env={**app.defaults.get("env", {}), **spec.env},
            files=tuple(app.defaults.get("files", ())),
            cached_files=tuple(app.defaults.get("cached_files", ())),
            labels={**spec.labels, "kran.app": app.name},
        )
        return pin_app(spec, app)

    def _collect(self, task_id: str) -> None:
        """The outputs: each file:// one under an allowed root written there as the task's
        user; the rest kept in the task's dir and served by kran. All listed with sizes."""
        rec = self.store.get(task_id)
        if rec is None or rec.phase != "OUTPUTS":
            return
        task = task_from_document(rec.document)
        fs = self._fs(task_id)
        logs: list[dict[str, str]] = []
        notes: list[str] = []
        try:
            with jobfs.Tree(fs) as tree:
                files, odd = {}, 0
                for item in tree.walk():
                    if item.kind == "file" and _utf8(item.rel):
                        files["/" + item.rel] = item.st.st_size
                    elif item.kind == "file":
                        odd += 1  # (no TES path or URL can name it, and it made every listing a 500)
                if odd:
                    notes.append(f"{odd} output file(s) left out: their names are not UTF-8")
                user = self._user_of(rec.owner)
                for out in task.outputs:
                    found = tes.output_files(out, files, f"{self.url_prefix}/tasks/{task_id}/outputs")
                    if not found and not out.pattern:
                        raise OutputError(f"output {out.path}: not there")
                    if len(logs) + len(found) > tes.MAX_OUTPUT_FILES:
                        raise OutputError(f"more than {tes.MAX_OUTPUT_FILES} output files")
                    for path, kept_at in found:
                        dest = tes.output_destination(out, path, self.output_roots, rec.owner)
                        if dest is not None:
                            write_as_user(tree, path, dest, user)
                        elif out.url.startswith("file:") and not any(n.startswith("file://") for n in notes):
                            notes.append(f"file:// outputs outside tes.output_roots are kept by kran ({out.url})")
                        logs.append(
                            {"url": "file://" + dest if dest else kept_at, "path": path, "size_bytes": str(files[path])}
                        )
        except (jobfs.Refused, OutputError, OSError) as e:
            why = str(e).replace(str(fs), "")
            self.store.advance(task_id, "SYSTEM_ERROR", self.clock.now(), f"collecting the outputs: {why}", logs)
            return
        self.store.advance(task_id, "COMPLETE", self.clock.now(), "; ".join(notes) or None, logs)

    def _user_of(self, owner: str) -> tuple[int, int] | None:
        """Who writes the task's file:// outputs: its owner's job uid:gid; None only where
        the server runs as no root (it writes as itself). Never root."""
        try:
            user = self.identity(owner)
        except ValueError:
            user = None
        if user is None and os.geteuid() == 0:
            raise OutputError(f"no uid for {owner!r}: file:// outputs are never written as root")
        if user is not None and user[0] == 0:
            raise OutputError("file:// outputs are never written as root")
        return user

    def expire(self) -> list[str]:
        """Ended tasks' dirs (inputs, outputs kran kept) removed once older than
        files.retention, as jobs' files are; their outputs' URLs answer 404 after."""
        if self.retention_s is None:
            return []
        top, gone = self.dirs.tes, []
        now = self.clock.now()
        for entry in sorted(top.iterdir()) if top.is_dir() else []:
            rec = self.store.get(entry.name) if len(entry.name) <= 40 else None
            ended = rec is None or (rec.phase in tes.FINAL and (rec.ended_at or 0) < now - self.retention_s)
            if ended and entry.name not in self._busy:
                remove_tree(entry)  # no job of it runs: nothing writes there now
                gone.append(entry.name)
        return gone


def task_from_document(doc: dict[str, Any]) -> tes.Task:
    """The stored document (as the API normalized it) as a task."""
    res = doc.get("resources") or {}
    return tes.Task(
        executors=tuple(
            tes.Executor(
                image=e["image"],
                command=tuple(e["command"]),
                workdir=e.get("workdir"),
                stdin=e.get("stdin"),
                stdout=e.get("stdout"),
                stderr=e.get("stderr"),
                env=dict(e.get("env") or {}),
                ignore_error=bool(e.get("ignore_error")),
            )
            for e in doc["executors"]
        ),
        name=doc.get("name"),
        description=doc.get("description"),
        inputs=tuple(
            tes.Input(i["path"].rstrip("/") or "/", i.get("url"), i.get("content"), i.get("type") == "DIRECTORY")
            for i in doc.get("inputs") or []
        ),
        outputs=tuple(
            tes.Output(o["path"].rstrip("/") or "/", o["url"], o.get("type") == "DIRECTORY", o.get("path_prefix"))
            for o in doc.get("outputs") or []
        ),
        resources=tes.Resources(
            cpu_cores=res.get("cpu_cores"),
            ram_gb=res.get("ram_gb"),
            disk_gb=res.get("disk_gb"),
            preemptible=res.get("preemptible"),
            zones=tuple(res.get("zones") or ()),
            backend_parameters=dict(res.get("backend_parameters") or {}),
            backend_parameters_strict=bool(res.get("backend_parameters_strict")),
        ),
        volumes=tuple(v.rstrip("/") or "/" for v in doc.get("volumes") or []),
        tags=dict(doc.get("tags") or {}),
    )


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # (a name's bytes that are not UTF-8 come as lone surrogates)
        return False
    return True
