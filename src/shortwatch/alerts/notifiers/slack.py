"""Slack: an incoming webhook, through slack-sdk's async webhook client, formatted as blocks.

A webhook cannot upload files, so the evidence plot goes by email; the Slack message carries
the cell, detector, severity, summary, key numbers and advice.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.webhook.async_client import AsyncWebhookClient

from shortwatch.alerts.notifiers.base import Message, http_failure, is_address, key_numbers, plain_text, title, where
from shortwatch.settings import SlackNotifier, resolve_secret

_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
_MAX_BLOCKS = 50  # Slack's limit per message
_MAX_TEXT = 2900  # a section's text is limited to 3000 characters


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _event_blocks(e: dict[str, Any]) -> list[dict[str, Any]]:
    icon = ":white_check_mark:" if e["state"] == "resolved" else _EMOJI.get(e["severity"], "")
    head = f"{icon} *{where(e)}* · `{e['detector']}` · *{e['severity']}* {e['state']}"
    if e.get("reminder"):
        head += " (reminder)"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"{head}\n{e['summary']}", _MAX_TEXT)}}
    ]
    nums = key_numbers(e)
    if nums:
        fields = [{"type": "mrkdwn", "text": _cut(f"*{k}*\n{v}", 1900)} for k, v in nums[:10]]
        blocks.append({"type": "section", "fields": fields})
    ctx = [f"data time {e['time']}", f"episode {e.get('episode', '')}"]
    if e.get("advice"):
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _cut(f"*What to do:* {e['advice']}", _MAX_TEXT)}],
            }
        )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(" · ".join(ctx), _MAX_TEXT)}]})
    return blocks


def blocks(msg: Message) -> list[dict[str, Any]]:
    """The message as Block Kit blocks: a header, then per event its summary, key numbers,
    advice and times; the owners' mentions last."""
    out: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": _cut(title(msg), 150)}}]
    if msg.test:
        out.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "This is a *test* sent by `shortwatch alerts test`. No cell is affected.",
                },
            }
        )
    mentions = [o for o in msg.owners if not is_address(o)]  # addresses are the email notifier's
    tail = [{"type": "section", "text": {"type": "mrkdwn", "text": "Owners: " + " ".join(mentions)}}]
    tail = tail if mentions else []
    room = _MAX_BLOCKS - len(out) - len(tail) - 1
    for i, e in enumerate(msg.events):
        more = _event_blocks(e)
        if len(more) + 1 > room:
            rest = len(msg.events) - i
            out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"... and {rest} more"}]})
            break
        if i:
            out.append({"type": "divider"})
        out.extend(more)
        room -= len(more) + 1
    return out + tail


class Slack:
    def __init__(self, cfg: SlackNotifier):
        self.name = cfg.name
        url = resolve_secret(cfg.webhook_url_env, cfg.webhook_url_file)
        self.client = AsyncWebhookClient(url or "", timeout=int(cfg.timeout_s))

    async def send(self, msg: Message) -> str:
        # `text` is the notification's fallback (phone banners, screen readers)
        resp = await self.client.send(text=_cut(plain_text(msg), 3000), blocks=blocks(msg))
        if resp.status_code != 200:
            raise http_failure(resp.status_code, str(resp.body))
        return f"HTTP {resp.status_code} {resp.body}"

    async def aclose(self) -> None:
        return None
