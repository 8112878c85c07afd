"""Small asyncio helpers shared by the daemon's loops."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set, at most ``timeout`` seconds; True if it was set.

    Not ``asyncio.wait_for``: in Python 3.11 it can swallow a cancellation that arrives as the
    awaited future completes (CPython gh-86296), which left a cancelled reader of the log
    looping forever and a replay hanging at its end. ``asyncio.timeout`` counts cancellations
    and does not lose them.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
