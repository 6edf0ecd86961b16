"""Fair share (issue 20): accounts, associations (an account and a user, with decayed
usage), limits; jobs.assoc (what a job is charged to) and jobs.app. Every existing job is
charged to the account "default"."""

import time

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    now = time.time()
    op.create_table(
        "accounts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("shares", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "associations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(64), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("shares", sa.Integer, nullable=False),
        sa.Column("member", sa.Boolean, nullable=False),
        sa.Column("joined_at", sa.Float, nullable=False),
        sa.Column("usage", sa.Float, nullable=False),
        sa.Column("usage_at", sa.Float, nullable=False),
        sa.UniqueConstraint("account", "user", name="ux_associations_account_user"),
    )
    op.create_table(
        "limits",
        sa.Column("scope", sa.String(10), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("max_running_jobs", sa.Integer),
        sa.Column("max_running_cpus", sa.Integer),
        sa.Column("max_running_mem_mb", sa.Integer),
        sa.Column("max_running_gpus", sa.Integer),
        sa.Column("max_queued_jobs", sa.Integer),
        sa.Column("max_wall_s", sa.Float),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("assoc", sa.Integer))
        batch.add_column(sa.Column("app", sa.String(200)))
    op.create_index("ix_jobs_fair", "jobs", ["state", "assoc", sa.text("priority DESC"), "id"])
    op.create_index("ix_jobs_owner_state", "jobs", ["owner", "state"])
    conn = op.get_bind()
    conn.execute(
        sa.text("INSERT INTO accounts (name, shares, description, created_at) VALUES ('default', 1, :d, :t)"),
        {"d": "users who belong to no account", "t": now},
    )
    conn.execute(
        sa.text(
            'INSERT INTO associations (account, "user", shares, member, joined_at, usage, usage_at) '
            "SELECT 'default', owner, 1, :f, :t, 0.0, :t FROM jobs GROUP BY owner"
        ),
        {"f": False, "t": now},
    )
    conn.execute(
        sa.text(
            "UPDATE jobs SET assoc = (SELECT a.id FROM associations a "
            "WHERE a.account = 'default' AND a.\"user\" = jobs.owner)"
        )
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_state", "jobs")
    op.drop_index("ix_jobs_fair", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("app")
        batch.drop_column("assoc")
    op.drop_table("limits")
    op.drop_table("associations")
    op.drop_table("accounts")
