"""next ticket's index in the full hand-out order

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26 20:00:00

"Next ticket" reads, for each (queue, status) pair of the agent's queues, the first unassigned
tickets by SLA due time, then priority (highest first), age and id. ix_tickets_next ended at
sla_due_at, so PostgreSQL read a pair's whole backlog and sorted it for the tie-breakers (bench F27:
7.8 ms at 1,000,000 tickets, growing with the backlog). With the whole order in the index each pair
is read from its first rows. PostgreSQL takes `assignee_id IS NULL` for a filter rather than an
equality, so the index leaves assignee_id out of its columns and holds only unassigned tickets.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_next')
        batch_op.create_index('ix_tickets_next', ['queue', 'status', 'sla_due_at', sa.literal_column('priority').desc(),
                                                  'requested_at', 'id'], unique=False,
                              sqlite_where=sa.text('assignee_id IS NULL'), postgresql_where=sa.text('assignee_id IS NULL'))


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_next')
        batch_op.create_index('ix_tickets_next', ['queue', 'assignee_id', 'status', 'sla_due_at'], unique=False)
