"""Message bodies for each kind of receiver: generic JSON, WeCom, DingTalk, Feishu, Slack."""

from __future__ import annotations

from typing import Any


def render(fmt: str, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    title = payload.get("title") or event_type
    text = payload.get("text") or ""
    link = payload.get("url")
    markdown = f"**{title}**\n\n{text}" + (f"\n\n[{link}]({link})" if link else "")
    if fmt == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": markdown}}
    if fmt == "dingtalk":
        return {"msgtype": "markdown", "markdown": {"title": title, "text": markdown}}
    if fmt == "feishu":
        return {
            "msg_type": "interactive",
            "card": {
                "header": {"title": {"tag": "plain_text", "content": title}},
                "elements": [{"tag": "markdown", "content": text + (f"\n[{link}]({link})" if link else "")}],
            },
        }
    if fmt == "slack":
        return {"text": f"*{title}*\n{text}" + (f"\n<{link}>" if link else "")}
    return {"type": event_type, **payload}
