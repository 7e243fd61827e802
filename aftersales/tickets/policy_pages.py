"""Supervisor pages: the policy editor and simulator, queues and their members, next ticket."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aftersales import i18n
from aftersales.auth.guards import WORK_TICKETS, current_principal, requires
from aftersales.auth.models import User
from aftersales.clock import Clock
from aftersales.errors import DomainError, InvalidInput
from aftersales.pages import PAGE_ERRORS, is_htmx, render
from aftersales.settings import Settings
from aftersales.web import write_session
from aftersales.tickets.assignment import AssignmentService
from aftersales.tickets.policy_api import SUPERVISE, QueueIn, _queues_out, save_queue
from aftersales.tickets.policy_service import PolicyService

HANDLERS = PAGE_ERRORS


class PolicyPages(Controller):
    include_in_schema = False
    guards = [requires(*SUPERVISE)]
    exception_handlers = HANDLERS

    @get("/policy")
    async def policy(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock, settings: Settings) -> Template:
        return render(request, "policy/policy.html", await _policy_context(db_session, clock, settings), blocks=("policy_editor", "policy_versions"))

    @post("/policy")
    async def policy_action(self, request: Request[Any, Any, Any], clock: Clock, settings: Settings) -> Template | Redirect:
        """One form, three buttons: check & simulate the draft, save it, or publish a saved draft."""
        form = await request.form()
        state = request.app.state
        if str(form.get("intent", "simulate")) in ("publish", "save"):
            async with write_session(state) as db_session:
                return await _policy_action(request, form, db_session, clock, settings)
        # Simulating only reads, for seconds over a long period: on SQLite a read session keeps the
        # write lock and the process's write gate free meanwhile.
        async with state.read_sessionmaker() as db_session:
            return await _policy_action(request, form, db_session, clock, settings)

    @get("/queues")
    async def queues(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Template:
        return render(request, "policy/queues.html", await _queues_context(db_session), blocks=("queue_table",))

    @post("/queues/{key:str}")
    async def save(self, request: Request[Any, Any, Any], key: str, db_session: AsyncSession) -> Template | Redirect:
        form = await request.form()
        try:
            data = QueueIn(
                name_zh=str(form.get("name_zh", "")).strip() or key, name_en=str(form.get("name_en", "")).strip() or key,
                priority=_int(form.get("priority"), "priority"), description=str(form.get("description", "")),
                auto_assign=form.get("auto_assign") == "on", agent_cap=_int(form.get("agent_cap") or 20, "agent_cap"),
                active=form.get("active") == "on", members=[_int(m, "members") for m in form.getall("members", [])],
            )
            await save_queue(db_session, key, data)
            await db_session.commit()
        except DomainError as exc:
            await db_session.rollback()
            context = await _queues_context(db_session)
            context["error"] = exc.detail
            return render(request, "policy/queues.html", context, blocks=("queue_table",), status_code=exc.status_code)
        if is_htmx(request):
            context = await _queues_context(db_session)
            context["notice"] = i18n.gettext("Queue %(key)s saved.", key=key)
            return render(request, "policy/queues.html", context, block="queue_table")
        return Redirect("/queues", status_code=303)


class NextTicketPage(Controller):
    include_in_schema = False
    guards = [requires(*WORK_TICKETS)]
    exception_handlers = HANDLERS

    @post("/queue/next")
    async def next_ticket(self, request: Request[Any, Any, Any], db_session: AsyncSession, clock: Clock) -> Redirect:
        ticket = await AssignmentService(db_session, clock).next_ticket(current_principal(request))
        await db_session.commit()
        if ticket is None:
            return Redirect("/queue?empty=1", status_code=303)
        return Redirect(f"/tickets/{ticket.id}", status_code=303)


async def _policy_context(db_session: AsyncSession, clock: Clock, settings: Settings, *, text: str | None = None, note: str = "") -> dict[str, Any]:
    service = PolicyService(db_session, clock)
    current = await service.current()
    versions = await service.versions()
    current_text = next((v.text for v in versions if v.version == current.version), "")
    today = clock.now().astimezone(settings.zone).date()
    return {
        "current_version": current.version,
        "versions": versions,
        "text": text if text is not None else current_text,
        "note": note,
        "start": (today - timedelta(days=60)).isoformat(),
        "end": today.isoformat(),
        "simulation": None,
        "error": None,
        "notice": None,
    }


async def _queues_context(db_session: AsyncSession) -> dict[str, Any]:
    people = list((await db_session.execute(
        select(User).where(User.role.in_(("agent", "supervisor")), User.active.is_(True)).order_by(User.username)
    )).scalars())
    # A queue's routing conditions are the policy rules that send tickets to it.
    return {"queues": await _queues_out(db_session), "people": people, "error": None, "notice": None,
            "routes": await _routes_by_queue(db_session)}


async def _routes_by_queue(db_session: AsyncSession) -> dict[str, list[str]]:
    from aftersales.clock import SystemClock

    current = await PolicyService(db_session, SystemClock()).current()
    routes: dict[str, list[str]] = {}
    for rule in current.policy.rules:
        if rule.outcome.queue:
            routes.setdefault(rule.outcome.queue, []).append(f"v{current.version} · {rule.name} (line {rule.line})")
    if current.policy.default.queue:
        routes.setdefault(current.policy.default.queue, []).append(f"v{current.version} · default")
    return routes


def _day(value: str, settings: Settings, field: str, *, next_day: bool = False) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput.on(field, "is not a date (YYYY-MM-DD)") from exc
    return datetime.combine(day + timedelta(days=1 if next_day else 0), time.min, tzinfo=settings.zone)


def _int(value: Any, field: str) -> int:
    try:
        return int(str(value))
    except ValueError as exc:
        raise InvalidInput.on(field, "must be a whole number") from exc


async def _policy_action(request: Request[Any, Any, Any], form: Any, db_session: AsyncSession, clock: Clock,
                         settings: Settings) -> Template | Redirect:
    """The /policy form's work on the session its intent needs."""
    text = str(form.get("text", ""))
    note = str(form.get("note", ""))
    intent = str(form.get("intent", "simulate"))
    service = PolicyService(db_session, clock)
    outcome: dict[str, Any] = {"error": None, "notice": None, "simulation": None}
    status_code = 200
    try:
        if intent == "publish":
            await service.publish(int(str(form.get("version", "0"))), current_principal(request).actor)
            await db_session.commit()
            return Redirect("/policy", status_code=303)
        if intent == "save":
            row = await service.save_draft(text, note, current_principal(request).actor)
            await db_session.commit()
            outcome["notice"] = i18n.gettext("Saved as draft version %(v)s. Simulate it, then publish.", v=row.version)
        else:
            defaults = await _policy_context(db_session, clock, settings)
            start = _day(str(form.get("start") or defaults["start"]), settings, "start")
            end = _day(str(form.get("end") or defaults["end"]), settings, "end", next_day=True)
            outcome["simulation"] = await service.simulate(text, start, end, max_listed=50)
    except DomainError as exc:
        await db_session.rollback()
        outcome["error"], status_code = exc.detail, exc.status_code
    # Built after any rollback, so nothing in it is an expired (lazy-loading) object.
    context = {**await _policy_context(db_session, clock, settings, text=text, note=note), **outcome}
    context["start"] = str(form.get("start") or context["start"])
    context["end"] = str(form.get("end") or context["end"])
    if intent == "save" and is_htmx(request):
        # The versions list changed too: it rides along as an out-of-band swap.
        context["versions_oob"] = True
        return render(request, "policy/policy.html", context, block_names=["policy_editor", "policy_versions"],
                      status_code=status_code)
    return render(request, "policy/policy.html", context, blocks=("policy_editor",), status_code=status_code)
