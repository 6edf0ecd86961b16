"""Server settings: one typed object, read once at start.

Sources, lowest to highest precedence: defaults, a TOML file, KRAN_* environment
variables, command-line flags. `load_settings` also reports where each value came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from kran.domain.auth import user_job_identity
from kran.domain.disk import check_mark
from kran.domain.durations import parse_duration
from kran.domain.images import parse_classes
from kran.errors import InvalidInput


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 9090
    data_dir: str = "~/.local/share/kran"
    engine: str = "local"
    queue_max: int = 65536
    reserve_after_s: float = 600.0
    retry_backoff_s: float = 5.0
    dispatch_window: int = 1000
    poll_interval_s: float = 0.05
    capacity_cpus: float | None = None
    capacity_mem_mb: int | None = None
    capacity_gpus: int | None = None
    capacity_disk_mb: int | None = None
    allow_host_processes: bool = True
    docker_host: str | None = None
    max_body_mb: int = 64
    metrics_per_user: bool = False
    job_user: str = ""
    job_uids: str = "1100000000-1199999999"
    read_only_rootfs: bool = False
    pids_limit: int = 4096
    tls_cert: str | None = None
    tls_key: str | None = None
    proxy_user_header: str | None = None
    proxy_secret: str | None = None
    fetch_timeout_s: float = 300.0
    cache_max_mb: int = 10240
    file_url_roots: str = ""
    retention: str = "7d"
    max_data_mb: int = 0
    retention_check_s: float = 60.0
    min_free: str = "1G"
    max_upload_mb: int = 1024
    placement: str = "spread"
    shared_dir: str = ""
    node_docker_hosts: str = ""
    heavyweight_threshold: str = "1G"
    extra_classes: str = ""
    pull_timeout_s: float = 600.0
    insecure_registries: str = ""
    lookup_docker_hub: bool = False
    gc_high: str = "80%"
    gc_low: str = "60%"
    gc_interval_s: float = 60.0
    default_image: str = "debian:stable-slim"
    max_parallel_steps: int = 64

    @property
    def size_classes(self) -> list[tuple[str, int]]:
        """Image size classes, biggest threshold first."""
        text = f"heavyweight={self.heavyweight_threshold}" if self.heavyweight_threshold.strip() else ""
        return parse_classes(",".join(t for t in (text, self.extra_classes) if t))

    @property
    def node_hosts(self) -> dict[str, str]:
        """Node hostname -> its Docker API URL (the image manager talks to each node)."""
        out = {}
        for item in self.node_docker_hosts.split(","):
            if item.strip():
                host, sep, url = item.partition("=")
                if not sep:
                    raise ValueError(f"{item!r}: expected HOSTNAME=URL")
                out[host.strip()] = url.strip()
        return out

    @property
    def retention_s(self) -> float | None:
        """Seconds finished jobs keep their files; None: forever."""
        return None if self.retention.strip() in ("", "0", "never") else parse_duration(self.retention)

    @property
    def file_roots(self) -> tuple[Path, ...]:
        return tuple(Path(p).resolve() for p in self.file_url_roots.split(":") if p.strip())

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def run_as(self) -> tuple[int, int] | None:
        """The one uid:gid all jobs run as, when the server is root and one is configured."""
        if not self.job_user or os.geteuid() != 0:
            return None
        uid, _, gid = self.job_user.partition(":")
        return int(uid), int(gid or uid)

    @property
    def job_uid_range(self) -> tuple[int, int]:
        first, _, last = self.job_uids.partition("-")
        return int(first), int(last)

    def job_identity(self, user_id: int | None) -> tuple[int, int] | None:
        """The uid:gid a job of user `user_id` runs as: local.job_user if set, else the
        user's own from local.job_uids; None when the server cannot switch users."""
        if os.geteuid() != 0:
            return None
        if self.run_as is not None:
            return self.run_as
        if user_id is None:
            raise ValueError("the job's owner is not a known user")
        return user_job_identity(user_id, self.job_uid_range)


