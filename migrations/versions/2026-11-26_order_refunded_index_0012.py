"""tickets by order with their refunded amount

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 14:00:00

Every intake batch sums what was already refunded on its orders. Through ix_tickets_order_id each
of those tickets was read from the table for its refunded_amount: scattered pages of a large table,
~7 % of the server's samples during the intake scenario at 1,000,000 tickets on SQLite (bench F26).
With the amount in the index the sum reads the index alone, and lookups by order still use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_order_refunded', ['order_id', 'refunded_amount'], unique=False)
        batch_op.drop_index('ix_tickets_order_id')


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_order_id', ['order_id'], unique=False)
        batch_op.drop_index('ix_tickets_order_refunded')
