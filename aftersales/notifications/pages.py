"""Pages: everyone's in-app notifications; for admins the webhook endpoints and the delivery log."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Redirect, Template
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import current_principal, requires
from aftersales.clock import Clock
from aftersales.errors import DomainError
from aftersales.notifications.controllers import (
    DELIVERY_STATUSES,
    WebhookIn,
    create_endpoint,
    deactivate_endpoint,
    delivery_log,
    list_endpoints,
)
from aftersales.notifications.models import FORMATS, Notification
from aftersales.pages import is_htmx, page_auth_error, render

PEOPLE = ("agent", "supervisor", "product", "admin")
PAGE_AUTH = {NotAuthorizedException: page_auth_error, PermissionDeniedException: page_auth_error}


def status_name(status: str) -> str:
    names = {"pending": i18n.gettext("Pending"), "delivered": i18n.gettext("Delivered"), "failed": i18n.gettext("Failed")}
    return names.get(status, status)


class NotificationPages(Controller):
    include_in_schema = False
    guards = [requires(*PEOPLE)]
    exception_handlers = PAGE_AUTH

    @get("/notifications")
    async def inbox(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Template:
        return render(request, "notifications/inbox.html", await _inbox(request, db_session), blocks=("notification_list",))

    @post("/notifications/{notification_id:int}/read")
    async def mark_read(self, request: Request[Any, Any, Any], notification_id: int, db_session: AsyncSession, clock: Clock) -> Template | Redirect:
        """Only the reader's own notifications change; marking twice keeps the first time."""
        user_id = current_principal(request).id
        await db_session.execute(
            update(Notification)
            .where(Notification.id == notification_id, Notification.user_id == user_id, Notification.read_at.is_(None))
            .values(read_at=clock.now())
        )
        await db_session.commit()
        return await self._answer(request, db_session)

    @post("/notifications/read-all")
    async def mark_all_read(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Template | Redirect:
        user_id = current_principal(request).id
        await db_session.execute(
            update(Notification).where(Notification.user_id == user_id, Notification.read_at.is_(None)).values(read_at=clock.now())
        )
        await db_session.commit()
        return await self._answer(request, db_session)

    async def _answer(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Template | Redirect:
        if not is_htmx(request):
            return Redirect("/notifications", status_code=303)
        return render(request, "notifications/inbox.html", await _inbox(request, db_session), block="notification_list")


async def _inbox(request: Request[Any, Any, Any], db_session: AsyncSession) -> dict[str, Any]:
    user_id = current_principal(request).id
    rows = list((await db_session.execute(
        select(Notification).where(Notification.user_id == user_id)
        .order_by(Notification.read_at.is_not(None), Notification.created_at.desc(), Notification.id.desc())
        .limit(200)
    )).scalars())
    unread = await db_session.scalar(
        select(func.count()).select_from(Notification).where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )
    return {"notifications": rows, "unread": int(unread or 0)}


class AdminNotificationPages(Controller):
    include_in_schema = False
    guards = [requires("admin")]
    exception_handlers = PAGE_AUTH

    @get("/admin/deliveries")
    async def deliveries(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Template:
        """The outbox: every webhook delivery with its attempts and last error."""
        status = request.query_params.get("status") or None
        if status not in DELIVERY_STATUSES:
            status = None
        context = {
            "deliveries": await delivery_log(db_session, status, limit=200),
            "status": status or "",
            "statuses": DELIVERY_STATUSES,
            "status_name": status_name,
        }
        return render(request, "notifications/deliveries.html", context, blocks=("delivery_list",))

    @get("/admin/webhooks")
    async def webhooks(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Template:
        return render(request, "notifications/webhooks.html", await _webhooks_context(db_session), blocks=("webhooks",))

    @post("/admin/webhooks")
    async def add_webhook(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Template:
        """Add an endpoint. The answer shows its secret once, so it is a page, not a redirect."""
        form = await request.form()
        raw_events = str(form.get("events", ""))
        values = {"name": str(form.get("name", "")), "url": str(form.get("url", "")), "format": str(form.get("format", "json"))}
        error, created, status_code = None, None, 201
        try:
            events = [e.strip() for e in raw_events.replace("，", ",").split(",") if e.strip()]
            data = msgspec.convert({**values, "events": events}, WebhookIn)
            created = await create_endpoint(db_session, clock, data)
            await db_session.commit()
        except DomainError as exc:
            await db_session.rollback()
            error, status_code = exc.detail, exc.status_code
        except msgspec.ValidationError as exc:  # says which field; the form keeps what was typed
            await db_session.rollback()
            error, status_code = str(exc), 422
        context = await _webhooks_context(db_session)
        context.update(created=created, error=error, form={**values, "events": raw_events} if error else {})
        return render(request, "notifications/webhooks.html", context, blocks=("webhooks",), status_code=status_code)

    @post("/admin/webhooks/{endpoint_id:int}/deactivate")
    async def deactivate(self, request: Request[Any, Any, Any], endpoint_id: int, db_session: AsyncSession) -> Template | Redirect:
        await deactivate_endpoint(db_session, endpoint_id)
        await db_session.commit()
        if not is_htmx(request):
            return Redirect("/admin/webhooks", status_code=303)
        return render(request, "notifications/webhooks.html", await _webhooks_context(db_session), block="webhooks")


async def _webhooks_context(db_session: AsyncSession) -> dict[str, Any]:
    return {"endpoints": await list_endpoints(db_session), "formats": FORMATS, "created": None, "error": None, "form": {}}
