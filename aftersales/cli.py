"""The `aftersales` command: migrate, serve, demo data and token administration."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import click

from aftersales.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def run_migrations(database_url: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")
    asyncio.run(_ensure_defaults(database_url))


async def _ensure_defaults(database_url: str) -> None:
    """The shipped queues and auto-approval policy (never overwrites an operator's edits)."""
    from aftersales.clock import SystemClock
    from aftersales.db import create_engine, create_sessionmaker
    from aftersales.feedback.service import FeedbackService
    from aftersales.sla.service import SlaService
    from aftersales.tickets.policy_service import PolicyService

    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await PolicyService(session, SystemClock()).ensure_defaults()
            await SlaService(session, SystemClock()).ensure_default_policy()
            await FeedbackService(session, SystemClock()).ensure_defaults()
            await session.commit()
    finally:
        await engine.dispose()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """aftersales — after-sales tickets and the feedback loop for live-stream sellers.

    Configuration comes from AFTERSALES_* environment variables (see the README).
    """


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    settings = Settings.from_env()
    run_migrations(settings.database_url)
    click.echo(f"database is at the latest schema: {_safe_url(settings.database_url)}")


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default AFTERSALES_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default AFTERSALES_PORT or 8000).")
@click.option("--workers", default=1, show_default=True, help="Server processes (use 1 with SQLite).")
@click.option("--migrate/--no-migrate", "do_migrate", default=True, show_default=True, help="Run migrations first.")
def serve(host: str | None, port: int | None, workers: int, do_migrate: bool) -> None:
    """Run the HTTP service with uvicorn."""
    import uvicorn

    settings = Settings.from_env()
    if do_migrate:
        run_migrations(settings.database_url)
    host = host or settings.host
    port = port or settings.port
    click.echo(f"aftersales listening on http://{host}:{port}  (database: {_safe_url(settings.database_url)})")
    os.environ.setdefault("AFTERSALES_GC_FREEZE", "true")
    uvicorn.run(
        "aftersales.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_level="warning", access_log=False, lifespan="on",
    )


@main.command()
@click.option("--interval", default=None, type=float, help="Seconds between passes (default AFTERSALES_WORKER_INTERVAL_SECONDS).")
@click.option("--once", is_flag=True, help="Do one pass and exit.")
def worker(interval: float | None, once: bool) -> None:
    """Run the periodic work: SLA warnings and escalation, webhook delivery. Run as many as you like."""
    import logging

    import httpx

    from aftersales.clock import SystemClock
    from aftersales.db import create_engine, create_sessionmaker, reader_engine
    from aftersales.worker import run_forever, run_once

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    engine = create_engine(settings.database_url)
    factory = create_sessionmaker(engine)
    # On SQLite what only reads goes through deferred readers, off the one write lock (bench F25).
    read_engine = reader_engine(engine, settings.database_url)
    read = create_sessionmaker(read_engine)

    async def go() -> None:
        try:
            if once:
                async with httpx.AsyncClient() as client:
                    click.echo(await run_once(factory, SystemClock(), client, settings.zone, read))
            else:
                click.echo(f"worker running every {interval or settings.worker_interval_seconds:g} s (Ctrl-C to stop)")
                await run_forever(factory, SystemClock(), interval=interval or settings.worker_interval_seconds,
                                  tz=settings.zone, read=read)
        finally:
            await engine.dispose()
            if read_engine is not engine:
                await read_engine.dispose()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--orders", default=1500, show_default=True, help="How many orders to generate.")
@click.option("--seed", default=20261125, show_default=True, help="Random seed: the same seed gives the same data.")
@click.option("--reset/--no-reset", default=True, show_default=True, help="Empty the database first.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the database already holds orders.")
def demo(orders: int, seed: int, reset: bool, if_empty: bool) -> None:
    """Fill the database with a realistic, deterministic live-commerce data set."""
    from aftersales.demo import generate_demo

    settings = Settings.from_env()
    run_migrations(settings.database_url)
    if if_empty and asyncio.run(_has_orders(settings.database_url)):
        click.echo("database already has data; keeping it (run `aftersales demo` to regenerate)")
        return
    summary = asyncio.run(generate_demo(settings, orders=orders, seed=seed, reset=reset))
    summary += asyncio.run(_demo_users(settings))
    for line in summary:
        click.echo(line)


async def _demo_users(settings: Settings) -> list[str]:
    from aftersales.auth.demo_users import create_demo_users
    from aftersales.clock import SystemClock
    from aftersales.db import create_engine, create_sessionmaker

    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await create_demo_users(session, SystemClock())
    finally:
        await engine.dispose()


@main.group()
def user() -> None:
    """People who sign in to the pages."""


@user.command("create")
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice(["agent", "supervisor", "product", "admin"]))
@click.option("--name", "display_name", default="", help="Name shown on pages (default: the username).")
@click.option("--team", "teams", multiple=True, type=click.Choice(["selection", "qc", "script", "logistics"]),
              help="Team of a product-role user; repeat for several.")
@click.password_option(help="Asked for when not given (at least 8 characters).")
def user_create(username: str, role: str, display_name: str, teams: tuple[str, ...], password: str) -> None:
    """Create a user; the password is stored as an argon2 hash."""
    from aftersales.errors import DomainError

    try:
        asyncio.run(_create_user(username, role, display_name, list(teams), password))
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"created {role} {username}")


async def _create_user(username: str, role: str, display_name: str, teams: list[str], password: str) -> None:
    from aftersales.auth.service import AuthService
    from aftersales.clock import SystemClock
    from aftersales.db import create_engine, create_sessionmaker

    settings = Settings.from_env()
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await AuthService(session, SystemClock()).create_user(
                username=username, password=password, role=role, display_name=display_name, teams=teams
            )
            await session.commit()
    finally:
        await engine.dispose()


@main.group()
def token() -> None:
    """API tokens for integrations and scripts."""


@token.command("create")
@click.option("--role", type=click.Choice(["integration", "agent", "supervisor", "product", "admin"]),
              help="Role of a service token (not with --user).")
@click.option("--name", help="Who will use it, e.g. the platform or carrier feed name.")
@click.option("--user", "username", help="Make a personal token that acts as this user (their role and queues).")
def token_create(role: str | None, name: str | None, username: str | None) -> None:
    """Create a token and print it once (only its hash is stored)."""
    if bool(username) == bool(role):
        raise click.UsageError("give either --role (a service token) or --user (a personal token)")
    token_value = asyncio.run(_create_token(role, name or username or role or "", username))
    click.echo(token_value)


async def _create_token(role: str | None, name: str, username: str | None = None) -> str:
    from aftersales.auth.tokens import create_token
    from aftersales.clock import SystemClock
    from aftersales.db import create_engine, create_sessionmaker

    settings = Settings.from_env()
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            user_id = None
            if username:
                from sqlalchemy import select

                from aftersales.auth.models import User

                user = await session.scalar(select(User).where(User.username == username))
                if user is None:
                    raise click.ClickException(f"no user {username!r}")
                role, user_id = user.role, user.id
            assert role is not None
            value = await create_token(session, SystemClock(), name=name, role=role, user_id=user_id)
            await session.commit()
            return value
    finally:
        await engine.dispose()


async def _has_orders(url: str) -> bool:
    from sqlalchemy import select

    from aftersales.db import create_engine
    from aftersales.orders.models import Order

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.scalar(select(Order.id).limit(1))) is not None
    finally:
        await engine.dispose()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    main()
