"""Pages come from templates compiled per locale with their fixed texts translated in place
(aftersales.template_i18n): the HTML must be exactly what translating at render time gave."""

from __future__ import annotations

from typing import Any

import pytest

from aftersales import i18n, pages
from aftersales.sla import pages as sla_pages
from tests.web.pages.helpers import post_form

PAGES = [("agent", "/queue"), ("agent", "/tickets/{id}"), ("agent", "/tickets/{id}/feedback"), ("agent", "/notifications"),
         ("supervisor", "/sla"), ("supervisor", "/sla/report"), ("supervisor", "/policy"), ("supervisor", "/queues"),
         ("supervisor", "/feedback/overview"), ("product", "/feedback"), ("admin", "/admin/webhooks")]


def _translate_at_render_time(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (pages, sla_pages):  # every page template is asked for through these two
        monkeypatch.setattr(module, "localized", lambda template: template)


@pytest.mark.parametrize("locale", i18n.LOCALES)
async def test_pages_are_the_same_html_as_when_translated_at_render_time(clients, seeded, locale, monkeypatch):
    bodies: dict[str, list[str]] = {"inline": [], "runtime": []}
    for role, path in PAGES:
        client = await clients(role)
        await post_form(client, "/lang", {"locale": locale, "next": "/queue"})
    for way in ("inline", "runtime"):
        if way == "runtime":
            _translate_at_render_time(monkeypatch)
        for role, path in PAGES:
            client = await clients(role)
            response = await client.get(path.format(id=seeded["id"]))
            assert response.status_code == 200, (path, response.text[:300])
            bodies[way].append(response.text)
            # and each swappable region of the ticket page as an htmx fragment
            if path == "/tickets/{id}":
                for target in ("ticket_main", "ticket_timeline"):
                    fragment = await client.get(path.format(id=seeded["id"]), headers={"HX-Request": "true", "HX-Target": target})
                    bodies[way].append(fragment.text)
    for (role, path), inline, runtime in zip(PAGES, bodies["inline"], bodies["runtime"]):
        assert inline == runtime, f"{path} ({locale}) differs"
    assert len(bodies["inline"]) == len(PAGES) + 2


async def test_a_ticket_page_no_longer_translates_its_labels_one_by_one(clients, seeded, monkeypatch):
    calls: list[str] = []
    original = i18n.translations

    def counting(locale: str) -> Any:
        catalogue = original(locale)

        class Counting:
            def gettext(self, message: str) -> str:
                calls.append(message)
                return catalogue.gettext(message)

            def ngettext(self, singular: str, plural: str, n: int) -> str:
                calls.append(singular)
                return catalogue.ngettext(singular, plural, n)

        return Counting()

    agent = await clients("agent")
    url = f"/tickets/{seeded['id']}"
    assert (await agent.get(url)).status_code == 200  # compiled (and translated) before counting
    monkeypatch.setattr(i18n, "translations", counting)
    assert (await agent.get(url)).status_code == 200
    inline = list(calls)
    calls.clear()
    _translate_at_render_time(monkeypatch)
    assert (await agent.get(url)).status_code == 200
    # "Queue" is a fixed label of the page: looked up on every render before, never now. What is
    # left are texts made in Python (status and reason labels, durations) and formatted ones.
    assert "Queue" in calls and "Queue" not in inline
    assert len(inline) < len(calls) - 40, (len(inline), len(calls))
