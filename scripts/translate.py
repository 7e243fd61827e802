"""Fill zh_CN translations from a JSON object {msgid: translation} on stdin (keeps the rest)."""

import json
import sys
from pathlib import Path

from babel.messages.pofile import read_po, write_po

PATH = Path(__file__).resolve().parent.parent / "aftersales/locale/zh_CN/LC_MESSAGES/messages.po"
updates = json.load(sys.stdin)
with PATH.open("rb") as fh:
    catalog = read_po(fh, locale="zh_CN")
for message in catalog:
    if message.id in updates:
        message.string = updates[message.id]
with PATH.open("wb") as fh:
    write_po(fh, catalog, no_location=True, width=120)
print(f"updated {sum(1 for m in catalog if m.id in updates)} messages")
