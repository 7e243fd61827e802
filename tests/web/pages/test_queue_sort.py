"""The queue page sorted by SLA due time.

What it protects: the sort control offers the SLA sorts and shows the chosen one, the list follows
the due time (tickets without one last), the next-page link keeps the sort and its pages add up to
the whole list, full page and fragment agree, and a cursor of another sort is a 4xx, not a 500.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from aftersales.models import Ticket
from tests.conftest import START
from tests.web.api.test_api_tickets_sla_sort import expected_order, insert_tickets
from tests.web.pages.helpers import ticket_numbers
from tests.web.pages.test_pages import assert_fragment, assert_full_page, htmx, next_link

OPEN = ("pending_review", "approved", "awaiting_return")


@pytest.fixture()
async def queue(seeded, engine) -> list[dict]:
    """54 more open tickets with due times 0..17 h away (three per hour) and every seventh without one."""
    specs = [("general", OPEN[i % 3], None if i % 7 == 3 else (i % 18) - 4) for i in range(54)]
    made = await insert_tickets(engine, specs)
    due = START + timedelta(days=2)
    async with engine.begin() as conn:  # the seeded ticket too, due last of all
        await conn.execute(update(Ticket).where(Ticket.id == seeded["id"]).values(sla_due_at=due))
    return made + [{"id": seeded["id"], "number": seeded["number"], "queue": "general", "status": "pending_review", "due": due}]


def selected_sort(body: str) -> list[str]:
    form = body.split('id="queue_filters"', 1)[1].split("</form>", 1)[0]
    options = form.split('<select name="sort">', 1)[1].split("</select>", 1)[0]
    assert 'value="sla_due_at"' in options and 'value="-sla_due_at"' in options
    return re.findall(r'<option value="([^"]*)"\s*selected', options)


@pytest.mark.parametrize("sort", ["sla_due_at", "-sla_due_at"])
async def test_queue_sorted_by_sla_due_pages_with_its_sort(clients, queue, sort):
    agent = await clients("agent")
    by_id = {t["id"]: t["number"] for t in queue}
    expected = [by_id[i] for i in expected_order(queue, descending=sort.startswith("-"))]
    first = assert_full_page(await agent.get(f"/queue?sort={sort}"))
    assert selected_sort(first) == [sort]
    page1 = ticket_numbers(first)
    assert page1 == expected[:50]
    url = next_link(first)
    assert url and parse_qs(urlsplit(url).query)["sort"] == [sort]
    second = assert_full_page(await agent.get(url))
    fragment = assert_fragment(await agent.get(url, headers=htmx("ticket_list")), "ticket_list")
    assert ticket_numbers(second) == ticket_numbers(fragment) == expected[50:]
    assert next_link(second) is None


async def test_queue_cursor_of_another_sort_is_refused(clients, queue):
    agent = await clients("agent")
    url = next_link(assert_full_page(await agent.get("/queue")))
    cursor = parse_qs(urlsplit(url).query)["cursor"][0]
    response = await agent.get(f"/queue?sort=sla_due_at&cursor={cursor}")
    assert 400 <= response.status_code < 500, response.status_code


async def test_unknown_sort_on_the_page_falls_back_to_newest_first(clients, queue):
    """Like the other filters of the page, an unknown value is ignored rather than refused."""
    agent = await clients("agent")
    body = assert_full_page(await agent.get("/queue?sort=bogus"))
    assert selected_sort(body) == ["-requested_at"]
    assert ticket_numbers(body) == ticket_numbers(assert_full_page(await agent.get("/queue")))
