"""Default routing of reason codes to the teams that can fix their cause (design guide)."""

from __future__ import annotations

TEAMS = ("qc", "script", "selection", "logistics")

DEFAULT_ROUTES: dict[str, tuple[str, ...]] = {
    "quality.defect": ("qc", "selection"),
    "quality.damaged": ("qc",),
    "quality.counterfeit_suspected": ("qc", "selection"),
    "fulfillment.wrong_item": ("qc",),
    "fulfillment.missing_item": ("qc",),
    "description.not_as_described": ("script", "selection"),
    "description.host_claim_mismatch": ("script",),
    "fit.size": ("script",),
    "preference.style": ("selection",),
    "price.promo_dispute": ("script",),
    "logistics.delay": ("logistics",),
    "logistics.lost": ("logistics",),
}


def teams_for(reason_code: str) -> tuple[str, ...]:
    return DEFAULT_ROUTES.get(reason_code, ())


def reasons_for(team: str) -> list[str]:
    return [code for code, teams in DEFAULT_ROUTES.items() if team in teams]
