"""limits.max_priority (issue 20): the highest --priority a user's jobs may ask for."""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"


def upgrade() -> None:
    with op.batch_alter_table("limits") as batch:
        batch.add_column(sa.Column("max_priority", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("limits") as batch:
        batch.drop_column("max_priority")
