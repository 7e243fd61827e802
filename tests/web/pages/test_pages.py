"""Web tests for the server-rendered pages (DESIGN "Conventions" 6, 8, 9).

What they protect:
- every page is a fragment of itself: the full page for a plain request, only the named block for
  htmx, with `Vary: HX-Request, HX-Target`, and both show the same data;
- the queue's filters and keyset paging, and that the URL carries the filters;
- ticket actions through forms: htmx gets the fragment, a stale or refused action answers 409 with
  an alert and changes nothing, a plain form post gets a 303;
- who may see and do what (pages and API), CSRF, sign-in throttling, sign-out and language.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import msgspec
import pytest
from sqlalchemy import func, select

from aftersales.auth.models import WebSession
from aftersales.auth.principal import Principal
from aftersales.db import create_sessionmaker
from aftersales.models import Ticket, TimelineEvent
from aftersales.tickets.pages import OPEN_STATUSES
from aftersales.tickets.schemas import TicketIn
from aftersales.tickets.service import TicketService
from tests.conftest import START
from tests.factories import order_body, ticket_body
from tests.web.pages.helpers import (
    browser_like, db_state, fetch_csrf, open_ticket, post_form, sign_in, ticket_numbers, ticket_steps,
)

TICKET_BLOCKS = ("ticket_main", "ticket_header", "ticket_actions", "ticket_timeline")
NAV = '<nav class="nav">'


def htmx(target: str) -> dict[str, str]:
    return {"HX-Request": "true", "HX-Target": target}


def assert_full_page(response: Any, *, nav: bool = True) -> str:
    assert response.status_code == 200, response.text
    body = response.text
    assert "<html" in body and "</html>" in body
    assert '<header class="topbar">' in body
    if nav:
        assert NAV in body
    assert_vary(response)
    return body


def assert_fragment(response: Any, block: str, *, status: int = 200) -> str:
    assert response.status_code == status, response.text
    body = response.text
    assert re.match(rf'<[a-z]+ id="{block}"[ >]', body.lstrip()), f"fragment does not start with #{block}: {body[:120]!r}"
    assert "<html" not in body and NAV not in body and '<header class="topbar">' not in body
    assert_vary(response)
    return body


def assert_vary(response: Any) -> None:
    vary = [v.strip().lower() for v in response.headers.get("vary", "").split(",")]
    assert "hx-request" in vary and "hx-target" in vary, response.headers.get("vary")


def status_in(fragment: str) -> str:
    """The status shown in the ticket header (the first badge after the number)."""
    found = re.search(r'<h1>[^<]*<span class="badge status-[a-z_]+" data-status="([a-z_]+)"', fragment)
    assert found, fragment[:400]
    return found.group(1)


def next_link(body: str) -> str | None:
    found = re.search(r'<a class="next" href="([^"]+)"', body)
    return html.unescape(found.group(1)) if found else None


# -- full page and fragments -------------------------------------------------------------------


async def test_queue_full_page_and_ticket_list_fragment(clients, seeded):
    agent = await clients("agent")
    full = assert_full_page(await agent.get("/queue"))
    assert 'id="queue_filters"' in full
    fragment = assert_fragment(await agent.get("/queue", headers=htmx("ticket_list")), "ticket_list")
    assert 'id="queue_filters"' not in fragment
    assert ticket_numbers(full) == ticket_numbers(fragment) == [seeded["number"]]


async def test_unknown_htmx_target_gets_the_full_page(clients, seeded):
    agent = await clients("agent")
    response = await agent.get("/queue", headers=htmx("no_such_block"))
    assert ticket_numbers(assert_full_page(response)) == [seeded["number"]]


async def test_ticket_full_page_and_each_fragment(clients, seeded):
    agent = await clients("agent")
    url = f"/tickets/{seeded['id']}"
    full = assert_full_page(await agent.get(url))
    assert seeded["number"] in full and status_in(full) == "pending_review"
    for block in TICKET_BLOCKS:
        fragment = assert_fragment(await agent.get(url, headers=htmx(block)), block)
        assert 'id="order_panel"' in full and 'id="order_panel"' not in fragment, block
        if block in ("ticket_main", "ticket_header"):
            assert seeded["number"] in fragment
            assert status_in(fragment) == status_in(full)
        if block in ("ticket_main", "ticket_actions"):
            assert f'action="/tickets/{seeded["id"]}/actions/approve"' in fragment
            assert f'<input type="hidden" name="version" value="{seeded["version"]}">' in fragment
        if block in ("ticket_main", "ticket_timeline"):
            # open + the intake decision: the same entries as in the full page
            assert ticket_steps(fragment) == ticket_steps(full) >= 2
        if block != "ticket_main":
            others = [other for other in TICKET_BLOCKS if other not in (block, "ticket_main")]
            assert not any(f'id="{other}"' in fragment for other in others), block


async def test_feedback_full_page_and_fragment(clients, seeded):
    product = await clients("product")
    full = assert_full_page(await product.get("/feedback"))
    fragment = assert_fragment(await product.get("/feedback", headers=htmx("feedback_body")), "feedback_body")
    # The seeded quality.defect ticket is routed to the product user's team (qc).
    for body in (full, fragment):
        assert "丝绒口红 #01" in body
        assert re.search(r'<td class="num">1</td>', body)
    assert "/feedback?team=qc" in full and "/feedback?team=qc" not in fragment
    # Only the user's own teams: asking for another team's figures shows their own team again.
    assert "/feedback?team=script" not in full
    other = assert_fragment(await product.get("/feedback?team=script", headers=htmx("feedback_body")), "feedback_body")
    assert other == fragment


async def test_login_page_is_a_full_page_even_for_htmx(client):
    full = assert_full_page(await client.get("/login"), nav=False)
    assert 'action="/login"' in full and 'name="_csrf_token"' in full
    # /login has no swappable block: an htmx request still gets the whole page.
    again = assert_full_page(await client.get("/login", headers=htmx("content")), nav=False)
    assert 'action="/login"' in again


# -- queue filters and paging ------------------------------------------------------------------


async def test_status_and_kind_filters_narrow_the_list(clients, seeded, client, tokens):
    exchange = await open_ticket(client, tokens, kind="exchange", requested_amount="120.00")
    complaint = await open_ticket(client, tokens, kind="complaint", reason_code="logistics.delay", items=[], requested_amount="0")
    # Precondition (the intake policy decides): both wait for a person.
    assert exchange["status"] == complaint["status"] == "pending_review"
    approved = await client.post(
        f"/api/v1/tickets/{seeded['id']}/actions/approve", json={"version": seeded["version"]}, headers=tokens["agent"]
    )
    assert approved.status_code == 200 and approved.json()["status"] == "awaiting_return"
    agent = await clients("agent")

    async def listed(query: str) -> set[str]:
        full = (await agent.get(f"/queue{query}")).text
        fragment = (await agent.get(f"/queue{query}", headers=htmx("ticket_list"))).text
        assert sorted(ticket_numbers(full)) == sorted(ticket_numbers(fragment))
        return set(ticket_numbers(fragment))

    everything = {seeded["number"], exchange["number"], complaint["number"]}
    assert await listed("") == everything
    assert await listed("?kind=exchange") == {exchange["number"]}
    assert await listed("?kind=exchange&kind=complaint") == {exchange["number"], complaint["number"]}
    assert await listed("?status=awaiting_return") == {seeded["number"]}
    assert await listed("?status=pending_review") == {exchange["number"], complaint["number"]}
    assert await listed("?status=pending_review&kind=return_refund") == set()
    assert await listed("?reason=logistics.delay") == {complaint["number"]}
    assert await listed("?status=closed") == set()


async def test_date_filters_use_the_operators_time_zone(clients, seeded, client, tokens):
    # 2026-11-19 17:00 UTC is already 2026-11-20 01:00 in Asia/Shanghai.
    late = await open_ticket(client, tokens, requested_at=(START - timedelta(hours=9)).isoformat())
    agent = await clients("agent")

    async def listed(query: str) -> set[str]:
        return set(ticket_numbers((await agent.get(f"/queue{query}", headers=htmx("ticket_list"))).text))

    both = {seeded["number"], late["number"]}
    assert await listed("?from=2026-11-20") == both
    assert await listed("?from=2026-11-20&to=2026-11-20") == both
    assert await listed("?to=2026-11-19") == set()
    assert await listed("?from=2026-11-21") == set()


async def test_filter_params_round_trip_into_the_form(clients, seeded):
    agent = await clients("agent")
    query = "status=pending_review&kind=return_refund&reason=quality.defect&assignee=none&from=2026-11-01&to=2026-11-30&sort=requested_at"
    body = assert_full_page(await agent.get(f"/queue?{query}"))
    form = body.split('id="queue_filters"', 1)[1].split("</form>", 1)[0]
    for name, value in (("status", "pending_review"), ("kind", "return_refund"), ("reason", "quality.defect"),
                        ("assignee", "none"), ("sort", "requested_at")):
        select_html = form.split(f'<select name="{name}">', 1)[1].split("</select>", 1)[0]
        selected = re.findall(r'<option value="([^"]*)"\s*selected', select_html)
        assert selected == [value], (name, selected)
    assert 'name="from" value="2026-11-01"' in form and 'name="to" value="2026-11-30"' in form
    assert ticket_numbers(body) == [seeded["number"]]


async def _many_tickets(engine, clock, count: int) -> list[str]:
    """`count` tickets straight through TicketService (much cheaper than `count` API calls).
    Pairs share a requested_at so that paging must break ties by id."""
    actor = Principal(kind="token", id=None, name="bulk", role="integration")
    numbers = []
    async with create_sessionmaker(engine)() as session:
        service = TicketService(session, clock)
        for i in range(count):
            at = START - timedelta(hours=1, minutes=i // 2)
            data = msgspec.convert(ticket_body(requested_amount="1.00", requested_at=at.isoformat()), TicketIn)
            ticket, created = await service.open_ticket(data, actor)
            assert created
            numbers.append(ticket.number)
        await session.commit()
    return numbers


async def test_keyset_paging_with_next_link(clients, seeded, engine, clock):
    numbers = set(await _many_tickets(engine, clock, 54)) | {seeded["number"]}
    agent = await clients("agent")
    for sort in ("", "requested_at"):
        first_url = "/queue?kind=return_refund" + (f"&sort={sort}" if sort else "")
        first = assert_full_page(await agent.get(first_url))
        page1 = ticket_numbers(first)
        assert len(page1) == 50
        url = next_link(first)
        assert url, "a full page of 50 must offer a next page"
        params = parse_qs(urlsplit(url).query)
        assert params["kind"] == ["return_refund"] and params["cursor"]
        if sort:
            assert params["sort"] == [sort]
        else:
            assert "sort" not in params
        # The pager link is an htmx link too: its fragment and the full page agree.
        second = assert_full_page(await agent.get(url))
        fragment = assert_fragment(await agent.get(url, headers=htmx("ticket_list")), "ticket_list")
        page2 = ticket_numbers(second)
        assert page2 == ticket_numbers(fragment)
        assert len(page2) == len(numbers) - 50
        assert not set(page1) & set(page2)
        assert set(page1) | set(page2) == numbers
        assert next_link(second) is None
        # "First page" goes back with the same filters and without the cursor.
        pager = second.split('<nav class="pager">', 1)[1].split("</nav>", 1)[0]
        first_link = html.unescape(re.search(r'<a href="([^"]+)"', pager).group(1))
        assert urlsplit(first_link).path == "/queue"
        assert parse_qs(urlsplit(first_link).query) == parse_qs(urlsplit(first_url).query)
        async with engine.connect() as conn:
            order = (Ticket.requested_at.asc(), Ticket.id.asc()) if sort else (Ticket.requested_at.desc(), Ticket.id.desc())
            query = select(Ticket.number).where(Ticket.kind == "return_refund", Ticket.status.in_(OPEN_STATUSES))
            expected = list(await conn.scalars(query.order_by(*order)))
        assert page1 + page2 == expected



async def test_queue_rows_print_names_and_codes_as_text(clients, seeded, engine):
    """The row loop prints QueueRow's values without autoescape: a supervisor's queue name or a
    foreign reason code carrying markup must still arrive as text, in both languages."""
    from aftersales.tickets.models import Queue

    markup_name = '<b onclick="x()">VIP & \'friends\'</b>'
    async with engine.begin() as conn:
        await conn.execute(Ticket.__table__.update().where(Ticket.__table__.c.id == seeded["id"])
                           .values(queue="vip", reason_code="<img src=x>"))
        await conn.execute(Queue.__table__.insert().values(key="vip", name_zh=markup_name, name_en=markup_name,
                                                           priority=0, description="", auto_assign=False,
                                                           agent_cap=20, active=True))
    agent = await clients("agent")
    for lang in ("en", "zh_CN"):
        await agent.post("/lang", data={"locale": lang, "next": "/queue", "_csrf_token": agent.cookies.get("csrftoken")},
                         headers={"x-csrftoken": agent.cookies.get("csrftoken")})
        for headers in ({}, htmx("ticket_list")):
            body = (await agent.get("/queue", headers=headers)).text
            row = body.split(f'data-ticket="{seeded["number"]}"', 1)[1].split("</tr>", 1)[0]
            assert "<b" not in row and "<img" not in row, row
            assert "&lt;b onclick=&quot;x()&quot;&gt;VIP &amp; &#x27;friends&#x27;&lt;/b&gt;" in row
            assert "&lt;img src=x&gt;" in row

# -- actions -----------------------------------------------------------------------------------


async def test_approve_via_htmx_then_stale_repost_is_refused(clients, seeded, engine):
    agent = await clients("agent")
    url = f"/tickets/{seeded['id']}"
    before_steps = ticket_steps((await agent.get(url, headers=htmx("ticket_timeline"))).text)
    before = await db_state(engine, seeded["id"])
    form = {"version": str(seeded["version"]), "amount": "", "note": ""}

    response = await post_form(agent, f"{url}/actions/approve", form, htmx_target="ticket_main")
    fragment = assert_fragment(response, "ticket_main")
    assert status_in(fragment) == "awaiting_return"
    assert ticket_steps(fragment) == before_steps + 1
    assert 'role="status"' in fragment and 'role="alert"' not in fragment
    # The swapped-in forms carry the new version, so the agent's next action is not stale.
    versions = set(re.findall(r'name="version" value="(\d+)"', fragment))
    assert versions == {str(seeded["version"] + 1)}
    after = await db_state(engine, seeded["id"])
    assert after == {"events": before["events"] + 1, "status": "awaiting_return", "version": before["version"] + 1}

    # The same form again, still carrying the old version: refused, shown, and nothing written.
    response = await post_form(agent, f"{url}/actions/approve", form, htmx_target="ticket_main")
    refused = assert_fragment(response, "ticket_main", status=409)
    assert 'role="alert"' in refused
    assert status_in(refused) == "awaiting_return"  # the current state, so the agent can re-check
    assert ticket_steps(refused) == before_steps + 1
    assert await db_state(engine, seeded["id"]) == after


async def test_action_not_allowed_in_status_answers_409(clients, seeded, engine):
    agent = await clients("agent")
    before = await db_state(engine, seeded["id"])
    form = {"version": str(seeded["version"]), "note": "x"}
    # A return_refund ticket under review cannot be confirmed as refunded.
    response = await post_form(agent, f"/tickets/{seeded['id']}/actions/confirm_refund", form, htmx_target="ticket_main")
    assert 'role="alert"' in assert_fragment(response, "ticket_main", status=409)
    # Without htmx the refusal is the full page with the alert (nothing to redirect to).
    response = await post_form(agent, f"/tickets/{seeded['id']}/actions/confirm_refund", form)
    assert response.status_code == 409
    assert "<html" in response.text and 'role="alert"' in response.text
    assert await db_state(engine, seeded["id"]) == before


async def test_plain_form_post_redirects_to_the_ticket(clients, seeded, engine):
    agent = await clients("agent")
    before = await db_state(engine, seeded["id"])
    form = {"version": str(seeded["version"]), "note": "仓库说周五能到"}
    response = await post_form(agent, f"/tickets/{seeded['id']}/actions/note", form)
    assert response.status_code == 303
    assert response.headers["location"] == f"/tickets/{seeded['id']}"
    page = assert_full_page(await agent.get(response.headers["location"]))
    assert "仓库说周五能到" in page
    after = await db_state(engine, seeded["id"])
    assert after["events"] == before["events"] + 1 and after["status"] == "pending_review"


async def test_reply_with_canned_macro_and_empty_note_fills_the_text(clients, seeded, engine):
    agent = await clients("agent")
    form = {"version": str(seeded["version"]), "macro": "received", "note": ""}
    response = await post_form(agent, f"/tickets/{seeded['id']}/actions/reply", form, htmx_target="ticket_main")
    fragment = assert_fragment(response, "ticket_main")
    async with engine.connect() as conn:
        note = await conn.scalar(select(TimelineEvent.note).where(TimelineEvent.action == "reply"))
    assert note and "O-1" in note and seeded["number"] in note and "张三" in note and "%(" not in note
    timeline = fragment.split('id="ticket_timeline"', 1)[1]
    assert f'<div class="detail">{html.escape(note, quote=False)}</div>' in timeline or html.escape(note) in timeline


def _macro_preview(page: str, key: str) -> str:
    found = re.search(rf'<option value="{key}" data-body="([^"]*)"', page)
    assert found, f"no canned reply {key!r} offered"
    return html.unescape(found.group(1))


MACRO_CASES = [
    pytest.param("named", "return_instructions", id="named-customer-with-items"),
    # Both once differed: the server filled customer.name only ("" for a nameless customer) and ""
    # for %(items)s without claimed items, while the preview fell back to the external id and the
    # order's first product. Both now come from one helper (tickets/pages.py macro_fields).
    pytest.param("nameless", "received", id="nameless-customer"),
    pytest.param("no_items", "ask_photo", id="complaint-without-items"),
]


@pytest.mark.parametrize(("case", "macro"), MACRO_CASES)
async def test_canned_reply_sent_without_editing_is_the_previewed_text(clients, client, tokens, engine, case, macro):
    """Without JavaScript the server fills the chosen reply; it must be exactly what the page
    showed the agent (the option's data-body, which app.js copies into the box)."""
    body = order_body(customer="C-9")
    if case == "nameless":
        body["customer"] = {"external_id": "C-9"}
    response = await client.put("/api/v1/orders/O-9", json=body, headers=tokens["integration"])
    assert response.status_code == 201, response.text
    overrides: dict[str, Any] = {"kind": "complaint", "items": [], "reason_code": "logistics.delay", "requested_amount": "0"} if case == "no_items" else {}
    ticket = await open_ticket(client, tokens, "O-9", **overrides)
    agent = await clients("agent")
    preview = _macro_preview((await agent.get(f"/tickets/{ticket['id']}")).text, macro)
    assert "O-9" in preview or ticket["number"] in preview
    response = await post_form(
        agent, f"/tickets/{ticket['id']}/actions/reply", {"version": str(ticket["version"]), "macro": macro, "note": ""},
        htmx_target="ticket_main",
    )
    assert_fragment(response, "ticket_main")
    async with engine.connect() as conn:
        note = await conn.scalar(select(TimelineEvent.note).where(TimelineEvent.action == "reply"))
    assert note == preview


async def test_bad_form_input_answers_422_with_an_alert(clients, seeded, engine):
    agent = await clients("agent")
    before = await db_state(engine, seeded["id"])
    v = str(seeded["version"])
    cases = {
        "no version": {"note": "x"},
        "version not a number": {"version": "abc"},
        "amount not a number": {"version": v, "amount": "lots"},
        "amount above the request": {"version": v, "amount": "9999"},
    }
    for case, form in cases.items():
        response = await post_form(agent, f"/tickets/{seeded['id']}/actions/approve", form, htmx_target="ticket_main")
        assert response.status_code == 422, (case, response.text[:300])
        assert 'role="alert"' in assert_fragment(response, "ticket_main", status=422), case
    assert await db_state(engine, seeded["id"]) == before


async def test_unknown_ticket_action_or_cursor_is_4xx_not_500(clients, seeded, engine):
    agent = await clients("agent")
    before = await db_state(engine, seeded["id"])
    assert (await agent.get("/tickets/999999")).status_code == 404
    assert (await agent.get("/tickets/999999", headers=htmx("ticket_main"))).status_code == 404
    response = await post_form(agent, "/tickets/999999/actions/approve", {"version": "1"}, htmx_target="ticket_main")
    assert response.status_code == 404
    response = await post_form(agent, f"/tickets/{seeded['id']}/actions/explode", {"version": str(seeded["version"])})
    assert 400 <= response.status_code < 500
    response = await agent.get("/queue?cursor=not-a-cursor")
    assert 400 <= response.status_code < 500
    assert await db_state(engine, seeded["id"]) == before


async def test_note_action_appears_on_the_timeline(clients, seeded, engine):
    agent = await clients("agent")
    before = await db_state(engine, seeded["id"])
    form = {"version": str(seeded["version"]), "note": "客户电话确认颜色"}
    response = await post_form(agent, f"/tickets/{seeded['id']}/actions/note", form, htmx_target="ticket_main")
    fragment = assert_fragment(response, "ticket_main")
    assert "客户电话确认颜色" in fragment.split('id="ticket_timeline"', 1)[1]
    assert status_in(fragment) == "pending_review"
    after = await db_state(engine, seeded["id"])
    assert after["events"] == before["events"] + 1 and after["status"] == "pending_review"


async def test_htmx_post_may_carry_the_csrf_token_as_header(clients, seeded, engine):
    """What the browser really sends: hx-headers on <body> puts the token in x-csrftoken."""
    agent = await clients("agent")
    token = await fetch_csrf(agent)
    response = await agent.post(
        f"/tickets/{seeded['id']}/actions/note", data={"version": str(seeded["version"]), "note": "via header"},
        headers={**htmx("ticket_main"), "x-csrftoken": token},
    )
    assert "via header" in assert_fragment(response, "ticket_main")


# -- who may see and do what ---------------------------------------------------------------------

PAGE_ACCESS = {
    # role: (/queue, /tickets/{id}, /feedback, POST action)
    "agent": (200, 200, 403, 303),
    "supervisor": (200, 200, 200, 303),
    "product": (403, 403, 200, 403),
    "admin": (200, 200, 200, 303),
}
TARGETS = ("queue", "ticket", "feedback", "action")


def _target_url(target: str, ticket_id: int) -> str:
    return {"queue": "/queue?kind=return_refund", "ticket": f"/tickets/{ticket_id}", "feedback": "/feedback",
            "action": f"/tickets/{ticket_id}/actions/note"}[target]


@pytest.mark.parametrize("role", ["anonymous", *PAGE_ACCESS])
async def test_role_matrix(clients, seeded, engine, role):
    who = await clients(role)
    for target in TARGETS:  # the action last: it is the only one that may write
        url = _target_url(target, seeded["id"])
        before = await db_state(engine, seeded["id"])
        if target == "action":
            response = await post_form(who, url, {"version": str(seeded["version"]), "note": "matrix"})
        else:
            response = await who.get(url, follow_redirects=False)

        if role == "anonymous":
            assert response.status_code == 303, target
            assert response.headers["location"] == f"/login?next={quote(url, safe='')}"
            assert seeded["number"] not in response.text
        else:
            expected = PAGE_ACCESS[role][TARGETS.index(target)]
            assert response.status_code == expected, (target, response.text[:300])
            if expected == 403:
                assert 'id="forbidden"' in response.text and "<html" in response.text
                assert seeded["number"] not in response.text and "O-1" not in response.text
            elif target == "action":
                assert response.headers["location"] == f"/tickets/{seeded['id']}"
            elif target in ("queue", "ticket"):
                assert seeded["number"] in response.text

        after = await db_state(engine, seeded["id"])
        if target == "action" and role in ("agent", "supervisor", "admin"):
            assert after["events"] == before["events"] + 1
        else:
            assert after == before, target


async def test_anonymous_htmx_request_is_sent_to_login(clients, seeded):
    anonymous = await clients("anonymous")
    response = await anonymous.get("/queue", headers=htmx("ticket_list"), follow_redirects=False)
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == f"/login?next={quote('/queue', safe='')}"
    assert seeded["number"] not in response.text


async def test_product_htmx_action_is_refused_without_ticket_data(clients, seeded, engine):
    product = await clients("product")
    before = await db_state(engine, seeded["id"])
    response = await post_form(
        product, f"/tickets/{seeded['id']}/actions/approve", {"version": str(seeded["version"])}, htmx_target="ticket_main"
    )
    assert response.status_code == 403
    assert seeded["number"] not in response.text
    assert await db_state(engine, seeded["id"]) == before


async def test_api_refuses_product_tokens(client, tokens, seeded, engine):
    before = await db_state(engine, seeded["id"])
    listing = await client.get("/api/v1/tickets", headers=tokens["product"])
    assert listing.status_code == 403 and seeded["number"] not in listing.text
    one = await client.get(f"/api/v1/tickets/{seeded['id']}", headers=tokens["product"])
    assert one.status_code == 403 and seeded["number"] not in one.text
    for action in ("approve", "note"):
        response = await client.post(
            f"/api/v1/tickets/{seeded['id']}/actions/{action}", json={"version": seeded["version"], "note": "x"},
            headers=tokens["product"],
        )
        assert response.status_code == 403, response.text
    assert await db_state(engine, seeded["id"]) == before
    # ...while the agent token may read.
    assert (await client.get("/api/v1/tickets", headers=tokens["agent"])).status_code == 200


# -- CSRF ----------------------------------------------------------------------------------------


async def test_action_without_valid_csrf_token_is_refused(clients, seeded, engine):
    agent = await clients("agent")
    before = await db_state(engine, seeded["id"])
    for token in (None, "forged-token"):
        form = {"version": str(seeded["version"]), "note": ""}
        if token:
            form["_csrf_token"] = token
        for headers in ({}, htmx("ticket_main")):
            response = await agent.post(f"/tickets/{seeded['id']}/actions/approve", data=form, headers=headers, follow_redirects=False)
            assert response.status_code == 403, (token, headers)
    assert await db_state(engine, seeded["id"]) == before
    # The same session with the token goes through: the refusal above was the missing token.
    response = await post_form(agent, f"/tickets/{seeded['id']}/actions/approve", {"version": str(seeded["version"])})
    assert response.status_code == 303


async def test_login_without_csrf_token_is_refused(client, users, engine):
    await client.get("/login")  # holds the cookie, but does not echo it
    response = await client.post(
        "/login", data={"username": users["agent"]["username"], "password": users["agent"]["password"]}, follow_redirects=False
    )
    assert response.status_code == 403
    assert "as_session" not in response.headers.get("set-cookie", "")
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(WebSession)) == 0