# TOML key ([section] name) for each field; env var is KRAN_<SECTION>_<NAME>.
TOML_KEYS: dict[str, tuple[str, str]] = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "data_dir": ("server", "data_dir"),
    "engine": ("server", "engine"),
    "max_body_mb": ("server", "max_body_mb"),
    "queue_max": ("queue", "max"),
    "reserve_after_s": ("queue", "reserve_after_s"),
    "retry_backoff_s": ("queue", "retry_backoff_s"),
    "dispatch_window": ("queue", "dispatch_window"),
    "poll_interval_s": ("queue", "poll_interval_s"),
    "capacity_cpus": ("capacity", "cpus"),
    "capacity_mem_mb": ("capacity", "mem_mb"),
    "capacity_gpus": ("capacity", "gpus"),
    "capacity_disk_mb": ("capacity", "disk_mb"),
    "allow_host_processes": ("local", "allow_host_processes"),
    "docker_host": ("local", "docker_host"),
    "metrics_per_user": ("metrics", "per_user"),
    "job_user": ("local", "job_user"),
    "job_uids": ("local", "job_uids"),
    "read_only_rootfs": ("local", "read_only_rootfs"),
    "pids_limit": ("local", "pids_limit"),
    "tls_cert": ("server", "tls_cert"),
    "tls_key": ("server", "tls_key"),
    "proxy_user_header": ("auth", "proxy_user_header"),
    "proxy_secret": ("auth", "proxy_secret"),
    "fetch_timeout_s": ("files", "fetch_timeout_s"),
    "cache_max_mb": ("files", "cache_max_mb"),
    "file_url_roots": ("files", "file_url_roots"),
    "retention": ("files", "retention"),
    "max_data_mb": ("files", "max_data_mb"),
    "retention_check_s": ("files", "retention_check_s"),
    "min_free": ("files", "min_free"),
    "max_upload_mb": ("server", "max_upload_mb"),
    "placement": ("cluster", "placement"),
    "shared_dir": ("cluster", "shared_dir"),
    "node_docker_hosts": ("cluster", "node_docker_hosts"),
    "heavyweight_threshold": ("image", "heavyweight_threshold"),
    "extra_classes": ("image", "extra_classes"),
    "pull_timeout_s": ("image", "pull_timeout_s"),
    "insecure_registries": ("image", "insecure_registries"),
    "lookup_docker_hub": ("image", "lookup_docker_hub"),
    "gc_high": ("image", "gc_high"),
    "gc_low": ("image", "gc_low"),
    "gc_interval_s": ("image", "gc_interval_s"),
    "default_image": ("workflow", "default_image"),
    "max_parallel_steps": ("workflow", "max_parallel_steps"),
}

