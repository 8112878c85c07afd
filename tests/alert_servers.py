"""Real servers for the alert tests, each on a free loopback port in a temp dir (TESTING.md):
mosquitto, prometheus-alertmanager, aiosmtpd, and a local HTTP server that records requests
(the stand-in for Slack's servers, which cannot be reached from here, and a webhook receiver)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
ALERTMANAGER = shutil.which("prometheus-alertmanager")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class Mosquitto:
    port: int
    conf: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (bash scripts/setup.sh --test)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    (tmp_path / "mq").mkdir()
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {tmp_path}/mq/\n"
    )
    m = Mosquitto(port, conf)
    m.start()
    yield m
    m.stop()


@dataclass
class Alertmanager:
    url: str
    proc: subprocess.Popen

    def alerts(self, active: bool = True) -> list[dict[str, Any]]:
        q = "" if active else "?active=false&silenced=true&inhibited=true&unprocessed=true"
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts{q}", timeout=5) as r:
            import json

            return json.loads(r.read())


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    if ALERTMANAGER is None:
        pytest.skip("prometheus-alertmanager is not installed (bash scripts/setup.sh --test)")
    port = free_port()
    conf = tmp_path / "am.yml"
    conf.write_text('route: {receiver: "null"}\nreceivers: [{name: "null"}]\n')
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={conf}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    yield Alertmanager(url, proc)
    proc.terminate()
    proc.wait(10)


@dataclass
class SmtpServer:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller

    port = free_port()
    handler = SmtpServer(port)
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    yield handler
    ctl.stop()


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


class HttpRecorder:
    """A local HTTP server that records every request and answers with ``status``/``reply``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.status = 200
        self.reply = "ok"
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.path, dict(request.headers), await request.read()))
        return web.Response(status=self.status, text=self.reply)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} of {n} requests arrived")
            await asyncio.sleep(0.02)


@pytest.fixture
async def http_recorder() -> Any:
    rec = HttpRecorder()
    await rec.start()
    yield rec
    await rec.stop()
