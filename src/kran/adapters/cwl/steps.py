"""The seam: a CommandLineTool whose job runner submits the built command line as a kran job.

cwltool does everything else: loading and validating documents, expressions, staging
(which files go where in the container), scatter, output collection. `KranTool` is what
`LoadingContext.construct_tool_object` makes for each CommandLineTool; its
`make_job_runner` returns `KranJob`, a `DockerCommandLineJob` whose binds are collected
instead of turned into `docker run` flags, and whose `run` hands them with the command to
kran instead of spawning `docker`.
"""

from __future__ import annotations

import copy
import fcntl
import math
import os
import shlex
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import cwltool.command_line_tool
import cwltool.job
from cwltool.builder import Builder
from cwltool.command_line_tool import CommandLineTool
from cwltool.context import LoadingContext, RuntimeContext
from cwltool.docker import DockerCommandLineJob
from cwltool.errors import UnsupportedRequirement, WorkflowException
from cwltool.job import JobBase, relink_initialworkdir
from cwltool.loghandler import _logger
from cwltool.utils import bytes2str_in_dicts
from cwltool.workflow import default_make_tool

from kran.adapters.cwl.outputs import StepOutputs, link_problem, staged_places_problem
from kran.domain.jobs import validate_spec
from kran.domain.resources import Range, ResourceRequest
from kran.domain.workflows import CACHE_KEY, inputs_digest
from kran.errors import KranError, StepCancelled
from kran.ports import StepLauncher, StepOutcome

_eval = threading.local()  # the workflow evaluation lock the job-making thread holds