HELP = {
    "host": "address the HTTP API listens on",
    "port": "port the HTTP API listens on",
    "data_dir": "where the database and job directories live",
    "engine": "execution engine: local (docker for image jobs, processes otherwise) or swarm (a Docker Swarm)",
    "max_body_mb": "largest request body accepted, in MiB",
    "queue_max": "most jobs waiting in the queue; more submissions get HTTP 429",
    "reserve_after_s": "a job waiting longer than this reserves capacity (stops backfill)",
    "retry_backoff_s": "delay before the first retry; doubles each retry",
    "dispatch_window": "queued jobs considered per scheduler pass",
    "poll_interval_s": "how often the monitor checks running jobs",
    "capacity_cpus": "cpus of this node (detected when unset)",
    "capacity_mem_mb": "memory of this node in MiB (detected when unset)",
    "capacity_gpus": "gpus of this node (nvidia-smi when unset)",
    "capacity_disk_mb": "disk for jobs in MiB (free space of the data dir when unset)",
    "allow_host_processes": "allow jobs without an image to run as host processes",
    "docker_host": "Docker Engine URL (DOCKER_HOST or the local socket when unset)",
    "metrics_per_user": "add per-user series to /metrics (label cardinality grows with users)",
    "job_user": "uid:gid every job runs as when the server is root (then all users share it); "
    "empty: each kran user's jobs run as a uid of their own (local.job_uids)",
    "job_uids": "FIRST-LAST: uids for the jobs of each kran user (user id N runs as FIRST+N, gid the same), "
    "used by no one else on the nodes",
    "read_only_rootfs": "run containers with a read-only root file system (a tmpfs on /tmp)",
    "pids_limit": "most processes a job (container or host process) may have",
    "tls_cert": "serve HTTPS with this certificate (PEM)",
    "tls_key": "private key of the TLS certificate (PEM)",
    "proxy_user_header": "header a trusted reverse proxy puts the authenticated user name in",
    "proxy_secret": "shared secret the proxy sends as X-Kran-Proxy-Secret (enables proxy auth)",
    "fetch_timeout_s": "longest a job's file download may take (seconds) before its attempt fails",
    "cache_max_mb": "size cap of the node's cache of --cached-file downloads, in MiB (LRU eviction)",
    "file_url_roots": "colon-separated dirs that file:// URLs may read from (empty: file:// refused)",
    "retention": "how long finished jobs keep their files, e.g. 7d; 0: forever",
    "max_data_mb": "when the data dir's job files pass this many MiB, the oldest finished jobs' go; 0: no limit",
    "retention_check_s": "how often retention runs, in seconds",
    "min_free": "free space the data dir keeps, a size (1G) or a share of its disk (5%); below it submits get "
    "HTTP 507 and no job starts until space returns; 0: no watermark",
    "max_upload_mb": "largest upload of job inputs (multipart), in MiB",
    "placement": "spread (most free cpus first, the default) or pack (fill nodes one by one)",
    "shared_dir": "swarm: the shared file system (NFS) mounted at this path on every node; the data dir must be in it",
    "node_docker_hosts": "swarm: HOSTNAME=URL,... the Docker API of each node, for image inventory, pulls and GC",
    "heavyweight_threshold": "images at least this big (compressed, e.g. 1G) are class heavyweight; empty: no class",
    "extra_classes": "more size classes, CLASS=SIZE,... (e.g. huge=10G); the biggest threshold reached wins",
    "pull_timeout_s": "longest an image pull may take before the attempt fails",
    "insecure_registries": "comma-separated registry hosts spoken to over plain HTTP (127.0.0.0/8 always is)",
    "lookup_docker_hub": "look up Docker Hub images' sizes too (else only references naming a registry host)",
    "gc_high": "image disk use per node above which GC runs: a size (20G) or a share of the disk (80%)",
    "gc_low": "GC removes least recently used images until disk use is at most this",
    "gc_interval_s": "how often image GC checks each node",
    "max_parallel_steps": "workflows: most steps of one run submitted at a time (cores requested, as cwltool counts)",
    "default_image": "workflows: the image of CWL tools that name none (kran runs every step in a container)",
}

SECRET_FIELDS: frozenset[str] = frozenset({"proxy_secret"})


def env_name(field: str) -> str:
    section, name = TOML_KEYS[field]
    return f"KRAN_{section}_{name}".upper()


def _coerce(field: str, raw: Any, typ: str) -> Any:
    try:
        if raw is None:
            return None
        if "bool" in typ:
            if isinstance(raw, bool):
                return raw
            low = str(raw).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{raw!r} is not a boolean")
        if typ.startswith("int"):
            if isinstance(raw, float) or isinstance(raw, bool):
                raise ValueError(f"{raw!r} is not an integer")
            return int(raw)
        if typ.startswith("float"):
            if isinstance(raw, bool):
                raise ValueError(f"{raw!r} is not a number")
            return float(raw)
        if not isinstance(raw, str | int | float):
            raise ValueError(f"{raw!r} is not a string")
        return str(raw)
    except ValueError as e:
        raise InvalidInput(f"setting {field}: {e}", field) from None


