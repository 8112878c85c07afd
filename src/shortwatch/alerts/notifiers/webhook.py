"""Webhook: an HTTP POST of the event JSON (a group: ``{"alerts": [event, ...]}``), signed with
``X-Shortwatch-Signature: sha256=<hex HMAC-SHA256 of the body>`` when a secret is set."""

from __future__ import annotations

import hashlib
import hmac
import json

import aiohttp

from shortwatch.alerts.notifiers.base import Message, http_failure
from shortwatch.settings import WebhookNotifier, resolve_secret

SIGNATURE_HEADER = "X-Shortwatch-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body(msg: Message) -> bytes:
    doc = msg.events[0] if not msg.grouped else {"alerts": msg.events}
    return json.dumps(doc, separators=(",", ":")).encode()


class Webhook:
    def __init__(self, cfg: WebhookNotifier):
        self.name = cfg.name
        self.url = cfg.url
        self.secret = resolve_secret(cfg.secret_env, cfg.secret_file)
        self.timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)

    async def send(self, msg: Message) -> str:
        data = body(msg)
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, data)
        # a session per message: alerts are rare, and nothing is left open when the daemon stops
        async with (
            aiohttp.ClientSession(timeout=self.timeout) as session,
            session.post(self.url, data=data, headers=headers) as resp,
        ):
            text = await resp.text(errors="replace")
            if not 200 <= resp.status < 300:
                raise http_failure(resp.status, text)
            return f"HTTP {resp.status} {text[:200]}".rstrip()

    async def aclose(self) -> None:
        return None
