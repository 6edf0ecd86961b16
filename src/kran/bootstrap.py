"""The composition root: the one place that names concrete adapters."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import math
import os
import queue
import secrets
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kran.adapters.cwl.runner import CwlRunner
from kran.adapters.engines.capacity import detect_capacity
from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.containers import Sandbox
from kran.adapters.engines.docker_engine import DockerEngine
from kran.adapters.engines.local import LocalEngine
from kran.adapters.engines.node_images import NodeDockers
from kran.adapters.engines.process import ProcessEngine
from kran.adapters.engines.swarm import SwarmEngine
from kran.adapters.engines.this_machine import LOCAL_NODE, ThisMachine
from kran.adapters.files import HttpFetcher
from kran.adapters.metrics import PrometheusMetrics, StateCollector
from kran.adapters.registry import RegistryClient
from kran.adapters.store.accounts_store import SqlAccounts
from kran.adapters.store.app_store import SqlApps
from kran.adapters.store.array_store import SqlArrays
from kran.adapters.store.identity_store import SqlIdentities, load_master_key
from kran.adapters.store.image_store import SqlImageStore
from kran.adapters.store.notify_store import SqlNotifications
from kran.adapters.store.schedule_store import SqlSchedules
from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tes_store import SqlTesTasks
from kran.adapters.store.web_store import SqlWebSessions
from kran.adapters.store.workflow_store import SqlWorkflows
from kran.adapters.usage_series import SeriesFiles
from kran.adapters.volumes import LoopVolumes
from kran.adapters.webhooks import post_json
from kran.domain.resources import Resources
from kran.errors import InvalidInput, Unavailable
from kran.ports import Cluster, Engine
from kran.services.accounts import AccountService
from kran.services.admission import Admission
from kran.services.apps import AppService
from kran.services.arrays import ArrayService
from kran.services.auth import Authenticator, bootstrap_admin
from kran.services.datadir import DataDir
from kran.services.disk import DiskWatch
from kran.services.fairness import Fairness
from kran.services.files import JobFiles
from kran.services.images import ImageManager
from kran.services.jobs import JobService
from kran.services.live import LiveFeed
from kran.services.logs import JobLogs
from kran.services.nodes import NodeAdmin, NodeDirectory
from kran.services.notify import NotifyService
from kran.services.queries import JobQueries
from kran.services.scheduler.batcher import SubmitBatcher
from kran.services.scheduler.dispatch import DispatchConfig, Dispatcher
from kran.services.scheduler.evict import EVERY_S as EVICT_EVERY_S
from kran.services.scheduler.evict import Evictor
from kran.services.scheduler.loop import Periodic, SchedulerLoop
from kran.services.scheduler.monitor import Monitor
from kran.services.scheduler.preempt import Preemptor
from kran.services.scheduler.reconcile import Reconciler
from kran.services.scheduler.retention import Retention
from kran.services.scheduler.staging import Stager
from kran.services.scheduler.state import Outbox, SchedulerState
from kran.services.schedules import ScheduleService
from kran.services.suite import Services
from kran.services.tes import TesService
from kran.services.uploads import Uploads
from kran.services.usage_sampler import SAMPLE_EVERY_S, SERIES_KEEP_S, UsageSampler
from kran.services.wakeups import Wakeups
from kran.services.web_sessions import WebSessions
from kran.services.workflows import WorkflowService
from kran.settings import ClusterSection, LocalSection, ServerSection, Settings

log = logging.getLogger("kran")
SCHEDULE_EVERY_S = 0.25
TES_EVERY_S = 1.0  # TES tasks follow their jobs
NOTIFY_EVERY_S = 0.5  # events to the outbox, the outbox to its receivers
SWEEP_EVERY_S = 60.0
PROBE_EVERY_S = 1.0  # engine health: a restart is seen within about a second


class SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass
class Server:
    services: Services
    loop: SchedulerLoop
    metrics: PrometheusMetrics
    cgroups: Cgroups
    batcher: SubmitBatcher
    pool: ThreadPoolExecutor
    store: SqlStore
    instance: str

    def stop(self) -> None:
        self.batcher.close()
        self.loop.stop()
        # app volumes stay mounted: containers still running hold bind mounts of them, and
        # mounting the same image again beside such a mount would corrupt it
        self.cgroups.remove_instance(self.instance)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()


def notify_secret(data_dir: Path, configured: str | None) -> bytes:
    """The HMAC key of notifications: notify.secret, else a random one kept in the data dir (0600)."""
    if configured:
        return configured.encode()
    path = data_dir / "notify.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def lock_data_dir(data_dir: Path) -> int:
    """One server per data dir: it is the only writer of the store and the only one that
    launches and settles its jobs. The lock goes with the process, kill -9 included."""
    fd = os.open(data_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Unavailable(f"another kran server is using {data_dir}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# Host jobs only pass through the data dir and jobs/ to their own working dir (0711: no
# listing); everything else is the server's alone.
TRAVERSED = ("jobs", "volumes")
PRIVATE = ("uploads", "cache", "workflows", "tes")
STORE_FILES = ("kran.db", "kran.db-wal", "kran.db-shm", "kran.db-journal")


def prepare_data_dir(data_dir: Path) -> None:
    """The data dir's layout and modes: the store 0600, dirs no job may list or read."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o711)
    for name in TRAVERSED + PRIVATE:
        (data_dir / name).mkdir(exist_ok=True)
        os.chmod(data_dir / name, 0o711 if name in TRAVERSED else 0o700)
    # SQLite gives its -wal and -shm files the database file's mode
    os.close(os.open(data_dir / "kran.db", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    for name in STORE_FILES:
        try:
            os.chmod(data_dir / name, 0o600)
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class EngineContext:
    """What an engine factory may use."""

    local: LocalSection
    cluster: ClusterSection
    capacity: Resources  # this machine's, detected or configured
    disk_mb: int | None  # capacity.disk_mb
    instance: str
    cgroups: Cgroups
    on_exit: Callable[[], None]  # work ended (a host process, a container): the monitor should look


def _local(c: EngineContext) -> tuple[Engine, Cluster]:
    """This machine: image jobs on its Docker Engine, the others as host processes."""
    s = c.local
    process = ProcessEngine(c.instance, on_exit=c.on_exit, cgroups=c.cgroups, run_as=s.run_as, pids_limit=s.pids_limit)
    sandbox = Sandbox(s.run_as, s.read_only_rootfs, s.pids_limit)
    docker = DockerEngine(c.instance, s.docker_host, cgroups=c.cgroups, sandbox=sandbox, on_exit=c.on_exit)
    return LocalEngine(process, docker), ThisMachine(c.capacity)


def _swarm_settings(s: Settings) -> None:
    shared = Path(s.cluster.shared_dir).expanduser().resolve() if s.cluster.shared_dir else None
    if shared is None:
        raise InvalidInput(
            "the swarm engine needs cluster.shared_dir: a shared file system (e.g. an NFS mount) at the same "
            "path on every node, holding the data dir",
            "shared_dir",
        )
    data = s.server.data_path
    if shared != data and shared not in data.parents:
        raise InvalidInput(f"the data dir {data} must be inside cluster.shared_dir {shared}", "shared_dir")


def _swarm(c: EngineContext) -> tuple[Engine, Cluster]:
    """A Docker Swarm: kran places, Swarm executes; the engine is also the node directory."""
    s = c.local
    sandbox = Sandbox(s.run_as, s.read_only_rootfs, s.pids_limit)
    swarm = SwarmEngine(c.instance, s.docker_host, sandbox=sandbox, disk_mb=c.disk_mb or 10**7)
    return swarm, swarm


@dataclass(frozen=True)
class EngineKind:
    build: Callable[[EngineContext], tuple[Engine, Cluster]]
    check: Callable[[Settings], None] = lambda s: None  # InvalidInput for settings it cannot run with


# server.engine -> how to check its settings and build it: adding an engine is a module in
# adapters/engines and an entry here
ENGINES: dict[str, EngineKind] = {"local": EngineKind(_local), "swarm": EngineKind(_swarm, _swarm_settings)}


def check_engine(settings: Settings) -> EngineKind:
    kind = ENGINES.get(settings.server.engine)
    if kind is None:
        raise InvalidInput(
            f"engine {settings.server.engine!r} is not available (choose: {', '.join(ENGINES)})", "engine"
        )
    kind.check(settings)
    return kind


def build_server(settings: Settings) -> Server:
    engine_kind = check_engine(settings)  # before anything is made
    data_dir = settings.server.data_path
    prepare_data_dir(data_dir)
    lock_data_dir(data_dir)
    store = SqlStore.for_data_dir(data_dir)
    store.migrate()
    store.usage_policy = settings.fairshare.policy
    instance = store.get_or_set_meta("instance", uuid.uuid4().hex)
    wakeups = Wakeups()
    cgroups = Cgroups.detect()
    if cgroups.unavailable:
        log.warning(
            "no per-job cgroups (%s): no usage accounting, no memory limit for host processes", cgroups.unavailable
        )
    local, cap = settings.local, settings.capacity
    capacity = detect_capacity(data_dir, cap.cpus, cap.mem_mb, cap.gpus, cap.disk_mb)
    engine, cluster = engine_kind.build(
        EngineContext(local, settings.cluster, capacity, cap.disk_mb, instance, cgroups, wakeups.exited)
    )
    clock = SystemClock()
    dirs = DataDir(data_dir)
    pool = ThreadPoolExecutor(16, "kran-engine")
    metrics = PrometheusMetrics(per_user=settings.metrics.per_user)
    volumes = LoopVolumes(data_dir / "volumes")
    master_key = load_master_key(data_dir)
    image_store = SqlImageStore(store, master_key)
    node_hosts = settings.cluster.node_hosts

    def node_urls() -> dict[str, str | None]:
        """Node id -> Docker API: the local engine's, or the nodes named in cluster.node_docker_hosts."""
        if isinstance(cluster, ThisMachine):
            return {LOCAL_NODE: local.docker_host}
        return {n.node_id: node_hosts[n.hostname] for n in cluster.nodes() if n.hostname in node_hosts}

    files = settings.files
    disk = DiskWatch(data_dir, files.min_free)
    store.on_storage_full(disk.store_refused)
    apps_store = SqlApps(store)
    nodes = NodeDirectory(cluster, store)
    images = ImageManager(
        RegistryClient(image_store.credentials, settings.image.insecure),
        image_store,
        NodeDockers(node_urls, instance),
        nodes,
        store,
        clock,
        pool,
        settings.image,
        sweep_exited=engine.capabilities.leaves_containers,
    )
    queue_ = settings.queue
    batcher = SubmitBatcher(store, queue_.max, clock.now, wakeups.poke, metrics)
    admission = Admission(engine, nodes, local.allow_host_processes)
    apps = AppService(apps_store, volumes, clock)
    identities = SqlIdentities(store, master_key)
    fairness = Fairness(SqlAccounts(store), store, store.usage_policy, clock, settings.fairshare.enabled)
    accounts = AccountService(fairness.accounts, fairness, clock, lambda name: identities.user_id(name) is not None)
    notify = NotifyService(
        SqlNotifications(store),
        notify_secret(data_dir, settings.notify.secret),
        settings.notify.prefixes,
        post_json,
        clock,
    )
    notify.start()
    jobs = JobService(admission, apps, images, store, batcher.submit, clock, wakeups, accounts, notify.check_url)
    arrays = ArrayService(SqlArrays(store, queue_.max), jobs, clock, wakeups)
    schedules = ScheduleService(
        SqlSchedules(store), store, admission, clock, wakeups, metrics, disk, queue_.max, jobs.check
    )
    workflows = WorkflowService(
        SqlWorkflows(store),
        CwlRunner(settings.workflow.default_image, settings.workflow.max_parallel_steps),
        jobs,
        store,
        clock,
        dirs,
        files.file_roots,
        wakeups,
    )
    state = SchedulerState()
    outbox: Outbox = queue.Queue()
    fetcher = HttpFetcher(
        data_dir / "cache", files.cache_max_mb << 20, files.fetch_timeout_s, files.file_roots, files.host_patterns
    )
    stager = Stager(dirs, fetcher, volumes, images, local.job_identity)
    dispatcher = Dispatcher(
        store,
        nodes,
        apps_store,
        engine,
        stager,
        disk,
        clock,
        state,
        outbox,
        wakeups,
        pool,
        DispatchConfig(queue_.dispatch_window, queue_.reserve_after_s, settings.cluster.placement == "pack"),
        fairness,
        arrays.expand,
        Preemptor(queue_.preemption, fairness.accounts, store, clock),
    )
    monitor = Monitor(
        store,
        engine,
        volumes,
        metrics,
        disk,
        clock,
        dirs,
        state,
        outbox,
        wakeups,
        pool,
        queue_.retry_backoff_s,
        queue_.preemption_grace_s,
    )
    reconciler = Reconciler(store, engine, clock, dirs, state)
    logs = JobLogs(store, dirs, engine)
    tes = TesService(
        SqlTesTasks(store),
        jobs,
        store,
        logs,
        dirs,
        fetcher,
        clock,
        math.ceil(settings.tes.default_ram_gb * 1024),
        lambda owner: local.job_identity(identities.user_id(owner)),
        files.file_roots,
        files.host_patterns,
        [r for r in settings.tes.output_roots.split(":") if r.strip()],
        settings.tes.network,
        files.retention_s,
    )
    retention = Retention(dirs, apps_store, store, clock, files.retention_s, files.max_data_mb << 20 or None)

    def probe_engine() -> None:
        if engine.probe():  # up or down again: the dispatcher decides anew (queued jobs start)
            wakeups.poke()

    series = SeriesFiles(data_dir / "usage-series")
    sampler = UsageSampler(store, cgroups, series, instance, clock, files.retention_s or SERIES_KEEP_S)
    evictor = Evictor(store, disk, dirs, state, wakeups, clock)
    periodic = [
        Periodic("engine", PROBE_EVERY_S, probe_engine, in_pool=True),
        Periodic("evict", EVICT_EVERY_S, evictor.tick, in_pool=True),
        Periodic("usage-series", SAMPLE_EVERY_S, sampler.tick, in_pool=True),
        Periodic("schedules", SCHEDULE_EVERY_S, schedules.schedule_tick),
        Periodic("retention", files.retention_check_s, retention.tick, in_pool=True),
        Periodic("images", settings.image.gc_interval_s, images.tick, in_pool=True),
        Periodic("tes", TES_EVERY_S, tes.tick, in_pool=True),
        Periodic("notify", NOTIFY_EVERY_S, notify.tick, in_pool=True),
        Periodic("tes-retention", files.retention_check_s, tes.expire, in_pool=True),
        Periodic(
            "sweep", SWEEP_EVERY_S, reconciler.sweep_strays, in_pool=True, wait_first=True
        ),  # the start reconciles
    ]
    metrics.watch_state(StateCollector(store, nodes.with_load, images.layer_bytes, engine.health))
    auth = Authenticator(
        identities,
        started_at=time.time(),
        proxy_user_header=settings.auth.proxy_user_header,
        proxy_secret=settings.auth.proxy_secret,
    )
    written = bootstrap_admin(auth, data_dir, settings.server.url, time.time())
    if written:
        print(f"kran: created user admin; its client config is in {written}", flush=True)
    summary = reconciler.on_start()
    log.info("reconciled with the engine: %s", summary)
    loop = SchedulerLoop(monitor, dispatcher, periodic, wakeups, metrics, pool, queue_.poll_interval_s)
    live = _live_feed(store)
    services = Services(
        jobs=jobs,
        queries=JobQueries(
            store, nodes, engine, apps_store, disk, clock, instance, lambda: state.reserved_for, fairness
        ),
        accounts=accounts,
        arrays=arrays,
        notify=notify,
        files=JobFiles(store, dirs),
        logs=logs,
        uploads=Uploads(dirs),
        apps=apps,
        schedules=schedules,
        images=images,
        workflows=workflows,
        tes=tes,
        nodes=nodes,
        node_admin=NodeAdmin(nodes, store),
        auth=auth,
        disk=disk,
        web_sessions=WebSessions(SqlWebSessions(store), auth, clock, settings.auth.web_session_ttl_s),
        live=live,
        sampler=sampler,
    )
    return Server(services, loop, metrics, cgroups, batcher, pool, store, instance)


def _live_feed(store: SqlStore) -> LiveFeed:
    """The live feed reads the events as soon as a transaction of this server commits
    (another server's, on a shared PostgreSQL, within its interval)."""
    live = LiveFeed(store)
    store.db.after_commit(lambda _uow: live.poke())
    return live


STOP_GRACE_S = 5  # seconds: at a stop, requests still open after this are cut off


def serve(settings: Settings) -> None:
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from kran.api.app import create_app, end_streams
    from kran.api.https_port import https_only
    from kran.api.stopping import StoppingServer

    web: ServerSection = settings.server
    server = build_server(settings)
    server.loop.start()
    app = create_app(server.services, server.metrics, web.max_body_mb, web.max_upload_mb)
    # Long-lived start-up objects leave the collector's view, and young collections run
    # less often: full collections over a large heap were the p99 submit latency.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    log.info("kran serving on %s (data dir %s)", web.url, web.data_path)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler that was
    # there before: make that an orderly exit so `server.stop()` below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    http: type[asyncio.Protocol] | str = "auto"
    loop = "auto"
    if web.tls_cert:  # TLS on the port, and a 400 that says so to plain HTTP
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(web.tls_cert, web.tls_key)
        http = https_only(AutoHTTPProtocol, context)
        loop = "asyncio"  # uvloop's start_tls stalled the handshake of a connection peeked at
    config = uvicorn.Config(
        app,
        host=web.host,
        port=web.port,
        log_level="warning",
        access_log=False,
        http=http,
        loop=loop,
        # what is still open after this is cut off (a stop waited for ever, then a SIGKILL
        # skipped the clean-up below)
        timeout_graceful_shutdown=STOP_GRACE_S,
    )
    web_server = StoppingServer(config, lambda: end_streams(app))
    try:
        web_server.run()
    except KeyboardInterrupt:  # (uvicorn raises a SIGINT again once it has stopped)
        pass
    finally:
        server.stop()
    if not web_server.started:  # the port taken, or the like: uvicorn said why
        sys.exit(3)
