"""schedule and app names per owner (issue 18.4)

Schedules: unique (owner, name) instead of name; parents stored as "owner/name".
Apps: primary key (owner, name), a shared app's name unique among the shared ones;
versions keyed by (owner, app, version); the volume key kept in each version's spec
(existing apps keep their "app/volume" key, so their volumes stay where they are).

SQLite cannot drop a UNIQUE or PRIMARY KEY constraint, so the tables are rebuilt. With
foreign_keys=ON a DROP TABLE of a parent deletes its children's rows (ON DELETE
CASCADE): a batch rebuild of the parent alone would empty schedule_runs and
app_versions. So the children are rebuilt too, both copied before anything is dropped;
a rename updates the new children's references to the new parent's final name.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"

_SCHEDULE_COLS = (
    "id, name, owner, kind, expr, tz, start_at, repeat, max_lateness_s, overlap, catch_up, parents, "
    "after_mode, spec, enabled, next_fire_at, fired, seen, created_at"
)
_RUN_COLS = "id, schedule_id, fire_time, job_id, state, reason, start_deadline, created_at"


def _new_tables(md: sa.MetaData) -> None:
    sa.Table(
        "schedules_new",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("expr", sa.String(200), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("start_at", sa.Float, nullable=False),
        sa.Column("repeat", sa.Integer),
        sa.Column("max_lateness_s", sa.Float),
        sa.Column("overlap", sa.String(10), nullable=False),
        sa.Column("catch_up", sa.String(10), nullable=False),
        sa.Column("parents", sa.Text, nullable=False),
        sa.Column("after_mode", sa.String(10), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("next_fire_at", sa.Float),
        sa.Column("fired", sa.Integer, nullable=False),
        sa.Column("seen", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("owner", "name", name="ux_schedules_owner_name"),
    )
    sa.Table(
        "schedule_runs_new",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.Integer, sa.ForeignKey("schedules_new.id", ondelete="CASCADE"), nullable=False),
        sa.Column("fire_time", sa.Float, nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("start_deadline", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    sa.Table(
        "apps_new",
        md,
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("shared", sa.Boolean, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "app_versions_new",
        md,
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("app", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["owner", "app"], ["apps_new.owner", "apps_new.name"], ondelete="CASCADE", name="fk_app_versions_app"
        ),
    )


def _rewrite_values(conn: sa.Connection) -> None:
    """Parents as "owner/name" (names were unique: the parent's owner is known); each
    version's volume with its key."""
    owner_of: dict[str, str] = dict(conn.execute(sa.text("SELECT name, owner FROM schedules")).all())
    admins = {r[0] for r in conn.execute(sa.text("SELECT name FROM users WHERE role = 'admin'"))}

    def parent(name: str, owner: str) -> str:
        # another user's only for an admin's schedule (a name deleted and taken by someone
        # else had linked a user's schedule to theirs): else the owner's own, maybe missing
        theirs = owner_of.get(name, owner)
        return f"{theirs if owner in admins else owner}/{name}"

    for sid, owner, parents in conn.execute(sa.text("SELECT id, owner, parents FROM schedules")).all():
        keyed = [parent(p, owner) for p in json.loads(parents)]
        conn.execute(sa.text("UPDATE schedules SET parents = :p WHERE id = :i"), {"p": json.dumps(keyed), "i": sid})
    for app, version, spec in conn.execute(sa.text("SELECT app, version, spec FROM app_versions")).all():
        s = json.loads(spec)
        if s.get("volume"):
            name, size = s["volume"][:2]
            s["volume"] = [name, size, f"{app}/{name}"]
            conn.execute(
                sa.text("UPDATE app_versions SET spec = :s WHERE app = :a AND version = :v"),
                {"s": json.dumps(s), "a": app, "v": version},
            )


def upgrade() -> None:
    conn = op.get_bind()
    _rewrite_values(conn)
    md = sa.MetaData()
    _new_tables(md)
    md.create_all(conn)
    conn.execute(sa.text(f"INSERT INTO schedules_new ({_SCHEDULE_COLS}) SELECT {_SCHEDULE_COLS} FROM schedules"))
    conn.execute(sa.text(f"INSERT INTO schedule_runs_new ({_RUN_COLS}) SELECT {_RUN_COLS} FROM schedule_runs"))
    conn.execute(
        sa.text(
            "INSERT INTO apps_new (owner, name, shared, enabled, version, created_at, updated_at) "
            "SELECT owner, name, shared, enabled, version, created_at, updated_at FROM apps"
        )
    )
    conn.execute(
        sa.text(
            "INSERT INTO app_versions_new (owner, app, version, spec, created_at) "
            "SELECT a.owner, v.app, v.version, v.spec, v.created_at FROM app_versions v JOIN apps a ON a.name = v.app"
        )
    )
    for child, parent in (("schedule_runs", "schedules"), ("app_versions", "apps")):
        op.drop_table(child)
        op.drop_table(parent)
        op.rename_table(f"{parent}_new", parent)
        op.rename_table(f"{child}_new", child)
    op.create_index("ux_schedule_runs_fire", "schedule_runs", ["schedule_id", "fire_time"], unique=True)
    where = sa.text("shared")  # a shared app's name is unique among the shared ones
    op.create_index("ux_apps_shared_name", "apps", ["name"], unique=True, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    raise NotImplementedError("names per owner cannot be made global again without losing schedules or apps")
