"""JSON checkpoints of per-cell state.

Every object that carries state across samples (segmenter, accumulators, detectors,
statistics) derives from :class:`Stateful`. Its plain attributes are written to the
checkpoint as JSON, so a restart resumes without re-learning, and a person can read
what the daemon believed about a cell. JSON rather than pickle: the file is inspectable
and does not execute code when loaded.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from pathlib import Path
from typing import Any


class Stateful:
    """Mixin: ``state()`` dumps instance attributes, ``load(d)`` restores them in place.

    Attributes listed in ``_transient`` (config, references to shared objects) are
    not saved; the constructor rebuilds them.
    """

    _transient: tuple[str, ...] = ()

    def state(self) -> dict[str, Any]:
        return {k: _dump(v) for k, v in vars(self).items() if k not in self._transient}

    def load(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            if k in self._transient or not hasattr(self, k):
                continue
            cur = getattr(self, k)
            if isinstance(cur, Stateful):
                cur.load(v)
            elif isinstance(cur, deque):
                setattr(self, k, deque(_restore_floats(v), maxlen=cur.maxlen))
            elif isinstance(cur, dict) and cur and all(isinstance(x, Stateful) for x in cur.values()):
                for name, sub in v.items():
                    if name in cur:
                        cur[name].load(sub)
            else:
                setattr(self, k, _restore_floats(v))


def _dump(v: Any) -> Any:
    if isinstance(v, Stateful):
        return v.state()
    if isinstance(v, deque | list | tuple):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _dump(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return {"__float__": repr(v)}
    return v


def _restore_floats(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__float__"}:
            return float(v["__float__"])
        return {k: _restore_floats(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore_floats(x) for x in v]
    return v


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a crash leaves either the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
