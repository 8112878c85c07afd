"""Email through aiosmtplib: a plain-text and an HTML body with the same content, and the
evidence plot of every event attached as a PNG."""

from __future__ import annotations

import html
import re
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from shortwatch.alerts.notifiers.base import Message, PermanentError, is_address, key_numbers, plain_text, title, where
from shortwatch.settings import EmailNotifier, resolve_secret

_COLOR = {"critical": "#c00", "warning": "#d2691e", "info": "#666"}


def image_name(e: dict) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", f"{e.get('cell') or e.get('source') or 'station'}-{e['detector']}")
    return f"{stem}.png"


def html_body(msg: Message) -> str:
    """The same content as plain_text(), as HTML (every value escaped)."""
    esc = html.escape
    out = [
        '<html><body style="font-family: system-ui, sans-serif; color: #222">',
        f"<h2>{esc(title(msg))}</h2>",
    ]
    if msg.test:
        out.append(
            "<p><b>This is a test alert sent by <code>shortwatch alerts test</code>. No cell is affected.</b></p>"
        )
    for e in msg.events:
        color = "#080" if e["state"] == "resolved" else _COLOR.get(e["severity"], "#222")
        out.append(
            f'<h3 style="color:{color}">{esc(where(e))} · {esc(e["detector"])} · '
            f"{esc(e['severity'])} {esc(e['state'])}</h3>"
        )
        out.append(f"<p>{esc(e['summary'])}</p>")
        nums = key_numbers(e)
        if nums:
            rows = "".join(
                f'<tr><td style="padding:2px 8px">{esc(k)}</td><td style="padding:2px 8px">{esc(v)}</td></tr>'
                for k, v in nums
            )
            out.append(f'<table style="border-collapse:collapse;border:1px solid #ccc">{rows}</table>')
        if e.get("advice"):
            out.append(f"<p><b>What to do:</b> {esc(e['advice'])}</p>")
        if e.get("id") in msg.images:
            out.append(f"<p>Evidence plot attached: {esc(image_name(e))}</p>")
        out.append(
            f'<p style="color:#666;font-size:small">data time {esc(e["time"])} · episode '
            f"{esc(str(e.get('episode', '')))} · id {esc(str(e.get('id', '')))}</p>"
        )
    if msg.owners:
        out.append(f"<p>Owners: {esc(', '.join(msg.owners))}</p>")
    out.append("</body></html>")
    return "\n".join(out)


class Email:
    wants_images = True  # the evidence plots are attached

    def __init__(self, cfg: EmailNotifier):
        self.name = cfg.name
        self.cfg = cfg
        self.password = resolve_secret(cfg.password_env, cfg.password_file)

    def build(self, msg: Message) -> EmailMessage:
        m = EmailMessage()
        m["Subject"] = title(msg)
        m["From"] = self.cfg.sender
        m["To"] = ", ".join(self.recipients(msg))
        m["Message-ID"] = make_msgid(domain=self.cfg.sender.rpartition("@")[2] or None)
        # receivers drop repeats by this header: at-least-once may deliver the same event twice
        m["X-Shortwatch-Event-Ids"] = " ".join(str(e.get("id", "")) for e in msg.events)
        m.set_content(plain_text(msg))
        m.add_alternative(html_body(msg), subtype="html")
        for e in msg.events:
            png = msg.images.get(e.get("id", ""))
            if png:
                m.add_attachment(png, maintype="image", subtype="png", filename=image_name(e))
        return m

    def recipients(self, msg: Message) -> list[str]:
        extra = [o for o in msg.owners if is_address(o) and o not in self.cfg.to]
        return [*self.cfg.to, *extra]

    async def send(self, msg: Message) -> str:
        c = self.cfg
        try:
            errors, answer = await aiosmtplib.send(
                self.build(msg),
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=self.password if c.username else None,
                use_tls=c.security == "tls",
                start_tls=c.security == "starttls",
                timeout=c.timeout_s,
            )
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPSenderRefused) as exc:
            raise PermanentError(f"SMTP refused: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is permanent, except authentication (530, 535): once the password is fixed
            # and the daemon restarted, the same events go out
            if 500 <= exc.code < 600 and exc.code not in (530, 535):
                raise PermanentError(f"SMTP {exc.code}: {exc.message}") from exc
            raise
        refused = f"; refused {sorted(errors)}" if errors else ""
        return f"SMTP {answer}{refused}"

    async def aclose(self) -> None:
        return None
