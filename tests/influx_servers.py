"""Real servers for the InfluxDB tests (TESTING.md): influxd 1.6, victoria-metrics, and a
local HTTP server that records requests and answers as told (the one part that is a stand-in:
it checks what we send, which victoria-metrics ignores: token, org, bucket, precision, gzip)."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, ok: tuple[int, ...], timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


class _LocalServer:
    """A server process on a free loopback port, its files and log in ``root``; stop() and
    start() again keep its data and its URL (an outage, not a new server)."""

    log_name = "server.log"
    ready_path = "/"
    ready_codes: tuple[int, ...] = (200,)

    def __init__(self, root: Path):
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.started = False
        root.mkdir(parents=True, exist_ok=True)
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        for attempt in range(3):
            log = open(self.root / self.log_name, "ab")  # noqa: SIM115
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log)
            log.close()
            try:
                _wait_http(self.url + self.ready_path, self.ready_codes, proc=self.proc)
            except RuntimeError:
                if self.started or attempt == 2:
                    raise
                # a free port was taken before the server bound it (another test's server): choose again
                self._use_port(free_port())
                continue
            self.started = True
            break
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Influxd(_LocalServer):
    """influxd 1.6 (its config written into ``root``)."""

    log_name = "influxd.log"
    ready_path = "/ping"
    ready_codes = (204,)

    def __init__(self, root: Path, auth: bool = False):
        self.auth: tuple[str, str] | None = None  # (user, password) for query() once auth is on
        self.auth_enabled = auth
        self.conf = root / "influxd.conf"
        super().__init__(root)

    def _use_port(self, port: int) -> None:
        super()._use_port(port)
        root, auth = self.root, self.auth_enabled
        self.conf.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  auth-enabled = {"true" if auth else "false"}
[monitor]
  store-enabled = false
"""
        )

    def _command(self) -> list[str]:
        return ["influxd", "-config", str(self.conf)]

    @staticmethod
    def available() -> bool:
        return shutil.which("influxd") is not None

    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL; the results' series (raises on an error)."""
        params = {"q": q, "epoch": "u"}  # microseconds (1.x spells it u)
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(f"{self.url}/query", data=data)
        if self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=60) as r:
            out = json.loads(r.read())
        for res in out.get("results", []):
            if "error" in res:
                raise RuntimeError(f"{q}: {res['error']}")
        return [s for res in out.get("results", []) for s in res.get("series", [])]

    def count(self, db: str, measurement: str, field: str) -> int:
        series = self.query(f'SELECT count("{field}") FROM "{measurement}"', db)
        return int(series[0]["values"][0][1]) if series else 0


class VictoriaMetrics(_LocalServer):
    """victoria-metrics: a real server that accepts /api/v2/write (and /write)."""

    log_name = "vm.log"
    ready_path = "/health"

    @staticmethod
    def available() -> bool:
        return shutil.which("victoria-metrics") is not None

    def _command(self) -> list[str]:
        return [
            "victoria-metrics",
            f"-storageDataPath={self.root / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
        ]

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching ``match`` (e.g. '{__name__=~"sample_.*"}'), as JSON lines."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=30).read()
        q = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=60) as r:
            return [json.loads(line) for line in r.read().splitlines() if line.strip()]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes  # as sent (maybe gzipped)
    answer_status: int = 0  # what the server answered

    @property
    def text(self) -> str:
        raw = gzip.decompress(self.body) if self.headers.get("content-encoding") == "gzip" else self.body
        return raw.decode("utf-8")


@dataclass
class Recorder:
    """A local HTTP server that records every request and answers with the next scripted
    response (status, headers, body), or 204 when the script is empty."""

    requests: list[Recorded] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    answer: Any = None  # optional callable(Recorded) -> (status, headers, body) | None
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Recorder:
        recorder = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as InfluxDB does (every reply has a length)

            def do_POST(self) -> None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urllib.parse.urlsplit(self.path)
                rec = Recorded(
                    self.command,
                    parts.path,
                    urllib.parse.parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with lock:
                    recorder.requests.append(rec)
                    reply = recorder.answer(rec) if recorder.answer else None
                    if reply is None:
                        reply = recorder.script.pop(0) if recorder.script else (204, {}, b"")
                status, headers, data = reply
                rec.answer_status = status
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
