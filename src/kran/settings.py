"""Server settings: one section per table of the TOML file, read once at start.

Sources, lowest to highest precedence: defaults, a TOML file, KRAN_<SECTION>_<NAME>
environment variables, command-line flags. pydantic-settings reads the file and the
environment; `load_settings` (settings_sources.py) keeps where each value came from, for
`kran config`. The
composition root hands each part of the server the section it needs, not the whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kran.domain.auth import user_job_identity
from kran.domain.disk import check_mark
from kran.domain.durations import parse_duration
from kran.domain.fairshare import UsagePolicy
from kran.domain.images import parse_classes


def _whole(v: Any) -> Any:
    if isinstance(v, bool | float):  # TOML's `true` or `1.5` is not a count
        raise ValueError(f"{v!r} is not an integer")
    return v


def _number(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number")
    return v


Int = Annotated[int, BeforeValidator(_whole)]
Float = Annotated[float, BeforeValidator(_number)]


class Section(BaseSettings):
    """A table of the TOML file; its environment variables are KRAN_<TABLE>_<NAME>."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings  # no .env file, no secrets dir


class ServerSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_SERVER_")
    host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    port: Int = Field(9090, gt=0, lt=65536, description="port the HTTP API listens on")
    data_dir: str = Field("~/.local/share/kran", description="where the database and job directories live")
    engine: str = Field(
        "local",
        description="execution engine: local (docker for image jobs, processes otherwise) or swarm (a Docker Swarm)",
    )
    max_body_mb: Int = Field(64, ge=1, description="largest request body accepted, in MiB")
    max_upload_mb: Int = Field(1024, ge=1, description="largest upload of job inputs (multipart), in MiB")
    tls_cert: str | None = Field(None, description="serve HTTPS with this certificate (PEM)")
    tls_key: str | None = Field(None, description="private key of the TLS certificate (PEM)")

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSection:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give both --tls-cert and --tls-key (server.tls_cert, server.tls_key)")
        return self

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{self.host}:{self.port}"


class QueueSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_QUEUE_")
    max: Int = Field(65536, ge=1, description="most jobs waiting in the queue; more submissions get HTTP 429")
    reserve_after_s: Float = Field(
        600.0, ge=0, description="a job waiting longer than this reserves capacity (stops backfill)"
    )
    retry_backoff_s: Float = Field(5.0, ge=0, description="delay before the first retry; doubles each retry")
    dispatch_window: Int = Field(1000, ge=1, description="queued jobs considered per scheduler pass")
    poll_interval_s: Float = Field(0.05, gt=0, description="how often the monitor checks running jobs")
    preemption: Literal["off", "priority", "fairshare"] = Field(
        "off",
        description="stop --preemptible jobs for a waiting job of higher priority (priority), or also of an "
        "account under its share over one above it (fairshare); off: never",
    )
    preemption_grace_s: Float = Field(
        300.0,
        ge=0,
        description="the most a preempted job gets between SIGTERM and SIGKILL (its own --grace if shorter): "
        "the waiting job counts on its room",
    )


class CapacitySection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_CAPACITY_")
    cpus: Float | None = Field(None, ge=0, description="cpus of this node (detected when unset)")
    mem_mb: Int | None = Field(None, ge=0, description="memory of this node in MiB (detected when unset)")
    gpus: Int | None = Field(None, ge=0, description="gpus of this node (nvidia-smi when unset)")
    disk_mb: Int | None = Field(None, ge=0, description="disk for jobs in MiB (free space of the data dir when unset)")


class LocalSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_LOCAL_")
    allow_host_processes: bool = Field(True, description="allow jobs without an image to run as host processes")
    docker_host: str | None = Field(None, description="Docker Engine URL (DOCKER_HOST or the local socket when unset)")
    job_user: str = Field(
        "",
        description="uid:gid every job runs as when the server is root (then all users share it); "
        "empty: each kran user's jobs run as a uid of their own (local.job_uids)",
    )
    job_uids: str = Field(
        "1100000000-1199999999",
        description="FIRST-LAST: uids for the jobs of each kran user (user id N runs as FIRST+N, gid the same), "
        "used by no one else on the nodes",
    )
    read_only_rootfs: bool = Field(
        False, description="run containers with a read-only root file system (a tmpfs on /tmp)"
    )
    pids_limit: Int = Field(4096, ge=1, description="most processes a job (container or host process) may have")

    @model_validator(mode="after")
    def _uids(self) -> LocalSection:
        parts = self.job_user.split(":")
        if self.job_user and (len(parts) > 2 or not all(p.isdigit() for p in parts)):
            raise ValueError("local.job_user is uid:gid in numbers, e.g. 65534:65534, or empty")
        if self.job_user and 0 in (int(p) for p in parts):
            raise ValueError("local.job_user must not be root (uid or gid 0): jobs would run as root")
        first, sep, last = self.job_uids.partition("-")
        if not (sep and first.isdigit() and last.isdigit() and 1000 <= int(first) < int(last) < 2**31):
            raise ValueError("local.job_uids is FIRST-LAST, uids from 1000 to 2147483647, e.g. 1100000000-1199999999")
        return self

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


class MetricsSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_METRICS_")
    per_user: bool = Field(False, description="add per-user series to /metrics (label cardinality grows with users)")


class AuthSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_AUTH_")
    proxy_user_header: str | None = Field(
        None, description="header a trusted reverse proxy puts the authenticated user name in"
    )
    proxy_secret: str | None = Field(
        None,
        description="shared secret the proxy sends as X-Kran-Proxy-Secret (enables proxy auth)",
        json_schema_extra={"secret": True},
    )
    web_session_ttl_s: Float = Field(
        43200.0, gt=0, le=30 * 86400, description="how long a web dashboard sign-in lasts (its cookie expires too)"
    )

    @model_validator(mode="after")
    def _pair(self) -> AuthSection:
        if bool(self.proxy_secret) != bool(self.proxy_user_header):
            raise ValueError("proxy auth needs both auth.proxy_user_header and auth.proxy_secret")
        return self


class FilesSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_FILES_")
    fetch_timeout_s: Float = Field(
        300.0, gt=0, description="longest a job's file download may take (seconds) before its attempt fails"
    )
    cache_max_mb: Int = Field(
        10240, ge=0, description="size cap of the node's cache of --cached-file downloads, in MiB (LRU eviction)"
    )
    file_url_roots: str = Field(
        "", description="colon-separated dirs that file:// URLs may read from (empty: file:// refused)"
    )
    fetch_hosts: str = Field(
        "",
        description="comma-separated hosts http(s) downloads may reach, * as a wildcard (*.ebi.ac.uk); each "
        "redirect is checked too (empty: any public host); a non-public address (loopback, private, link-local) "
        "only where named here",
    )
    retention: str = Field("7d", description="how long finished jobs keep their files, e.g. 7d; 0: forever")
    max_data_mb: Int = Field(
        0,
        ge=0,
        description="when the data dir's job files pass this many MiB, the oldest finished jobs' go; 0: no limit",
    )
    retention_check_s: Float = Field(60.0, gt=0, description="how often retention runs, in seconds")
    min_free: str = Field(
        "1G",
        description="free space the data dir keeps, a size (1G) or a share of its disk (5%); below it submits get "
        "HTTP 507 and no job starts until space returns; 0: no watermark",
    )

    @model_validator(mode="after")
    def _parse(self) -> FilesSection:
        try:
            check_mark(self.min_free)
        except ValueError as e:
            raise ValueError(f"files.min_free: {e}") from None
        try:
            _ = self.retention_s
        except ValueError as e:
            raise ValueError(f"files.retention: {e}") from None
        return self

    @property
    def retention_s(self) -> float | None:
        """Seconds finished jobs keep their files; None: forever."""
        return None if self.retention.strip() in ("", "0", "never") else parse_duration(self.retention)

    @property
    def host_patterns(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.fetch_hosts.split(",") if h.strip())

    @property
    def file_roots(self) -> tuple[Path, ...]:
        return tuple(Path(p).resolve() for p in self.file_url_roots.split(":") if p.strip())


class ClusterSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_CLUSTER_")
    placement: Literal["spread", "pack"] = Field(
        "spread", description="spread (most free cpus first, the default) or pack (fill nodes one by one)"
    )
    shared_dir: str = Field(
        "",
        description="swarm: the shared file system (NFS) mounted at this path on every node; "
        "the data dir must be in it",
    )
    node_docker_hosts: str = Field(
        "", description="swarm: HOSTNAME=URL,... the Docker API of each node, for image inventory, pulls and GC"
    )

    @model_validator(mode="after")
    def _parse(self) -> ClusterSection:
        _ = self.node_hosts
        return self

    @property
    def node_hosts(self) -> dict[str, str]:
        """Node hostname -> its Docker API URL (the image manager talks to each node)."""
        out = {}
        for item in self.node_docker_hosts.split(","):
            if item.strip():
                host, sep, url = item.partition("=")
                if not sep:
                    raise ValueError(f"cluster.node_docker_hosts: {item!r}: expected HOSTNAME=URL")
                out[host.strip()] = url.strip()
        return out


class ImageSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_IMAGE_")
    heavyweight_threshold: str = Field(
        "1G", description="images at least this big (compressed, e.g. 1G) are class heavyweight; empty: no class"
    )
    extra_classes: str = Field(
        "", description="more size classes, CLASS=SIZE,... (e.g. huge=10G); the biggest threshold reached wins"
    )
    pull_timeout_s: Float = Field(600.0, gt=0, description="longest an image pull may take before the attempt fails")
    insecure_registries: str = Field(
        "", description="comma-separated registry hosts spoken to over plain HTTP (127.0.0.0/8 always is)"
    )
    lookup_docker_hub: bool = Field(
        False, description="look up Docker Hub images' sizes too (else only references naming a registry host)"
    )
    gc_high: str = Field(
        "80%", description="image disk use per node above which GC runs: a size (20G) or a share of the disk (80%)"
    )
    gc_low: str = Field("60%", description="GC removes least recently used images until disk use is at most this")
    gc_interval_s: Float = Field(60.0, gt=0, description="how often image GC checks each node")

    @model_validator(mode="after")
    def _parse(self) -> ImageSection:
        try:
            _ = self.size_classes
        except ValueError as e:
            raise ValueError(f"image classes: {e}") from None
        return self

    @property
    def size_classes(self) -> list[tuple[str, int]]:
        """Image size classes, biggest threshold first."""
        text = f"heavyweight={self.heavyweight_threshold}" if self.heavyweight_threshold.strip() else ""
        return parse_classes(",".join(t for t in (text, self.extra_classes) if t))

    @property
    def insecure(self) -> frozenset[str]:
        return frozenset(h.strip() for h in self.insecure_registries.split(",") if h.strip())


class FairShareSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_FAIRSHARE_")
    enabled: bool = Field(
        True, description="order the queue by priority, then fair share, then age (off: priority, then age)"
    )
    half_life: str = Field("1d", description="usage counted this long ago weighs half (e.g. 1d, 12h, 7d)")
    weight_mem_gb: Float = Field(0.25, ge=0, description="usage charged per GiB of memory held, as a cpu is 1")
    weight_gpu: Float = Field(1.0, ge=0, description="usage charged per gpu held, as a cpu is 1")

    @field_validator("half_life")
    @classmethod
    def _half_life(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError("must be more than 0")
        return v

    @property
    def policy(self) -> UsagePolicy:
        return UsagePolicy(parse_duration(self.half_life), self.weight_mem_gb, self.weight_gpu)


class NotifySection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_NOTIFY_")
    allowed_prefixes: str = Field(
        "",
        description="comma-separated URL prefixes that --notify URLs and webhooks must fall under "
        "(e.g. https://hooks.example.org/kran/); empty: no notifications",
    )
    secret: str | None = Field(
        None,
        description="HMAC key of X-Kran-Signature (unset: a random one kept in the data dir, notify.key)",
        json_schema_extra={"secret": True},
    )

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.allowed_prefixes.split(",") if p.strip())


class WorkflowSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_WORKFLOW_")
    default_image: str = Field(
        "debian:stable-slim",
        description="workflows: the image of CWL tools that name none (kran runs every step in a container)",
    )
    max_parallel_steps: Int = Field(
        64,
        ge=1,
        le=4096,
        description="workflows: most steps of one run submitted at a time (cores requested, as cwltool counts)",
    )


class TesSection(Section):
    model_config = SettingsConfigDict(env_prefix="KRAN_TES_")
    output_roots: str = Field(
        "",
        description="TES: colon-separated dirs that file:// outputs may be written under, as the task's user; "
        "{user} in one is the user's name (empty: outputs are kept by kran and listed)",
    )
    default_ram_gb: float = Field(1.0, gt=0, description="TES: memory of a task that asks for no ram_gb, in GiB")
    network: bool = Field(
        False,
        description="TES: tasks' containers get a network, as jobs with --network (off: only tasks whose "
        "backend_parameters say network=true)",
    )


class Settings(Section):
    """The whole configuration: one attribute per section, as `load_settings` gathers them
    (validated from them: the sections read their own environment variables)."""

    server: ServerSection
    queue: QueueSection
    capacity: CapacitySection
    local: LocalSection
    metrics: MetricsSection
    auth: AuthSection
    files: FilesSection
    cluster: ClusterSection
    image: ImageSection
    workflow: WorkflowSection
    tes: TesSection
    fairshare: FairShareSection
    notify: NotifySection


SECTIONS: dict[str, type[Section]] = {
    name: f.annotation for name, f in Settings.model_fields.items() if isinstance(f.annotation, type)
}