def _lock_yielding_eval(op: int) -> Callable[[Any], None]:
    """cwltool's job-cache locks, which let go of the workflow evaluation lock while they
    wait. cwltool takes them while it holds that lock, and a step finishing needs it to
    report: two identical steps of one run (same cache key) would wait on each other."""

    def lock(fd: Any) -> None:
        try:
            fcntl.flock(fd.fileno(), op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        cond = getattr(_eval, "lock", None)
        try:
            cond.release() if cond is not None else None
        except RuntimeError:  # not held by this thread
            cond = None
        try:
            fcntl.flock(fd.fileno(), op)
        finally:
            if cond is not None:
                cond.acquire()

    return lock


cwltool.command_line_tool.shared_file_lock = _lock_yielding_eval(fcntl.LOCK_SH)  # type: ignore[attr-defined,assignment]
cwltool.command_line_tool.upgrade_lock = _lock_yielding_eval(fcntl.LOCK_EX)  # type: ignore[attr-defined,assignment]

# GPUs are on kran's nodes, not necessarily on the server's machine: kran's placement
# checks a step's cudaDeviceCount; cwltool's own check would ask this machine's nvidia-smi.
cwltool.job.cuda_check = lambda cuda_req, requestCount: requestCount  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StepContext:
    """What every step of one run shares."""

    launcher: StepLauncher
    roots: tuple[Path, ...]  # host paths a step may bind: the run's dir and the shared roots
    run_dir: Path  # the run's own dir (among the roots)
    on_thread: Callable[[], None] = lambda: None  # tells the run's log which threads are its own


def make_tool_factory(ctx: StepContext) -> Callable[[Any, LoadingContext], Any]:
    def make(toolpath_object: Any, loading: LoadingContext) -> Any:
        if isinstance(toolpath_object, dict) and toolpath_object.get("class") == "CommandLineTool":
            return KranTool(toolpath_object, loading, ctx)
        return default_make_tool(toolpath_object, loading)

    return make


class KranTool(CommandLineTool):
    def __init__(self, toolpath_object: Any, loading: LoadingContext, ctx: StepContext) -> None:
        super().__init__(toolpath_object, loading)
        self.kran = ctx

    def evalResources(self, builder: Builder, runtimeContext: RuntimeContext) -> dict[str, int | float]:
        """cwltool's evaluation, keeping the min..max ranges for the kran request."""
        seen: dict[str, Any] = {}

        def keep(request: dict[str, Any], _: RuntimeContext) -> dict[str, Any]:
            seen.update(request)
            chosen = {"cores": request["coresMin"], "ram": math.ceil(request["ramMin"])}
            chosen["tmpdirSize"] = math.ceil(request["tmpdirMin"])
            chosen["outdirSize"] = math.ceil(request["outdirMin"])
            if "cudaDeviceCountMin" in request:
                chosen["cudaDeviceCount"] = request["cudaDeviceCountMin"]
            return chosen

        rc = runtimeContext.copy()
        rc.select_resources = keep
        chosen = super().evalResources(builder, rc)
        builder.kran_request = dict(seen)  # type: ignore[attr-defined]
        return chosen

    def get_requirement(self, feature: str) -> tuple[Any, bool | None]:
        """A copy of EnvVarRequirement: cwltool's job-cache key (--cachedir, which kran's
        resume uses) updates the one it gets in place with the tool's own envDef, so a
        `cwl:requirements` override from the job order was lost (cwltool#1176's area)."""
        req, is_req = super().get_requirement(feature)
        return (copy.deepcopy(req) if feature == "EnvVarRequirement" and req is not None else req), is_req

    def job(self, job_order: Any, output_callbacks: Any, runtimeContext: RuntimeContext) -> Any:
        _eval.lock = runtimeContext.workflow_eval_lock
        cachedir = runtimeContext.cachedir
        if cachedir:  # cached under its inputs' digest (see CACHE_KEY)
            runtimeContext = runtimeContext.copy()
            runtimeContext.cachedir = os.path.join(cachedir, inputs_digest(job_order))
            os.makedirs(runtimeContext.cachedir, exist_ok=True)
        yield from super().job(job_order, output_callbacks, runtimeContext)

    def make_job_runner(self, runtimeContext: RuntimeContext) -> Any:  # a JobBase factory
        super().make_job_runner(runtimeContext)  # its checks (--no-container with a required image)
        ctx = self.kran

        def make(*args: Any) -> JobBase:
            job = KranJob(*args)
            job.kran = ctx
            return job

        return make


def resource_request(req: dict[str, Any]) -> ResourceRequest:
    """CWL's cores/ram/cudaDeviceCount min..max as kran ranges (millicpus, MiB, GPUs)."""

    def rng(lo: float, hi: float, scale: int = 1) -> Range:
        lo_i = math.ceil(lo * scale)
        return Range(lo_i, max(lo_i, math.ceil(hi * scale)))

    return ResourceRequest(
        cpus=rng(req.get("coresMin", 1), req.get("coresMax", 1), 1000),
        mem_mb=rng(req.get("ramMin", 256), req.get("ramMax", 256)),
        gpus=rng(req.get("cudaDeviceCountMin", 0), req.get("cudaDeviceCountMax", 0)),
        disk_mb=Range(0, 0),
    )


def wrap_stdio(argv: list[str], stdin: str | None, stdout: str | None, stderr: str | None) -> list[str]:
    """CWL's stdin/stdout/stderr redirections, done by a shell inside the container."""
    if not (stdin or stdout or stderr):
        return argv
    redirs = "".join(f" {op} {shlex.quote(p)}" for op, p in (("<", stdin), (">", stdout), ("2>", stderr)) if p)
    return ["/bin/sh", "-c", f'exec "$@"{redirs}', "sh", *argv]


def user_changeable(path: Path) -> Path | None:
    """The first dir on the way to `path` (from /) where someone but root may swap the next
    step for a link between kran's check and the daemon's bind mount (the daemon follows
    links as root): a dir not root's, or writable by others (sticky, as /tmp, holds only
    for what root owns in it). None when only root can change the way."""
    chain = [*reversed(path.parents), path]
    for parent, child in zip(chain, chain[1:], strict=False):
        try:
            st, child_uid = os.lstat(parent), os.lstat(child).st_uid
        except OSError:
            return parent
        if st.st_uid != 0 or (st.st_mode & 0o022 and not (st.st_mode & stat.S_ISVTX and child_uid == 0)):
            return parent
    return None


class KranJob(DockerCommandLineJob):
    kran: StepContext

    def append_volume(  # type: ignore[override]
        self, runtime: list[str], source: str, target: str, writable: bool = False, skip_mkdirs: bool = False
    ) -> None:
        if not skip_mkdirs and not os.path.exists(source):
            os.makedirs(source)
        self._binds.append((os.path.realpath(source), target, writable))

    def _image(self) -> str:
        req, _ = self.get_requirement("DockerRequirement")
        if req is None:
            raise WorkflowException("no image: kran runs every step in a container (see cwl.default_image)")
        for unsupported in ("dockerLoad", "dockerFile", "dockerImport"):
            if unsupported in req and "dockerPull" not in req and "dockerImageId" not in req:
                raise UnsupportedRequirement(f"DockerRequirement.{unsupported} is not supported by kran")
        return str(req.get("dockerPull") or req.get("dockerImageId"))

    def _collect_binds(self, runtimeContext: RuntimeContext) -> None:
        self._binds: list[tuple[str, str, bool]] = []
        self.append_volume([], self.outdir, self.builder.outdir, writable=True)
        self.append_volume([], self.tmpdir, self.CONTAINER_TMPDIR, writable=True)
        self.add_volumes(
            self.pathmapper,
            [],
            any_path_okay=True,
            secret_store=runtimeContext.secret_store,
            tmpdir_prefix=runtimeContext.tmpdir_prefix,
        )
        if self.generatemapper is not None:
            self.add_volumes(
                self.generatemapper,
                [],
                any_path_okay=bool(self.get_requirement("DockerRequirement")[1]),
                secret_store=runtimeContext.secret_store,
                tmpdir_prefix=runtimeContext.tmpdir_prefix,
            )
        for host, _, _ in self._binds:
            if not any(Path(host).is_relative_to(r) for r in self.kran.roots):
                raise WorkflowException(f"{host} is outside the places this server shares with jobs")
            if not Path(host).is_relative_to(self.kran.run_dir) and (dir_ := user_changeable(Path(host))):
                raise WorkflowException(
                    f"{host}: {dir_} may be changed by users (not root's, or writable by others), so what the"
                    " daemon binds could differ from what kran checked: inputs are bound only from dirs only"
                    " root can change (send the file with the run, or ask the admin to move it)"
                )

    def _spec(self, runtimeContext: RuntimeContext) -> Any:
        argv = [str(a) for a in self.command_line]
        if not argv:
            raise WorkflowException("the tool's command line is empty (no baseCommand, arguments or bound inputs)")
        outdir = self.builder.outdir
        for rel in (self.stdout, self.stderr):
            if rel:
                os.makedirs(os.path.dirname(os.path.join(self.outdir, rel)), exist_ok=True)
        argv = wrap_stdio(
            argv,
            self.stdin,
            os.path.join(outdir, self.stdout) if self.stdout else None,
            os.path.join(outdir, self.stderr) if self.stderr else None,
        )
        request = resource_request(getattr(self.builder, "kran_request", {}))
        spec = validate_spec(
            command=argv,
            sh=None,
            request=request,
            image=self._image(),
            name=self.name[:200],
            env={k: str(v) for k, v in self.environment.items()},
            labels={},
            priority=0,
            retries=0,
            timeout_s=float(self.timelimit) if self.timelimit else None,
            network=bool(self.networkaccess),
        )
        return replace(spec, binds=tuple(self._binds), cwd=outdir)

    def run(self, runtimeContext: RuntimeContext, tmpdir_lock: threading.Lock | None = None) -> None:
        self.kran.on_thread()
        os.makedirs(self.tmpdir, exist_ok=True)
        outcome: StepOutcome | None = None
        outputs: dict[str, Any] = {}
        try:
            self._setup(runtimeContext)
            self._collect_binds(runtimeContext)
            spec = self._spec(runtimeContext)
            key = None  # its place in the job cache: the same step after a restart
            if runtimeContext.cachedir and Path(self.outdir).is_relative_to(runtimeContext.cachedir):
                rel = Path(self.outdir).relative_to(runtimeContext.cachedir).as_posix()
                key = rel if CACHE_KEY.fullmatch(rel) else None
            outcome = self.kran.launcher.run_step(spec, self.name, key)
            rcode = outcome.exit_code
            status = self._status(rcode)
            if rcode is None:
                _logger.warning(
                    "[job %s] kran job %s ended %s: %s", self.name, outcome.job_id, outcome.state, outcome.reason
                )
            else:
                if status != "success":
                    _logger.warning("[job %s] kran job %s exited with status %d", self.name, outcome.job_id, rcode)
                problem = self._staged_places_problem()
                if problem:
                    raise WorkflowException(problem)
                if self.generatemapper is not None:
                    relink_initialworkdir(
                        self.generatemapper, self.outdir, self.builder.outdir, inplace_update=self.inplace_update
                    )
                problem = link_problem(self.outdir, self.kran.run_dir, self.kran.roots)
                if problem:
                    raise WorkflowException(problem)
                self.builder.make_fs_access = partial(StepOutputs, outdir=self.outdir, roots=self.kran.roots)  # type: ignore[assignment]
                outputs = bytes2str_in_dicts(self.collect_outputs(self.outdir, rcode))  # type: ignore[assignment]
        except UnsupportedRequirement:
            raise
        except StepCancelled:
            status = "permanentFail"
            _logger.warning("[job %s] cancelled", self.name)
        except (WorkflowException, KranError, ValueError, OSError) as e:
            status = "permanentFail"
            _logger.error("[job %s] %s", self.name, e)
        if status != "success":
            _logger.warning("[job %s] completed %s", self.name, status)
        else:
            _logger.info("[job %s] completed %s", self.name, status)
        if runtimeContext.workflow_eval_lock is None:
            raise WorkflowException("runtimeContext.workflow_eval_lock must not be None")
        if self.output_callback:
            with runtimeContext.workflow_eval_lock:
                self.output_callback(outputs, status)

    def _staged_places_problem(self) -> str | None:
        """The places in the output dir where relink_initialworkdir will put staged inputs."""
        if self.generatemapper is None:
            return None
        inside = f"{self.builder.outdir}/"
        targets = [
            vol.target[len(inside) :]
            for _, vol in self.generatemapper.items_exclude_children()
            if vol.staged
            and vol.target.startswith(inside)
            and (
                vol.type in ("File", "Directory")
                or (self.inplace_update and vol.type in ("WritableFile", "WritableDirectory"))
            )
        ]
        return staged_places_problem(self.outdir, targets)

    def _status(self, rcode: int | None) -> str:
        if rcode is None:
            return "permanentFail"
        if rcode in self.successCodes:
            return "success"
        if rcode in self.temporaryFailCodes:
            return "temporaryFail"
        if rcode in self.permanentFailCodes:
            return "permanentFail"
        return "success" if rcode == 0 else "permanentFail"
