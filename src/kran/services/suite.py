"""The services the API uses, as one bundle (the only thing on `app.state`)."""

from __future__ import annotations

from dataclasses import dataclass

from kran.services.accounts import AccountService
from kran.services.apps import AppService
from kran.services.arrays import ArrayService
from kran.services.auth import Authenticator
from kran.services.disk import DiskWatch
from kran.services.files import JobFiles
from kran.services.images import ImageManager
from kran.services.jobs import JobService
from kran.services.live import LiveFeed
from kran.services.logs import JobLogs
from kran.services.nodes import NodeAdmin, NodeDirectory
from kran.services.notify import NotifyService
from kran.services.queries import JobQueries
from kran.services.schedules import ScheduleService
from kran.services.tes import TesService
from kran.services.uploads import Uploads
from kran.services.usage_sampler import UsageSampler
from kran.services.web_sessions import WebSessions
from kran.services.workflows import WorkflowService


@dataclass(frozen=True)
class Services:
    jobs: JobService
    accounts: AccountService
    arrays: ArrayService
    notify: NotifyService
    queries: JobQueries
    files: JobFiles
    logs: JobLogs
    uploads: Uploads
    apps: AppService
    schedules: ScheduleService
    images: ImageManager
    workflows: WorkflowService
    tes: TesService
    nodes: NodeDirectory
    node_admin: NodeAdmin
    auth: Authenticator
    disk: DiskWatch
    web_sessions: WebSessions
    live: LiveFeed
    sampler: UsageSampler
