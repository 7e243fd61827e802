"""The migrated schema is exactly what the models declare: `alembic revision --autogenerate`
would produce an empty migration."""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, inspect

import aftersales.models  # noqa: F401  (registers every table on the metadata)
from aftersales.db import Base


def _normalized_default(text: str | None) -> str | None:
    # PostgreSQL reflects '[]'::json for a server default written as '[]'.
    if text is None:
        return None
    return re.sub(r"::[a-z ]+$", "", text.strip()).strip("'\"")


def _compare_server_default(context, inspected_column, metadata_column, inspected_default, metadata_default, rendered_metadata_default):
    """alembic compares PostgreSQL defaults by running `SELECT a = b`, which JSON has no operator
    for; compare JSON defaults as text instead and leave every other type to alembic."""
    if isinstance(metadata_column.type, JSON):
        return _normalized_default(inspected_default) != _normalized_default(rendered_metadata_default)
    return None


def _diff(connection: Any) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "compare_server_default": _compare_server_default, "target_metadata": Base.metadata},
    )
    diff = compare_metadata(context, Base.metadata)
    # alembic's own bookkeeping table is not part of the models
    return [d for d in diff if not (d[0] == "remove_table" and d[1].name == "alembic_version")]


async def test_models_and_migrations_agree(engine):
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == [], "models and migrations differ; generate a migration:\n" + "\n".join(map(repr, diff))


async def test_every_model_table_exists_with_its_indexes(engine):
    def inspect_db(connection: Any) -> dict[str, set[str]]:
        insp = inspect(connection)
        return {name: {ix["name"] for ix in insp.get_indexes(name)} for name in insp.get_table_names()}

    async with engine.connect() as conn:
        found = await conn.run_sync(inspect_db)
    for table in Base.metadata.sorted_tables:
        assert table.name in found, table.name
        declared = {ix.name for ix in table.indexes}
        assert declared <= found[table.name], (table.name, declared - found[table.name])
