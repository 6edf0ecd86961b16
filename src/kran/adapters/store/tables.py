"""Table definitions (SQLAlchemy Core). Migrations in migrations/versions mirror these."""

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(200), nullable=False),
    Column("name", String(200)),
    Column("state", String(20), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("spec", Text, nullable=False),  # JobSpec as JSON
    Column("image", String(500)),
    # the minimum request, for dispatch without parsing the spec
    Column("req_millicpus", Integer, nullable=False),
    Column("req_mem_mb", Integer, nullable=False),
    Column("req_gpus", Integer, nullable=False),
    Column("req_disk_mb", Integer, nullable=False),
    Column("submitted_at", Float, nullable=False),
    Column("queued_since", Float, nullable=False),
    Column("not_before", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("exit_code", Integer),
    Column("reason", Text),
    Column("kill_reason", String(20)),  # "user" | "timeout" once kran decided to kill
    Column("timeout_s", Float),
    Column("retries", Integer, nullable=False, default=0),
    Column("requeues", Integer, nullable=False, default=0, server_default="0"),  # lost attempts not charged
    Column("blocked", Boolean, nullable=False, default=False),  # waiting on other jobs
    Column("submitted_by", String(200)),  # a service submitting on behalf of `owner`
    Column("node", String(200)),
    Column("alloc_millicpus", Integer),
    Column("alloc_mem_mb", Integer),
    Column("alloc_gpus", Integer),
    Column("alloc_disk_mb", Integer),
    Column("volume", String(200)),  # the app volume it uses: one job at a time per volume
    Column("files_expired", Boolean, nullable=False, default=False),  # retention removed its files
    Column("pull", Text),  # JSON {image, node, done, total} while the attempt's image is pulled
    Column("assoc", Integer),  # associations.id: the account and user it is charged to
    Column("app", String(200)),  # the app's name, for app limits
    Column("array_id", Integer),  # a task of this array (arrays.id)
    Column("array_index", Integer),  # its index in the array
    Column("notify", Text),  # a URL told of its events (notify_events: which, comma-separated)
    Column("notify_events", String(40)),
    Column("preemptible", Boolean, nullable=False, default=False, server_default=text("0")),
    Index("ix_jobs_queue", "state", text("priority DESC"), "id"),
    Index("ix_jobs_fair", "state", "assoc", text("priority DESC"), "id"),
    Index("ix_jobs_owner_state", "owner", "state"),
    Index("ux_jobs_array_task", "array_id", "array_index", unique=True),
    Index("ix_jobs_state_array", "state", "array_id"),
    # the dashboard's table, newest first within a state, a user or a name (migration 0020)
    Index("ix_jobs_state_id", "state", "id"),
    Index("ix_jobs_owner_id", "owner", "id"),
    Index("ix_jobs_name_id", "name", "id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("state", String(20), nullable=False),
    Column("node", String(200), nullable=False),
    Column("handle", String(200)),
    Column("alloc_millicpus", Integer, nullable=False),
    Column("alloc_mem_mb", Integer, nullable=False),
    Column("alloc_gpus", Integer, nullable=False),
    Column("alloc_disk_mb", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("exit_code", Integer),
    Column("reason", Text),
    Column("collected", Boolean, nullable=False, default=False),
    Column("queued_at", Float),  # when the job entered the queue for this attempt
    Column("cpu_seconds", Float),
    Column("peak_memory_bytes", Integer),
    Column("io_bytes", Integer),
    Index("ix_attempts_state", "state"),
    Index("ix_attempts_finished", "finished_at"),
)

job_labels = Table(
    "job_labels",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id"), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
    Index("ix_job_labels_kv", "key", "value"),
)

job_deps = Table(
    "job_deps",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id"), primary_key=True),
    Column("dep_id", Integer, ForeignKey("jobs.id"), primary_key=True),
    Column("kind", String(8), nullable=False),  # "ok" | "any"
    Index("ix_job_deps_dep", "dep_id"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=False),
    Column("attempt", Integer),
    Column("from_state", String(20)),
    Column("to_state", String(20), nullable=False),
    Column("reason", Text),
    Column("at", Float, nullable=False),
    Index("ix_events_job", "job_id"),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),  # unique per owner
    Column("owner", String(200), nullable=False),
    Column("kind", String(10), nullable=False),  # every | cron | after
    Column("expr", String(200), nullable=False),  # duration, cron expression, or "" (after)
    Column("tz", String(64), nullable=False),
    Column("start_at", Float, nullable=False),
    Column("repeat", Integer),
    Column("max_lateness_s", Float),
    Column("overlap", String(10), nullable=False),  # allow | forbid | replace
    Column("catch_up", String(10), nullable=False),  # all | last | none
    Column("parents", Text, nullable=False),  # JSON list of parents as "owner/name" (kind after)
    Column("after_mode", String(10), nullable=False),  # all | any
    Column("spec", Text, nullable=False),  # the job each run submits (JobSpec JSON)
    Column("enabled", Boolean, nullable=False),
    Column("next_fire_at", Float),  # None: done (repeat used up) or kind after
    Column("fired", Integer, nullable=False),
    Column("seen", Text, nullable=False),  # JSON {parent id: last parent run id looked at}
    Column("created_at", Float, nullable=False),
    UniqueConstraint("owner", "name", name="ux_schedules_owner_name"),
)

schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("schedule_id", Integer, ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
    Column("fire_time", Float, nullable=False),
    Column("job_id", Integer),
    Column("state", String(12), nullable=False),  # started | skipped
    Column("reason", Text),
    Column("start_deadline", Float),
    Column("created_at", Float, nullable=False),
    Index("ux_schedule_runs_fire", "schedule_id", "fire_time", unique=True),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(10), nullable=False),  # admin | user | service
    Column("disabled", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("secret_enc", Text, nullable=False),  # Fernet-encrypted: HMAC needs the secret itself
    Column("revoked", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
)

# an app's name is unique per owner; a shared app's also among the shared ones
apps = Table(
    "apps",
    metadata,
    Column("owner", String(200), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("shared", Boolean, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("version", Integer, nullable=False),  # the current one in app_versions
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ux_apps_shared_name", "name", unique=True, sqlite_where=text("shared"), postgresql_where=text("shared")),
)

app_versions = Table(
    "app_versions",
    metadata,
    Column("owner", String(200), primary_key=True),
    Column("app", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("spec", Text, nullable=False),  # JSON {defaults, run_as, volume: [name, size_mb, key]}
    Column("created_at", Float, nullable=False),
    ForeignKeyConstraint(["owner", "app"], ["apps.owner", "apps.name"], ondelete="CASCADE", name="fk_app_versions_app"),
)

registry_credentials = Table(
    "registry_credentials",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("username", String(255), nullable=False),
    Column("secret_enc", Text, nullable=False),  # Fernet-encrypted: pulls need the password itself
    Column("created_at", Float, nullable=False),
)

image_pins = Table(
    "image_pins",
    metadata,
    Column("ref", String(500), primary_key=True),
    Column("pinned_by", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("state", String(20), nullable=False, index=True),
    Column("labels", Text, nullable=False),  # JSON object
    Column("dir", Text, nullable=False),
    Column("document", Text, nullable=False),
    Column("job_order", Text),
    Column("submitted_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("outputs", Text),  # JSON
    Column("reason", Text),
    Column("exit_code", Integer),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("notify", Text),  # a URL told when the run ends (workflow.ended)
)

# GA4GH TES tasks (issue 21): each runs as one job per executor (`jobs`, a JSON list of
# ids); `task` is the document as stored (JSON), `phase` STAGING/JOBS/OUTPUTS or its final
# TES state; `outputs` and `system_logs` JSON lists, filled as it goes.
tes_tasks = Table(
    "tes_tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(40), nullable=False, unique=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("submitted_by", String(200)),
    Column("name", Text),
    Column("phase", String(20), nullable=False, index=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("jobs", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("outputs", Text, nullable=False),
    Column("system_logs", Text, nullable=False),
)

# A submission's Idempotency-Key: the same key (per owner) within a day gives the jobs it
# stored, instead of storing them again. Written in the same transaction as the jobs.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("owner", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("digest", String(64), nullable=False),  # of the submitted specs: a reused key for other jobs is refused
    Column("job_ids", Text, nullable=False),  # JSON list
    Column("created_at", Float, nullable=False, index=True),
)

# Fair share (issue 20, domain/fairshare.py): accounts with shares; an association is an
# account and a user charged to it, with the user's shares in it and the decayed usage
# (billing seconds as of usage_at). `member` False: charged (a job of the user's ran there,
# or "default" for users of no account) without being a member.
accounts = Table(
    "accounts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("shares", Integer, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
)

associations = Table(
    "associations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(64), ForeignKey("accounts.name"), nullable=False),
    Column("user", String(200), nullable=False),
    Column("shares", Integer, nullable=False),
    Column("member", Boolean, nullable=False),
    Column("joined_at", Float, nullable=False),
    Column("usage", Float, nullable=False),
    Column("usage_at", Float, nullable=False),
    UniqueConstraint("account", "user", name="ux_associations_account_user"),
)

# Limits (domain/limits.py) per scope: default (name ""), account, user, app; NULL: none.
limits = Table(
    "limits",
    metadata,
    Column("scope", String(10), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("max_running_jobs", Integer),
    Column("max_running_cpus", Integer),  # millicpus
    Column("max_running_mem_mb", Integer),
    Column("max_running_gpus", Integer),
    Column("max_queued_jobs", Integer),
    Column("max_wall_s", Float),
    Column("max_priority", Integer),
)

# Job arrays (issue 20.4, domain/arrays.py): `spec` is the tasks' JobSpec, `indices` the
# --array text, `created` how many tasks (in index order) are jobs so far; state active |
# done. A task is a job with array_id and array_index.
arrays = Table(
    "arrays",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("submitted_by", String(200)),
    Column("name", String(200)),
    Column("spec", Text, nullable=False),
    Column("indices", Text, nullable=False),
    Column("count", Integer, nullable=False),
    Column("throttle", Integer),
    Column("created", Integer, nullable=False),
    Column("state", String(10), nullable=False, index=True),
    Column("kill_requested", Boolean, nullable=False),
    Column("submitted_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("outcome", String(20)),  # once done: succeeded (every task) | failed | killed
    Column("corr_array", Integer),  # aftercorr: task i after that array's task i succeeded
    Column("account", String(64)),  # its tasks' (for the queued-jobs limits: pending tasks count)
    Column("app", String(200)),
)

# Jobs waiting on a whole array: `kind` ok | any | notok, as job_deps.
array_deps = Table(
    "array_deps",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id"), primary_key=True),
    Column("array_id", Integer, ForeignKey("arrays.id"), primary_key=True),
    Column("kind", String(8), nullable=False),
    Index("ix_array_deps_array", "array_id"),
)

# Notifications (issue 20.7): the outbox. Events are written here in the transaction that
# reads them from `events` (services.notify), so a kill -9 loses none; delivered at least
# once, each with a stable event_id for the receiver to drop repeats.
notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(100), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("gave_up", Boolean, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Index("ix_notifications_due", "delivered_at", "gave_up", "next_at"),
)

# Server-wide webhooks an admin sets: every event of the types in `events` (comma-separated).
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# The web dashboard (issue 22): signed-in browsers, and one-time sign-in links. Only the
# SHA-256 of a token is stored: a copy of the database signs no one in.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user", String(100), nullable=False),
    Column("key_id", String(40)),  # the key signed in with (revoking it ends the session); none for a link
    Column("csrf", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_web_sessions_user", "user"),
)

web_links = Table(
    "web_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user", String(100), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("key_id", String(40)),  # the key of the request that made it: its session ends with that key
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float),
)
