"""Browser journeys through the agent's workbench, against the real server and headless Chromium.

What they protect: the htmx wiring that unit and web tests cannot see — filters and actions swap
only their fragment (no full reload: a marker set on `window` survives) and push the filters
into the URL; a stale action's 409 is shown, not dropped; the forms still work without
JavaScript; the language switch; a product user is refused the queue.
"""

from __future__ import annotations

import re

import pytest

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"browser tests need Debian's Chromium at {CHROMIUM}"),
]

ROWS = "#ticket_list tr[data-ticket]"
EXPECT_TIMEOUT_MS = 15_000  # generous: the machine may be busy running other suites
BADGE = "#ticket_header h1 .badge"
TICKET_STEPS = "#ticket_timeline li.step-ticket"


@pytest.fixture(autouse=True)
def patient_expectations() -> None:
    from playwright.async_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)


async def sign_in(page, username: str, password: str, start: str = "/queue") -> None:
    await page.goto(start)
    assert "/login" in page.url  # not signed in yet: sent to the sign-in form, keeping where we were going
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click('form[action="/login"] button[type=submit]')
    await page.wait_for_load_state()
    await page.wait_for_function("() => window.htmx !== undefined")


async def marker(page) -> int | None:
    return await page.evaluate("() => window.__marker")


async def test_agent_filters_opens_and_approves_without_reloads(context, server):
    from playwright.async_api import expect

    page = await context.new_page()
    await sign_in(page, "agent", "agent-demo-1")
    assert page.url.endswith("/queue")
    await expect(page.locator("h1")).to_contain_text("售后队列")
    await expect(page.locator(ROWS)).to_have_count(len(server.tickets))

    # Filter by kind: only the list is swapped, the URL carries the filter.
    await page.evaluate("() => { window.__marker = 1 }")
    await page.select_option("#queue_filters select[name=kind]", "exchange")
    await page.wait_for_url(re.compile(r"[?&]kind=exchange(&|$)"))
    await expect(page.locator(ROWS)).to_have_count(1)
    await expect(page.locator(ROWS)).to_have_attribute("data-ticket", server.tickets["exchange"]["number"])
    assert await marker(page) == 1
    await expect(page.locator("#queue_filters select[name=kind]")).to_have_value("exchange")

    await page.select_option("#queue_filters select[name=kind]", "return_refund")
    await page.wait_for_url(re.compile(r"[?&]kind=return_refund(&|$)"))
    await expect(page.locator(ROWS)).to_have_count(2)
    assert await marker(page) == 1

    # The pushed URL is a real address: loading it directly gives the same list.
    filtered_url = page.url
    reloaded = await context.new_page()
    await reloaded.goto(filtered_url)
    await expect(reloaded.locator(ROWS)).to_have_count(2)
    await reloaded.close()

    # Open a ticket and approve it: the header and timeline change in place.
    ticket = server.tickets["return_a"]
    await page.click(f'{ROWS}[data-ticket="{ticket["number"]}"] a')
    await page.wait_for_url(f"**/tickets/{ticket['id']}")
    await page.wait_for_function("() => window.htmx !== undefined")
    await expect(page.locator(BADGE)).to_have_attribute("data-status", "pending_review")
    steps = await page.locator(TICKET_STEPS).count()
    assert steps >= 2
    await page.evaluate("() => { window.__marker = 2 }")
    await page.click("#ticket_actions button[data-action=approve]")
    await expect(page.locator(BADGE)).to_have_attribute("data-status", "awaiting_return")
    await expect(page.locator(TICKET_STEPS)).to_have_count(steps + 1)
    await expect(page.locator("#ticket_main [role=status]")).to_be_visible()
    assert await marker(page) == 2
    assert page.url.endswith(f"/tickets/{ticket['id']}")

    with server.api() as api:
        assert api.get(f"/api/v1/tickets/{ticket['id']}").json()["status"] == "awaiting_return"


