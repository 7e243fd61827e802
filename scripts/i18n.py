"""Keep the translation catalogs in step with the sources.

    python scripts/i18n.py update   # extract msgids, merge into each locale's messages.po
    python scripts/i18n.py check    # fail if a zh_CN msgid is missing or untranslated
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "aftersales" / "locale"
POT = ROOT / "build" / "messages.pot"


def extract() -> Catalog:
    POT.parent.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", str(ROOT / "babel.cfg"),
         "-k", "N_", "-k", "gettext", "-k", "ngettext:1,2", "--no-location", "--omit-header", "-o", str(POT), str(ROOT)],
        check=True, capture_output=True,
    )
    with POT.open("rb") as fh:
        return read_po(fh)


def catalog_path(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"


def update() -> None:
    template = extract()
    for locale in ("zh_CN", "en"):
        path = catalog_path(locale)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("rb") as fh:
                catalog = read_po(fh, locale=locale)
        else:
            catalog = Catalog(locale=locale)
        catalog.update(template, no_fuzzy_matching=True)
        with path.open("wb") as fh:
            write_po(fh, catalog, omit_header=False, no_location=True, ignore_obsolete=True, width=120)
        print(f"{locale}: {len(catalog)} messages")


def missing(locale: str = "zh_CN") -> list[str]:
    template = extract()
    with catalog_path(locale).open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    return [m.id for m in template if m.id and (catalog.get(m.id) is None or not catalog.get(m.id).string)]


if __name__ == "__main__":
    if sys.argv[1:] == ["update"]:
        update()
    elif sys.argv[1:] == ["check"]:
        gaps = missing()
        for msgid in gaps:
            print("untranslated:", msgid)
        sys.exit(1 if gaps else 0)
    else:
        print(__doc__)
        sys.exit(2)
