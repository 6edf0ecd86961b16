"""Docker engine: one container per attempt, through the docker SDK.

Containers are named `kran-<instance>-<job>-<attempt>` (so a repeated launch of the same
attempt finds the existing container instead of starting a second one) and labelled
with instance, job and attempt, which is how they are found again after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, Mount

from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.containers import (
    STDERR,
    ContainerPlan,
    Handles,
    Sandbox,
    create_once,
    docker_client,
    docker_time,
    explain,
    log_frames,
    plan_container,
    seal,
    timed_out,
    unreachable,
)
from kran.adapters.engines.docker_events import EventFollower, unix_socket
from kran.adapters.engines.docker_stops import ContainerStops
from kran.adapters.engines.process import read_exit_code, write_exit_code
from kran.domain.accounting import Usage
from kran.domain.outages import Outage, ended_with_daemon, hms, undecided
from kran.domain.retry import AttemptEnd
from kran.errors import EngineError, EngineUnavailable
from kran.ports import AttemptRef, EngineCapabilities, LaunchSpec

log = logging.getLogger(__name__)

PREFIX = "docker:"
HANDLES = Handles(PREFIX)


FINAL = ("exited", "dead")
OUTAGES_KEPT = 20  # the windows an end is compared with
PROBE_TIMEOUT_S = 5
INFO_EVERY_S = 10.0
LIST_EVERY_S = 1.0  # while the daemon's `die` events are followed: a listing's the safety net


class DockerEngine:
    capabilities = EngineCapabilities(host_processes=False, containers=True, volumes=True)

    def __init__(
        self,
        instance: str,
        base_url: str | None = None,
        kill_grace_s: float = 10.0,
        cgroups: Cgroups | None = None,
        sandbox: Sandbox | None = None,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.cgroups = cgroups or Cgroups(None, "not configured")
        self.sandbox = sandbox or Sandbox()
        self.instance = instance
        self.kill_grace_s = kill_grace_s
        self._base_url = base_url
        self._client: Any = None
        self._probe_client: Any = None  # its own, with a short timeout: a hung daemon is a down one
        self._down: str | None = None  # why the daemon does not answer (since when)
        self._since = 0.0  # when that last changed; 0: never probed
        self._last_up = time.time()
        self._live_restore: bool | None = None
        self._info_at = 0.0  # when live-restore was last read (pings in between are cheaper)
        self.stops = ContainerStops(lambda: self.client)  # the stops kran sent, until collected
        self._inspected: dict[str, Any] = {}  # ended containers as the check inspected them (until collected)
        self._outages: list[Outage] = []
        self._restarted = False  # in the current outage, the daemon refused or was gone (not only slow)
        self._lock = threading.Lock()
        self._died: set[str] = set()  # containers the daemon said ended, not yet seen so in a listing
        self._listed_at = float("-inf")  # when the last listing was asked for (monotonic)
        self._exits: EventFollower | None = None
        self._on_exit = on_exit or (lambda: None)
        if on_exit is not None:  # a container's end wakes the monitor: no wait for its next poll
            flt = {"type": "container", "event": "die", "label": f"kran.instance={instance}"}
            self._exits = EventFollower(
                lambda: docker_client(base_url), flt, self._died_event, "kran-docker-exits", unix_socket(base_url)
            )
            self._exits.start()

    def _died_event(self, event: dict[str, Any]) -> None:
        """A `die` event comes before the daemon's listings show the container ended (an
        inspect waits for it): the next check inspects it."""
        if isinstance(cid := event.get("id"), str):
            self._mark_died(cid)
            self._on_exit()

    def _mark_died(self, cid: str) -> None:
        with self._lock:
            self._died.add(cid)

    def _died_lately(self, cid: str) -> bool:
        with self._lock:
            if cid in self._died:
                self._died.discard(cid)
                return True
            return False

    def close(self) -> None:
        """Stop following the daemon's events (containers run on, as after a restart)."""
        if self._exits is not None:
            self._exits.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(self._base_url)
        return self._client

    def health(self) -> dict[str, str | None]:
        """The last probe's answer (the server probes every second); never blocks after the first."""
        if self._since == 0.0:
            self.probe()
        return {"docker": self._down}

    def warnings(self) -> list[str]:
        if self._live_restore is False:
            return [
                "docker: live-restore is off: a dockerd restart stops the running jobs (kran re-queues them); "
                'set "live-restore": true in /etc/docker/daemon.json'
            ]
        return []

    def unavailable(self, image: bool) -> str | None:
        return self.health()["docker"] if image else "container jobs only"

    def handle_of_ended(self, attempt_dir: Path) -> str | None:
        return None  # a container that ended is still there for discover

    def probe(self) -> bool:
        """Ask the daemon whether it answers; True when that changed. The times it did not
        answer are kept (domain.outages): a job's container that ended in one of them ended
        with the daemon. A daemon that only answers slowly (a timeout) is down for new work
        but did not restart: its containers go on."""
        started = time.time()
        before = self._live_restore
        try:
            if self._probe_client is None:
                self._probe_client = docker_client(self._base_url, timeout=PROBE_TIMEOUT_S)
            if self._down is not None or self._live_restore is None or started - self._info_at > INFO_EVERY_S:
                self._live_restore = bool(self._probe_client.info().get("LiveRestoreEnabled"))
                self._info_at = started
            else:
                self._probe_client.ping()
        except (DockerException, EngineError, OSError) as e:
            self._client = self._probe_client = None
            return self.record_down(f"Docker Engine unreachable: {str(e)[:200]}", started, restart=not timed_out(e))
        # containers outlive a restart only if the daemon that stopped and the one that
        # started both have live-restore (without it, one stops them, the other kills them)
        return self._record_up(time.time(), bool(before) and bool(self._live_restore))

    def record_down(self, reason: str, at: float, restart: bool = True) -> bool:
        """The daemon did not answer at `at` (a probe, or a launch that found it gone);
        True when that is news. `restart`: it refused or was gone, not merely slow."""
        with self._lock:
            self._restarted = self._restarted or restart
            if self._down is not None:
                return False
            self._down = f"docker engine unreachable since {hms(at)} UTC ({reason})"
            self._since = at
            return True

    def _record_up(self, at: float, kept: bool) -> bool:
        with self._lock:
            was, first = self._down, self._since == 0.0
            if was is not None:
                self._outages.append(Outage(self._last_up, at, kept or not self._restarted))
                del self._outages[:-OUTAGES_KEPT]
            self._last_up = max(self._last_up, at)
            self._down, self._restarted = None, False
            if was is not None or first:
                self._since = at
            return was is not None or first

    def _outages_now(self) -> list[Outage]:
        """The outages kept, and the one the probe has not yet seen end (checks run more often)."""
        with self._lock:
            out = list(self._outages)
            if self._down is not None and self._restarted:
                out.append(Outage(self._last_up, None, bool(self._live_restore)))
            return out

    def launch(self, spec: LaunchSpec) -> str:
        plan = plan_container(spec, self.instance, self.sandbox, self.kill_grace_s)
        seal(plan, spec)
        api = self.client.api  # the SDK's containers.create would inspect what it made: a request more
        try:  # the image is on the node: the image manager pulled it (services.images.ensure_on_node)
            cid, started = create_once(
                lambda: (api.create_container(plan.image, **self._create_args(plan, spec, api))["Id"], False),
                lambda: self._made_before(plan.name),
            )
            if not started:
                api.start(cid)
            return HANDLES.of(cid)
        except ImageNotFound as e:
            raise EngineError(f"image {plan.image} is not on this node: {e.explanation or e}") from e
        except (APIError, DockerException, EngineError, OSError) as e:
            if unreachable(e):
                why = f"Docker Engine unreachable: {explain(e)}"
                self._client = None
                self.record_down(why, time.time(), restart=not timed_out(e))  # no more launches until it answers
                raise EngineUnavailable(why) from e
            raise EngineError(f"docker could not start {plan.image}: {explain(e)}") from e

    def _made_before(self, name: str) -> tuple[str, bool]:
        """The attempt's container, made by an earlier launch: its id, and whether it started."""
        c = self.client.containers.get(name)
        return c.id, c.status != "created"

    def _create_args(self, plan: ContainerPlan, spec: LaunchSpec, api: Any) -> dict[str, Any]:
        """The plan, as the API's `create_container` takes it."""
        host: dict[str, Any] = {
            "mounts": [Mount(b.target, b.source, type="bind", read_only=b.read_only) for b in plan.binds],
            "network_mode": "bridge" if plan.network else "none",
            "init": plan.init,
            "privileged": False,
            "cap_drop": list(plan.cap_drop),
            "security_opt": ["no-new-privileges"] if plan.no_new_privileges else [],
            "pids_limit": plan.pids_limit,
            "read_only": plan.read_only,
        }
        if plan.tmpfs_mb:
            host["tmpfs"] = {t: f"rw,nosuid,nodev,size={mb}m" for t, mb in plan.tmpfs_mb.items()}
        if self.cgroups.version is not None:  # the attempt's cgroup holds the container's: counters outlive it
            host["cgroup_parent"] = "/" + self.cgroups.relative(self.instance, spec.job_id, spec.attempt)
        if plan.millicpus:
            host["nano_cpus"] = plan.millicpus * 1_000_000
        if plan.mem_mb:
            host["mem_limit"] = host["memswap_limit"] = f"{plan.mem_mb}m"
        if plan.gpus:
            host["device_requests"] = [DeviceRequest(count=plan.gpus, capabilities=[["gpu"]])]
        return {
            "command": list(plan.args),
            "name": plan.name,
            "labels": plan.labels,
            "environment": list(plan.env),
            "working_dir": plan.workdir,
            "user": plan.user or None,
            "detach": True,
            "host_config": api.create_host_config(**host),
        }

    def _ours(self, sparse: bool = False) -> list[Any]:
        """This instance's containers; `sparse`: as the list call gives them (id, status, no
        details), one request however many there are, where a full one inspects each."""
        flt = {"label": f"kran.instance={self.instance}"}
        return list(self.client.containers.list(all=True, filters=flt, sparse=sparse))

    def _listing_due(self) -> bool:
        """Whether this check lists the instance's containers. While the `die` events are
        followed, each end is told as it comes and only the containers it names are
        inspected; a listing then is the safety net, once every LIST_EVERY_S and whenever
        the stream was (re)opened after the last one (an end in between was not told)."""
        live = self._exits.live_since() if self._exits is not None else None
        return live is None or self._listed_at < live or time.monotonic() - self._listed_at >= LIST_EVERY_S

    def check(self, refs: Sequence[AttemptRef]) -> dict[tuple[int, int], AttemptEnd]:
        mine = [r for r in refs if HANDLES.owns(r.handle)]
        if not mine:
            return {}
        by_id: dict[str, Any] | None = None  # None: between listings, only told ends are asked
        if self._listing_due():
            started = time.monotonic()
            try:
                by_id = {c.id: c for c in self._ours(sparse=True)}  # one request, not one per container
            except (DockerException, OSError):
                return {}  # engine unreachable: nothing is known to have ended
            self._listed_at = started
            with self._lock:  # marks of containers gone (told after their collect) go too
                self._died &= by_id.keys()
        out = {}
        for ref in mine:
            assert ref.handle is not None
            cid = HANDLES.object_id(ref.handle)
            died = self._died_lately(cid)  # (always asked: the mark goes whether or not the listing caught up)
            if by_id is None and not died:
                continue
            c = by_id.get(cid) if by_id is not None else self.client.containers.prepare_model({"Id": cid})
            if c is not None and (died or c.status in FINAL):
                try:
                    c.reload()  # only an ended one is inspected: its exit code, end time, OOM
                except NotFound:
                    c = None  # removed since the list: as if not listed
                except (DockerException, OSError) as e:
                    if died:
                        self._mark_died(cid)
                    if unreachable(e):
                        break  # (each inspect could wait its timeout): the rest at the next pass
                    continue  # asked again at the next pass
            if c is None:
                code = read_exit_code(ref.attempt_dir)  # collected before a restart
                out[(ref.job_id, ref.attempt)] = (
                    AttemptEnd(code)
                    if code is not None
                    else AttemptEnd(None, error="the job's container vanished", vanished=True)
                )
            elif c.status in FINAL:
                end = _end_of(c)
                at = docker_time(c.attrs["State"].get("FinishedAt"))
                oom = end.error is not None
                stopped_at = self.stops.sent(c.id, ref.attempt_dir)
                if fault := ended_with_daemon(at, end.exit_code, oom, self._outages_now(), time.time()):
                    end = replace(end, engine_fault=fault)
                elif undecided(at, end.exit_code, oom, stopped_at is not None, bool(self._live_restore), self._last_up):
                    self._mark_died(c.id)
                    continue  # asked again until it is clear whether its daemon was stopping
                if at is not None and stopped_at is not None and at >= stopped_at:
                    end = replace(end, stopped=True)  # (a preempted job that exits 0 on SIGTERM is not done)
                out[(ref.job_id, ref.attempt)] = end
                self._inspected[c.id] = c  # its collect needs not ask again
        return out

    def kill(self, ref: AttemptRef) -> None:
        """Stop the container: its stop signal now, SIGKILL after the grace (`ContainerStops`)."""
        if not ref.handle:
            return
        try:
            c = self.client.containers.get(HANDLES.object_id(ref.handle))
        except NotFound:
            return
        except (DockerException, OSError) as e:
            raise EngineError(f"could not stop container: {explain(e)}") from e
        self.stops.stop(c, ref.attempt_dir, self.kill_grace_s if ref.grace_s is None else ref.grace_s)

    def cheap_collect(self, ref: AttemptRef) -> bool:
        return False  # copies logs over the API and removes the container

    def cheap_launch(self, image: bool) -> bool:
        return False  # creates and starts a container over the API

    def collect(self, ref: AttemptRef) -> Usage:
        rel = self.cgroups.relative(self.instance, ref.job_id, ref.attempt)
        if ref.handle:
            self._store_logs_and_remove(ref)
        usage = self.cgroups.usage(rel)
        self.cgroups.remove(rel)
        return usage

    def _store_logs_and_remove(self, ref: AttemptRef) -> None:
        assert ref.handle is not None
        cid = HANDLES.object_id(ref.handle)
        c = self._inspected.pop(cid, None)  # as the check that saw it end inspected it
        if c is None:
            try:
                c = self.client.containers.get(cid)
            except NotFound:
                _no_logs(ref.attempt_dir)
                return
        end = _end_of(c)
        try:
            self._copy_logs(c.id, ref.attempt_dir)
        except NotFound:  # removed since the check inspected it (by hand): as if gone before
            _no_logs(ref.attempt_dir)
        if end.exit_code is not None:
            write_exit_code(ref.attempt_dir, end.exit_code)
        with contextlib.suppress(NotFound):
            c.remove(force=True)
        self.stops.forget(c.id)
        self._died_lately(c.id)  # a die event that came after the check saw the end

    def _copy_logs(self, cid: str, attempt_dir: Path) -> None:
        """The container's stdout and stderr into the attempt's files, from one request (the
        SDK's `logs` takes one stream a request and inspects the container before each:
        four requests to the daemon where this makes one), written as they come. Errors as
        the SDK's would be: NotFound or APIError with the daemon's words."""
        api = self.client.api  # (a requests session: its base URL and API version are the SDK's)
        url = f"{api.base_url}/v{api.api_version}/containers/{cid}/logs"
        tmps = [attempt_dir / "stdout.tmp", attempt_dir / "stderr.tmp"]
        with api.get(url, params={"stdout": 1, "stderr": 1}, stream=True, timeout=api.timeout) as r:
            if not r.ok:
                try:
                    why = str(r.json().get("message", ""))
                except ValueError:
                    why = r.text
                kind = NotFound if r.status_code == 404 else APIError
                raise kind(f"logs of container {cid}", response=r, explanation=why[:500])
            with open(tmps[0], "wb") as out, open(tmps[1], "wb") as err:
                for kind, data in log_frames(r.raw):
                    (err if kind == STDERR else out).write(data)
        for tmp in tmps:
            tmp.replace(attempt_dir / tmp.stem)

    def stream_logs(self, ref: AttemptRef, stream: str, follow: bool) -> Iterator[bytes]:
        if not ref.handle:
            return
        try:
            c = self.client.containers.get(HANDLES.object_id(ref.handle))
            yield from c.logs(stdout=stream == "stdout", stderr=stream == "stderr", stream=True, follow=follow)
        except (NotFound, DockerException):
            return

    def discover(self) -> list[AttemptRef]:
        out = []
        for c in self._ours():
            labels = c.labels
            if c.status == "created":  # created before a crash, never started: finish the launch
                c.start()
            out.append(
                AttemptRef(
                    int(labels["kran.job"]),
                    int(labels["kran.attempt"]),
                    HANDLES.of(c.id),
                    Path(labels.get("kran.dir", "/nonexistent")),
                )
            )
        return out


def _no_logs(attempt_dir: Path) -> None:
    """A container gone before its logs were copied: empty ones (what was copied stays)."""
    for name in ("stdout", "stderr"):
        (attempt_dir / name).touch(exist_ok=True)


def _end_of(c: Any) -> AttemptEnd:
    state = c.attrs.get("State")
    if not isinstance(state, dict):  # a list entry carries only the status word
        c.reload()
        state = c.attrs["State"]
    code = int(state.get("ExitCode", -1))
    if state.get("OOMKilled"):
        return AttemptEnd(code, error="out of memory (killed by the kernel)")
    if state.get("Error"):
        return AttemptEnd(code, error=str(state["Error"]))
    return AttemptEnd(code)