# -- sign-in, sign-out, language -------------------------------------------------------------------


async def test_wrong_password_shows_the_form_again(client, users):
    response = await sign_in(client, users["agent"]["username"], "not-the-password")
    assert response.status_code == 401
    body = response.text
    assert "<html" in body and 'action="/login"' in body and 'role="alert"' in body
    assert f'value="{users["agent"]["username"]}"' in body  # the username is kept
    assert "as_session" not in response.headers.get("set-cookie", "")


async def test_sixth_failed_sign_in_is_throttled(client, users):
    username = users["agent"]["username"]
    for _ in range(5):
        assert (await sign_in(client, username, "wrong-password")).status_code == 401
    sixth = await sign_in(client, username, "wrong-password")
    assert sixth.status_code == 429
    assert 'role="alert"' in sixth.text and 'action="/login"' in sixth.text
    # Throttled means throttled: not even the right password gets in now.
    assert (await sign_in(client, username, users["agent"]["password"])).status_code == 429
    # Another user is not affected.
    assert (await sign_in(client, users["admin"]["username"], users["admin"]["password"])).status_code == 303


async def test_sign_in_lands_on_the_role_home_or_a_safe_next(client, users):
    cases = [("agent", "", "/queue"), ("product", "", "/feedback"), ("admin", "", "/queue"),
             ("agent", "/tickets/1", "/tickets/1"), ("agent", "//evil.example/x", "/queue"),
             ("agent", "https://evil.example", "/queue")]
    for role, next_url, expected in cases:
        response = await sign_in(client, users[role]["username"], users[role]["password"], next_url=next_url)
        assert response.status_code == 303
        assert response.headers["location"] == expected, (role, next_url)