def load_settings(
    config_file: str | None = None,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """Merge the sources; return the settings and, per field, where its value came from."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    origin = {f.name: "default" for f in fields(Settings)}
    types = {f.name: str(f.type) for f in fields(Settings)}
    config_file = config_file or environ.get("KRAN_CONFIG")
    if config_file:
        path = Path(config_file).expanduser()
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InvalidInput(f"config file {path} does not exist", "config") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InvalidInput(f"config file {path} is not valid TOML: {e}", "config") from None
        known = {(s, n) for s, n in TOML_KEYS.values()}
        for section, table in doc.items():
            if not isinstance(table, dict):
                raise InvalidInput(f"config file {path}: [{section}] must be a table", section)
            for name in table:
                if (section, name) not in known:
                    raise InvalidInput(f"config file {path}: unknown setting {section}.{name}", name)
        for field, (section, name) in TOML_KEYS.items():
            if name in doc.get(section, {}):
                values[field] = _coerce(field, doc[section][name], types[field])
                origin[field] = f"file {path}"
    for field in TOML_KEYS:
        var = env_name(field)
        if var in environ:
            values[field] = _coerce(field, environ[var], types[field])
            origin[field] = f"env {var}"
    for field, raw in (flags or {}).items():
        if raw is not None:
            values[field] = _coerce(field, raw, types[field])
            origin[field] = "flag"
    settings = Settings(**values)
    _check(settings)
    return settings, origin


def _check(s: Settings) -> None:
    # the engine's name and its own settings are checked by its entry in bootstrap.ENGINES
    if s.placement not in ("spread", "pack"):
        raise InvalidInput(f"cluster.placement {s.placement!r}: choose spread or pack", "placement")
    if not 0 < s.port < 65536:
        raise InvalidInput(f"port {s.port} is out of range", "port")
    if s.queue_max < 1:
        raise InvalidInput("queue max must be at least 1", "queue_max")
    if s.job_user and not all(p.isdigit() for p in s.job_user.split(":")) or s.job_user.count(":") > 1:
        raise InvalidInput("local.job_user is uid:gid in numbers, e.g. 65534:65534, or empty", "job_user")
    if s.job_user and 0 in (int(p) for p in s.job_user.split(":")):
        raise InvalidInput("local.job_user must not be root (uid or gid 0): jobs would run as root", "job_user")
    first, sep, last = s.job_uids.partition("-")
    if not (sep and first.isdigit() and last.isdigit() and 1000 <= int(first) < int(last) < 2**31):
        raise InvalidInput(
            "local.job_uids is FIRST-LAST, uids from 1000 to 2147483647, e.g. 1100000000-1199999999", "job_uids"
        )
    if bool(s.tls_cert) != bool(s.tls_key):
        raise InvalidInput("give both --tls-cert and --tls-key", "tls")
    if bool(s.proxy_secret) != bool(s.proxy_user_header):
        raise InvalidInput("proxy auth needs both auth.proxy_user_header and auth.proxy_secret", "auth")
    try:
        _ = s.size_classes, s.node_hosts
    except ValueError as e:
        raise InvalidInput(f"image settings: {e}", "image") from None
    try:
        check_mark(s.min_free)
    except ValueError as e:
        raise InvalidInput(f"files.min_free: {e}", "min_free") from None
    try:
        _ = s.retention_s
    except ValueError as e:
        raise InvalidInput(f"files.retention: {e}", "retention") from None
    if s.fetch_timeout_s <= 0 or s.retention_check_s <= 0 or s.cache_max_mb < 0 or s.max_data_mb < 0:
        raise InvalidInput("files: timeouts must be positive and sizes not negative", "files")
    if s.poll_interval_s <= 0 or s.retry_backoff_s < 0 or s.dispatch_window < 1:
        raise InvalidInput("queue timings must be positive", "queue")
    if not 1 <= s.max_parallel_steps <= 4096:
        raise InvalidInput("workflow.max_parallel_steps is between 1 and 4096", "max_parallel_steps")


def describe(settings: Settings, origin: dict[str, str]) -> list[dict[str, Any]]:
    """Rows for `kran config`: key, value (secrets redacted), source, help."""
    rows = []
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name in SECRET_FIELDS and value:
            value = "***"
        section, name = TOML_KEYS[f.name]
        rows.append(
            {
                "key": f"{section}.{name}",
                "value": value,
                "source": origin[f.name],
                "env": env_name(f.name),
                "help": HELP[f.name],
            }
        )
    return rows
