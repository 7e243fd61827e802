"""The app factory: one place wires settings, database, routes and error handling."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

from litestar import Litestar, Request, get
from litestar.config.csrf import CSRFConfig
from litestar.static_files import create_static_files_router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from sqlalchemy.exc import IntegrityError

from aftersales import i18n
from aftersales.auth.controllers import AuthController
from aftersales.auth.guards import resolve_principal
from aftersales.auth.tokens import SessionCache, TokenCache
from aftersales.clock import Clock, SystemClock
from aftersales.db import create_engine, create_sessionmaker, reader_engine
from aftersales.errors import EXCEPTION_HANDLERS, problem
from aftersales.feedback.pages import FeedbackPages
from aftersales.feedback.pages import TicketFeedbackPages
from aftersales.feedback.controllers import FeedbackController, FeedbackReportPages
from aftersales.feedback.settings_api import FeedbackSettingsController
from aftersales.feedback.settings_pages import FeedbackSettingsPages
from aftersales.notifications.controllers import WebhookController
from aftersales.notifications.pages import AdminNotificationPages, NotificationPages
from aftersales.sla.controllers import SlaController
from aftersales.sla.pages import SlaPages
from aftersales.orders.controllers import OrderController
from aftersales.pages import LANG_COOKIE, STATIC, template_config
from aftersales.settings import Settings
from aftersales.tickets.controllers import TicketController
from aftersales.tickets.intake_queue import IntakeQueue
from aftersales.tickets.pages import AssignmentPages, TicketPages
from aftersales.tickets.policy_api import PolicyController
from aftersales.tickets.policy_pages import NextTicketPage, PolicyPages
from aftersales.web import provide_clock, provide_db_session, provide_settings, write_session


@get("/healthz", tags=["ops"], sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness, and the ceiling the benchmarks compare every endpoint against."""
    return {"status": "ok"}


def integrity_error_handler(request: Any, exc: IntegrityError) -> Any:
    # Reached only when two writers race on the same unique value; the loser may simply retry.
    return problem(409, "Concurrent write", "another request wrote the same record at the same moment; retry", "concurrent-write")


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    engine = create_engine(settings.database_url, echo=settings.sql_echo, pool_size=settings.db_pool_size)
    read_engine = reader_engine(engine, settings.database_url, echo=settings.sql_echo)

    worker_stop = asyncio.Event()
    worker_tasks: list[asyncio.Task[None]] = []

    async def tune_gc(app: Litestar) -> None:
        if settings.gc_freeze:
            # What exists once the app is up lives as long as the process: keep it out of the cyclic
            # collector's full passes, which otherwise walk it all and stall requests (bench F13).
            gc.collect()
            gc.freeze()
            # A request makes tens of thousands of short-lived objects: collect the young ones less often.
            gc.set_threshold(50_000, 20, 20)

    async def start_worker(app: Litestar) -> None:
        # On the embedded default one process does everything; with PostgreSQL run `aftersales worker`.
        if settings.run_worker == "on" or (settings.run_worker == "auto" and settings.is_sqlite):
            from aftersales.worker import run_forever

            worker_tasks.append(asyncio.create_task(
                run_forever(app.state.sessionmaker, app.state.clock, interval=settings.worker_interval_seconds,
                            stop=worker_stop, tz=settings.zone, read=app.state.read_sessionmaker)
            ))

    async def log_intake_batching(app: Litestar) -> None:
        if app.state.intake_queue.batches:  # how well group commit worked while the process ran
            logging.getLogger("aftersales.intake").info("%s", app.state.intake_queue.summary())

    async def dispose_engine(app: Litestar) -> None:
        worker_stop.set()
        for task in worker_tasks:
            await task
        await engine.dispose()
        if read_engine is not engine:
            await read_engine.dispose()

    async def choose_locale(request: Request[Any, Any, Any]) -> None:
        """The language: the user's switch (cookie), then their saved choice, then the operator's default."""
        locale = request.cookies.get(LANG_COOKIE)
        if locale not in i18n.LOCALES and not request.url.path.startswith(("/api/", "/static/")):
            await resolve_principal(request)
            locale = request.scope.get("state", {}).get("user_locale")
        i18n.set_locale(locale if locale in i18n.LOCALES else settings.default_locale)

    app = Litestar(
        route_handlers=[
            healthz,
            OrderController,
            TicketController,
            PolicyController,
            AuthController,
            TicketPages,
            AssignmentPages,
            FeedbackPages,
            FeedbackReportPages,
            TicketFeedbackPages,
            FeedbackController,
            FeedbackSettingsController,
            FeedbackSettingsPages,
            PolicyPages,
            NextTicketPage,
            SlaController,
            SlaPages,
            WebhookController,
            NotificationPages,
            AdminNotificationPages,
            create_static_files_router(path="/static", directories=[STATIC], include_in_schema=False),
        ],
        before_request=choose_locale,
        template_config=template_config(settings.zone),
        csrf_config=CSRFConfig(
            secret=settings.secret_key,
            cookie_httponly=False,
            # The API authenticates with bearer tokens only, never cookies, so CSRF cannot reach it.
            exclude=["/api/", "/healthz", "/schema"],
        ),
        dependencies={
            "db_session": Provide(provide_db_session),
            "clock": Provide(provide_clock, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        exception_handlers={**EXCEPTION_HANDLERS, IntegrityError: integrity_error_handler},
        on_startup=[tune_gc, start_worker],
        on_shutdown=[log_intake_batching, dispose_engine],
        openapi_config=OpenAPIConfig(
            title="aftersales",
            version="1",
            path="/schema",
            # Only the JSON document: the HTML viewers would load their scripts from a CDN.
            render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"])],
            components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
            security=[{"bearer": []}],
        ),
        request_max_body_size=settings.max_body_bytes,
        debug=settings.debug,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.read_sessionmaker = create_sessionmaker(read_engine) if read_engine is not engine else app.state.sessionmaker
    app.state.clock = clock or SystemClock()
    # SQLite has one writer: queue this process's write requests in arrival order here instead of in
    # SQLite's busy handler, whose sleeps (up to 100 ms) leave the lock idle and starve some writers.
    app.state.write_gate = asyncio.Lock() if settings.is_sqlite else contextlib.nullcontext()
    app.state.token_cache = TokenCache()
    app.state.session_cache = SessionCache()
    app.state.intake_queue = IntakeQueue(lambda: write_session(app.state), app.state.clock, settings.zone,
                                         max_batch=settings.intake_batch_max,
                                         parallel=1 if settings.is_sqlite else settings.intake_parallel_batches)
    return app