async def test_sign_out_deletes_the_session(client, clients, seeded, engine, users):
    agent = await clients("agent")
    session_cookie = agent.cookies.get("as_session")
    assert session_cookie
    assert (await agent.get("/queue")).status_code == 200
    response = await post_form(agent, "/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    response = await agent.get("/queue", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    async with engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(WebSession).where(WebSession.user_id == users["agent"]["id"]))
    assert count == 0
    # The old cookie, replayed by someone who kept it, opens nothing either.
    async with browser_like(client) as thief:
        thief.cookies.set("as_session", session_cookie)
        response = await thief.get("/queue", follow_redirects=False)
        assert response.status_code == 303 and seeded["number"] not in response.text


async def test_language_switch(clients, seeded, client, users):
    agent = await clients("agent")
    default = assert_full_page(await agent.get("/queue"))
    assert "售后队列" in default  # the operator's default is zh_CN

    response = await post_form(agent, "/lang", {"locale": "en", "next": "/queue"})
    assert response.status_code == 303 and response.headers["location"] == "/queue"
    english = assert_full_page(await agent.get("/queue"))
    assert "After-sales queue" in english and "售后队列" not in english
    assert '<html lang="en">' in english
    assert re.search(r'<a href="/queue"[^>]*>Queue</a>', english)

    # The choice is saved with the user: a fresh sign-in elsewhere gets English too.
    async with browser_like(client) as elsewhere:
        await sign_in(elsewhere, users["agent"]["username"], users["agent"]["password"])
        assert "After-sales queue" in (await elsewhere.get("/queue")).text

    response = await post_form(agent, "/lang", {"locale": "zh_CN", "next": "/queue"})
    assert response.status_code == 303
    chinese = assert_full_page(await agent.get("/queue"))
    assert "售后队列" in chinese and "After-sales queue" not in chinese


async def test_language_switch_refuses_offsite_next(clients):
    agent = await clients("agent")
    response = await post_form(agent, "/lang", {"locale": "en", "next": "//evil.example/"})
    assert response.status_code == 303 and response.headers["location"] == "/"
