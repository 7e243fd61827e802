"""Canned replies: customer-facing texts that fill in the ticket's order data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aftersales.i18n import gettext
from aftersales.labels import N_


@dataclass(frozen=True)
class Macro:
    key: str
    title: str
    body: str


MACROS = (
    Macro(
        "received",
        N_("We received your request"),
        N_("Hello %(customer)s, we received your after-sales request %(number)s for order %(order)s "
           "and will handle it within 48 hours."),
    ),
    Macro(
        "return_instructions",
        N_("Return instructions"),
        N_("Hello %(customer)s, your return for order %(order)s is approved. Please send %(items)s back "
           "and enter the tracking number in the app. Refund amount: %(amount)s."),
    ),
    Macro(
        "ask_photo",
        N_("Ask for photos"),
        N_("Hello %(customer)s, to process %(number)s quickly, please send photos showing the problem "
           "with %(items)s and the outer packaging."),
    ),
    Macro(
        "refund_done",
        N_("Refund issued"),
        N_("Hello %(customer)s, the refund of %(amount)s for order %(order)s has been issued; it usually "
           "arrives within 1-3 working days."),
    ),
)


def fill(macro_key: str, data: dict[str, Any]) -> str:
    macro = next((m for m in MACROS if m.key == macro_key), None)
    if macro is None:
        return ""
    return gettext(macro.body) % data


def macro_options(data: dict[str, Any]) -> list[Macro]:
    """Every canned reply, translated and filled in, for the reply form's preview."""
    return [Macro(m.key, gettext(m.title), gettext(m.body) % data) for m in MACROS]
