"""A socat pseudo-terminal pair and a load-cell device emulator on its far end.

The daemon opens ``DIR/dev``; the emulator writes (stream mode) or answers (poll mode) on
``DIR/emu``. A replug is ``Socat.stop()`` then ``start()`` with the same links: the device
path disappears and comes back, as when a USB adapter is pulled and put back.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


class Socat:
    def __init__(self, folder: Path):
        self.dev = folder / "dev"
        self.emu = folder / "emu"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Socat:
        self.proc = subprocess.Popen(
            ["socat", "-d", "-d", f"pty,raw,echo=0,link={self.dev}", f"pty,raw,echo=0,link={self.emu}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.dev.exists() and self.emu.exists()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("socat did not create its pty links")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        for p in (self.dev, self.emu):  # socat removes them; make sure, a replug must not see stale links
            p.unlink(missing_ok=True)

    def __enter__(self) -> Socat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Device:
    """The emulated amplifier on the ``emu`` end of a Socat pair."""

    def __init__(self, socat: Socat):
        self.socat = socat
        self.fd: int | None = None

    def open(self) -> Device:
        self.fd = os.open(self.socat.emu, os.O_RDWR | os.O_NOCTTY)
        return self

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def answer(self, reply: Callable[[str], bytes | None], stop: threading.Event) -> threading.Thread:
        """Poll mode: a thread that reads commands such as ``MEAS:FORC? 2`` and writes reply(channel)."""

        def loop() -> None:
            buf = b""
            while not stop.is_set():
                fd = self.fd
                if fd is None:
                    return
                ready, _, _ = select.select([fd], [], [], 0.05)
                if not ready:
                    continue
                try:
                    buf += os.read(fd, 1024)
                except OSError:
                    return
                while b"\n" in buf:
                    cmd, buf = buf.split(b"\n", 1)
                    m = re.search(rb"(\S+)\s*$", cmd)
                    out = reply(m.group(1).decode()) if m else None
                    if out is not None:
                        self.write(out)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t