async def test_stale_action_in_a_second_tab_shows_the_alert(context, server):
    from playwright.async_api import expect

    ticket = server.tickets["return_b"]
    first = await context.new_page()
    await sign_in(first, "agent2", "agent-demo-2", start=f"/tickets/{ticket['id']}")
    second = await context.new_page()
    await second.goto(f"/tickets/{ticket['id']}")
    await second.wait_for_function("() => window.htmx !== undefined")

    await first.click("#ticket_actions button[data-action=approve]")
    await expect(first.locator(BADGE)).to_have_attribute("data-status", "awaiting_return")

    # The second tab still shows version N; its approve is refused with 409 and the alert is
    # swapped in (base.html's htmx-config swaps 4xx answers) together with the current state.
    await second.evaluate("() => { window.__marker = 3 }")
    steps = await second.locator(TICKET_STEPS).count()
    await second.click("#ticket_actions button[data-action=approve]")
    await expect(second.locator("#ticket_main [role=alert]")).to_be_visible()
    await expect(second.locator(BADGE)).to_have_attribute("data-status", "awaiting_return")
    await expect(second.locator(TICKET_STEPS)).to_have_count(steps + 1)  # the first tab's approval, nothing more
    assert await marker(second) == 3


async def test_canned_reply_fills_the_text_box(context, server):
    from playwright.async_api import expect

    ticket = server.tickets["complaint"]
    page = await context.new_page()
    await sign_in(page, "agent2", "agent-demo-2", start=f"/tickets/{ticket['id']}")
    reply = page.locator("#ticket_actions form.action-reply")
    await reply.locator("select[name=macro]").select_option("received")
    text = await reply.locator("textarea[name=note]").input_value()
    assert "E-4" in text and ticket["number"] in text
    steps = await page.locator(TICKET_STEPS).count()
    await reply.locator("button[type=submit]").click()
    await expect(page.locator(TICKET_STEPS)).to_have_count(steps + 1)
    await expect(page.locator("#ticket_timeline")).to_contain_text(text)


async def test_forms_work_without_javascript(browser, server):
    from playwright.async_api import expect

    ctx = await browser.new_context(base_url=server.base_url, java_script_enabled=False)
    ctx.set_default_timeout(20_000)
    try:
        page = await ctx.new_page()
        ticket = server.tickets["exchange"]
        await page.goto(f"/tickets/{ticket['id']}")
        await page.fill("input[name=username]", "lead")
        await page.fill("input[name=password]", "lead-demo-1")
        await page.click('form[action="/login"] button[type=submit]')
        await page.wait_for_url(f"**/tickets/{ticket['id']}")
        note = page.locator("#ticket_actions form.action-note")
        await note.locator("textarea[name=note]").fill("无脚本也能记一笔")
        await note.locator("button[type=submit]").click()
        await page.wait_for_url(f"**/tickets/{ticket['id']}")  # POST → 303 → the ticket again
        await expect(page.locator("#ticket_timeline")).to_contain_text("无脚本也能记一笔")
    finally:
        await ctx.close()


async def test_language_switch_to_english(context, server):
    from playwright.async_api import expect

    page = await context.new_page()
    await sign_in(page, "admin", "admin-demo-1")
    await expect(page.locator("nav.nav a[href='/queue']")).to_have_text("队列")
    await page.click("header form.lang button[data-locale=en]")
    await page.wait_for_url("**/queue")
    await expect(page.locator("nav.nav a[href='/queue']")).to_have_text("Queue")
    await expect(page.locator("h1")).to_contain_text("After-sales queue")
    await expect(page.locator("html")).to_have_attribute("lang", "en")


async def test_product_user_is_refused_the_queue(context, server):
    from playwright.async_api import expect

    page = await context.new_page()
    await sign_in(page, "qc", "qc-demo-1", start="/")
    assert page.url.endswith("/feedback")  # a product user's home
    await expect(page.locator("nav.nav a[href='/queue']")).to_have_count(0)
    response = await page.goto("/queue")
    assert response is not None and response.status == 403
    await expect(page.locator("#forbidden")).to_be_visible()
    await expect(page.locator(ROWS)).to_have_count(0)
    for ticket in server.tickets.values():
        await expect(page.locator("body")).not_to_contain_text(ticket["number"])
